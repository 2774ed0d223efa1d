"""Issue 12, items 2 and 5: parser nesting/size bounds and the request body limit.

Inputs that crashed the process (cql2 overflows its stack on deep CQL2) are sent to a
uvicorn SUBPROCESS, so a crash fails the test instead of killing pytest; each such test
checks that the server still answers ``/healthz`` afterwards.
"""

import json
import os
import select
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from live_server import LiveProcess, live_server_process

from app.input_limits import cql2_json_depth, cql2_text_depth, json_depth, value_depth

MAX_BODY = 262_144  # the server's max_body_bytes here: small, so tests send little
BATCH_MB = 1  # its batch_max_upload_mb and batch_max_geojson_mb

DEEP_NOT = "NOT (" * 1200 + '"eo:cloud_cover" < 50' + ")" * 1200


@pytest.fixture(scope="module")
def server(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveProcess]:
    """The service over the demo catalog in a uvicorn subprocess, with small body limits."""
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).parents[1]),
        "TERRATILER_CATALOG": str(demo_dir),
        "TERRATILER_DATA_DIR": str(tmp_path_factory.mktemp("parsers-data")),
        "TERRATILER_MAX_BODY_BYTES": str(MAX_BODY),
        "TERRATILER_BATCH_MAX_UPLOAD_MB": str(BATCH_MB),
        "TERRATILER_BATCH_MAX_GEOJSON_MB": str(BATCH_MB),
    }
    with live_server_process(env) as live:
        yield live


@pytest.fixture(scope="module")
def http(server: LiveProcess) -> Iterator[httpx.Client]:
    """An HTTP client of the subprocess server."""
    with httpx.Client(base_url=server.url, timeout=120, trust_env=False) as client:
        yield client


def _assert_detail(response: httpx.Response, status: int, detail: str) -> None:
    assert (response.status_code, response.json()) == (status, {"detail": detail})


# --------------------------------------------------------------------------- depth scans


def test_json_depth_counts_brackets_outside_strings():
    assert json_depth(b"1") == 0
    assert json_depth(b'{"a": [1, {"b": []}]}') == 4
    # Brackets in strings, escaped quotes included, are text.
    assert json_depth(b'["[[[", "\\"[[", {"k]": "{"}]') == 2
    assert json_depth("[" * 100_000 + "]" * 100_000) == 100_000
    assert value_depth({"a": [1, {"b": []}]}) == 4
    assert value_depth([[[[]]]]) == 4


def test_cql2_depth_of_ordinary_filters_is_small():
    ordinary = [
        '"eo:cloud_cover" < 20',
        "\"eo:cloud_cover\" < 20 AND datetime > TIMESTAMP('2023-01-01T00:00:00Z')",
        "S_INTERSECTS(geometry, POLYGON((0 0, 1 0, 1 1, 0 0)))",
        "(a = 1 OR b = 2) AND NOT (c IN (1, 2, 3)) AND d LIKE 'S2%'",
        "a BETWEEN 1e-5 AND 2 AND CASEI(platform) = CASEI('sentinel-2a')",
    ]
    assert [cql2_text_depth(text) for text in ordinary] == [2, 4, 4, 6, 4]
    assert cql2_text_depth(DEEP_NOT) == 2402
    assert cql2_text_depth("a = " + "-" * 5000 + "1") == 5002
    assert cql2_json_depth({"op": "not", "args": [{"op": "=", "args": [1, 1]}]}) == 2


# --------------------------------------------------------------------------- CQL2 filters


def test_deep_cql2_text_in_get_is_400_and_the_server_lives(server, http):
    response = http.get("/catalog/search", params={"filter": DEEP_NOT})
    _assert_detail(
        response, 400, "filter: nested 2402 operations deep, over the limit max_filter_depth=16"
    )
    assert server.alive()


@pytest.mark.parametrize("path", ["/catalog/search", "/searches/register"])
def test_deep_cql2_text_in_a_body_is_400_and_the_server_lives(server, http, path):
    body = {"filter": DEEP_NOT, "filter-lang": "cql2-text"}
    response = http.post(path, json=body)
    _assert_detail(
        response, 400, "filter: nested 2402 operations deep, over the limit max_filter_depth=16"
    )
    minus = {"filter": "a = " + "-" * 5000 + "1", "filter-lang": "cql2-text"}
    _assert_detail(
        http.post(path, json=minus),
        400,
        "filter: nested 5002 operations deep, over the limit max_filter_depth=16",
    )
    assert server.alive()


def _nested_not(levels: int) -> dict:
    node: dict = {"op": "=", "args": [{"property": "eo:cloud_cover"}, 50]}
    for _ in range(levels):
        node = {"op": "not", "args": [node]}
    return node


def test_cql2_json_too_deep_is_400(http):
    # 20 operations are 41 JSON levels: within max_json_depth, over max_filter_depth.
    body = {"filter": _nested_not(19), "filter-lang": "cql2-json"}
    _assert_detail(
        http.post("/catalog/search", json=body),
        400,
        "filter: nested 20 operations deep, over the limit max_filter_depth=16",
    )
    params = {"filter": json.dumps(_nested_not(19)), "filter-lang": "cql2-json"}
    _assert_detail(
        http.get("/catalog/search", params=params),
        400,
        "filter: nested 20 operations deep, over the limit max_filter_depth=16",
    )


def test_cql2_filter_too_long_is_413(http):
    text = " OR ".join(['"eo:cloud_cover" < 50'] * 3000)
    _assert_detail(
        http.post("/catalog/search", json={"filter": text, "filter-lang": "cql2-text"}),
        413,
        f"filter: {len(text)} characters, over the limit max_filter_length=65536",
    )


def test_ordinary_filters_still_search(http):
    text = 'NOT ("eo:cloud_cover" > 90) AND ("eo:cloud_cover" >= 0 OR "eo:cloud_cover" < 0)'
    response = http.get("/catalog/search", params={"filter": text, "limit": 100})
    assert response.status_code == 200
    assert len(response.json()["features"]) == 6
    body = {"filter": _nested_not(3), "filter-lang": "cql2-json", "limit": 100}
    response = http.post("/catalog/search", json=body)
    assert response.status_code == 200
    assert len(response.json()["features"]) == 6


# --------------------------------------------------------------------------- JSON nesting

DEEP_JSON = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(
    "path", ["/catalog/search", "/searches/register", "/statistics", "/batch/statistics"]
)
def test_deeply_nested_json_body_is_400(server, http, path):
    response = http.post(path, content=DEEP_JSON, headers={"content-type": "application/json"})
    _assert_detail(
        response, 400, "body: nested 100000 levels deep, over the limit max_json_depth=48"
    )
    assert server.alive()


def test_deep_json_under_the_recursion_limit_is_400_on_every_parse(http):
    # 900 levels: json.loads copes, then shapely / cql2 / the route's own code recursed.
    geometry = '{"type": "Polygon", "coordinates": ' + "[" * 900 + "]" * 900 + "}"
    _assert_detail(
        http.get("/catalog/search", params={"intersects": geometry}),
        400,
        "intersects: nested 901 levels deep, over the limit max_json_depth=48",
    )
    query = '{"eo:cloud_cover": {"in": ' + "[" * 900 + "]" * 900 + "}}"
    _assert_detail(
        http.get("/catalog/search", params={"query": query}),
        400,
        "query: nested 902 levels deep, over the limit max_json_depth=48",
    )
    # A JSON body without a content type is parsed as JSON by FastAPI: checked too.
    response = http.post("/statistics", content=DEEP_JSON[:2000] + DEEP_JSON[-2000:])
    _assert_detail(response, 400, "body: nested 2000 levels deep, over the limit max_json_depth=48")


# --------------------------------------------------------------------------- sizes


def test_query_string_over_the_limit_is_414(http):
    response = http.get("/catalog/search", params={"ids": "a" * 40_000})
    _assert_detail(
        response,
        414,
        "query string: 40004 bytes, over the limit max_query_bytes=32768",
    )


def _raw_request(url: str, head: str) -> socket.socket:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    sock.sendall(head.encode("latin-1"))
    return sock


def _read_response(sock: socket.socket) -> tuple[int, dict]:
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    return int(head.split()[1]), json.loads(body)


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def test_too_large_content_length_is_413_before_the_body_is_sent(server):
    # The headers announce 100 MB; not one byte of body is sent. Without the check the
    # server waits for the body (and would read it all).
    sock = _raw_request(
        server.url,
        "POST /catalog/search HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        "Content-Length: 104857600\r\n\r\n",
    )
    with sock:
        status, body = _read_response(sock)
    assert (status, body) == (
        413,
        {"detail": "body: 104857600 bytes, over the limit max_body_bytes=262144"},
    )


@pytest.mark.parametrize(
    ("content_type", "path", "limit", "setting"),
    [
        ("application/json", "/catalog/search", MAX_BODY, f"max_body_bytes={MAX_BODY}"),
        ("text/plain", "/catalog/search", MAX_BODY, f"max_body_bytes={MAX_BODY}"),
        (
            "application/json",
            "/batch/statistics",
            BATCH_MB * 1024 * 1024,
            f"batch_max_geojson_mb={BATCH_MB}",
        ),
    ],
)
def test_chunked_body_is_refused_while_streaming(server, content_type, path, limit, setting):
    # A chunked body has no length: the server must count as it reads and answer 413
    # at the limit, while the client still has most of its 16 MB to send.
    chunk, total = b"x" * 16_384, 16 * 1024 * 1024
    sock = _raw_request(
        server.url,
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n",
    )
    sent = 0
    with sock:
        try:
            while sent < total:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
                # Has the server answered yet? (a short poll: it answers once it read past
                # the limit, the socket buffers hold what it has not read)
                if select.select([sock], [], [], 0.01)[0]:
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, body = _read_response(sock)
    assert (status, body) == (
        413,
        {"detail": f"body: more than {limit} bytes, over the limit {setting}"},
    )
    assert sent < total / 2
    assert server.alive()


def test_batch_bodies_take_the_batch_limit(http):
    # Over max_body_bytes but under batch_max_geojson_mb: the batch route reads and
    # validates it (a 4xx of its own, not the body limit's 413).
    features = {"type": "FeatureCollection", "features": [], "pad": "x" * (2 * MAX_BODY)}
    response = http.post("/batch/statistics", json={"input": {"features": features}})
    assert response.status_code in (400, 422)
    assert "max_body_bytes" not in response.text
    upload = {"features": ("fields.geojson", b"x" * (2 * 1024 * 1024))}
    response = http.post("/batch/statistics", data={"request": "{}"}, files=upload)
    size = response.request.headers["content-length"]
    _assert_detail(
        response, 413, f"body: {size} bytes, over the limit batch_max_upload_mb={BATCH_MB}"
    )


@pytest.mark.parametrize("parameter", ["colormap", "algorithm_params"])
def test_deep_json_query_parameters_are_400(http, parameter):
    # titiler's colormap dependency and our algorithm_params json.loads these: a
    # RecursionError there was a 500.
    item = http.get("/catalog/collections/sentinel-2-l2a/items", params={"limit": 1}).json()
    tile = f"/collections/sentinel-2-l2a/items/{item['features'][0]['id']}/tiles/WebMercatorQuad"
    params = {"assets": "red", "algorithm": "hillshade", parameter: "[" * 5000 + "]" * 5000}
    _assert_detail(
        http.get(f"{tile}/14/8710/5868.png", params=params),
        400,
        f"{parameter}: nested 5000 levels deep, over the limit max_json_depth=48",
    )


def test_registered_defaults_are_checked_for_depth(http):
    # A search's defaults are added to each of its layer's requests (after the request
    # limits): a deep colormap would be json.loads'ed by every tile.
    metadata = {"defaults": {"colormap": "[" * 3000 + "]" * 3000}}
    _assert_detail(
        http.post(
            "/searches/register", json={"collections": ["sentinel-2-l2a"], "metadata": metadata}
        ),
        400,
        "metadata.defaults.colormap: nested 3000 levels deep, over the limit max_json_depth=48",
    )


def test_headers_over_the_limit_are_431(server):
    sock = _raw_request(
        server.url, "GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: " + "a" * 40_000 + "\r\n\r\n"
    )
    with sock:
        status, body = _read_response(sock)
    # host: test (4 + 4 + 4 bytes) and x-big (5 + 40000 + 4).
    assert (status, body) == (
        431,
        {"detail": "headers: 40021 bytes, over the limit max_header_bytes=32768"},
    )


def test_search_lists_over_the_limit_are_413(http):
    ids = [f"id{i}" for i in range(10_001)]
    _assert_detail(
        http.post("/catalog/search", json={"ids": ids}),
        413,
        "ids: 10001 entries, over the limit max_search_list_items=10000",
    )
    sortby = [{"field": f"f{i}"} for i in range(10_001)]
    _assert_detail(
        http.post("/searches/register", json={"sortby": sortby}),
        413,
        "sortby: 10001 entries, over the limit max_search_list_items=10000",
    )
    _assert_detail(
        http.get("/catalog/search", params={"collections": "," * 10_000}),
        413,
        "collections: 10001 entries, over the limit max_search_list_items=10000",
    )
    # At the limit: searched (no such items).
    response = http.post("/catalog/search", json={"ids": ids[:10_000]})
    assert (response.status_code, response.json()["features"]) == (200, [])
