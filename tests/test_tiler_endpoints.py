"""The tiler endpoints test_tiler.py leaves out: bbox formats, the map viewer, tiling schemes,
statistics, STAC items and COGs by URL, the item cache and settings over HTTP."""

import io
import mimetypes
import re
from collections.abc import Iterator
from pathlib import Path

import demo_reads as demo
import morecantile
import numpy as np
import pytest
import rasterio
from fastapi.testclient import TestClient
from PIL import Image
from pyproj import Transformer
from rasterio.enums import Resampling
from rasterio.warp import transform_bounds
from rasterio.windows import Window, from_bounds

from app.main import create_app
from app.settings import Settings

ITEMS = "/collections/sentinel-2-l2a/items"
UTM = "epsg:32633"
NATIVE = {"coord_crs": UTM, "dst_crs": UTM}
NDVI = "(nir-red)/(nir+red)"
TO_LONLAT = Transformer.from_crs(32633, 4326, always_xy=True)


def _cloudiest(demo_dir: Path) -> dict:
    return max(demo.items(demo_dir), key=lambda i: i["properties"]["eo:cloud_cover"])


def _red(demo_dir: Path, item: dict) -> np.ndarray:
    with rasterio.open(demo.href(demo_dir, item, "red")) as src:
        return src.read(1)


def _grid_bounds(item: dict, col: int, row: int, width: int, height: int) -> tuple:
    """A bbox on the 10 m grid of an item: ``width`` x ``height`` pixels from (col, row)."""
    t = item["assets"]["red"]["proj:transform"]
    minx, maxy = t[2] + col * t[0], t[5] + row * t[4]
    return (minx, maxy + height * t[4], minx + width * t[0], maxy)


def _bbox_path(item: dict, bounds: tuple, suffix: str) -> str:
    return f"{ITEMS}/{item['id']}/bbox/{','.join(map(str, bounds))}{suffix}"


def _window(path: Path, bounds: tuple, **kwargs) -> np.ma.MaskedArray:
    with rasterio.open(path) as src:
        return src.read(1, window=from_bounds(*bounds, transform=src.transform), **kwargs)


def _ok(response):
    assert response.status_code == 200, response.text
    return response


def _npy(response) -> np.ndarray:
    return np.load(io.BytesIO(_ok(response).content))


def _assert_item_bounds(bounds: list[float], item: dict) -> None:
    """A TileJSON's bounds: the union of the item's asset grids (rio-tiler's rule), in lon/lat.

    Not exactly the item bbox: the demo's 60 m bands (43 px) reach 20 m past its 2560 m.
    """
    grids = [
        (a["proj:transform"], a["proj:shape"]) for a in item["assets"].values() if "proj:shape" in a
    ]
    union = (
        min(t[2] for t, _ in grids),
        min(t[5] + shape[0] * t[4] for t, shape in grids),
        max(t[2] + shape[1] * t[0] for t, shape in grids),
        max(t[5] for t, _ in grids),
    )
    expected = transform_bounds("EPSG:32633", "EPSG:4326", *union, densify_pts=21)
    np.testing.assert_allclose(bounds, expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(bounds, item["bbox"], rtol=0, atol=1e-3)


def _center_tile(tilejson: dict) -> morecantile.Tile:
    minx, miny, maxx, maxy = tilejson["bounds"]
    tms = morecantile.tms.get("WebMercatorQuad")
    return tms.tile((minx + maxx) / 2, (miny + maxy) / 2, tilejson["maxzoom"])


# --- 1. bbox crops in every output format ------------------------------------------------


@pytest.mark.parametrize(
    ("ext", "pil_format"), [("png", "PNG"), ("jpeg", "JPEG"), ("jpg", "JPEG"), ("webp", "WEBP")]
)
def test_bbox_image_formats(client, demo_dir, ext, pil_format):
    item = demo.items(demo_dir)[0]
    bounds = _grid_bounds(item, 40, 30, 96, 64)
    params = {"assets": "red", "rescale": "0,3000", **NATIVE}
    r = _ok(client.get(_bbox_path(item, bounds, f"/120x90.{ext}"), params=params))
    img = Image.open(io.BytesIO(r.content))
    assert (img.format, img.size) == (pil_format, (120, 90))
    assert r.headers["content-type"] == Image.MIME[pil_format]
    # At the native size (no /{w}x{h}), the pixels are the rescaled DN of a window read.
    r = _ok(client.get(_bbox_path(item, bounds, f".{ext}"), params=params))
    gray = np.asarray(Image.open(io.BytesIO(r.content)).convert("L"), dtype=float)
    expected = np.clip(_window(demo.href(demo_dir, item, "red"), bounds), 0, 3000) / 3000 * 255
    assert gray.shape == expected.shape == (64, 96)
    assert expected.std() > 5  # not a flat crop: the comparison below means something
    if ext == "png":  # lossless
        np.testing.assert_allclose(gray, expected, atol=1)
    else:  # lossy: close on average
        assert np.abs(gray - expected).mean() < 3


def test_jpg_is_served_as_image_jpeg(client, demo_dir):
    # titiler.core's ImageType.jpg says 'image/jpg', which is not a registered type.
    item = demo.items(demo_dir)[0]
    path = _bbox_path(item, _grid_bounds(item, 0, 0, 32, 32), ".jpg")
    r = _ok(client.get(path, params={"assets": "red", "rescale": "0,3000", **NATIVE}))
    assert Image.open(io.BytesIO(r.content)).format == "JPEG"
    assert r.headers["content-type"] == mimetypes.guess_type("x.jpg")[0] == "image/jpeg"


def test_bbox_tif_is_the_native_grid_and_dn(client, demo_dir):
    item = demo.swath_edge_item(demo_dir)
    red = demo.href(demo_dir, item, "red")
    band = _red(demo_dir, item)
    rows = np.nonzero((band == 0).any(axis=1) & (band != 0).any(axis=1))[0]
    bounds = _grid_bounds(item, 16, min(int(rows[0]), 256 - 48), 200, 48)  # a nodata edge
    r = _ok(client.get(_bbox_path(item, bounds, ".tif"), params={"assets": "red", **NATIVE}))
    assert r.headers["content-type"].startswith("image/tiff")
    with rasterio.MemoryFile(r.content) as memfile, memfile.open() as out:
        assert out.crs.to_epsg() == 32633
        data, mask = out.read(1), out.read(2)  # the data band, then the mask band
        transform = out.transform
    with rasterio.open(red) as src:
        window = from_bounds(*bounds, transform=src.transform)
        assert transform == src.window_transform(window)
        expected = src.read(1, window=window)
    assert data.shape == (48, 200)
    np.testing.assert_array_equal(data, expected)
    assert (expected == 0).any() and (expected != 0).any()
    np.testing.assert_array_equal(demo.valid(mask), expected != 0)


# --- 2. the map viewer and the tiling schemes ------------------------------------------


def test_map_viewer_links_a_working_tilejson(client, demo_dir):
    item = demo.items(demo_dir)[0]
    r = _ok(client.get(f"{ITEMS}/{item['id']}/WebMercatorQuad/map.html", params={"assets": "red"}))
    assert r.headers["content-type"].startswith("text/html")
    urls = re.findall(r"""['"](https?://[^'"]*/tilejson\.json[^'"]*)['"]""", r.text)
    assert urls, r.text[:500]
    url = urls[0].split("://", 1)[1].split("/", 1)[1]
    assert url.startswith(f"collections/sentinel-2-l2a/items/{item['id']}/WebMercatorQuad/")
    assert "assets=red" in url
    tilejson = _ok(client.get("/" + url)).json()
    _assert_item_bounds(tilejson["bounds"], item)


def test_tile_matrix_sets(client):
    listed = _ok(client.get("/tileMatrixSets")).json()["tileMatrixSets"]
    assert "WebMercatorQuad" in {tms["id"] for tms in listed}
    assert {tms["id"] for tms in listed} == set(morecantile.tms.list())
    body = _ok(client.get("/tileMatrixSets/WebMercatorQuad")).json()
    expected = morecantile.tms.get("WebMercatorQuad")
    assert body["id"] == "WebMercatorQuad"
    assert len(body["tileMatrices"]) == len(expected.tileMatrices)
    for got, want in zip(body["tileMatrices"], expected.tileMatrices, strict=True):
        assert got["scaleDenominator"] == pytest.approx(want.scaleDenominator)
        assert (got["matrixWidth"], got["tileWidth"]) == (want.matrixWidth, want.tileWidth)


# --- 3. statistics -----------------------------------------------------------------------


def _assert_stats(stats: dict, expected: np.ma.MaskedArray, rtol: float = 1e-9) -> None:
    assert np.ma.count(expected) and np.ma.count_masked(expected)  # both kinds exist
    assert stats["valid_pixels"] == stats["count"] == np.ma.count(expected)
    assert stats["min"] == pytest.approx(float(expected.min()), rel=rtol)
    assert stats["max"] == pytest.approx(float(expected.max()), rel=rtol)
    assert stats["mean"] == pytest.approx(float(expected.astype("float64").mean()), rel=rtol)


def test_get_statistics_raw_dn_and_harmonized(client, demo_dir):
    item = demo.swath_edge_item(demo_dir)
    with rasterio.open(demo.href(demo_dir, item, "red")) as src:
        dn = src.read(1, masked=True)  # 256 px: the 1024 px preview reads it whole
    url = f"{ITEMS}/{item['id']}"
    (raw,) = _ok(client.get(f"{url}/statistics", params={"assets": "red"})).json().values()
    _assert_stats(raw, dn)
    assert raw["masked_pixels"] == np.ma.count_masked(dn)
    per_asset = _ok(client.get(f"{url}/asset_statistics", params={"assets": "red"})).json()
    assert list(per_asset) == ["red"]
    _assert_stats(per_asset["red"]["b1"], dn)

    scale, offset = demo.scale_offset(item, "red")
    reflectance = dn.astype("float64") * scale + offset
    for params in ({"assets": "red", "harmonize": "true"}, {"expression": "red"}):
        (stats,) = _ok(client.get(f"{url}/statistics", params=params)).json().values()
        _assert_stats(stats, reflectance, rtol=1e-6)  # float32 data


def test_post_statistics_of_a_lonlat_polygon(client, demo_dir):
    item = demo.swath_edge_item(demo_dir)
    bounds = _grid_bounds(item, 20, 20, 200, 180)
    # The rectangle of those pixels, 0.25 m inside: every rule (pixel centre, all-touched,
    # rio-tiler's 1/10 px coverage) selects the same pixels whatever the float error of a
    # round trip through lon/lat, each fully covered.
    minx, miny, maxx, maxy = bounds[0] + 0.25, bounds[1] + 0.25, bounds[2] - 0.25, bounds[3] - 0.25
    ring = [(minx, miny), (maxx, miny), (maxx, maxy), (minx, maxy), (minx, miny)]
    feature = {
        "type": "Feature",
        "properties": {"name": "field"},
        "geometry": {"type": "Polygon", "coordinates": [[TO_LONLAT.transform(*p) for p in ring]]},
    }
    expected = _window(demo.href(demo_dir, item, "red"), bounds, masked=True)
    # The scene's native grid by default (DESIGN: statistics never on resampled pixels),
    # and the same when asked for explicitly.
    for params in [{"assets": "red"}, {"assets": "red", "dst_crs": UTM}]:
        r = _ok(client.post(f"{ITEMS}/{item['id']}/statistics", params=params, json=feature))
        body = r.json()
        assert body["properties"]["name"] == "field"
        (stats,) = body["properties"]["statistics"].values()
        _assert_stats(stats, expected, rtol=1e-6)  # float32 coverage weights
        assert stats["sum"] == pytest.approx(float(expected.sum()))
    # Asked for lon/lat, the pixels are resampled: a different grid, other counts.
    params = {"assets": "red", "dst_crs": "epsg:4326"}
    r = _ok(client.post(f"{ITEMS}/{item['id']}/statistics", params=params, json=feature))
    (lonlat,) = r.json()["properties"]["statistics"].values()
    assert lonlat["count"] != stats["count"]


# --- 4. a STAC item by URL ---------------------------------------------------------------


def test_stac_item_by_url_matches_the_catalog_route(client, demo_dir):
    item = _cloudiest(demo_dir)
    url = str(demo_dir / "items" / f"{item['id']}.json")
    params = {"url": url, "assets": "red"}
    tilejson = _ok(client.get("/stac/WebMercatorQuad/tilejson.json", params=params)).json()
    _assert_item_bounds(tilejson["bounds"], item)
    tile = _center_tile(tilejson)
    params = {"url": url, "preset": "true-color"}
    r = _ok(
        client.get(f"/stac/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.png", params=params)
    )
    assert r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size == (256, 256)

    bounds = ",".join(map(str, _grid_bounds(item, 10, 10, 120, 100)))
    params = {"expression": NDVI, "mask": "scl-clear", **NATIVE}
    by_url = _npy(client.get(f"/stac/bbox/{bounds}.npy", params={"url": url, **params}))
    by_id = _npy(client.get(f"{ITEMS}/{item['id']}/bbox/{bounds}.npy", params=params))
    assert demo.valid(by_url[-1]).any() and not demo.valid(by_url[-1]).all()
    assert by_url.dtype == by_id.dtype
    np.testing.assert_array_equal(by_url, by_id)


# --- 5. a COG by URL ---------------------------------------------------------------------


def test_cog_by_url(client, demo_dir):
    item = demo.swath_edge_item(demo_dir)
    cog = demo.href(demo_dir, item, "red")
    url = str(cog)
    tilejson = _ok(client.get("/cog/WebMercatorQuad/tilejson.json", params={"url": url})).json()
    tile = _center_tile(tilejson)
    params = {"url": url, "rescale": "0,3000"}
    r = _ok(client.get(f"/cog/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.png", params=params))
    assert Image.open(io.BytesIO(r.content)).size == (256, 256)

    bounds = _grid_bounds(item, 0, 100, 256, 60)
    path = f"/cog/bbox/{','.join(map(str, bounds))}.npy"
    data = _npy(client.get(path, params={"url": url, **NATIVE}))
    expected = _window(cog, bounds)
    assert (expected == 0).any() and (expected != 0).any()
    assert data.shape == (2, *expected.shape)
    np.testing.assert_array_equal(data[0], expected)
    np.testing.assert_array_equal(demo.valid(data[1]), expected != 0)

    with rasterio.open(cog) as src:
        band = src.read(1)
        rows, cols = np.nonzero(band)
        row, col = int(rows[len(rows) // 3]), int(cols[len(cols) // 3])
        lon, lat = TO_LONLAT.transform(*src.xy(row, col))
        # The value at the coordinate, sampled by rasterio after transforming it back.
        x, y = Transformer.from_crs(4326, 32633, always_xy=True).transform(lon, lat)
        (value,) = next(src.sample([(x, y)]))
    assert value == band[row, col] != 0
    r = _ok(client.get(f"/cog/point/{lon},{lat}", params={"url": url}))
    assert r.json()["values"] == [int(value)]
    r = _ok(client.get(f"/cog/point/{lon},{lat}", params={"url": url, "expression": "b1*2"}))
    assert r.json()["values"] == [pytest.approx(2.0 * value)]


# --- 6 and 7: an app of its own: the item cache, settings over HTTP ---------------------

CUSTOM = {"cache_control": "private, max-age=17", "scl_mask_classes": [8, 9]}


@pytest.fixture(scope="module")
def custom_client(
    demo_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    """One more app, over the same demo catalog, with CUSTOM settings."""
    settings = demo_settings.model_copy(
        update={**CUSTOM, "data_dir": tmp_path_factory.mktemp("custom-data")}
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_item_cache_fetches_an_item_once(custom_client, demo_dir):
    first, second = (item["id"] for item in demo.items(demo_dir)[:2])
    services = custom_client.app.state.services
    cache = services.item_cache
    catalog = cache.catalog
    assert catalog is services.catalog
    calls: list[str] = []
    get_item = catalog.get_item

    def counting_get_item(collection_id: str, item_id: str):
        calls.append(item_id)
        return get_item(collection_id, item_id)

    cache.clear()
    catalog.get_item = counting_get_item
    try:
        for path in ("info", "WebMercatorQuad/tilejson.json", "statistics", "info"):
            _ok(custom_client.get(f"{ITEMS}/{first}/{path}", params={"assets": "red"}))
        assert calls == [first]
        _ok(custom_client.get(f"{ITEMS}/{second}/info", params={"assets": "red"}))
        _ok(custom_client.get(f"{ITEMS}/{first}/info", params={"assets": "red"}))
        assert calls == [first, second]
    finally:
        del catalog.get_item  # back to the class's method


def test_cache_control_setting(client, custom_client, demo_dir):
    item = demo.items(demo_dir)[0]
    path = _bbox_path(item, _grid_bounds(item, 0, 0, 32, 32), ".png")
    params = {"assets": "red", "rescale": "0,3000", **NATIVE}
    default = _ok(client.get(path, params=params)).headers["cache-control"]
    custom = _ok(custom_client.get(path, params=params)).headers["cache-control"]
    assert default == Settings.model_fields["cache_control"].default
    assert custom == CUSTOM["cache_control"] != default


def test_scl_mask_classes_setting(client, custom_client, demo_dir, demo_settings):
    cloudy = _cloudiest(demo_dir)
    path = _bbox_path(cloudy, _grid_bounds(cloudy, 0, 0, 256, 256), ".npy")
    params = {"assets": "red", "mask": "scl-clear", **NATIVE}
    narrowed = _npy(custom_client.get(path, params=params))
    default = _npy(client.get(path, params=params))
    with rasterio.open(demo.href(demo_dir, cloudy, "scl")) as src:  # 20 m: x2 onto 10 m
        scl = np.repeat(np.repeat(src.read(1), 2, axis=0), 2, axis=1)
    assert scl.shape == narrowed.shape[1:]
    clouds = np.isin(scl, CUSTOM["scl_mask_classes"])
    assert clouds.any() and (~clouds).any()
    np.testing.assert_array_equal(~demo.valid(narrowed[-1]), clouds)
    np.testing.assert_array_equal(
        ~demo.valid(default[-1]), np.isin(scl, demo_settings.scl_mask_classes)
    )
    assert (~demo.valid(default[-1]) & ~clouds).any()  # the default masks more than clouds
    np.testing.assert_array_equal(narrowed[0], default[0])  # the same data under the masks


# --- 8. SCL stays nearest when the bands are resampled -----------------------------------


def test_scl_mask_is_nearest_when_bands_resample_bilinear(client, demo_dir, demo_settings):
    cloudy = _cloudiest(demo_dir)
    bounds = _grid_bounds(cloudy, 40, 40, 64, 48)  # on the 20 m grid too
    size = (160, 120)  # 2.5x: 4 m pixels, whose centres never fall on a 20 m edge
    path = _bbox_path(cloudy, bounds, f"/{size[0]}x{size[1]}.npy")
    params = {"assets": "red", "mask": "scl-clear", **NATIVE}
    nearest = _npy(client.get(path, params=params))
    bilinear = _npy(client.get(path, params={**params, "resampling": "bilinear"}))
    assert nearest.shape == bilinear.shape == (2, size[1], size[0])

    classes = demo_settings.scl_mask_classes
    with rasterio.open(demo.href(demo_dir, cloudy, "scl")) as src:
        window = from_bounds(*bounds, transform=src.transform)
        assert window == Window(20, 20, 32, 24)
        read = {
            method: src.read(1, window=window, out_shape=size[::-1], resampling=method)
            for method in (Resampling.nearest, Resampling.bilinear)
        }
    invalid = np.isin(read[Resampling.nearest], classes)
    assert invalid.any() and (~invalid).any()
    # A bilinear SCL (blended class numbers) would mask other pixels: the test can tell.
    assert (np.isin(read[Resampling.bilinear], classes) != invalid).any()
    np.testing.assert_array_equal(~demo.valid(nearest[-1]), invalid)
    np.testing.assert_array_equal(~demo.valid(bilinear[-1]), invalid)

    valid = ~invalid
    assert (bilinear[0][valid] != nearest[0][valid]).any()
    # Bilinear values blend neighbours: within the range of the window and a pixel around.
    dn = _window(demo.href(demo_dir, cloudy, "red"), _grid_bounds(cloudy, 39, 39, 66, 50))
    assert dn.min() <= bilinear[0][valid].min() and bilinear[0][valid].max() <= dn.max()


@pytest.mark.parametrize(
    "options",
    [
        {"resampling": "bilinear"},
        {"resampling": "bilinear", "max_size": 200},
        # a nodata for the uint16 bands is no uint8 SCL value: SCL is read apart, without it
        {"nodata": 60000},
    ],
)
def test_scl_read_apart_from_the_bands_is_on_their_grid(client, demo_dir, demo_settings, options):
    """When the SCL cannot be read with the bands (they resample, or carry a nodata), it is
    read apart: at the bands' size even when max_size alone sizes the read, each asset by
    its own grid (20 m SCL came out half the size of 10 m bands: a 500)."""
    cloudy = _cloudiest(demo_dir)
    params = {"assets": "red", "mask": "scl-clear", **options}
    preview = _npy(client.get(f"{ITEMS}/{cloudy['id']}/preview.npy", params=params))
    with rasterio.open(demo.href(demo_dir, cloudy, "red")) as src:
        native = (src.height, src.width)
        assert not (src.read(1) == 60000).any()
    max_size = options.get("max_size")
    size = native if max_size is None else (max_size, max_size)
    assert preview.shape == (2, *size)
    with rasterio.open(demo.href(demo_dir, cloudy, "scl")) as src:
        scl = src.read(1, out_shape=size, resampling=Resampling.nearest)
    invalid = np.isin(scl, demo_settings.scl_mask_classes)
    assert invalid.any() and (~invalid).any()
    np.testing.assert_array_equal(~demo.valid(preview[-1]), invalid)
