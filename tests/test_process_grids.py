"""Tiling grids of batch processing: tile sizes, alignment, zones, names, buffers, counts."""

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from pyproj import Transformer
from shapely.geometry import MultiPolygon, Point, box

from app.batch.processing.grids import (
    GRIDS,
    check_grid,
    count_tiles,
    grid_description,
    grid_descriptions,
    parse_tile_name,
    tile_at,
    tile_footprint,
    tile_from_name,
    tiles_for,
)
from app.errors import BadRequestError, NotFoundError

# The demo's neighbourhood (Murska Sobota) and an area across the 18 E zone boundary.
DEMO_AREA = box(16.0, 46.6, 16.2, 46.7)
CROSS_AREA = box(17.95, 46.6, 18.05, 46.68)

SIZES = {"0": (20_040, [10, 20, 60]), "1": (10_000, [10, 20]), "2": (100_080, [60, 120, 240, 360])}


def _every_grid_resolution() -> list[tuple[str, float]]:
    return [(g.id, r) for g in GRIDS.values() for r in g.resolutions]


@pytest.mark.parametrize(("grid_id", "resolution"), _every_grid_resolution())
def test_tile_size_and_pixels(grid_id: str, resolution: float) -> None:
    tiles = tiles_for(DEMO_AREA, grid_id, resolution)
    assert tiles
    grid = GRIDS[grid_id]
    for tile in tiles:
        minx, miny, maxx, maxy = tile.bounds
        if grid_id == "3":
            assert tile.crs == "EPSG:4326"
            assert tile.width == tile.height == round(1 / resolution)
            assert (maxx - minx, maxy - miny) == pytest.approx((1.0, 1.0), abs=1e-9)
            assert minx == int(minx) and maxy == int(maxy)
        else:
            side, resolutions = SIZES[grid_id]
            assert resolution in resolutions
            assert tile.crs == "EPSG:32633"
            assert tile.width == tile.height == side // resolution
            assert side % resolution == 0
            assert (maxx - minx, maxy - miny) == (side, side)
            # Edges on multiples of the side, hence of the resolution and of 20 m (the
            # S2 10/20 m pixel grids; 60 m too for grids 0 and 2).
            for edge in (minx, miny, maxx, maxy):
                assert edge % side == 0 and edge % resolution == 0 and edge % 20 == 0
                if grid_id in ("0", "2"):
                    assert edge % 60 == 0
        assert tile.resolution == resolution
        assert tile.transform.a == resolution and tile.transform.e == -resolution
        assert tile.grid == grid.id


def test_grid3_pixel_arithmetic() -> None:
    (tile,) = tiles_for(box(16.1, 46.6, 16.2, 46.7), "3", 0.0002)
    assert tile.name == "N46E016"
    assert (tile.width, tile.height) == (5000, 5000)
    assert tile.transform.c == 16.0 and tile.transform.f == 47.0
    # The last pixel edge lands on the next degree to float precision.
    assert tile.transform.c + tile.width * tile.transform.a == pytest.approx(17.0, abs=1e-9)
    south_west = tile_at("3", 0.0001, -0.5, -0.5)
    assert south_west.name == "S01W001"
    assert south_west.bounds == pytest.approx((-1.0, -1.0, 0.0, 0.0))
    assert parse_tile_name("S01W001") == ("EPSG:4326", -1, -1)


def test_demo_pixels_align_with_grid1(demo_dir: Path) -> None:
    item = json.loads(next((demo_dir / "items").glob("*.json")).read_text())
    href = (demo_dir / "items" / item["assets"]["red"]["href"]).resolve()
    with rasterio.open(href) as src:
        transform, crs, bounds = src.transform, src.crs, src.bounds
    assert crs.to_epsg() == 32633
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(
        (bounds.left + bounds.right) / 2, (bounds.bottom + bounds.top) / 2
    )
    tile = tile_at("1", 10, lon, lat)
    assert tile.crs == "EPSG:32633"
    col = (tile.transform.c - transform.c) / transform.a
    row = (tile.transform.f - transform.f) / transform.e
    # The tile's corner is a whole number of the scene's 10 m pixels away: no resampling.
    assert col == int(col) and row == int(row)
    assert transform.a == tile.transform.a and transform.e == tile.transform.e
    # Grid 0 (20,040 m) at 20 m is on the scene's 20 m grid as well.
    href20 = (demo_dir / "items" / item["assets"]["swir16"]["href"]).resolve()
    with rasterio.open(href20) as src:
        t20 = src.transform
    tile0 = tile_at("0", 20, lon, lat)
    assert ((tile0.transform.c - t20.c) / 20).is_integer()
    assert ((tile0.transform.f - t20.f) / 20).is_integer()


def test_cross_zone_area_gives_tiles_in_both_crs() -> None:
    tiles = tiles_for(CROSS_AREA, "1", 10)
    crss = {t.crs for t in tiles}
    assert crss == {"EPSG:32633", "EPSG:32634"}
    for tile in tiles:
        footprint = tile_footprint(tile)
        assert footprint.intersects(CROSS_AREA)
        # Each tile meets the part of the area inside its zone's strip.
        zone = int(tile.crs[-2:])
        strip = box(-180 + 6 * (zone - 1), -80, -180 + 6 * zone, 84)
        assert footprint.intersection(strip).intersects(CROSS_AREA)
    # An area only west of 18 E stays in zone 33, though tiles of 33 reach past 18 E.
    west = tiles_for(box(17.95, 46.6, 17.99, 46.68), "1", 10)
    assert {t.crs for t in west} == {"EPSG:32633"}


def test_southern_hemisphere_and_equator() -> None:
    tiles = tiles_for(box(16.0, -0.05, 16.05, 0.05), "1", 10)
    assert {t.crs for t in tiles} == {"EPSG:32633", "EPSG:32733"}
    south = [t for t in tiles if t.crs == "EPSG:32733"]
    # South of the equator: 10,000,000 m false northing; the top row reaches past it.
    assert all(9_990_000 <= t.bounds[3] <= 10_010_000 for t in south)
    point = tile_at("1", 10, 16.02, -0.02)
    assert point.crs == "EPSG:32733" and point in tiles


def test_antimeridian() -> None:
    split = MultiPolygon([box(179.9, 10, 180, 10.1), box(-180, 10, -179.9, 10.1)])
    tiles = tiles_for(split, "1", 10)
    assert {t.crs for t in tiles} == {"EPSG:32601", "EPSG:32660"}
    with pytest.raises(BadRequestError, match="antimeridian"):
        tiles_for(box(179.9, 10, 180.1, 10.1), "1", 10)
    with pytest.raises(BadRequestError, match="input.bounds"):
        tiles_for(box(10, 84.5, 11, 85), "0", 10)
    assert [t.name for t in tiles_for(split, "3", 0.0001)] == ["N10E179", "N10W180"]


@pytest.mark.parametrize(
    ("grid_id", "resolution"), [("0", 60), ("1", 20), ("2", 360), ("3", 0.0002)]
)
def test_names_stable_and_tile_at_agrees(grid_id: str, resolution: float) -> None:
    first = tiles_for(CROSS_AREA, grid_id, resolution)
    again = tiles_for(CROSS_AREA, grid_id, resolution)
    assert [t.name for t in first] == [t.name for t in again]
    assert first == again
    assert [t.name for t in first] == sorted(t.name for t in first)
    assert len({t.name for t in first}) == len(first)
    rng = np.random.default_rng(3)
    for lon, lat in zip(rng.uniform(-179, 179, 25), rng.uniform(-79, 83, 25), strict=True):
        tile = tile_at(grid_id, resolution, lon, lat)
        tiny = tiles_for(Point(lon, lat).buffer(1e-6), grid_id, resolution)
        assert tile in tiny
        assert tile_footprint(tile).contains(Point(lon, lat))
        assert tile_from_name(grid_id, resolution, tile.name) == tile
        index = parse_tile_name(tile.name)
        assert index.crs == tile.crs


def test_known_names() -> None:
    tile = tile_at("1", 10, 16.1, 46.65)
    assert tile.name == "33N_058_0516"
    assert tile.bounds == (580_000, 5_160_000, 590_000, 5_170_000)
    assert parse_tile_name("33N_058_0516") == ("EPSG:32633", 58, 516)
    assert parse_tile_name("07S_012_0900") == ("EPSG:32707", 12, 900)
    for bad in ("", "61N_001_0001", "33X_001_0001", "N91E000", "33N_58_516", "../x"):
        with pytest.raises(BadRequestError, match="tileName"):
            parse_tile_name(bad)
    with pytest.raises(BadRequestError, match="tileName"):
        tile_from_name("3", 0.0001, "33N_058_0516")


def test_buffers_widen_each_tile() -> None:
    plain = tiles_for(DEMO_AREA, "1", 10)
    buffered = tiles_for(DEMO_AREA, "1", 10, buffer_x=8, buffer_y=3)
    assert [t.name for t in plain] == [t.name for t in buffered]
    for a, b in zip(plain, buffered, strict=True):
        assert (b.width, b.height) == (a.width + 16, a.height + 6)
        assert b.bounds == (
            a.bounds[0] - 80,
            a.bounds[1] - 30,
            a.bounds[2] + 80,
            a.bounds[3] + 30,
        )
    (g3,) = tiles_for(box(16.1, 46.6, 16.2, 46.7), "3", 0.0001, buffer_x=2, buffer_y=2)
    assert (g3.width, g3.height) == (10_004, 10_004)
    assert g3.transform.c == pytest.approx(15.9998)
    for bad in (-1, 1.5, True):
        with pytest.raises(BadRequestError, match="input.bufferX"):
            tiles_for(DEMO_AREA, "1", 10, buffer_x=bad)
    with pytest.raises(BadRequestError, match="input.bufferY"):
        tiles_for(DEMO_AREA, "1", 10, buffer_y=-2)


def test_bad_grid_or_resolution() -> None:
    with pytest.raises(BadRequestError, match=r"input\.id.*0 \(UTM 20km grid\)"):
        check_grid("9", 10)
    with pytest.raises(BadRequestError, match=r"input\.id"):
        tiles_for(DEMO_AREA, "utm", 10)
    with pytest.raises(BadRequestError, match=r"input\.resolution.*10, 20 metres"):
        check_grid("1", 60)
    with pytest.raises(BadRequestError, match=r"input\.resolution.*0\.0001, 0\.0002"):
        tiles_for(DEMO_AREA, "3", 10)
    with pytest.raises(BadRequestError, match=r"input\.resolution"):
        check_grid("0", "10")
    assert check_grid(1, 10.0) is GRIDS["1"]
    assert check_grid("2", 120) is GRIDS["2"]
    with pytest.raises(BadRequestError, match=r"input\.bounds"):
        tiles_for(box(200, 0, 201, 1), "3", 0.0001)


def test_descriptions() -> None:
    found = grid_descriptions()
    assert [g["id"] for g in found] == [0, 1, 2, 3]
    assert found[0] == {
        "id": 0,
        "name": "UTM 20km grid",
        "properties": {
            "tileWidth": 20040,
            "tileHeight": 20040,
            "resolutions": [10.0, 20.0, 60.0],
            "unit": "METRE",
        },
    }
    assert grid_description("3")["properties"]["unit"] == "DEGREE"
    assert grid_description(2)["properties"]["tileWidth"] == 100080
    with pytest.raises(NotFoundError):
        grid_description("7")


AREAS = [
    DEMO_AREA,
    CROSS_AREA,
    box(15.0, 45.5, 19.5, 47.5),  # three zones
    shapely.Polygon([(16.0, 46.0), (17.5, 46.2), (16.4, 47.3)]),  # a triangle
    box(-60.3, -10.2, -59.4, -9.1),  # southern hemisphere
    DEMO_AREA.difference(box(16.05, 46.62, 16.15, 46.68)),  # a hole
    shapely.LineString([(16.0, 46.0), (18.5, 46.9)]),
    Point(16.1, 46.65),
    shapely.Polygon(),
]


@pytest.mark.parametrize("area", AREAS, ids=range(len(AREAS)))
@pytest.mark.parametrize(
    ("grid_id", "resolution"), [("0", 60), ("1", 20), ("2", 360), ("3", 0.0002)]
)
def test_count_tiles_equals_listing(area, grid_id: str, resolution: float) -> None:
    assert count_tiles(area, grid_id, resolution) == len(tiles_for(area, grid_id, resolution))


def test_count_tiles_of_a_continent_is_cheap() -> None:
    import time

    started = time.perf_counter()
    # Africa-sized: hundreds of thousands of 10 km tiles, counted without listing them.
    count = count_tiles(box(-18, -35, 51, 37), "1", 10)
    assert count > 100_000
    assert time.perf_counter() - started < 2.0


def test_footprint() -> None:
    tile = tile_at("1", 10, 16.1, 46.65)
    footprint = tile_footprint(tile)
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32633", always_xy=True)
    back = shapely.transform(footprint, lambda xy: np.column_stack(to_utm.transform(*xy.T)))
    assert back.area == pytest.approx(1e8, rel=1e-6)
    assert back.bounds == pytest.approx((580_000, 5_160_000, 590_000, 5_170_000), abs=1e-3)


# --- the demo's cross-zone scenes ---------------------------------------------------------


@pytest.fixture(scope="module")
def cross_zone_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny demo with the cross-zone pair, written through the CLI flag."""
    from app.cli import main

    path = tmp_path_factory.mktemp("cross-zone")
    assert main(["demo", str(path), "--scenes", "3", "--size", "64", "--cross-zone"]) == 0
    return path


def _items(path: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((path / "items").glob("*.json"))]


def _asset(path: Path, item: dict, key: str) -> Path:
    return (path / "items" / item["assets"][key]["href"]).resolve()


def test_cross_zone_demo_items(cross_zone_dir: Path, tmp_path: Path) -> None:
    from rio_cogeo.cogeo import cog_validate

    from app.demo import generate_demo

    items = _items(cross_zone_dir)
    by_code: dict[str, list[dict]] = {}
    for item in items:
        by_code.setdefault(item["properties"]["proj:code"], []).append(item)
    assert sorted(by_code) == ["EPSG:32633", "EPSG:32634"]
    main_dates = sorted(i["properties"]["datetime"] for i in items if "_33TWM_" in i["id"])
    pair = [i for i in items if "_33TWM_" not in i["id"]]
    assert len(main_dates) == 3 and len(pair) == 4
    assert sorted({i["properties"]["datetime"] for i in pair}) == main_dates[:2]
    west = [i for i in pair if i["properties"]["proj:code"] == "EPSG:32633"]
    east = [i for i in pair if i["properties"]["proj:code"] == "EPSG:32634"]
    assert len(west) == len(east) == 2
    assert all(i["bbox"][2] < 18.0 < i["bbox"][0] + 0.05 for i in west)
    assert all(i["bbox"][0] > 18.0 > i["bbox"][2] - 0.05 for i in east)
    for item in pair:
        epsg = item["properties"]["proj:epsg"]
        assert item["assets"].keys() == items[0]["assets"].keys()
        for key in ("red", "nir", "scl", "visual"):
            href = _asset(cross_zone_dir, item, key)
            assert cog_validate(str(href))[0], href
            with rasterio.open(href) as src:
                assert src.crs.to_epsg() == epsg
                assert list(src.transform)[:6] == item["assets"][key]["proj:transform"]
                assert src.read(1).any()
                transform = src.transform
            assert transform.c % 60 == 0 and transform.f % 60 == 0
    # Without the flag: exactly the files of a plain run (the SQLite gpkg stamps its own
    # write times; the collection links the extra items).
    plain = generate_demo(tmp_path / "plain", scenes=3, size=64)
    plain_files = {p.relative_to(plain) for p in plain.rglob("*") if p.is_file()}
    for rel in plain_files - {Path("fields.gpkg"), Path("collection.json")}:
        assert (plain / rel).read_bytes() == (cross_zone_dir / rel).read_bytes(), rel
    extra = {p.relative_to(cross_zone_dir) for p in cross_zone_dir.rglob("*") if p.is_file()}
    assert {p.parts[1] for p in extra - plain_files if p.parts[0] == "items"} == {
        f"{i['id']}.json" for i in pair
    }


def test_cross_zone_demo_on_grid1(cross_zone_dir: Path) -> None:
    pair = [i for i in _items(cross_zone_dir) if "_33TWM_" not in i["id"]]
    area = shapely.union_all([box(*i["bbox"]) for i in pair]).envelope
    tiles = tiles_for(area, "1", 10)
    assert {t.crs for t in tiles} == {"EPSG:32633", "EPSG:32634"}
    for item in pair:
        with rasterio.open(_asset(cross_zone_dir, item, "red")) as src:
            transform, bounds, crs = src.transform, src.bounds, f"EPSG:{src.crs.to_epsg()}"
        own = [t for t in tiles if t.crs == crs]
        holding = [t for t in own if box(*t.bounds).intersects(box(*bounds))]
        assert holding
        for tile in holding:
            # The scene's 10 m pixels are the tile's pixels (whole-pixel offsets).
            assert ((tile.transform.c - transform.c) / 10).is_integer()
            assert ((tile.transform.f - transform.f) / 10).is_integer()


def test_cross_zone_demo_is_served(cross_zone_dir: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    pair = [i for i in _items(cross_zone_dir) if "_33TWM_" not in i["id"]]
    settings = Settings(catalog=str(cross_zone_dir), data_dir=tmp_path)
    with TestClient(create_app(settings)) as client:
        for item in pair[:2] + pair[-2:]:
            minx, miny, maxx, maxy = item["bbox"]
            lon, lat = (minx + maxx) / 2, (miny + maxy) / 2
            r = client.get(
                f"/collections/sentinel-2-l2a/items/{item['id']}/point/{lon},{lat}",
                params={"assets": "red"},
            )
            assert r.status_code == 200, r.text
            with rasterio.open(_asset(cross_zone_dir, item, "red")) as src:
                xy = Transformer.from_crs("EPSG:4326", src.crs, always_xy=True).transform(lon, lat)
                (expected,) = next(src.sample([xy]))
            assert r.json()["values"] == [float(expected)]
