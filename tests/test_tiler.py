"""Tiles, crops, points and band math of catalog items, STAC items and COGs."""

import io
from pathlib import Path

import demo_reads as demo
import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.windows import from_bounds

from app.expressions import get_preset

ITEMS = "/collections/sentinel-2-l2a/items"
NDVI = "(nir-red)/(nir+red)"


def _reflectance(demo_dir: Path, item: dict, asset: str, bounds) -> np.ma.MaskedArray:
    """Independent harmonized read: a rasterio window, DN * scale + offset."""
    scale, offset = demo.scale_offset(item, asset)
    with rasterio.open(demo.href(demo_dir, item, asset)) as src:
        dn = src.read(1, window=from_bounds(*bounds, transform=src.transform), masked=True)
    return dn.astype("float64") * scale + offset


def _item_with_flag(demo_dir: Path, applied: bool) -> dict:
    return next(
        i
        for i in demo.items(demo_dir)
        if i["properties"]["earthsearch:boa_offset_applied"] is applied
    )


def _crop_bounds(item: dict, px: int = 40, size: tuple[int, int] = (96, 64)) -> tuple:
    """A bbox on the 10 m grid of an item, ``px`` pixels in from its top-left corner."""
    t = item["assets"]["red"]["proj:transform"]
    minx = t[2] + px * t[0]
    maxy = t[5] + px * t[4]
    return (minx, maxy + size[1] * t[4], minx + size[0] * t[0], maxy)


def _npy(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.load(io.BytesIO(response.content))


def test_demo_has_both_baselines(demo_dir):
    flags = {i["properties"]["earthsearch:boa_offset_applied"] for i in demo.items(demo_dir)}
    assert flags == {True, False}


@pytest.mark.parametrize("case", ["offset applied", "offset not applied", "swath edge"])
def test_ndvi_crop_matches_rasterio(client, demo_dir, case):
    if case == "swath edge":
        item = demo.swath_edge_item(demo_dir)
        t = item["assets"]["red"]["proj:transform"]
        shape = item["assets"]["red"]["proj:shape"]
        bounds = _crop_bounds(item, px=0, size=(shape[1], shape[0]))
    else:
        item = _item_with_flag(demo_dir, case == "offset applied")
        bounds = _crop_bounds(item)
    r = client.get(
        f"{ITEMS}/{item['id']}/bbox/{','.join(map(str, bounds))}.npy",
        params={"expression": NDVI, "coord_crs": "epsg:32633", "dst_crs": "epsg:32633"},
    )
    data = _npy(r)
    red = _reflectance(demo_dir, item, "red", bounds)
    nir = _reflectance(demo_dir, item, "nir", bounds)
    expected = (nir - red) / (nir + red)
    # .npy is the data bands then the mask band (0 where nodata), on the native 10 m grid.
    if case == "swath edge":
        assert data.shape == (2, *expected.shape) == (2, shape[0], shape[1])
        assert abs(t[0]) == 10
        # The mask band must see both sides of the edge for the comparison to mean anything.
        assert np.ma.getmaskarray(expected).any() and not np.ma.getmaskarray(expected).all()
    else:
        assert data.shape == (2, *expected.shape) == (2, 64, 96)
    valid = demo.valid(data[-1])
    np.testing.assert_array_equal(valid, ~np.ma.getmaskarray(expected))
    np.testing.assert_allclose(data[0][valid], expected.compressed(), rtol=0, atol=1e-6)


def test_harmonize_off_gives_dn_math(client, demo_dir):
    item = _item_with_flag(demo_dir, False)  # DN still carry ESA's +1000
    bounds = _crop_bounds(item)
    r = client.get(
        f"{ITEMS}/{item['id']}/bbox/{','.join(map(str, bounds))}.npy",
        params={
            "expression": NDVI,
            "harmonize": "false",
            "coord_crs": "epsg:32633",
            "dst_crs": "epsg:32633",
        },
    )
    data = _npy(r)
    with rasterio.open(demo.href(demo_dir, item, "red")) as src:
        red = src.read(1, window=from_bounds(*bounds, transform=src.transform)).astype(float)
    with rasterio.open(demo.href(demo_dir, item, "nir")) as src:
        nir = src.read(1, window=from_bounds(*bounds, transform=src.transform)).astype(float)
    valid = demo.valid(data[-1])
    np.testing.assert_allclose(
        data[0][valid], ((nir - red) / (nir + red))[valid], rtol=0, atol=1e-6
    )
    # On raw DN with the +1000 offset, NDVI is biased low: harmonization matters.
    harmonized = _npy(
        client.get(
            f"{ITEMS}/{item['id']}/bbox/{','.join(map(str, bounds))}.npy",
            params={"expression": NDVI, "coord_crs": "epsg:32633", "dst_crs": "epsg:32633"},
        )
    )
    assert np.mean(harmonized[0][valid]) > np.mean(data[0][valid]) + 0.01


def test_band_names_alias_common_names(client, demo_dir):
    item = demo.items(demo_dir)[0]
    bounds = ",".join(map(str, _crop_bounds(item)))
    params = {"coord_crs": "epsg:32633", "dst_crs": "epsg:32633"}
    common = _npy(
        client.get(f"{ITEMS}/{item['id']}/bbox/{bounds}.npy", params={**params, "expression": NDVI})
    )
    bands = _npy(
        client.get(
            f"{ITEMS}/{item['id']}/bbox/{bounds}.npy",
            params={**params, "expression": "(B08-B04)/(B08+B04)"},
        )
    )
    np.testing.assert_array_equal(common, bands)


def test_scl_clear_masks_exactly_the_scl_classes(client, demo_dir, demo_settings):
    cloudy = max(demo.items(demo_dir), key=lambda i: i["properties"]["eo:cloud_cover"])
    assert cloudy["properties"]["eo:cloud_cover"] > 5
    bounds = _crop_bounds(cloudy, px=0, size=(256, 256))
    r = client.get(
        f"{ITEMS}/{cloudy['id']}/bbox/{','.join(map(str, bounds))}.npy",
        params={
            "assets": "red",
            "mask": "scl-clear",
            "coord_crs": "epsg:32633",
            "dst_crs": "epsg:32633",
        },
    )
    data = _npy(r)
    with rasterio.open(demo.href(demo_dir, cloudy, "scl")) as src:
        scl = src.read(1)
    scl10 = np.repeat(np.repeat(scl, 2, axis=0), 2, axis=1)[: data.shape[1], : data.shape[2]]
    invalid = np.isin(scl10, demo_settings.scl_mask_classes)
    assert invalid.any() and (~invalid).any()
    np.testing.assert_array_equal(~demo.valid(data[-1]), invalid)

    # Without a mask only nodata is masked; with scl-clear, nodata too (SCL class 0).
    edge = demo.swath_edge_item(demo_dir)
    edge_bounds = ",".join(map(str, _crop_bounds(edge, px=0, size=(256, 256))))
    with rasterio.open(demo.href(demo_dir, edge, "red")) as src:
        nodata = src.read(1) == 0
    assert nodata.any() and not nodata.all()
    params = {"assets": "red", "coord_crs": "epsg:32633", "dst_crs": "epsg:32633"}
    unmasked = _npy(client.get(f"{ITEMS}/{edge['id']}/bbox/{edge_bounds}.npy", params=params))
    np.testing.assert_array_equal(~demo.valid(unmasked[-1]), nodata)
    masked = _npy(
        client.get(
            f"{ITEMS}/{edge['id']}/bbox/{edge_bounds}.npy", params={**params, "mask": "scl-clear"}
        )
    )
    assert (~demo.valid(masked[-1]))[nodata].all()


def test_tiles_decode_at_requested_size_and_format(client, demo_dir):
    item = demo.items(demo_dir)[0]
    tj = client.get(
        f"{ITEMS}/{item['id']}/WebMercatorQuad/tilejson.json", params={"preset": "ndvi"}
    ).json()
    np.testing.assert_allclose(tj["bounds"], item["bbox"], atol=1e-3)
    z = tj["maxzoom"]
    import morecantile

    tms = morecantile.tms.get("WebMercatorQuad")
    lon = (tj["bounds"][0] + tj["bounds"][2]) / 2
    lat = (tj["bounds"][1] + tj["bounds"][3]) / 2
    tile = tms.tile(lon, lat, z)
    path = f"{ITEMS}/{item['id']}/tiles/WebMercatorQuad/{z}/{tile.x}/{tile.y}"
    for suffix, fmt, size in [
        (".png", "PNG", 256),
        (".webp", "WEBP", 256),
        ("@2x.png", "PNG", 512),
        (".jpg", "JPEG", 256),
    ]:
        r = client.get(path + suffix, params={"preset": "true-color"})
        assert r.status_code == 200, r.text
        img = Image.open(io.BytesIO(r.content))
        assert (img.format, img.size) == (fmt, (size, size))
    assert "max-age" in r.headers["cache-control"]
    # The template in the tilejson is usable as is.
    assert tj["tiles"][0].split("?")[0].endswith("/tiles/WebMercatorQuad/{z}/{x}/{y}")


@pytest.mark.parametrize("preset", ["true-color", "false-color", "ndvi", "ndwi", "ndmi", "scl"])
def test_presets_render(client, demo_dir, preset):
    item = demo.items(demo_dir)[0]
    r = client.get(f"{ITEMS}/{item['id']}/preview.png", params={"preset": preset, "max_size": 128})
    assert r.status_code == 200, r.text
    img = Image.open(io.BytesIO(r.content))
    assert max(img.size) == 128
    assert np.asarray(img).std() > 0  # not a blank image


def test_explicit_parameters_override_preset(client, demo_dir):
    item = demo.items(demo_dir)[0]
    bounds = ",".join(map(str, _crop_bounds(item)))
    params = {"coord_crs": "epsg:32633", "dst_crs": "epsg:32633"}
    ndvi = get_preset("ndvi")
    preset = _npy(
        client.get(
            f"{ITEMS}/{item['id']}/bbox/{bounds}.npy",
            params={**params, "preset": "ndvi", "expression": "nir"},
        )
    )
    explicit = _npy(
        client.get(
            f"{ITEMS}/{item['id']}/bbox/{bounds}.npy",
            params={
                **params,
                "expression": "nir",
                "colormap_name": ndvi.colormap_name,
                "rescale": ",".join(map(str, ndvi.rescale[0])),
            },
        )
    )
    np.testing.assert_array_equal(preset, explicit)
    assert preset.shape[0] == 4  # RGBA: the preset's colormap still applies
    r = client.get(f"{ITEMS}/{item['id']}/preview.png", params={"preset": "nope"})
    assert r.status_code == 400 and "preset" in r.json()["detail"]


def test_point_values_equal_rasterio(client, demo_dir):
    item = demo.items(demo_dir)[0]
    href = demo.href(demo_dir, item, "red")
    with rasterio.open(href) as src:
        row, col = 37, 91
        x, y = src.xy(row, col)
        expected_red = int(src.read(1)[row, col])
    from pyproj import Transformer

    lon, lat = Transformer.from_crs(32633, 4326, always_xy=True).transform(x, y)
    r = client.get(f"{ITEMS}/{item['id']}/point/{lon},{lat}", params={"assets": "red"})
    assert r.status_code == 200, r.text
    assert r.json()["values"] == [expected_red]
    r = client.get(f"{ITEMS}/{item['id']}/point/{lon},{lat}", params={"expression": NDVI})
    scale, offset = demo.scale_offset(item, "red")
    with rasterio.open(demo.href(demo_dir, item, "nir")) as src:
        nir = int(src.read(1)[row, col]) * scale + offset
    red = expected_red * scale + offset
    assert r.json()["values"][0] == pytest.approx((nir - red) / (nir + red), abs=1e-6)


def test_stac_by_url_and_cog_by_path(client, demo_dir):
    item = demo.items(demo_dir)[0]
    item_path = demo_dir / "items" / f"{item['id']}.json"
    r = client.get("/stac/info", params={"url": str(item_path), "assets": "B04"})
    assert r.status_code == 200, r.text
    assert r.json()["red"]["dtype"] == "uint16"
    cog = demo.href(demo_dir, item, "red")
    r = client.get("/cog/info", params={"url": str(cog)})
    assert r.status_code == 200 and r.json()["width"] == item["assets"]["red"]["proj:shape"][1]
    r = client.get(
        "/cog/point/{},{}".format(*_lonlat_center(item)),
        params={"url": str(cog), "expression": "b1*2"},
    )
    assert r.status_code == 200, r.text


def _lonlat_center(item: dict) -> tuple[float, float]:
    minx, miny, maxx, maxy = item["bbox"]
    return (minx + maxx) / 2, (miny + maxy) / 2


def test_unknown_item_and_collection_are_404(client):
    assert client.get(f"{ITEMS}/nope/info").status_code == 404
    assert client.get("/collections/nope/items/x/info").status_code == 404


def test_errors_are_not_cached(client):
    r = client.get(f"{ITEMS}/nope/info")
    assert r.status_code == 404 and "cache-control" not in r.headers


def test_point_with_scl_mask(client, demo_dir):
    cloudy = max(demo.items(demo_dir), key=lambda i: i["properties"]["eo:cloud_cover"])
    with rasterio.open(demo.href(demo_dir, cloudy, "scl")) as src:
        scl = src.read(1)
        rows, cols = np.nonzero(np.isin(scl, [8, 9]))
        x, y = src.xy(rows[0], cols[0])
    from pyproj import Transformer

    lon, lat = Transformer.from_crs(32633, 4326, always_xy=True).transform(x, y)
    base = f"{ITEMS}/{cloudy['id']}/point/{lon},{lat}"
    r = client.get(base, params={"expression": NDVI, "mask": "scl-clear"})
    assert r.status_code == 200, r.text
    assert r.json()["values"] == [None]  # masked
    r = client.get(base, params={"expression": NDVI})
    assert isinstance(r.json()["values"][0], float)


def test_a_catalog_items_reader_fields_are_derived_once_per_item(demo_dir):
    import morecantile
    import pystac

    from app.readers import S2STACReader

    path = next((demo_dir / "items").glob("*.json"))
    item = pystac.Item.from_file(str(path))
    allowed = [str(demo_dir)]
    fields = ("assets", "bounds", "crs", "minzoom", "maxzoom", "height", "width")
    for tms_id in ("WebMercatorQuad", "WorldCRS84Quad"):
        tms = morecantile.tms.get(tms_id)
        with S2STACReader(item, tms=tms, allowed_sources=allowed) as first:
            first.assets.append("not-an-asset")  # a reader's own list, not the cache's
        with S2STACReader(item, tms=tms, allowed_sources=allowed) as again:
            pass
        # An independent reader of a fresh copy of the item derives everything itself.
        fresh_item = pystac.Item.from_file(str(path))
        with S2STACReader(fresh_item, tms=tms, allowed_sources=allowed) as fresh:
            pass
        assert "not-an-asset" not in again.assets
        for name in fields:
            assert getattr(again, name) == getattr(fresh, name), name
    mercator = S2STACReader(item, allowed_sources=allowed)
    crs84 = S2STACReader(item, tms=morecantile.tms.get("WorldCRS84Quad"), allowed_sources=allowed)
    assert (mercator.minzoom, mercator.maxzoom) != (crs84.minzoom, crs84.maxzoom)


def test_local_assets_are_read_in_the_calling_thread_remote_ones_in_parallel(demo_dir):
    import threading

    import pystac
    from rio_tiler.models import ImageData

    from app.readers import S2STACReader
    from app.readers.stac import _read_assets

    path = next((demo_dir / "items").glob("*.json"))
    local = pystac.Item.from_file(str(path))
    remote = local.clone()
    for key, asset in remote.assets.items():
        asset.href = f"https://sentinel-cogs.s3.us-west-2.amazonaws.com/x/{key}.tif"
    assert S2STACReader(local, allowed_sources=[str(demo_dir)])._parallel is False
    assert S2STACReader(remote, allowed_sources=[str(demo_dir)])._parallel is True

    threads: dict[str, str] = {}

    def read(assets, **kwargs):
        (asset,) = assets
        assert kwargs["threads"] == 0  # never rio-tiler's own thread pool
        threads[asset] = threading.current_thread().name
        value = {"red": 1, "nir": 2, "scl": 3}[asset]
        return ImageData(np.ma.MaskedArray(np.full((1, 4, 4), value, "uint16")))

    for parallel in (False, True):
        threads.clear()
        layer = _read_assets(read, ["red", "nir", "scl"], parallel)
        assert [int(layer.array[i, 0, 0]) for i in range(3)] == [1, 2, 3]
        assert layer.band_names == ["b1", "b2", "b3"]
        caller = threading.current_thread().name
        if parallel:
            assert all(name.startswith("asset-read") for name in threads.values()), threads
        else:
            assert set(threads.values()) == {caller}
