"""The synthetic Sentinel-2 demo catalog: shape, COGs, radiometry, clouds, fields, CLI."""

import json
import re
import subprocess
import sys
import warnings
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pyogrio
import pyogrio.raw
import pytest
import rasterio
import shapely
from pyproj import Transformer
from rasterio.errors import NotGeoreferencedWarning
from rasterio.features import rasterize

from app.demo import CROPS, crop_ndvi, field_ndvi, generate_demo, plan_scenes
from app.demo.grid import demo_grid, grid_square, latitude_band
from app.demo.landscape import build_landscape

FIXTURES = Path(__file__).parent / "fixtures"
METADATA_ASSETS = {"granule_metadata", "tileinfo_metadata"}
REFLECTANCE = [
    "coastal",
    "blue",
    "green",
    "red",
    "rededge1",
    "rededge2",
    "rededge3",
    "nir",
    "nir08",
    "nir09",
    "swir16",
    "swir22",
]
to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32633", always_xy=True)


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def fixture_item() -> dict:
    return _load(FIXTURES / "earth-search-v1-sentinel-2-l2a-item.json")


@pytest.fixture(scope="module")
def items(demo_dir: Path) -> list[dict]:
    found = [_load(p) for p in (demo_dir / "items").glob("*.json")]
    return sorted(found, key=lambda item: item["properties"]["datetime"])


def _asset_path(demo_dir: Path, item: dict, key: str) -> Path:
    return (demo_dir / "items" / item["assets"][key]["href"]).resolve()


def _read(demo_dir: Path, item: dict, key: str) -> np.ndarray:
    with rasterio.open(_asset_path(demo_dir, item, key)) as src:
        return src.read(1)


def _offset(item: dict, key: str) -> float:
    """Earth-Search's rule: boa_offset_applied true means the DN no longer carry +1000,
    whatever raster:bands says (it says -0.1 either way, as on real items)."""
    if item["properties"]["earthsearch:boa_offset_applied"]:
        return 0.0
    return item["assets"][key]["raster:bands"][0]["offset"]


def _reflectance(demo_dir: Path, item: dict, key: str) -> np.ndarray:
    """Reflectance from DN by Earth-Search's rule; NaN where nodata."""
    band = item["assets"][key]["raster:bands"][0]
    dn = _read(demo_dir, item, key)
    out = dn * band["scale"] + _offset(item, key)
    return np.where(dn == band["nodata"], np.nan, out)


def _scl_at(demo_dir: Path, item: dict, shape: tuple[int, int], factor: int) -> np.ndarray:
    """SCL resampled (nearest) onto a grid ``factor`` times finer."""
    scl = _read(demo_dir, item, "scl")
    return np.repeat(np.repeat(scl, factor, axis=0), factor, axis=1)[: shape[0], : shape[1]]


def _fields(demo_dir: Path) -> tuple[list[shapely.Polygon], list[dict]]:
    meta, _, geometry, columns = pyogrio.raw.read(demo_dir / "fields.gpkg")
    rows = [dict(zip(meta["fields"], values, strict=True)) for values in zip(*columns, strict=True)]
    return list(shapely.from_wkb(geometry)), rows


def _day(item: dict) -> date:
    return datetime.fromisoformat(item["properties"]["datetime"].replace("Z", "+00:00")).date()


# --- STAC shape ---------------------------------------------------------------------------


def test_items_mirror_the_earth_search_item(items: list[dict], fixture_item: dict) -> None:
    expected_assets = {
        k for k in fixture_item["assets"] if not k.endswith("-jp2") and k not in METADATA_ASSETS
    }
    fixture_props = fixture_item["properties"]
    assert len(items) == 6
    for item in items:
        assert set(item) == set(fixture_item)
        assert item["stac_extensions"] == fixture_item["stac_extensions"]
        assert item["collection"] == "sentinel-2-l2a"
        props = item["properties"]
        assert set(fixture_props) <= set(props)
        assert set(props) - set(fixture_props) == {"proj:code"}
        for key, value in fixture_props.items():
            number = (int, float)
            if isinstance(value, number) and not isinstance(value, bool):
                assert isinstance(props[key], number) and not isinstance(props[key], bool), key
            else:
                assert type(props[key]) is type(value), key
        assert set(item["assets"]) == expected_assets
        for key, asset in item["assets"].items():
            real = fixture_item["assets"][key]
            assert list(asset) == list(real), key
            for field in ("type", "title", "roles", "eo:bands", "gsd"):
                assert asset.get(field) == real.get(field), (key, field)
            for ours, theirs in zip(
                asset.get("raster:bands", []), real.get("raster:bands", []), strict=True
            ):
                assert list(ours) == list(theirs), key
                for field in ("nodata", "data_type", "bits_per_sample", "scale", "unit"):
                    assert ours.get(field) == theirs.get(field), (key, field)


def test_item_names_platforms_and_dates(items: list[dict]) -> None:
    pattern = re.compile(r"^S2([AB])_33TWM_(\d{8})_0_L2A$")
    days = []
    for item in items:
        props = item["properties"]
        match = pattern.match(item["id"])
        assert match, item["id"]
        assert props["platform"] == f"sentinel-2{match.group(1).lower()}"
        assert match.group(2) == _day(item).strftime("%Y%m%d")
        assert props["grid:code"] == "MGRS-33TWM"
        assert (props["mgrs:utm_zone"], props["mgrs:latitude_band"]) == (33, "T")
        assert props["mgrs:grid_square"] == "WM"
        assert props["proj:epsg"] == 32633 and props["proj:code"] == "EPSG:32633"
        baseline = props["s2:processing_baseline"]
        assert f"_N{baseline.replace('.', '')}_" in props["s2:product_uri"]
        assert props["s2:product_uri"].startswith(f"S2{match.group(1)}_MSIL2A_")
        assert 90 < props["view:sun_azimuth"] < 220 and 30 < props["view:sun_elevation"] < 70
        days.append(_day(item))
    platforms = [item["properties"]["platform"] for item in items]
    assert all(a != b for a, b in zip(platforms, platforms[1:], strict=False))
    assert days == sorted(set(days))
    assert date(2023, 4, 1) <= days[0] and days[-1] <= date(2023, 9, 30)


def test_mgrs_naming_matches_real_tiles(fixture_item: dict) -> None:
    props = fixture_item["properties"]
    lon, lat = shapely.geometry.shape(fixture_item["geometry"]).centroid.coords[0]
    e, n = Transformer.from_crs(4326, props["proj:epsg"], always_xy=True).transform(lon, lat)
    assert grid_square(props["mgrs:utm_zone"], e, n) == props["mgrs:grid_square"]
    assert latitude_band(lat) == props["mgrs:latitude_band"]
    # Murska Sobota lies in ESA's tile 33TWM.
    e, n = to_utm.transform(16.166, 46.662)
    assert grid_square(33, e, n) + latitude_band(46.662) == "WMT"


def test_hrefs_are_relative_and_resolve(demo_dir: Path, items: list[dict]) -> None:
    for item in items:
        for key, asset in item["assets"].items():
            assert asset["href"].startswith(f"../cogs/{item['id']}/"), key
            assert _asset_path(demo_dir, item, key).is_file(), key
        links = {link["rel"]: link["href"] for link in item["links"]}
        assert (demo_dir / "items" / links["self"]).resolve().name == f"{item['id']}.json"
        for rel in ("parent", "collection", "root"):
            assert (demo_dir / "items" / links[rel]).resolve() == demo_dir / "collection.json"


def test_collection(demo_dir: Path, items: list[dict]) -> None:
    real = _load(FIXTURES / "earth-search-v1-collection-sentinel-2-l2a.json")
    collection = _load(demo_dir / "collection.json")
    assert set(real) <= set(collection)
    assert collection["id"] == "sentinel-2-l2a"
    assert set(collection["item_assets"]) == set(items[0]["assets"])
    flags = {item["properties"]["earthsearch:boa_offset_applied"] for item in items}
    assert flags == {True, False}
    for key, asset in collection["item_assets"].items():
        assert {k: v for k, v in asset.items() if k != "raster:bands"} == {
            k: v for k, v in items[0]["assets"][key].items() if k not in ("href", "raster:bands")
        }
    (bbox,) = collection["extent"]["spatial"]["bbox"]
    extent = shapely.box(*bbox)
    for item in items:
        assert extent.buffer(1e-9).contains(shapely.box(*item["bbox"]))
    (interval,) = collection["extent"]["temporal"]["interval"]
    assert interval == [items[0]["properties"]["datetime"], items[-1]["properties"]["datetime"]]
    item_links = [link["href"] for link in collection["links"] if link["rel"] == "item"]
    assert sorted((demo_dir / href).resolve() for href in item_links) == sorted(
        (demo_dir / "items").glob("*.json")
    )


# --- COG files ----------------------------------------------------------------------------


def test_assets_are_cogs_matching_their_metadata(demo_dir: Path, items: list[dict]) -> None:
    for item in items:
        for key, asset in item["assets"].items():
            path = _asset_path(demo_dir, item, key)
            if key == "thumbnail":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", NotGeoreferencedWarning)
                    src = rasterio.open(path)
                with src:
                    assert src.driver == "JPEG" and src.count == 3
                    assert max(src.shape) <= 256
                continue
            with rasterio.open(path) as src:
                assert src.driver == "GTiff"
                structure = src.tags(ns="IMAGE_STRUCTURE")
                assert structure["LAYOUT"] == "COG" and structure["COMPRESSION"] == "DEFLATE"
                assert set(src.block_shapes) == {(512, 512)}
                assert len(src.overviews(1)) >= 1
                assert src.crs.to_epsg() == 32633
                assert list(src.shape) == asset["proj:shape"]
                assert list(src.transform)[:6] == asset["proj:transform"]
                assert src.nodatavals[0] == 0
                if key == "visual":
                    assert src.count == 3 and src.dtypes[0] == "uint8"
                else:
                    assert src.count == 1
                    assert src.dtypes[0] == asset["raster:bands"][0]["data_type"]


def test_grid_is_aligned_to_60m(items: list[dict]) -> None:
    transform = items[0]["assets"]["coastal"]["proj:transform"]
    assert transform[0] == 60 and transform[2] % 60 == 0 and transform[5] % 60 == 0
    for key in ("blue", "rededge1"):
        assert items[0]["assets"][key]["proj:transform"][2::3] == transform[2::3]


# --- radiometry ---------------------------------------------------------------------------


def test_offset_groups_store_the_documented_dn(demo_dir: Path, items: list[dict]) -> None:
    groups = {True: [], False: []}
    for item in items:
        applied = item["properties"]["earthsearch:boa_offset_applied"]
        groups[applied].append(item)
        for key in REFLECTANCE:
            band = item["assets"][key]["raster:bands"][0]
            # As on real Earth-Search v1 items: -0.1 recorded whatever the flag says.
            assert band["scale"] == 0.0001 and band["offset"] == -0.1
        for key in ("aot", "wvp"):
            assert item["assets"][key]["raster:bands"][0]["offset"] == 0
    assert groups[True] and groups[False]
    for applied, members in groups.items():
        for item in members:
            for key in ("red", "nir", "swir22"):
                dn = _read(demo_dir, item, key)
                # Every valid reflectance is > 0, so while ESA's +1000 is in the DN every DN
                # is above 1000; once taken out, dark surfaces (water, canopy in red) are below.
                assert (dn[dn > 0].min() < 1000) if applied else (dn[dn > 0].min() > 1000)
                refl = _reflectance(demo_dir, item, key)
                assert 0.0 < np.nanmin(refl) and np.nanmax(refl) < 1.0


def test_field_ndvi_follows_phenology_in_both_groups(demo_dir: Path, items: list[dict]) -> None:
    polygons, rows = _fields(demo_dir)
    checked = {True: 0, False: 0}
    for item in items:
        red = _reflectance(demo_dir, item, "red")
        nir = _reflectance(demo_dir, item, "nir")
        scl = _scl_at(demo_dir, item, red.shape, 2)
        with rasterio.open(_asset_path(demo_dir, item, "red")) as src:
            ids = rasterize(
                ((p, i + 1) for i, p in enumerate(polygons)), red.shape, transform=src.transform
            )
        ndvi = (nir - red) / (nir + red)
        raw_red = _read(demo_dir, item, "red") * 1e-4
        raw_nir = _read(demo_dir, item, "nir") * 1e-4
        raw_ndvi = (raw_nir - raw_red) / np.maximum(raw_nir + raw_red, 1e-6)
        errors, raw_shift = [], []
        for i, row in enumerate(rows):
            inside = ids == i + 1
            if inside.sum() < 20 or not np.isin(scl[inside], (4, 5)).all():
                continue
            errors.append(ndvi[inside].mean() - field_ndvi(row, _day(item)))
            raw_shift.append(abs(raw_ndvi[inside].mean() - ndvi[inside].mean()))
        if not errors:
            continue
        applied = item["properties"]["earthsearch:boa_offset_applied"]
        checked[applied] += len(errors)
        errors = np.abs(errors)
        assert errors.mean() < 0.02 and errors.max() < 0.06, item["id"]
        # Without harmonisation the +1000 DN offset would bias NDVI far beyond that.
        assert (np.max(raw_shift) < 1e-3) if applied else (np.mean(raw_shift) > 0.05), item["id"]
    assert checked[True] >= 10 and checked[False] >= 10


def test_phenology_curves() -> None:
    days = np.arange(91, 274)
    wheat = crop_ndvi("winter_wheat", days)
    assert 121 <= days[np.argmax(wheat)] <= 151 and wheat.max() > 0.75
    assert crop_ndvi("winter_wheat", 205) < 0.35  # harvested in July
    maize = crop_ndvi("maize", days)
    assert 182 <= days[np.argmax(maize)] <= 243 and crop_ndvi("maize", 110) < 0.3
    sunflower = crop_ndvi("sunflower", days)
    assert 166 <= days[np.argmax(sunflower)] <= 212
    grass = crop_ndvi("grassland", days)
    # Mowing: drops of more than 0.2 within three days, at least twice in the season.
    drops = (grass[:-3] - grass[3:]) > 0.2
    assert np.count_nonzero(np.diff(drops.astype(int)) == 1) >= 2
    props = {"crop": "maize", "phenology_shift": 5.0, "vigour": 1.0}
    assert field_ndvi(props, 200) == pytest.approx(crop_ndvi("maize", 195))
    assert field_ndvi({**props, "vigour": 0.9}, 200) < field_ndvi(props, 200)
    with pytest.raises(ValueError):
        crop_ndvi("rice", 100)


# --- clouds, SCL, swath edge ----------------------------------------------------------------


def test_scl_percentages_match_properties(demo_dir: Path, items: list[dict]) -> None:
    classes = {
        "s2:cloud_shadow_percentage": 3,
        "s2:vegetation_percentage": 4,
        "s2:not_vegetated_percentage": 5,
        "s2:water_percentage": 6,
        "s2:thin_cirrus_percentage": 10,
    }
    covers = []
    for item in items:
        props = item["properties"]
        scl = _read(demo_dir, item, "scl")
        valid = np.count_nonzero(scl)
        cloud = 100 * np.isin(scl, (8, 9, 10)).sum() / valid
        assert props["eo:cloud_cover"] == pytest.approx(cloud, abs=1e-5)
        for key, value in classes.items():
            assert props[key] == pytest.approx(100 * (scl == value).sum() / valid, abs=1e-5)
        assert props["s2:nodata_pixel_percentage"] == pytest.approx(
            100 * (scl == 0).sum() / scl.size, abs=1e-5
        )
        covers.append(props["eo:cloud_cover"])
    assert min(covers) == 0.0
    assert any(10 < c < 60 for c in covers)
    assert max(covers) > 60


def test_clouds_are_bright_shadows_dark_cirrus_hazy(demo_dir: Path, items: list[dict]) -> None:
    seen = set()
    for item in items:
        blue = _reflectance(demo_dir, item, "blue")
        nir = _reflectance(demo_dir, item, "nir")
        scl = _scl_at(demo_dir, item, blue.shape, 2)
        clear_blue = np.nanmedian(blue[np.isin(scl, (4, 5))]) if np.isin(scl, (4, 5)).any() else 0
        if np.isin(scl, (8, 9)).any():
            seen.add("cloud")
            assert np.nanmedian(blue[np.isin(scl, (8, 9))]) > 0.2
            assert clear_blue < 0.1
        if (scl == 10).sum() > 100:
            seen.add("cirrus")
            assert np.nanmedian(blue[scl == 10]) > clear_blue + 0.01
        if (scl == 3).sum() > 100 and (scl == 4).sum() > 100:
            seen.add("shadow")
            assert np.nanmedian(nir[scl == 3]) < 0.75 * np.nanmedian(nir[scl == 4])
    assert seen == {"cloud", "cirrus", "shadow"}


def test_a_scene_has_a_nodata_swath_edge(demo_dir: Path, items: list[dict]) -> None:
    edged = [i for i in items if i["properties"]["s2:nodata_pixel_percentage"] > 5]
    assert len(edged) == 1
    for item in items:
        scl = _read(demo_dir, item, "scl")
        for key, factor in (("blue", 2), ("red", 2), ("nir08", 1), ("swir22", 1)):
            dn = _read(demo_dir, item, key)
            assert np.array_equal(dn == 0, _scl_at(demo_dir, item, dn.shape, factor) == 0), key
        with rasterio.open(_asset_path(demo_dir, item, "visual")) as src:
            tci = src.read()
        assert np.array_equal(
            (tci == 0).all(axis=0), _scl_at(demo_dir, item, tci.shape[1:], 2) == 0
        )
        # The geometry is the valid footprint: its area is the valid share of the grid.
        footprint = shapely.transform(
            shapely.geometry.shape(item["geometry"]),
            lambda xy: np.column_stack(to_utm.transform(xy[:, 0], xy[:, 1])),
        )
        transform = item["assets"]["scl"]["proj:transform"]
        full = (scl.shape[0] * transform[0]) ** 2
        assert footprint.area / full == pytest.approx(np.count_nonzero(scl) / scl.size, abs=0.01)
        assert item["bbox"] == pytest.approx(list(shapely.geometry.shape(item["geometry"]).bounds))
    valid = (
        np.count_nonzero(_read(demo_dir, edged[0], "scl")) / _read(demo_dir, edged[0], "scl").size
    )
    assert 0.3 < valid < 0.9


# --- field parcels ----------------------------------------------------------------------------


def test_field_files(demo_dir: Path) -> None:
    polygons, rows = _fields(demo_dir)
    assert pyogrio.read_info(demo_dir / "fields.gpkg")["crs"] == "EPSG:32633"
    assert pyogrio.read_info(demo_dir / "fields.geojson")["crs"] == "EPSG:4326"
    assert len(rows) >= 20
    identifiers = [row["identifier"] for row in rows]
    assert all(re.fullmatch(r"field-\d{4}", i) for i in identifiers)
    assert len(set(identifiers)) == len(identifiers)
    assert {row["crop"] for row in rows} <= set(CROPS)
    areas = np.array([p.area / 10_000 for p in polygons])
    assert areas.min() >= 0.5 and areas.max() <= 10.0
    assert np.allclose(areas, [row["area_ha"] for row in rows], atol=1e-3)
    tree = shapely.STRtree(polygons)
    pairs = tree.query(polygons, predicate="intersects")
    assert (pairs[0] == pairs[1]).all(), "parcels overlap"

    geojson = _load(demo_dir / "fields.geojson")
    assert [f["properties"]["identifier"] for f in geojson["features"]] == identifiers
    for feature, polygon in zip(geojson["features"], polygons, strict=True):
        shape = shapely.geometry.shape(feature["geometry"])
        lon, lat = shape.centroid.coords[0]
        assert abs(lon - 16.1) < 0.2 and abs(lat - 46.65) < 0.2
        utm = shapely.transform(
            shape, lambda xy: np.column_stack(to_utm.transform(xy[:, 0], xy[:, 1]))
        )
        assert utm.area == pytest.approx(polygon.area, rel=1e-4)


def test_default_size_has_hundreds_of_fields() -> None:
    land = build_landscape(demo_grid(1024), np.random.default_rng([0, 0]))
    areas = np.array([f.area_ha for f in land.fields])
    assert len(areas) > 300
    assert areas.min() >= 0.5 and areas.max() <= 10.0
    assert {f.crop for f in land.fields} == set(CROPS)


# --- plan, determinism, re-runs, CLI ----------------------------------------------------------


@pytest.mark.parametrize("scenes", [3, 4, 5, 6, 7, 12, 20])
def test_plan_rules(scenes: int) -> None:
    plan = plan_scenes(scenes)
    assert len(plan) == scenes
    assert [s.nodata_edge for s in plan].count(True) == 1 and plan[2].sky == "clear"
    assert any(not s.boa_offset_applied for s in plan) and any(s.boa_offset_applied for s in plan)
    assert [s.sky for s in plan].count("mostly") == (1 if scenes >= 4 else 0)
    assert all(a.platform != b.platform for a, b in zip(plan, plan[1:], strict=False))
    times = [s.datetime for s in plan]
    assert times == sorted(times) and len(set(times)) == scenes
    assert times[0].date() >= date(2023, 4, 1) and times[-1].date() <= date(2023, 9, 30)


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.suffix != ".gpkg"  # SQLite stamps its own write times
    }


def test_same_seed_writes_identical_files(tmp_path: Path) -> None:
    first = _tree(generate_demo(tmp_path / "a", scenes=3, size=64, seed=3))
    second = _tree(generate_demo(tmp_path / "b", scenes=3, size=64, seed=3))
    assert first.keys() == second.keys()
    assert any(name.endswith("B04.tif") for name in first)
    assert first == second
    other = _tree(generate_demo(tmp_path / "c", scenes=3, size=64, seed=4))
    b04 = [name for name in first if name.endswith("B04.tif")]
    assert all(first[name] != other[name] for name in b04)


def test_rerun_replaces_previous_output(tmp_path: Path) -> None:
    generate_demo(tmp_path, scenes=3, size=64)
    (tmp_path / "notes.txt").write_text("mine")
    generate_demo(tmp_path, scenes=2, size=64)
    assert len(list((tmp_path / "items").glob("*.json"))) == 2
    assert len(list((tmp_path / "cogs").iterdir())) == 2
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_invalid_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate_demo(tmp_path, scenes=0)
    with pytest.raises(ValueError):
        generate_demo(tmp_path, size=16)


def test_cli_writes_a_demo(tmp_path: Path) -> None:
    command = Path(sys.executable).parent / "terratiler"
    result = subprocess.run(
        [str(command), "demo", str(tmp_path / "demo"), "--scenes", "3", "--size", "128"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    items = list((tmp_path / "demo" / "items").glob("*.json"))
    assert len(items) == 3
    item = _load(items[0])
    assert item["assets"]["red"]["proj:shape"] == [128, 128]
    with rasterio.open((items[0].parent / item["assets"]["red"]["href"]).resolve()) as src:
        assert src.shape == (128, 128)
    assert (tmp_path / "demo" / "fields.gpkg").is_file()
