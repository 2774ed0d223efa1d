"""Attacks on evalscripts through the HTTP endpoints: every bad script or combination is a
4xx naming the problem (never a 500), V8's limits come out as their status naming the
setting, and the service keeps answering."""

import io
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import demo_reads as demo
import httpx
import morecantile
import numpy as np
import pytest
from fastapi.testclient import TestClient
from live_server import live_server
from PIL import Image

from app.main import create_app
from app.settings import Settings

ITEMS = "/collections/sentinel-2-l2a/items"
# A loop: the translator steps aside, the script runs in V8.
V8_LOOP = """//VERSION=3
function setup() { return {input: ["B04"], output: {bands: 1, sampleType: "FLOAT32"}}; }
function evaluatePixel(s) { var t = 0; for (var i = 0; i < 3; i++) { t += s.B04; } return [t]; }
"""
V8_FOREVER = """//VERSION=3
function setup() { return {input: ["B04"], output: {bands: 1}}; }
function evaluatePixel(s) { while (true) {} }
"""
V8_HEAP = """//VERSION=3
function setup() { return {input: ["B04"], output: {bands: 1}}; }
var keep = [];
function evaluatePixel(s) { for (;;) { keep.push(new Array(100000).fill(1.5)); } }
"""


def _bands_script(bands: int, sample_type: str = "AUTO", value: str = "s.B04") -> str:
    values = ", ".join([value] * bands)
    return (
        '//VERSION=3\nfunction setup() { return {input: ["B04", "dataMask"], '
        f'output: {{bands: {bands}, sampleType: "{sample_type}"}}}}; }}\n'
        f"function evaluatePixel(s) {{ return [{values}]; }}\n"
    )


@pytest.fixture(scope="module")
def attack_client(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(
        catalog=str(demo_dir),
        data_dir=tmp_path_factory.mktemp("data"),
        evalscript_timeout_seconds=1.0,
        evalscript_memory_mb=64,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def item(demo_dir: Path) -> dict:
    return next(iter(demo.items(demo_dir)))


def _tile(item: dict, ext: str = "png", zoom: int = 14) -> str:
    minx, miny, maxx, maxy = item["bbox"]
    t = morecantile.tms.get("WebMercatorQuad").tile((minx + maxx) / 2, (miny + maxy) / 2, zoom)
    return f"{ITEMS}/{item['id']}/tiles/WebMercatorQuad/{t.z}/{t.x}/{t.y}.{ext}"


def _point(item: dict) -> str:
    minx, miny, maxx, maxy = item["bbox"]
    return f"{ITEMS}/{item['id']}/point/{(minx + maxx) / 2},{(miny + maxy) / 2}"


# ------------------------------------------------------------------ time budget of a request

# V8 only (Date, a loop); each V8 call (one per interval) spends 0.6 s, under the 1 s limit.
SLOW_PER_CALL = """//VERSION=3
function setup() {
  return {input: ["B04", "dataMask"],
          output: [{id: "v", bands: 1, sampleType: "FLOAT32"}, {id: "dataMask", bands: 1}]};
}
var t0 = 0;
function evaluatePixel(s) {
  if (!t0) { t0 = Date.now(); while (Date.now() - t0 < 600) {} }
  return {v: [s.B04], dataMask: [s.dataMask]};
}
"""


def test_statistics_over_many_intervals_share_one_v8_time_limit(attack_client, demo_dir):
    """evalscript_timeout_seconds is the V8 time of the whole request, not of each interval:
    5 intervals x 0.6 s of V8 is over the 1 s limit, a 408 naming it (it was a 200 after
    intervals x timeout seconds)."""
    geometry = json.loads((demo_dir / "fields.geojson").read_text())["features"][0]["geometry"]
    body = {
        "input": {
            "bounds": {"geometry": geometry, "properties": {"crs": "EPSG:4326"}},
            "data": [{"type": "sentinel-2-l2a", "dataFilter": {}}],
        },
        "aggregation": {
            "timeRange": {"from": "2023-01-01T00:00:00Z", "to": "2024-01-01T00:00:00Z"},
            "aggregationInterval": {"of": "P1D"},
            "resx": 0.0001,
            "resy": 0.0001,
            "evalscript": SLOW_PER_CALL,
        },
    }
    started = time.monotonic()
    r = attack_client.post("/statistics", json=body)
    elapsed = time.monotonic() - started
    assert r.status_code == 408, r.text[:300]
    assert "evalscript_timeout_seconds" in r.json()["detail"]
    assert "ran longer than 1 s" in r.json()["detail"]
    assert elapsed < 2.5
    # The next request runs normally.
    assert attack_client.get("/healthz").status_code == 200


# ------------------------------------------------------------------ syntax errors


@pytest.mark.parametrize(
    "script",
    [
        "function setup( {",
        '//VERSION=3\nfunction setup() { return {input: ["B04"]',
    ],
)
def test_a_syntax_error_names_the_problem_not_a_caret(attack_client, item, script):
    """An unfinished script was `evalscript: line 3:1: ^` (V8's caret line taken as the
    message, a line past the script's end): now esprima's message and position."""
    r = attack_client.get(_point(item), params={"evalscript": script})
    assert r.status_code == 400
    detail = r.json()["detail"]
    assert "syntax error" in detail.lower() and "Unexpected" in detail, detail
    assert not detail.rstrip().endswith("^")
    line = int(re.search(r"line (\d+)", detail).group(1))
    assert line <= script.count("\n") + 1


# ------------------------------------------------------------------ a search's defaults


@pytest.mark.parametrize(
    ("defaults", "named"),
    [
        ({"evalscript": "function setup( {"}, "syntax error"),
        ({"evalscript": _bands_script(1).replace('"B04"', '"B10"')}, "B10"),
        ({"evalscript": _bands_script(1), "expression": "B04"}, "not both"),
        ({"evalscript": ["a", "b"]}, "string"),
    ],
)
def test_a_search_refuses_an_evalscript_default_every_tile_would_refuse(
    attack_client, defaults, named
):
    """A broken script in metadata.defaults was stored, then every tile, TileJSON and map of
    the search was a 400: it is a 400 at registration, naming the field."""
    r = attack_client.post(
        "/searches/register",
        json={"collections": ["sentinel-2-l2a"], "metadata": {"defaults": defaults}},
    )
    assert r.status_code == 400, r.text[:300]
    detail = r.json()["detail"]
    assert "metadata.defaults" in detail and named in detail, detail


def test_a_search_keeps_a_good_evalscript_default(attack_client, item):
    r = attack_client.post(
        "/searches/register",
        json={
            "collections": ["sentinel-2-l2a"],
            "metadata": {"defaults": {"evalscript": _bands_script(1, "FLOAT32")}},
        },
    )
    assert r.status_code == 200, r.text[:300]
    search = r.json()["id"]
    minx, miny, maxx, maxy = item["bbox"]
    lon, lat = (minx + maxx) / 2, (miny + maxy) / 2
    by_search = attack_client.get(f"/searches/{search}/point/{lon},{lat}")
    by_item = attack_client.get(_point(item), params={"evalscript": _bands_script(1, "FLOAT32")})
    assert by_search.status_code == 200, by_search.text[:300]
    assert by_item.status_code == 200
    values = by_search.json()["values"]
    # One band, B04's reflectance (the item's own value is one of the mosaic's candidates).
    assert len(values) == 1 and 0 < values[0] < 1
    assert 0 < by_item.json()["values"][0] < 1


# ------------------------------------------------------------------ many V8 requests at once


def test_requests_waiting_for_v8_leave_threads_to_the_others(demo_dir, tmp_path, item):
    """Requests waiting for a V8 turn held a request thread each for up to
    evalscript_v8_queue_seconds: enough of them stalled every other request (a plain
    expression point waited 5 s). At most evalscript_v8_max_waiting wait (default: half of
    request_threads); the others are a 503 at once, with Retry-After, naming the setting."""
    settings = Settings(
        catalog=str(demo_dir),
        data_dir=tmp_path,
        request_threads=8,
        evalscript_timeout_seconds=1.0,
        evalscript_v8_concurrency=1,
        evalscript_v8_queue_seconds=6.0,
    )
    results: list[httpx.Response] = []
    with live_server(create_app(settings)) as url:
        plain = {"expression": "B04"}
        assert httpx.get(url + _point(item), params=plain, timeout=30).status_code == 200

        def v8_forever() -> None:
            params = {"evalscript": V8_FOREVER}
            results.append(httpx.get(url + _point(item), params=params, timeout=60))

        threads = [threading.Thread(target=v8_forever) for _ in range(12)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        started = time.monotonic()
        r = httpx.get(url + _point(item), params=plain, timeout=60)
        waited = time.monotonic() - started
        for thread in threads:
            thread.join()
        assert httpx.get(url + "/healthz", timeout=5).status_code == 200
    assert r.status_code == 200
    assert waited < 1.5, f"a plain point waited {waited:.1f} s behind V8 requests"
    busy = [x for x in results if x.status_code == 503]
    assert busy and all(x.headers.get("Retry-After") for x in busy)
    assert any("evalscript_v8_max_waiting" in x.json()["detail"] for x in busy)
    assert {x.status_code for x in results} <= {408, 503}


# ------------------------------------------------------------------ outputs an endpoint renders


def test_v8_limits_come_out_as_their_status_naming_the_setting(attack_client, item):
    for path in (_tile(item), _point(item), _tile(item, "npy")):
        r = attack_client.get(path, params={"evalscript": V8_FOREVER})
        assert r.status_code == 408, r.text[:200]
        assert "evalscript_timeout_seconds" in r.json()["detail"]
    r = attack_client.get(_tile(item), params={"evalscript": V8_HEAP})
    assert r.status_code == 413, r.text[:200]
    assert "evalscript_memory_mb" in r.json()["detail"]
    # The worker that overran is replaced: the next V8 script runs.
    r = attack_client.get(_point(item), params={"evalscript": V8_LOOP})
    assert r.status_code == 200, r.text[:200]
    assert attack_client.get("/healthz").status_code == 200


@pytest.mark.parametrize("ext", ["png", "jpeg", "webp", "tif", "npy"])
@pytest.mark.parametrize(
    ("bands", "sample_type", "value"),
    [
        (5, "AUTO", "s.B04"),
        (3, "UINT16", "s.B04 * 10000"),
        (1, "FLOAT32", "s.B04 * 1e30"),
        (1, "FLOAT32", "NaN"),
        (3, "FLOAT32", "Infinity"),
        (3, "UINT8", "-Infinity"),
    ],
)
def test_any_output_is_an_image_or_a_4xx_never_a_500(
    attack_client, item, ext, bands, sample_type, value
):
    r = attack_client.get(
        _tile(item, ext), params={"evalscript": _bands_script(bands, sample_type, value)}
    )
    assert r.status_code in (200, 400), r.text[:200]
    if r.status_code == 400:
        assert bands == 5 and ext in ("png", "jpeg", "webp")
    if ext == "npy":
        array = np.load(io.BytesIO(r.content))
        assert array.shape == (bands + 1, 256, 256)  # the bands and the mask


def test_non_finite_values_are_masked(attack_client, item):
    """NaN and Infinity are no data: transparent in a PNG, null at a point."""
    for value in ("NaN", "Infinity"):
        script = _bands_script(1, "FLOAT32", value)
        r = attack_client.get(_tile(item), params={"evalscript": script})
        assert r.status_code == 200
        image = np.asarray(Image.open(io.BytesIO(r.content)))
        assert image.shape == (256, 256, 2) and (image[..., 1] == 0).all()
        r = attack_client.get(_point(item), params={"evalscript": script})
        assert r.status_code == 200 and r.json()["values"] == [None]


@pytest.mark.parametrize("ext", ["png", "jpeg", "webp"])
@pytest.mark.parametrize("bands", [2, 5])
def test_an_image_refuses_a_band_count_it_cannot_show(attack_client, item, ext, bands):
    """A 2-band output on PNG was an RGB image whose blue channel was the mask (JPEG: a
    GDAL message): PNG, JPEG and WebP take 1, 3 or 4 bands, a 400 naming the count."""
    r = attack_client.get(_tile(item, ext), params={"evalscript": _bands_script(bands)})
    assert r.status_code == 400, r.status_code
    detail = r.json()["detail"]
    assert f"{bands} bands" in detail and "1, 3 or 4" in detail and ".tif" in detail, detail


# V8 only; each V8 call (one per item of a mosaic) spends 0.6 s, the output all 0.
SLOW_ITEM = """//VERSION=3
function setup() { return {input: ["B04", "dataMask"], output: {bands: 1}}; }
var t0 = 0;
function evaluatePixel(s) {
  if (!t0) { t0 = Date.now(); while (Date.now() - t0 < 600) {} }
  return [0];
}
"""


def test_a_search_tile_shares_one_v8_time_limit_over_its_items(attack_client, item):
    """Each item of a search tile ran V8 under a timeout of its own (6 items x 0.6 s with a
    1 s limit was a 200 after ~3 s): the request's items share it, a 408 naming it."""
    search = attack_client.post("/searches/register", json={"collections": ["sentinel-2-l2a"]})
    minx, miny, maxx, maxy = item["bbox"]
    tile = morecantile.tms.get("WebMercatorQuad").tile((minx + maxx) / 2, (miny + maxy) / 2, 13)
    path = f"/searches/{search.json()['id']}/tiles/WebMercatorQuad/13/{tile.x}/{tile.y}.npy"
    started = time.monotonic()
    r = attack_client.get(path, params={"evalscript": SLOW_ITEM, "pixel_selection": "mean"})
    elapsed = time.monotonic() - started
    assert r.status_code == 408, (r.status_code, r.text[:200])
    assert "evalscript_timeout_seconds" in r.json()["detail"]
    assert elapsed < 2.5


def test_long_scripts_in_urls_and_bodies_name_their_limit(attack_client, item):
    script = _bands_script(1, "FLOAT32")
    r = attack_client.get(_point(item), params={"evalscript": script + "//" + "x" * 20_000})
    assert r.status_code == 200, r.text[:200]
    r = attack_client.get(_point(item), params={"evalscript": script + "//" + "x" * 40_000})
    assert r.status_code == 414 and "max_query_bytes" in r.json()["detail"]
    body = {
        "input": {
            "bounds": {"bbox": item["bbox"], "properties": {"crs": "EPSG:4326"}},
            "data": [{"type": "sentinel-2-l2a"}],
        },
        "aggregation": {
            "timeRange": {"from": "2023-01-01T00:00:00Z", "to": "2024-01-01T00:00:00Z"},
            "aggregationInterval": {"of": "P1D"},
            "resx": 0.001,
            "resy": 0.001,
            "evalscript": script + "//" + "x" * 100_000,
        },
    }
    r = attack_client.post("/statistics", json=body)
    assert r.status_code == 413, r.text[:200]
    assert "evalscript_max_chars" in r.json()["detail"]


def test_assets_with_an_evalscript_is_a_400_not_ignored(attack_client, item):
    """`assets` next to an evalscript was silently ignored (the tile was the script's)."""
    for path in (_tile(item, "npy"), _point(item)):
        r = attack_client.get(path, params={"evalscript": _bands_script(1), "assets": "nir"})
        assert r.status_code == 400, r.status_code
        assert "assets" in r.json()["detail"] and "evalscript" in r.json()["detail"]


def test_v8_workers_end_with_the_process_that_started_them(tmp_path):
    """A Dask worker (any process) that ran V8 scripts and is killed leaves no V8 worker
    behind: they read requests on a pipe from it and end at its EOF."""
    child = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent.parent)!r})
import numpy as np
from app.evalscript import EvalscriptLimits, parse_evalscript
from app.evalscript import v8
script = parse_evalscript({V8_LOOP!r}, EvalscriptLimits.default())
script.evaluate({{"B04": np.ones((4, 4), np.float32)}}, np.ones((4, 4), bool))
print(" ".join(str(w.process.pid) for w in v8._POOL.idle), flush=True)
import time
time.sleep(60)
"""
    process = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in process.stdout.readline().split()]
        assert pids, "the script ran in no V8 worker"
        assert all(_alive(pid) for pid in pids)
    finally:
        process.kill()
        process.wait()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in pids)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
