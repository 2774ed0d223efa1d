"""The batch-processing tile engine and COG writer against rasterio + numpy on the demo COGs.

Tiles are built by hand (``GridTile``): a 10 m tile on the demo scenes' own UTM grid (their
pixels exactly), one in EPSG:4326 (grid 3 style) and one in the neighbouring zone
(EPSG:32634), both compared with ``rasterio.warp.reproject`` of the source files.
"""

from __future__ import annotations

import json
import warnings
from datetime import datetime
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from affine import Affine
from demo_reads import href, items, read, scale_offset
from pyproj import Transformer
from rasterio.enums import Resampling
from rasterio.warp import reproject
from rio_cogeo.cogeo import cog_validate

from app.batch.processing.cog import check_cog_parameters, write_cog
from app.batch.processing.engine import (
    TileReadError,
    check_resampling,
    estimate_tile_bytes,
    finish,
    process_tile,
)
from app.batch.processing.spec import GridTile, OutputRaster, OutputSpec, TileRecipe
from app.batch.storage import Storage
from app.datasets import DatasetPool
from app.errors import BadRequestError
from app.settings import Settings

NDVI = "(nir-red)/(nir+red)"
SCL_MASKED = [0, 1, 3, 8, 9, 10, 11]  # written out here, not taken from app.sentinel2
DEMO_LEFT, DEMO_TOP, DEMO_SIZE = 582840.0, 5168160.0, 256


@pytest.fixture(scope="module")
def demo(demo_dir: Path) -> dict:
    """The demo's item JSON, its pystac Items (absolute hrefs), and its grid."""
    documents = items(demo_dir)
    red = documents[0]["assets"]["red"]
    # The conftest demo is the one these constants describe (size 256, seed 1).
    assert red["proj:transform"][2] == DEMO_LEFT and red["proj:transform"][5] == DEMO_TOP
    assert red["proj:shape"] == [DEMO_SIZE, DEMO_SIZE]
    pystac_items = [
        pystac.Item.from_file(str(path)) for path in sorted((demo_dir / "items").glob("*.json"))
    ]
    return {"docs": documents, "items": pystac_items}


def _when(document: dict) -> datetime:
    return datetime.fromisoformat(document["properties"]["datetime"].replace("Z", "+00:00"))


def _newest_first(documents: list[dict]) -> list[dict]:
    return sorted(documents, key=_when, reverse=True)


def _reflectance32(demo_dir: Path, document: dict, asset: str) -> np.ndarray:
    """Whole band as float32 reflectance (DN * scale + offset in float32), NaN at DN 0."""
    scale, offset = scale_offset(document, asset)
    dn = read(demo_dir, document, asset)
    values = dn.astype(np.float32) * np.float32(scale) + np.float32(offset)
    return np.where(dn == 0, np.nan, values).astype(np.float32)


def _ndvi_masked(demo_dir: Path, document: dict) -> np.ndarray:
    """NDVI (float64 arithmetic, float32 result) on the demo grid, NaN where SCL masks."""
    red = _reflectance32(demo_dir, document, "red").astype(np.float64)
    nir = _reflectance32(demo_dir, document, "nir").astype(np.float64)
    with np.errstate(all="ignore"):
        ndvi = ((nir - red) / (nir + red)).astype(np.float32)
    scl = read(demo_dir, document, "scl")
    scl10 = np.repeat(np.repeat(scl, 2, axis=0), 2, axis=1)[:DEMO_SIZE, :DEMO_SIZE]
    ndvi[np.isin(scl10, SCL_MASKED) | ~np.isfinite(ndvi)] = np.nan
    return ndvi


def _on_tile(full: np.ndarray, col: int, row: int, width: int, height: int) -> np.ndarray:
    """A demo-grid array cut (and NaN-padded) to a tile at (col, row) of the demo grid."""
    out = np.full((height, width), np.nan, dtype=np.float32)
    r1, c1 = min(row + height, full.shape[0]), min(col + width, full.shape[1])
    out[: r1 - row, : c1 - col] = full[row:r1, col:c1]
    return out


# A 10 m tile in the demo's zone on its pixel grid: 120 columns right and 60 rows down of the
# demo's corner, 200 x 200 pixels, so it sticks out of the scenes to the east and south.
COL, ROW, SIDE = 120, 60, 200
UTM_TILE = GridTile(
    grid="1",
    name="33-test",
    crs="EPSG:32633",
    transform=Affine(10.0, 0.0, DEMO_LEFT + COL * 10, 0.0, -10.0, DEMO_TOP - ROW * 10),
    width=SIDE,
    height=SIDE,
    resolution=10.0,
)


def _settings(settings: Settings) -> Settings:
    return settings


def test_first_scl_clear_equals_numpy_on_the_source_pixels(
    demo: dict, demo_dir: Path, settings: Settings
):
    recipe = TileRecipe(outputs=(OutputSpec("ndvi", NDVI, mask="scl-clear"),))

    result = process_tile(UTM_TILE, demo["items"], recipe, settings)["ndvi"]

    expected = np.full((SIDE, SIDE), np.nan, dtype=np.float32)
    for document in _newest_first(demo["docs"]):
        values = _on_tile(_ndvi_masked(demo_dir, document), COL, ROW, SIDE, SIDE)
        take = np.isnan(expected) & ~np.isnan(values)
        expected[take] = values[take]
    assert result.data.shape == (1, SIDE, SIDE) and result.data.dtype == np.float32
    assert result.nodata is None and result.descriptions == ["ndvi"]
    np.testing.assert_array_equal(result.data[0], expected)
    # Off the scenes (east and south of them) there is no value; on them, clouds aside.
    assert np.isnan(result.data[0, :, DEMO_SIZE - COL :]).all()
    assert np.isnan(result.data[0, DEMO_SIZE - ROW :, :]).all()
    assert (~np.isnan(result.data[0, : DEMO_SIZE - ROW, : DEMO_SIZE - COL])).mean() > 0.95


def test_median_mean_max_min_equal_numpy_over_the_masked_stack(
    demo: dict, demo_dir: Path, settings: Settings
):
    recipe = TileRecipe(
        outputs=tuple(
            OutputSpec(composite, NDVI, composite=composite, mask="scl-clear")
            for composite in ("median", "mean", "max", "min")
        )
    )

    result = process_tile(UTM_TILE, demo["items"], recipe, settings)

    stack = np.stack(
        [_on_tile(_ndvi_masked(demo_dir, d), COL, ROW, SIDE, SIDE) for d in demo["docs"]]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels off the scenes
        np.testing.assert_array_equal(result["median"].data[0], np.nanmedian(stack, axis=0))
        np.testing.assert_allclose(
            result["mean"].data[0], np.nanmean(stack, axis=0), rtol=1e-6, atol=1e-7
        )
        np.testing.assert_array_equal(result["max"].data[0], np.nanmax(stack, axis=0))
        np.testing.assert_array_equal(result["min"].data[0], np.nanmin(stack, axis=0))
    # Some pixels are clouded on some dates: the median is not just one scene.
    assert (np.isnan(stack[:, :100, :100]).sum(axis=0) > 0).any()


def test_stack_has_one_band_per_date_with_the_dates_as_descriptions(
    demo: dict, demo_dir: Path, settings: Settings
):
    recipe = TileRecipe(
        outputs=(OutputSpec("red", "red", composite="stack", data_type="uint16", rescale=(0, 1)),)
    )

    result = process_tile(UTM_TILE, demo["items"], recipe, settings)["red"]

    by_date = {_when(d).date().isoformat(): d for d in demo["docs"]}
    dates = sorted(by_date)
    assert len(dates) == 6
    assert result.descriptions == dates
    assert result.data.shape == (6, SIDE, SIDE) and result.data.dtype == np.uint16
    assert result.nodata == 0
    for band, date in enumerate(dates):
        red = _on_tile(_reflectance32(demo_dir, by_date[date], "red"), COL, ROW, SIDE, SIDE)
        scaled = np.rint(np.clip(red.astype(np.float64) * 65535.0, 0, 65535))
        expected = np.where(np.isnan(red), 0, np.clip(scaled, 1, 65535))
        np.testing.assert_array_equal(result.data[band], expected.astype(np.uint16))

    # Job-wide dates: a date without a scene over the tile is an empty band.
    wider = [*dates[:2], "2023-12-31"]
    result = process_tile(UTM_TILE, demo["items"], recipe, settings, stack_dates=wider)["red"]
    assert result.descriptions == wider and result.data.shape == (3, SIDE, SIDE)
    assert (result.data[2] == 0).all() and (result.data[0] > 0).any()


def _reprojected(
    demo_dir: Path, document: dict, asset: str, tile: GridTile, harmonize: bool = True
) -> np.ndarray:
    """rasterio.warp.reproject of a whole source band onto a tile (nearest), harmonized."""
    path = href(demo_dir, document, asset)
    with rasterio.open(path) as src:
        dn = src.read(1).astype(np.float32)
        dn[dn == 0] = np.nan
        out = np.full((tile.height, tile.width), np.nan, dtype=np.float32)
        reproject(
            dn,
            out,
            src_transform=src.transform,
            src_crs=src.crs,
            src_nodata=np.nan,
            dst_transform=tile.transform,
            dst_crs=tile.crs,
            dst_nodata=np.nan,
            resampling=Resampling.nearest,
        )
    if not harmonize:
        return out
    scale, offset = scale_offset(document, asset)
    return (out * np.float32(scale) + np.float32(offset)).astype(np.float32)


def _warped_tiles() -> list[GridTile]:
    to_34 = Transformer.from_crs("EPSG:32633", "EPSG:32634", always_xy=True)
    to_4326 = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    x, y = DEMO_LEFT + 300, DEMO_TOP - 300  # inside the demo, near its corner
    lon, lat = to_4326.transform(x, y)
    x34, y34 = to_34.transform(x, y)
    return [
        GridTile(
            "3",
            "wgs84-test",
            "EPSG:4326",
            Affine(0.0001, 0.0, round(lon, 4), 0.0, -0.0001, round(lat, 4)),
            width=400,
            height=260,
            resolution=0.0001,
        ),
        GridTile(
            "1",
            "34-test",
            "EPSG:32634",
            Affine(10.0, 0.0, round(x34, -1), 0.0, -10.0, round(y34, -1)),
            width=240,
            height=240,
            resolution=10.0,
        ),
    ]


@pytest.mark.parametrize("tile", _warped_tiles(), ids=lambda t: t.crs)
def test_tiles_in_other_crs_match_a_reprojection_of_the_source(
    tile: GridTile, demo: dict, demo_dir: Path, settings: Settings
):
    recipe = TileRecipe(
        outputs=(
            OutputSpec("red", "red", composite="max"),
            OutputSpec("ndvi", NDVI, mask="scl-clear"),
        )
    )

    result = process_tile(tile, demo["items"], recipe, settings)

    red = np.full((tile.height, tile.width), np.nan, dtype=np.float32)
    ndvi = np.full((tile.height, tile.width), np.nan, dtype=np.float32)
    for document in _newest_first(demo["docs"]):
        bands = {name: _reprojected(demo_dir, document, name, tile) for name in ("red", "nir")}
        red = np.fmax(red, bands["red"])
        scl = _reprojected(demo_dir, document, "scl", tile, harmonize=False)
        with np.errstate(all="ignore"):
            red64, nir64 = bands["red"].astype(np.float64), bands["nir"].astype(np.float64)
            values = ((nir64 - red64) / (nir64 + red64)).astype(np.float32)
        values[np.isnan(scl) | np.isin(scl, SCL_MASKED)] = np.nan
        take = np.isnan(ndvi) & ~np.isnan(values)
        ndvi[take] = values[take]
    # Nearest neighbour through the same warper: the same source pixels everywhere.
    np.testing.assert_array_equal(result["red"].data[0], red)
    np.testing.assert_array_equal(result["ndvi"].data[0], ndvi)
    assert result["ndvi"].data.shape == (1, tile.height, tile.width)
    assert 0.5 < (~np.isnan(ndvi)).mean() < 1  # the tile reaches past the demo's edge


def test_coarser_tiles_read_the_overviews(demo: dict, demo_dir: Path, settings: Settings):
    document = demo["docs"][0]
    item = next(i for i in demo["items"] if i.id == document["id"])
    scale, offset = scale_offset(document, "red")
    with rasterio.open(href(demo_dir, document, "red"), overview_level=0) as overview:
        half = overview.read(1)  # the COG's own 20 m overview of its 10 m band
    full = read(demo_dir, document, "red").astype(np.float64)

    def tile(resolution: int) -> GridTile:
        side = DEMO_SIZE * 10 // resolution
        transform = Affine(resolution, 0, DEMO_LEFT, 0, -resolution, DEMO_TOP)
        return GridTile("0", f"r{resolution}", "EPSG:32633", transform, side, side, resolution)

    nearest = TileRecipe(outputs=(OutputSpec("red", "red"),), resampling="nearest")
    at_20 = process_tile(tile(20), [item], nearest, settings)["red"].data[0]
    expected = half.astype(np.float32) * np.float32(scale) + np.float32(offset)
    np.testing.assert_array_equal(at_20, expected)

    average = TileRecipe(outputs=(OutputSpec("red", "red"),), resampling="average")
    at_40 = process_tile(tile(40), [item], average, settings)["red"].data[0]
    blocks = full.reshape(64, 4, 64, 4).mean(axis=(1, 3)) * scale + offset
    # The mean of 4 x 4 source pixels, to the rounding of the overview's DN (1 DN = 1e-4).
    np.testing.assert_allclose(at_40, blocks, atol=1.01e-4)


def test_first_stops_reading_once_the_tile_is_full(
    demo: dict, settings: Settings, monkeypatch: pytest.MonkeyPatch
):
    opened: list[str] = []
    original = DatasetPool.open

    def spying(self, source):
        opened.append(source)
        return original(self, source)

    monkeypatch.setattr(DatasetPool, "open", spying)
    inside = GridTile(
        "1", "in", "EPSG:32633", Affine(10, 0, DEMO_LEFT, 0, -10, DEMO_TOP), 64, 64, 10
    )
    recipe = TileRecipe(outputs=(OutputSpec("red", "red"),))

    result = process_tile(inside, demo["items"], recipe, settings)["red"]

    assert not np.isnan(result.data).any()
    assert len(opened) == 1  # the newest scene covered every pixel: no other scene read


def test_items_off_the_tile_are_not_read(
    demo: dict, settings: Settings, monkeypatch: pytest.MonkeyPatch
):
    opened: list[str] = []
    original = DatasetPool.open
    monkeypatch.setattr(
        DatasetPool, "open", lambda self, source: opened.append(source) or original(self, source)
    )
    far = GridTile("1", "far", "EPSG:32633", Affine(10, 0, 400000, 0, -10, 5100000), 50, 50, 10)
    recipe = TileRecipe(outputs=(OutputSpec("ndvi", NDVI, composite="median"),))

    result = process_tile(far, demo["items"], recipe, settings)["ndvi"]

    assert opened == [] and np.isnan(result.data).all()


def _with_red(document: dict, demo_dir: Path, red_href: str) -> pystac.Item:
    changed = json.loads(json.dumps(document))
    for key, asset in changed["assets"].items():
        asset["href"] = str(href(demo_dir, document, key))
    changed["assets"]["red"]["href"] = red_href
    changed["links"] = []
    return pystac.Item.from_dict(changed)


def test_a_broken_asset_is_a_tile_read_error(demo: dict, demo_dir: Path, settings: Settings):
    broken = Path(settings.data_dir) / "broken" / "B04.tif"
    broken.parent.mkdir(parents=True, exist_ok=True)
    broken.write_bytes(b"II*\x00 this is not a GeoTIFF" * 10)
    item = _with_red(demo["docs"][0], demo_dir, str(broken))
    recipe = TileRecipe(outputs=(OutputSpec("ndvi", NDVI, mask="scl-clear"),))

    with pytest.raises(TileReadError) as caught:
        process_tile(UTM_TILE, [item], recipe, settings)

    message = str(caught.value)
    assert f"item '{item.id}' asset 'red'" in message and "read failed" in message
    assert str(settings.data_dir) not in message  # this machine's folders are not shown


def test_an_href_outside_the_allow_list_is_refused_before_any_read(
    demo: dict,
    demo_dir: Path,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    outside = tmp_path / "B04.tif"
    outside.write_bytes((href(demo_dir, demo["docs"][0], "red")).read_bytes())
    item = _with_red(demo["docs"][0], demo_dir, str(outside))
    opened: list[str] = []
    original = DatasetPool.open
    monkeypatch.setattr(
        DatasetPool, "open", lambda self, source: opened.append(source) or original(self, source)
    )
    recipe = TileRecipe(outputs=(OutputSpec("red", "red"),))

    with pytest.raises(TileReadError) as caught:
        process_tile(UTM_TILE, [item], recipe, settings)

    assert f"item '{item.id}' asset 'red'" in str(caught.value)
    assert "not in the allowed sources" in str(caught.value)
    assert opened == []


def test_finish_rescales_clips_and_casts_with_nodata():
    values = np.array([[[np.nan, -1.0, -0.2, 0.5, 0.9, 2.0]]], dtype=np.float32)

    data, nodata = finish(values, OutputSpec("x", "red", "uint8", 0, (-0.2, 0.9)))
    assert nodata == 0 and data.dtype == np.uint8
    # -1 and -0.2 map to 0, which is nodata: valid values stay one step inside (1).
    assert data.tolist() == [[[0, 1, 1, 162, 255, 255]]]

    data, nodata = finish(values, OutputSpec("x", "red", "uint16", 65535))
    assert data.tolist() == [[[65535, 0, 0, 0, 1, 2]]] and nodata == 65535

    data, nodata = finish(values, OutputSpec("x", "red", "float32"))
    assert nodata is None and np.isnan(data[0, 0, 0]) and data[0, 0, 5] == 2.0

    data, nodata = finish(values, OutputSpec("x", "red", "float32", -9999.0))
    assert data[0, 0, 0] == -9999.0 and nodata == -9999.0


def test_estimate_tile_bytes():
    recipe = TileRecipe(
        outputs=(
            OutputSpec("ndvi", NDVI, mask="scl-clear"),
            OutputSpec("red", "B04", composite="median"),
        )
    )
    # red, nir (2 bytes) and the SCL (1 byte) per pixel, per scene.
    assert estimate_tile_bytes(UTM_TILE, recipe, 12) == SIDE * SIDE * 5 * 12
    assert estimate_tile_bytes(UTM_TILE, recipe, 0) == 0


def test_write_cog_is_a_valid_cog_with_overviews_nodata_and_descriptions(
    demo: dict, settings: Settings, tmp_path: Path
):
    tile = GridTile(
        "1", "big", "EPSG:32633", Affine(10, 0, DEMO_LEFT, 0, -10, DEMO_TOP), 300, 300, 10
    )
    recipe = TileRecipe(
        outputs=(
            OutputSpec("ndvi", NDVI, mask="scl-clear"),
            OutputSpec("red", "red", composite="stack", data_type="uint16", rescale=(0, 1)),
        )
    )
    rasters = process_tile(tile, demo["items"], recipe, settings)
    storage = Storage.for_url(str(tmp_path))
    params = {"blockxsize": 128, "blockysize": 128}

    for name, data_type in (("ndvi", "float32"), ("red", "uint16")):
        path = tmp_path / "out" / f"{name}.tif"
        write_cog(storage, str(path), rasters[name], tile, data_type, params)

        assert cog_validate(str(path)) == (True, [], [])
        with rasterio.open(path) as src:
            assert src.crs.to_epsg() == 32633 and src.transform == tile.transform
            assert (src.width, src.height) == (300, 300) and src.block_shapes[0] == (128, 128)
            assert src.overviews(1) == [2, 4]
            structure = src.tags(ns="IMAGE_STRUCTURE")
            assert structure["COMPRESSION"] in ("DEFLATE", "ZSTD")
            assert structure["PREDICTOR"] == ("3" if data_type == "float32" else "2")
            assert src.descriptions == tuple(rasters[name].descriptions)
            assert src.dtypes[0] == data_type
            data = src.read()
            if data_type == "float32":
                assert np.isnan(src.nodata)
                np.testing.assert_array_equal(data, rasters[name].data)
            else:
                assert src.nodata == 0
                np.testing.assert_array_equal(data, rasters[name].data)
    # Written atomically: no temporary left beside the files.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ndvi.tif", "red.tif"]


def test_write_cog_default_parameters_and_explicit_levels(tmp_path: Path):
    tile = GridTile("1", "t", "EPSG:32633", Affine(10, 0, 500000, 0, -10, 5100000), 1000, 1000, 10)
    raster = OutputRaster(np.arange(1_000_000, dtype=np.uint8).reshape(1, 1000, 1000), 0, ["x"])
    storage = Storage.for_url(str(tmp_path))

    write_cog(storage, str(tmp_path / "a.tif"), raster, tile, "uint8")
    write_cog(
        storage,
        str(tmp_path / "b.tif"),
        raster,
        tile,
        "uint8",
        {"overviewLevels": [2, 8], "resamplingAlgorithm": "nearest", "usePredictor": False},
    )

    with rasterio.open(tmp_path / "a.tif") as src:
        assert src.block_shapes[0] == (512, 512) and src.overviews(1) == [2]
        assert src.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == "2"
    with rasterio.open(tmp_path / "b.tif") as src:
        assert src.overviews(1) == [2, 8]
        assert "PREDICTOR" not in src.tags(ns="IMAGE_STRUCTURE")
        assert src.read(1, out_shape=(125, 125)).tolist() == raster.data[0, ::8, ::8].tolist()
    for name in ("a.tif", "b.tif"):
        assert cog_validate(str(tmp_path / name))[0]


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"overviewLevels": [4, 2]}, "overviewLevels"),
        ({"overviewLevels": [1]}, "overviewLevels"),
        ({"overviewLevels": "2,4"}, "overviewLevels"),
        ({"overviewMinSize": 0}, "overviewMinSize"),
        ({"overviewMinSize": "big"}, "overviewMinSize"),
        ({"resamplingAlgorithm": "bicubic"}, "resamplingAlgorithm"),
        ({"blockxsize": 100}, "blockxsize"),
        ({"blockxsize": 8192}, "blockxsize"),
        ({"blockxsize": 256, "blockysize": 512}, "blockysize"),
        ({"usePredictor": "yes"}, "usePredictor"),
        ({"compression": "LZW"}, "compression"),
    ],
)
def test_cog_parameters_are_validated(params: dict, key: str):
    with pytest.raises(BadRequestError) as caught:
        check_cog_parameters(params)
    assert caught.value.message.startswith(f"output.cogParameters.{key}:")


def test_cog_parameters_defaults_round_trip():
    checked = check_cog_parameters({"blockxsize": 256, "resamplingAlgorithm": "NEAREST"})
    assert checked == {
        "overviewLevels": None,
        "overviewMinSize": None,
        "resamplingAlgorithm": "nearest",
        "blockxsize": 256,
        "blockysize": 256,
        "usePredictor": True,
    }
    assert check_cog_parameters(checked) == checked
    assert check_cog_parameters(None)["blockxsize"] == 512


def test_write_cog_to_s3_on_a_local_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from moto.server import ThreadedMotoServer

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        options = {"client_kwargs": {"endpoint_url": f"http://{host}:{port}"}}
        storage = Storage.for_url("s3://tiles/job", options)
        storage.fs.mkdir("tiles")
        tile = GridTile("1", "t", "EPSG:32633", Affine(10, 0, 5e5, 0, -10, 5.1e6), 600, 600, 10)
        raster = OutputRaster(np.full((1, 600, 600), 7, np.uint16), 0, ["x"])

        write_cog(storage, "s3://tiles/job/t/x.tif", raster, tile, "uint16")

        assert storage.names("s3://tiles/job/t") == {"x.tif"}
        (tmp_path / "x.tif").write_bytes(storage.read("s3://tiles/job/t/x.tif"))
    finally:
        server.stop()
    assert cog_validate(str(tmp_path / "x.tif"))[0]
    with rasterio.open(tmp_path / "x.tif") as src:
        assert (src.read() == 7).all() and src.overviews(1) == [2]


def test_resampling_names():
    assert check_resampling("BICUBIC") == "cubic" and check_resampling("NEAREST") == "nearest"
    with pytest.raises(BadRequestError) as caught:
        check_resampling("sinc")
    assert caught.value.message.startswith("processRequest.resampling:")
