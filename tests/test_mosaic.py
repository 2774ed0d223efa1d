"""Mosaics of registered searches, checked against numpy over independent rasterio reads.

The demo scenes are co-registered (same 10 m grid), two of them cloudy with different
processing baselines (raw DN offset 0 and +1000), one cut by the swath edge: enough to
check that ``first`` + ``mask=scl-clear`` fills a cloudy pixel from the next item, that
harmonization happens per item, and that mean/median/count/... are numpy over the stack.
"""

from __future__ import annotations

import io
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from demo_reads import href as _href
from demo_reads import items_by_id as _items
from demo_reads import read as _read
from demo_reads import reflectance as _reflectance
from demo_reads import scale_offset as _scale_offset
from demo_reads import scl_invalid as _invalid
from fastapi.testclient import TestClient
from pyproj import Transformer

from app.dependencies import get_mosaics
from app.main import create_app
from app.mosaic import MosaicConfig, MosaicService, SearchStore, reader_options_from_settings
from app.readers import S2STACReader
from app.settings import Settings

NDVI = "(nir-red)/(nir+red)"
ITEMS = "/collections/sentinel-2-l2a/items"
NATIVE = {"coord_crs": "epsg:32633", "dst_crs": "epsg:32633"}


# ---------------------------------------------------------------------------- helpers


def _newest_first(items: list[dict]) -> list[dict]:
    return sorted(items, key=lambda i: i["properties"]["datetime"], reverse=True)


def _extent(item: dict) -> tuple[float, float, float, float]:
    t = item["assets"]["red"]["proj:transform"]
    height, width = item["assets"]["red"]["proj:shape"]
    minx, maxy = t[2], t[5]
    return (minx, maxy + height * t[4], minx + width * t[0], maxy)


def _npy(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.load(io.BytesIO(response.content))


def _register(client: TestClient, body: dict[str, Any]) -> str:
    r = client.post("/searches/register", json=body)
    assert r.status_code == 200, r.text
    return r.json()["id"]


def _bbox_path(search_id: str, bounds) -> str:
    return f"/searches/{search_id}/bbox/{','.join(map(str, bounds))}.npy"


@pytest.fixture
def client(searches_client: TestClient) -> TestClient:
    """The module's client (its app over ``settings``), with no search registered yet."""
    return searches_client


@pytest.fixture(scope="module")
def demo_items(demo_dir: Path) -> dict[str, dict]:
    return _items(demo_dir)


@pytest.fixture(scope="module")
def cloudy_pair(demo_items: dict[str, dict]) -> list[dict]:
    """The two cloudiest scenes, newest first (one with the BOA offset applied, one not)."""
    cloudy = sorted(demo_items.values(), key=lambda i: i["properties"]["eo:cloud_cover"])[-2:]
    assert all(i["properties"]["eo:cloud_cover"] > 20 for i in cloudy)
    offsets = {_scale_offset(i, "red")[1] for i in cloudy}
    assert offsets == {0.0, -0.1}, "the pair should mix both processing baselines"
    return _newest_first(cloudy)


# ---------------------------------------------------------------------------- first


def test_first_with_scl_clear_equals_numpy_composite(client, demo_dir, settings, cloudy_pair):
    search_id = _register(
        client, {"collections": ["sentinel-2-l2a"], "ids": [i["id"] for i in cloudy_pair]}
    )
    bounds = _extent(cloudy_pair[0])
    r = client.get(
        _bbox_path(search_id, bounds),
        params={"assets": "red", "harmonize": "true", "mask": "scl-clear", **NATIVE},
    )
    data = _npy(r)
    assert r.headers["x-mosaic-items"] == "2/2"
    assert "x-mosaic-partial" not in r.headers

    composite = None
    for item in cloudy_pair:  # mostRecent first
        red = _reflectance(demo_dir, item, "red")
        red = np.ma.MaskedArray(
            red, mask=red.mask | _invalid(demo_dir, item, settings.scl_mask_classes, red.shape)
        )
        if composite is None:
            composite = red
            first_valid = ~red.mask
        else:
            fill = composite.mask & ~red.mask
            composite = np.ma.where(fill, red, composite)
            composite.mask = np.where(fill, False, np.ma.getmaskarray(composite))
    assert composite is not None
    valid = data[-1] > 0
    assert data.shape == (2, *composite.shape)
    np.testing.assert_array_equal(valid, ~np.ma.getmaskarray(composite))
    np.testing.assert_allclose(data[0][valid], composite.compressed(), rtol=0, atol=1e-6)
    # The second scene really filled clouds of the first, and some pixels stay cloudy.
    filled_from_second = valid & ~first_valid
    assert filled_from_second.sum() > 1000
    assert (~valid).sum() > 0


def test_first_tile_equals_composite_of_single_item_tiles(client, demo_dir, demo_items):
    import morecantile

    # The swath-edge scene (nodata on one side) first, then a clear one fills the gap.
    edge = max(
        demo_items.values(), key=lambda i: i["properties"].get("s2:nodata_pixel_percentage", 0)
    )
    assert edge["properties"]["s2:nodata_pixel_percentage"] > 10
    later = min(
        (
            i
            for i in demo_items.values()
            if i["properties"]["datetime"] > edge["properties"]["datetime"]
        ),
        key=lambda i: i["properties"]["datetime"],
    )
    search_id = _register(client, {"ids": [edge["id"], later["id"]]})
    tms = morecantile.tms.get("WebMercatorQuad")
    minx, miny, maxx, maxy = edge["bbox"]
    tile = tms.tile((minx + maxx) / 2, (miny + maxy) / 2, 15)
    path = f"tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.npy"
    params = {"expression": NDVI, "mask": "scl-clear"}
    mosaic = _npy(
        client.get(f"/searches/{search_id}/{path}", params={**params, "order": "leastRecent"})
    )
    stack = [
        _npy(client.get(f"{ITEMS}/{item['id']}/{path}", params=params)) for item in (edge, later)
    ]
    expected = np.where(stack[0][-1:] > 0, stack[0], stack[1])
    valid = mosaic[-1] > 0
    np.testing.assert_array_equal(valid, expected[-1] > 0)
    np.testing.assert_array_equal(mosaic[:, valid], expected[:, valid])
    assert ((stack[0][-1] <= 0) & (stack[1][-1] > 0)).any(), "nothing was filled"


# ---------------------------------------------------------------------------- stacks


@pytest.mark.parametrize("method", ["mean", "median", "count", "stdev", "highest", "lowest"])
def test_stack_methods_equal_numpy(client, demo_dir, settings, demo_items, method):
    search_id = _register(client, {"collections": ["sentinel-2-l2a"]})
    items = _newest_first(list(demo_items.values()))
    bounds = _extent(items[0])
    r = client.get(
        _bbox_path(search_id, bounds),
        params={"expression": NDVI, "mask": "scl-clear", "pixel_selection": method, **NATIVE},
    )
    data = _npy(r)
    assert r.headers["x-mosaic-items"] == f"{len(items)}/{len(items)}"
    layers = []
    for item in items:
        red = _reflectance(demo_dir, item, "red")
        nir = _reflectance(demo_dir, item, "nir")
        ndvi = (nir - red) / (nir + red)
        invalid = _invalid(demo_dir, item, settings.scl_mask_classes, ndvi.shape)
        layers.append(np.ma.MaskedArray(ndvi, mask=np.ma.getmaskarray(ndvi) | invalid))
    stack = np.ma.stack(layers)
    expected = {
        "mean": lambda: np.ma.mean(stack, axis=0),
        "median": lambda: np.ma.median(stack, axis=0),
        "count": lambda: np.ma.count(stack, axis=0),
        "stdev": lambda: np.ma.std(stack, axis=0),
        "highest": lambda: np.ma.max(stack, axis=0),
        "lowest": lambda: np.ma.min(stack, axis=0),
    }[method]()
    if method == "count":
        assert data.shape == (2, *stack.shape[1:])
        np.testing.assert_array_equal(data[0], expected)
        assert (data[0] == len(items)).any() and (data[0] < len(items)).any()
        return
    valid = data[-1] > 0
    np.testing.assert_array_equal(valid, ~np.ma.getmaskarray(expected))
    np.testing.assert_allclose(data[0][valid], expected.compressed(), rtol=0, atol=2e-6)


# ---------------------------------------------------------------------------- points


def test_point_time_series_equals_rasterio(client, demo_dir, settings, demo_items, cloudy_pair):
    search_id = _register(client, {"collections": ["sentinel-2-l2a"]})
    newest, older = cloudy_pair
    classes = settings.scl_mask_classes
    shape = tuple(newest["assets"]["red"]["proj:shape"])
    # A pixel cloudy in the newest cloudy scene and clear in every other scene.
    clear_elsewhere = np.ones(shape, dtype=bool)
    for item in demo_items.values():
        if item["id"] != newest["id"]:
            clear_elsewhere &= ~_invalid(demo_dir, item, classes, shape)
            clear_elsewhere &= _read(demo_dir, item, "red") != 0
    candidates = np.argwhere(_invalid(demo_dir, newest, classes, shape) & clear_elsewhere)
    row, col = candidates[len(candidates) // 2]
    with rasterio.open(_href(demo_dir, newest, "red")) as src:
        x, y = src.xy(row, col)
    lon, lat = Transformer.from_crs(32633, 4326, always_xy=True).transform(x, y)

    r = client.get(f"/searches/{search_id}/point/{lon},{lat}", params={"assets": "red"})
    assert r.status_code == 200, r.text
    body = r.json()
    oldest_first = sorted(demo_items.values(), key=lambda i: i["properties"]["datetime"])
    assert [e["id"] for e in body["series"]] == [i["id"] for i in oldest_first]
    assert [e["datetime"] for e in body["series"]] == [
        i["properties"]["datetime"] for i in oldest_first
    ]
    assert [e["values"] for e in body["series"]] == [
        [int(_read(demo_dir, i, "red")[row, col])] for i in oldest_first
    ]
    assert body["values"] == [int(_read(demo_dir, _newest_first(oldest_first)[0], "red")[row, col])]

    r = client.get(
        f"/searches/{search_id}/point/{lon},{lat}", params={"expression": NDVI, "mask": "scl-clear"}
    )
    body = r.json()
    by_id = {e["id"]: e["values"][0] for e in body["series"]}
    for item in oldest_first:
        if _invalid(demo_dir, item, classes, shape)[row, col]:
            assert by_id[item["id"]] is None
            continue
        red = _reflectance(demo_dir, item, "red")[row, col]
        nir = _reflectance(demo_dir, item, "nir")[row, col]
        assert by_id[item["id"]] == pytest.approx((nir - red) / (nir + red), abs=1e-6)
    assert by_id[newest["id"]] is None
    # first + mostRecent: the cloudy newest scene is skipped, the next newest answers.
    next_newest = next(i for i in _newest_first(oldest_first) if i["id"] != newest["id"])
    assert body["values"] == [pytest.approx(by_id[next_newest["id"]], abs=0)]

    # Bilinear resampling: SCL (a class map) is read on its own, nearest-neighbour, and a
    # point's SCL comes back as one value like its bands: the same series.
    r = client.get(
        f"/searches/{search_id}/point/{lon},{lat}",
        params={"expression": NDVI, "mask": "scl-clear", "resampling": "bilinear"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["series"] == body["series"]


@pytest.mark.parametrize(
    "order,pick",
    [
        ("mostRecent", lambda items: max(items, key=lambda i: i["properties"]["datetime"])),
        ("leastRecent", lambda items: min(items, key=lambda i: i["properties"]["datetime"])),
        (
            "leastCC",
            lambda items: min(
                items,
                key=lambda i: (
                    i["properties"]["eo:cloud_cover"],
                    -time.mktime(
                        time.strptime(i["properties"]["datetime"][:19], "%Y-%m-%dT%H:%M:%S")
                    ),
                ),
            ),
        ),
    ],
)
def test_order_picks_the_expected_item(client, demo_dir, demo_items, order, pick):
    search_id = _register(client, {"collections": ["sentinel-2-l2a"]})
    item = pick(list(demo_items.values()))
    # A pixel every scene has data at (no nodata edge there).
    row, col = 200, 200
    with rasterio.open(_href(demo_dir, item, "red")) as src:
        x, y = src.xy(row, col)
    lon, lat = Transformer.from_crs(32633, 4326, always_xy=True).transform(x, y)
    body = client.get(
        f"/searches/{search_id}/point/{lon},{lat}", params={"assets": "red", "order": order}
    ).json()
    assert body["values"] == [int(_read(demo_dir, item, "red")[row, col])]


# ---------------------------------------------------------------------------- bounds


class CountingCatalog:
    """A catalog that counts searches (and can be slowed down)."""

    def __init__(self, inner):
        self.inner = inner
        self.searches = 0
        self.lock = threading.Lock()

    def search(self, query, max_items=None):
        with self.lock:
            self.searches += 1
        return self.inner.search(query, max_items=max_items)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _service(app, settings: Settings, catalog=None, reader=S2STACReader, **config) -> MosaicService:
    services = app.state.services  # the app's, as its lifespan built them
    service = MosaicService(
        catalog or services.catalog,
        SearchStore(services.db_engine),
        replace(MosaicConfig.from_settings(settings), **config),
        reader_options_from_settings(settings),
        reader=reader,
    )
    app.dependency_overrides[get_mosaics] = lambda: service
    return service


def _center_tile(item: dict, z: int):
    import morecantile

    minx, miny, maxx, maxy = item["bbox"]
    return morecantile.tms.get("WebMercatorQuad").tile((minx + maxx) / 2, (miny + maxy) / 2, z)


def test_the_catalog_is_searched_once_per_search_not_per_tile(settings, demo_items):
    import morecantile

    app = create_app(settings)
    with TestClient(app) as client:
        catalog = CountingCatalog(app.state.services.catalog)
        service = _service(app, settings, catalog=catalog, index_ttl=3600)
        search_id = _register(client, {"collections": ["sentinel-2-l2a"]})
        item = next(iter(demo_items.values()))
        tms = morecantile.tms.get("WebMercatorQuad")
        minx, miny, maxx, maxy = item["bbox"]
        tiles = list(tms.tiles(minx, miny, maxx, maxy, [14, 15]))
        assert len(tiles) >= 4
        for tile in tiles:
            r = client.get(
                f"/searches/{search_id}/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.png",
                params={"preset": "ndvi"},
            )
            assert r.status_code == 200, r.text
        client.get(f"/searches/{search_id}/WebMercatorQuad/tilejson.json")
        assert catalog.searches == 1
        assert service.indexes.builds == 1

        # After the TTL the index is rebuilt in the background; requests never wait.
        service.indexes.ttl = 0.0
        tile = tiles[0]
        r = client.get(
            f"/searches/{search_id}/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.png",
            params={"preset": "ndvi"},
        )
        assert r.status_code == 200
        deadline = time.monotonic() + 10
        while catalog.searches < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert catalog.searches == 2


def test_items_limit_and_time_limit_make_partial_tiles(settings, demo_items):
    app = create_app(settings)
    item = next(iter(demo_items.values()))
    tile = _center_tile(item, 14)
    path = f"tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.png"
    with TestClient(app) as client:
        _service(app, settings, max_items_per_tile=2)
        search_id = _register(client, {"collections": ["sentinel-2-l2a"]})
        r = client.get(
            f"/searches/{search_id}/{path}",
            params={"assets": "red", "pixel_selection": "mean", "rescale": "0,3000"},
        )
        assert r.status_code == 200, r.text
        assert r.headers["x-mosaic-partial"] == "items-limit"
        assert r.headers["x-mosaic-items"] == f"2/{len(demo_items)}"

        # The older items' reads block until released: the answer must come at the time
        # limit with the newest item alone, while those reads are still blocked. Nothing
        # here depends on how fast this machine is, only the order of events.
        release = threading.Event()
        finished: list[str] = []

        class SlowReader(S2STACReader):
            def tile(self, *args, **kwargs):
                if self.item.id != newest:
                    release.wait(60)
                    finished.append(self.item.id)
                return super().tile(*args, **kwargs)

        newest = _newest_first(list(demo_items.values()))[0]["id"]
        _service(app, settings, reader=SlowReader, time_limit=2.0, threads=8)
        started = time.monotonic()
        try:
            r = client.get(
                f"/searches/{search_id}/{path}",
                params={"assets": "red", "pixel_selection": "mean", "rescale": "0,3000"},
            )
            assert finished == [], "the tile waited for reads past its time limit"
        finally:
            release.set()
        assert time.monotonic() - started >= 2.0
        assert r.status_code == 200, r.text
        assert r.headers["x-mosaic-partial"] == "time-limit"
        assert r.headers["x-mosaic-items"] == f"1/{len(demo_items)}"
        assert r.headers["cache-control"] == "no-store"


def test_first_stops_reading_once_the_tile_is_full(client, demo_items):
    search_id = _register(client, {"collections": ["sentinel-2-l2a"]})
    tile = _center_tile(next(iter(demo_items.values())), 15)
    path = f"/searches/{search_id}/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.png"
    # No mask: the newest scene covers the tile, one read.
    r = client.get(path, params={"preset": "true-color"})
    assert r.headers["x-mosaic-items"] == f"1/{len(demo_items)}"
    # With scl-clear the cloudy newest scene is not enough, but not everything is read.
    r = client.get(path, params={"preset": "true-color", "mask": "scl-clear"})
    used = int(r.headers["x-mosaic-items"].split("/")[0])
    assert 1 < used < len(demo_items)
