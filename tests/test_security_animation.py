"""Attacks on the animations: ``GET /searches/{id}/bbox/.../{w}x{h}.gif|webp`` and
``POST /collections/{id}/animation.gif|webp``.

Every parameter an attacker controls, at its edges: the frame rate (tiny, subnormal: a
frame longer than a GIF or WebP can say), the interval (longer than the calendar, numbers
longer than ``int()`` reads), the frame size (wider than a WebP or GIF can be), the bbox
(NaN, infinite, degenerate, across the antimeridian), the ids (unknown, duplicated, with
path characters, too many). Each is a 4xx naming the field and the limit, never a 500; the
ones that are valid are decoded by Pillow to what was asked.
"""

import io
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import demo_reads as demo
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageSequence

from app.errors import BadRequestError
from app.main import create_app
from app.settings import Settings
from app.stats.intervals import parse_duration, split_time_range

BBOX = (16.085, 46.645, 16.10, 46.655)
PATH_BBOX = ",".join(map(str, BBOX))
NDVI = {"preset": "ndvi"}
COLLECTION = "sentinel-2-l2a"
ITEMS = f"/collections/{COLLECTION}/animation"


@pytest.fixture(scope="module")
def settings(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The demo catalog; frames of up to 70 000 pixels wide fit max_output_pixels."""
    return Settings(
        catalog=str(demo_dir),
        data_dir=tmp_path_factory.mktemp("data"),
        animation_max_pixels=1_000_000,
    )


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def ids(demo_dir: Path) -> list[str]:
    found = sorted(demo.items(demo_dir), key=lambda item: item["properties"]["datetime"])
    return [item["id"] for item in found]


@pytest.fixture(scope="module")
def search_id(client: TestClient, ids: list[str]) -> str:
    r = client.post("/searches/register", json={"ids": ids})
    assert r.status_code == 200, r.text
    return r.json()["id"]


def _get(client: TestClient, search_id: str, fmt: str, params: dict, size=(32, 24), bbox=None):
    return client.get(
        f"/searches/{search_id}/bbox/{bbox or PATH_BBOX}/{size[0]}x{size[1]}.{fmt}",
        params={**NDVI, **params},
    )


def _post(client: TestClient, fmt: str, body: dict, params: dict | None = None):
    return client.post(f"{ITEMS}.{fmt}", params={**NDVI, **(params or {})}, json=body)


def _detail(response) -> str:
    return str(response.json()["detail"])


# ---------------------------------------------------------------------- fps


@pytest.mark.parametrize("fmt", ["gif", "webp"])
@pytest.mark.parametrize("fps", ["1e-9", "1e-300", "5e-324", "0.0001"])
def test_a_frame_longer_than_the_format_can_say_is_a_400_naming_fps(client, search_id, fmt, fps):
    r = _get(client, search_id, fmt, {"fps": fps})
    assert r.status_code == 400, r.text
    detail = _detail(r)
    assert detail.startswith("fps:") and "at least" in detail, detail


@pytest.mark.parametrize(
    "fmt,fps,duration", [("gif", "0.002", 500_000), ("webp", "0.0016", 625_000)]
)
def test_the_slowest_frame_rates_encode(client, search_id, fmt, fps, duration):
    """A GIF frame lasts up to 655.35 s (16 bits of hundredths of a second)."""
    r = _get(client, search_id, fmt, {"fps": fps})
    assert r.status_code == 200, r.text
    durations = []
    for frame in ImageSequence.Iterator(Image.open(io.BytesIO(r.content))):
        frame.load()  # WebP says a frame's duration once it is decoded
        durations.append(frame.info["duration"])
    assert durations == [duration] * 6


# ---------------------------------------------------------------------- interval


@pytest.mark.parametrize(
    "interval",
    ["P10000Y", "P100000Y", "P8000Y", "P9999999999D", "P" + "9" * 5000 + "D", "P99999999999M"],
)
def test_an_interval_past_the_calendar_is_a_400_naming_interval(client, search_id, interval):
    for r in (
        _get(client, search_id, "gif", {"interval": interval}),
        _post(client, "webp", {"ids": ["x"], "bbox": BBOX, "width": 8, "height": 8}),
    ):
        assert r.status_code < 500, r.text
    r = _get(client, search_id, "gif", {"interval": interval})
    assert r.status_code == 400, r.text
    assert _detail(r).startswith("interval:") and "9999" in _detail(r), _detail(r)
    assert len(_detail(r)) < 300


def test_a_long_interval_within_the_calendar_is_one_frame(client, search_id):
    r = _get(client, search_id, "gif", {"interval": "P7000Y"})
    assert r.status_code == 200, r.text
    assert r.headers["x-animation-frames"] == "1/1"
    assert r.headers["x-animation-labels"].endswith("..9023-04-01")


def test_statistical_intervals_past_the_calendar_are_400s() -> None:
    """The parser is the Statistical API's too: ``aggregationInterval.of``."""
    start, end = datetime(2023, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC)
    for text in ("P10000Y", "P" + "9" * 5000 + "D", "P9999999999D"):
        with pytest.raises(BadRequestError) as raised:
            parse_duration(text)
        assert raised.value.message.startswith("aggregationInterval.of:")
    # Within the limit, yet past year 9999 from this start: the last interval extends to
    # the end of the calendar instead of failing.
    ((lower, upper),) = split_time_range(start, end, parse_duration("P8000Y"), "EXTEND")
    assert lower == start and upper.year == 9999
    assert split_time_range(start, end, parse_duration("P8000Y"), "SKIP") == []


# ---------------------------------------------------------------------- size


@pytest.mark.parametrize(
    "fmt,size,limit",
    [
        ("webp", (16384, 1), "16383"),
        ("webp", (1, 16384), "16383"),
        ("gif", (65536, 1), "65535"),
        ("gif", (1, 70000), "65535"),
    ],
)
def test_a_frame_larger_than_the_format_is_a_400_naming_the_side(
    client, search_id, ids, fmt, size, limit
):
    r = _get(client, search_id, fmt, {"interval": "P1Y"}, size=size)
    assert r.status_code == 400, r.text
    side = "width" if size[0] > size[1] else "height"
    assert _detail(r).startswith(side) and limit in _detail(r), _detail(r)
    body = {"ids": ids, "bbox": BBOX, "width": size[0], "height": size[1]}
    r = _post(client, fmt, body, {"interval": "P1Y"})
    assert r.status_code == 400, r.text
    assert _detail(r).startswith(side) and limit in _detail(r), _detail(r)


@pytest.mark.parametrize("fmt,size", [("webp", (16383, 2)), ("gif", (2, 20000))])
def test_the_largest_frames_encode(client, search_id, fmt, size):
    r = _get(client, search_id, fmt, {"interval": "P1Y"}, size=size)
    assert r.status_code == 200, r.text
    assert Image.open(io.BytesIO(r.content)).size == size


# ---------------------------------------------------------------------- bbox and ids


@pytest.mark.parametrize(
    "bbox,message",
    [
        ("nan,nan,nan,nan", "finite"),
        ("inf,0,1,1", "finite"),
        ("16.1,46.645,16.085,46.655", "minx < maxx"),
        ("16.085,46.645,16.085,46.655", "minx < maxx"),
        ("179,0,-179,1", "minx < maxx"),  # across the antimeridian: not this route's
        ("-1e308,-1e308,1e308,1e308", "not a place on Earth"),
        ("16.085,46.645,16.10,1e400", "finite"),
    ],
)
def test_bad_bboxes_are_400s(client, search_id, ids, bbox, message):
    r = _get(client, search_id, "gif", {}, bbox=bbox)
    assert r.status_code == 400 and message in _detail(r), r.text
    assert _detail(r).startswith("bbox")


def test_bad_bboxes_in_a_body_are_400s(client, ids):
    for raw in ("[NaN, 0, 1, 1]", "[Infinity, 0, 1, 1]", "[1, 0, 0, 1]"):
        content = f'{{"ids": ["{ids[0]}"], "bbox": {raw}, "width": 8, "height": 8}}'
        r = client.post(
            f"{ITEMS}.gif",
            params=NDVI,
            content=content,
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 400 and _detail(r).startswith("bbox"), r.text


def test_ids_unknown_duplicated_with_path_characters_or_too_many(client, ids):
    body = {"bbox": BBOX, "width": 16, "height": 16}
    for odd in ("../../etc/passwd", "a/b?c#d%2F", "\x00", "x" * 10_000, "..", "%2e%2e"):
        r = _post(client, "gif", {**body, "ids": [ids[0], odd]})
        assert r.status_code == 404, (odd[:20], r.text[:200])
        assert "not found" in _detail(r)
    r = _post(client, "gif", {**body, "ids": [f"x{i}" for i in range(10_000)]})
    assert r.status_code == 413 and "mosaic_max_search_items=2000" in _detail(r), r.text[:200]
    # 10 000 copies of the same ids are the 6 items: 6 frames.
    r = _post(client, "gif", {**body, "ids": ids * 2000})
    assert r.status_code == 200, r.text[:200]
    assert r.headers["x-animation-frames"] == f"{len(ids)}/{len(ids)}"


def test_an_unknown_collection_is_a_404(client, ids):
    body = {"ids": ids, "bbox": BBOX, "width": 8, "height": 8}
    for collection in ("nope", "%2e%2e", "a%2Fb"):
        r = client.post(f"/collections/{collection}/animation.gif", params=NDVI, json=body)
        assert r.status_code == 404, (collection, r.text)


# ---------------------------------------------------------------------- upstream


def test_listed_ids_are_looked_up_in_few_upstream_requests(settings: Settings) -> None:
    """300 ids of a STAC API: a few searches, not one request per id (an amplifier).

    The bbox is outside every item: the answer is the 404 of an empty bbox, after the
    lookup, without reading any COG.
    """
    from catalog_items import template_item
    from harness.stubapi import Recorded, StubResponse, StubServer, landing_page

    from app.catalog.cache import ItemCache
    from app.catalog.stacapi import StacApiCatalog
    from app.dependencies import get_item_cache

    template = template_item()
    collection = template["collection"]

    def item(item_id: str) -> dict:
        return {**template, "id": item_id, "links": []}

    def handle(request: Recorded, server: StubServer) -> StubResponse:
        if request.path in ("", "/"):
            return StubResponse(200, landing_page(server.url))
        if request.path == "/search":
            asked = (request.json or {}).get("ids") or ",".join(request.query.get("ids", [])).split(
                ","
            )
            features = [item(i) for i in asked if i.startswith("known-")]
            return StubResponse(200, {"type": "FeatureCollection", "features": features})
        item_id = request.path.rsplit("/", 1)[-1]
        if item_id.startswith("known-"):
            return StubResponse(200, item(item_id))
        return StubResponse(404, {"code": "NotFound", "description": "no such item"})

    ids = [f"known-{i}" for i in range(300)]
    body = {"ids": ids, "bbox": [-60.0, -10.0, -59.9, -9.9], "width": 8, "height": 8}
    with StubServer(handle) as server:
        app = create_app(settings)
        remote = ItemCache(StacApiCatalog(server.url, retries=0))
        app.dependency_overrides[get_item_cache] = lambda: remote
        with TestClient(app, raise_server_exceptions=False) as client:
            r = client.post(f"/collections/{collection}/animation.gif", params=NDVI, json=body)
            assert r.status_code == 404 and "outside" in _detail(r), r.text[:300]
            lookups = server.count() - 1  # the landing page
            assert lookups <= 10, lookups
            # An unknown id among them is still the 404 naming it.
            unknown = {**body, "ids": [*ids[:5], "missing-1", *ids[5:]]}
            r = client.post(f"/collections/{collection}/animation.gif", params=NDVI, json=unknown)
            assert r.status_code == 404 and "missing-1" in _detail(r), r.text[:300]


# ---------------------------------------------------------------------- time


def test_no_frame_read_in_time_is_a_504_naming_animation_time_limit(
    settings: Settings, ids: list[str]
) -> None:
    """Not a 404 blaming ``min_clear``: the reads ran out of time (a slow or busy source)."""
    slow = settings.model_copy(update={"animation_time_limit": 1e-6})
    with TestClient(create_app(slow), raise_server_exceptions=False) as client:
        search = client.post("/searches/register", json={"ids": ids}).json()["id"]
        r = _get(client, search, "gif", {"min_clear": 0.5}, size=(256, 256))
        assert r.status_code == 504, r.text
        assert "animation_time_limit=1e-06" in _detail(r), _detail(r)
        body = {"ids": ids, "bbox": BBOX, "width": 256, "height": 256}
        r = _post(client, "webp", body)
        assert r.status_code == 504 and "animation_time_limit" in _detail(r), r.text


def test_animations_at_once_never_take_every_request_thread(
    settings: Settings, search_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over ``animation_max_concurrent`` animations in flight, the next is a 503 at once.

    The animations in flight are held (their reads wait on an event): the service has 4
    request threads; without the bound, 6 held animations take all 4 and a tile waits
    for one of them to end. With it, 2 are held, 4 are refused at once (naming the
    setting, with Retry-After), and a tile and /healthz answer meanwhile.
    """
    import threading

    import httpx
    from live_server import live_server

    import app.routers.animation as animation_router

    release = threading.Event()
    held = threading.Semaphore(0)
    real = animation_router.read_animation

    def held_read(*args, **kwargs):
        held.release()
        release.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(animation_router, "read_animation", held_read)
    busy = settings.model_copy(update={"request_threads": 4, "animation_max_concurrent": 2})
    answers: list[httpx.Response] = []
    with live_server(create_app(busy)) as url, httpx.Client(trust_env=False, timeout=90) as http:
        registered = http.post(f"{url}/searches/register", json={"collections": [COLLECTION]})
        search = registered.json()["id"]

        def animate() -> None:
            answers.append(
                http.get(
                    f"{url}/searches/{search}/bbox/{PATH_BBOX}/32x24.gif",
                    params={**NDVI, "interval": "P1Y"},
                )
            )

        threads = [threading.Thread(target=animate) for _ in range(6)]
        try:
            for thread in threads:
                thread.start()
            for _ in range(2):
                assert held.acquire(timeout=30)
            # The others are refused at once (they never reach the reads).
            deadline = 30
            while len(answers) < 4 and deadline > 0:
                threading.Event().wait(0.1)
                deadline -= 0.1
            refused = list(answers)
            assert len(refused) == 4, [r.status_code for r in refused]
            for r in refused:
                assert r.status_code == 503, r.text
                assert "animation_max_concurrent=2" in r.json()["detail"]
                assert r.headers["retry-after"]
            tile = http.get(
                f"{url}/searches/{search}/tiles/WebMercatorQuad/14/8924/5785.png",
                params=NDVI,
                timeout=10,
            )
            assert tile.status_code == 200, tile.text
            assert http.get(f"{url}/healthz", timeout=5).status_code == 200
        finally:
            release.set()
            for thread in threads:
                thread.join(60)
    assert sorted(r.status_code for r in answers) == [200, 200, 503, 503, 503, 503]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fmt", ["gif", "png"])
def test_a_projected_bbox_of_absurd_size_is_a_quick_400(client, search_id, fmt):
    """GDAL's transform of a bbox of +-1e30 m never returns (1e20: over 20 s, 1e15: 0.8 s).

    The animation and the crop share the check: coordinates of a projected CRS beyond
    1e10 (250 times the Earth's circumference in metres or feet) are a 400 at once.
    """
    import threading

    answers = []

    def ask() -> None:
        answers.append(
            client.get(
                f"/searches/{search_id}/bbox/-1e30,-1e30,1e30,1e30/64x64.{fmt}",
                params={**NDVI, "coord_crs": "EPSG:3857"},
            )
        )

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    thread.join(10)
    assert answers, "no answer in 10 s"
    (r,) = answers
    assert r.status_code == 400, r.text
    assert _detail(r).startswith("bbox") and "1e+10" in _detail(r), _detail(r)
    # A bbox of the whole Web Mercator square is still one.
    r = client.get(
        f"/searches/{search_id}/bbox/-2e7,-2e7,2e7,2e7/64x64.{fmt}",
        params={**NDVI, "coord_crs": "EPSG:3857", "interval": "P1Y"},
    )
    assert r.status_code == 200, r.text
