"""The mosaic engine's parts without HTTP: search ids, the index cache, the read loop."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import shapely
from rio_tiler.errors import TileOutsideBounds
from rio_tiler.models import ImageData

from app.errors import BadRequestError, UpstreamError
from app.mosaic.index import FootprintIndex, IndexCache
from app.mosaic.reader import read_mosaic
from app.mosaic.search import normalize_search, search_hash

# ---------------------------------------------------------------------------- search ids


def test_normalized_search_is_canonical():
    _, a = normalize_search(
        {
            "bbox": [1, 2, 3, 4],
            "collections": ["b", "a", "a"],
            "query": {"eo:cloud_cover": {"lt": 20}},
            "datetime": "2023-06-01",
            "limit": 3,
        }
    )
    _, b = normalize_search(
        {
            "datetime": "2023-06-01T00:00:00Z/2023-06-01T23:59:59.999999Z",
            "query": {"eo:cloud_cover": {"lt": 20.0}},
            "collections": ["a", "b"],
            "bbox": [1.0, 2.0, 3.0, 4.0, 0, 0][:4],
        }
    )
    assert a == b
    assert search_hash(a) == search_hash(b)
    assert "limit" not in a
    # sortby order matters: not the same mosaic.
    _, c = normalize_search({"sortby": "-datetime,eo:cloud_cover"})
    _, d = normalize_search({"sortby": "eo:cloud_cover,-datetime"})
    assert search_hash(c) != search_hash(d)
    # The canonical body parses back to itself.
    _, again = normalize_search(a)
    assert again == a


@pytest.mark.parametrize(
    "body,parameter",
    [
        ([], "search"),
        ({"token": "x"}, "token"),
        ({"bbox": "1,2"}, "bbox"),
        ({"filter": {"op": "frobnicate", "args": []}}, "filter"),
    ],
)
def test_bad_search_names_the_parameter(body, parameter):
    with pytest.raises(BadRequestError) as error:
        normalize_search(body)
    assert error.value.message.startswith(parameter)


# ---------------------------------------------------------------------------- index cache


class _Item:
    def __init__(self, item_id: str, day: int, cloud: float):
        from datetime import UTC, datetime

        import pystac

        self.item = pystac.Item(
            id=item_id,
            geometry=shapely.geometry.mapping(shapely.box(0, 0, 1, 1)),
            bbox=[0, 0, 1, 1],
            datetime=datetime(2023, 6, day, tzinfo=UTC),
            properties={"eo:cloud_cover": cloud},
        )


def _index(n: int = 3) -> FootprintIndex:
    items = [_Item(f"i{k}", k + 1, cloud=[50.0, 10.0, 10.0][k % 3]).item for k in range(n)]
    return FootprintIndex("s", items)


def test_index_orders():
    index = _index()
    box = shapely.box(0.2, 0.2, 0.3, 0.3)
    assert [e.id for e in index.intersecting(box, "mostRecent")] == ["i2", "i1", "i0"]
    assert [e.id for e in index.intersecting(box, "leastRecent")] == ["i0", "i1", "i2"]
    assert [e.id for e in index.intersecting(box, "leastCC")] == ["i2", "i1", "i0"]
    assert [e.id for e in index.intersecting(box, "search")] == ["i0", "i1", "i2"]
    assert index.intersecting(shapely.box(5, 5, 6, 6)) == []
    with pytest.raises(BadRequestError):
        index.intersecting(box, "random")


def test_index_cache_builds_once_under_concurrency_and_refreshes_in_background():
    cache = IndexCache(ttl=3600, retry_after=0)
    calls = []

    def build():
        calls.append(1)
        time.sleep(0.2)  # a slow build, so that the 8 callers below arrive while it runs
        return _index()

    results = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get("s", build))) for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len({id(r) for r in results}) == 1

    # Expired: the old index answers at once while a rebuild runs (the rebuilds below
    # block on events, so "at once" means "before the rebuild was let go", whatever
    # this machine's speed); a failing rebuild keeps the old index.
    cache.ttl = 0.0
    old = results[0]
    let_fail = threading.Event()

    def failing():
        let_fail.wait(30)
        raise UpstreamError("upstream down")

    assert cache.get("s", failing) is old
    assert cache.info()["builds"] == 2
    let_fail.set()

    let_build = threading.Event()
    new = _index()

    def blocked_build():
        let_build.wait(30)
        return new

    # Until the failed refresh is over no other starts; then one starts, and the index
    # answered meanwhile is still the old one: the failure did not drop it.
    deadline = time.monotonic() + 30
    while cache.info()["builds"] == 2:
        assert cache.get("s", blocked_build) is old
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert cache.info()["builds"] == 3
    assert cache.get("s", blocked_build) is old
    let_build.set()
    while (answer := cache.get("s", blocked_build)) is old:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert answer is new


def test_index_cache_evicts_least_recently_used_past_its_item_budget():
    cache = IndexCache(ttl=3600, max_items=5)
    cache.get("a", lambda: _index(3))
    cache.get("b", lambda: _index(3))
    assert cache.info()["searches"] == 1  # "a" went: 6 items > 5
    cache.get("b", lambda: pytest.fail("b is cached"))


# ---------------------------------------------------------------------------- read loop


def _image(valid: np.ndarray, value: float) -> ImageData:
    data = np.full((1, *valid.shape), value, dtype="float32")
    return ImageData(
        np.ma.MaskedArray(data, mask=~valid[np.newaxis]), bounds=(0, 0, 1, 1), crs=None
    )


def test_first_reads_one_item_when_it_fills_and_grows_its_window_otherwise():
    full = np.ones((4, 4), dtype=bool)
    half = full.copy()
    half[:2] = False
    reads: list[int] = []

    def read(k: int) -> ImageData:
        reads.append(k)
        return _image(full if k >= 3 else half, float(k))

    out = read_mosaic([0, 1, 2, 3, 4, 5, 6, 7], read, "first", max_items=50, max_window=4)
    assert out.image is not None and not np.ma.is_masked(out.image.array)
    # Items 0-2 leave the top half empty, item 3 fills it. Window 1, 2, 4: items 0..6 may
    # have been started, but the mosaic used exactly 0..3.
    assert out.used == [0, 1, 2, 3]
    assert set(reads) <= set(range(7))
    np.testing.assert_array_equal(out.image.array.data[0, :2], 3.0)
    np.testing.assert_array_equal(out.image.array.data[0, 2:], 0.0)

    reads.clear()
    out = read_mosaic([3, 4, 5], read, "first", max_items=50, max_window=4)
    assert reads == [3] and out.used == [3]


def test_outside_pixels_do_not_keep_first_reading():
    half = np.ones((4, 4), dtype=bool)
    half[:2] = False
    outside = np.zeros((4, 4), dtype=bool)
    outside[:2] = True  # no item covers the top half
    reads = []

    def read(k):
        reads.append(k)
        return _image(half, float(k))

    out = read_mosaic([0, 1, 2], read, "first", max_items=50, outside=lambda image: outside)
    assert reads == [0] and out.used == [0]


def test_skipped_and_unreadable_items():
    full = np.ones((2, 2), dtype=bool)

    def read(k):
        if k == 0:
            raise TileOutsideBounds("not here")
        if k == 1:
            from rasterio.errors import RasterioIOError

            raise RasterioIOError("broken COG")
        return _image(full, float(k))

    out = read_mosaic([0, 1, 2], read, "mean", max_items=50)
    assert out.used == [2] and out.partial == ["read-errors"]

    def broken(k):
        from rasterio.errors import RasterioIOError

        raise RasterioIOError("broken COG")

    from rasterio.errors import RasterioIOError

    with pytest.raises(RasterioIOError):
        read_mosaic([0, 1], broken, "mean", max_items=50)


def test_unknown_pixel_selection_is_400():
    with pytest.raises(BadRequestError) as error:
        read_mosaic([0], lambda k: None, "mode", max_items=1)
    assert error.value.message.startswith("pixel_selection")
