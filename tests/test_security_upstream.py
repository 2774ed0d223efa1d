"""Issue 12 items 6 and 7: hung upstream STAC APIs, and redirects leaving the allow-list.

Everything here is real and on loopback: a ``SilentServer`` that accepts connections and
never answers (a hung upstream), ``StubServer`` origins answering redirects, the service
under a real uvicorn, GDAL reading over HTTP.
"""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pystac
import pytest
from fastapi.testclient import TestClient
from harness.stubapi import Recorded, SilentServer, StubResponse, StubServer, landing_page
from live_server import LiveServer
from polling import wait_until

from app import redirects
from app.batch.features import read_features
from app.catalog.base import SearchQuery
from app.catalog.stacapi import StacApiCatalog
from app.errors import ForbiddenError, UpstreamError, UpstreamTimeoutError
from app.main import create_app
from app.mosaic.index import FootprintIndex, IndexCache
from app.settings import Settings
from app.stats.reading import SceneReader, SceneReadError

FIXTURES = Path(__file__).parent / "fixtures"

# anyio's default limit on threads running sync endpoints (Starlette's threadpool).
THREADPOOL_SIZE = 40


@pytest.fixture(scope="module")
def silent() -> Iterator[SilentServer]:
    with SilentServer() as server:
        yield server


# --------------------------------------------------------------------------------------
# Item 6: a hung upstream STAC API.


def test_callers_during_a_hung_landing_fetch_share_its_one_timeout() -> None:
    # The landing page used to be fetched under a lock: each caller in turn took the lock
    # and waited its own timeout (60 callers x 30 s). Now one fetch, one outcome for all.
    with SilentServer() as server:
        catalog = StacApiCatalog(server.url, timeout=1, retries=0, max_concurrency=8)
        with ThreadPoolExecutor(5) as pool:
            futures = [pool.submit(catalog.search_page, SearchQuery()) for _ in range(5)]
            errors = [future.exception(timeout=30) for future in futures]
        connections = server.connections()
    assert connections == 1
    assert all(isinstance(error, UpstreamTimeoutError) for error in errors), errors
    assert {error.status_code for error in errors} == {504}  # type: ignore[union-attr]
    assert "within 1 s (stac_timeout)" in str(errors[0])


def test_the_landing_page_is_fetched_again_after_a_hung_fetch() -> None:
    with SilentServer() as server:
        catalog = StacApiCatalog(server.url, timeout=0.5, retries=0)
        for _ in range(2):
            with pytest.raises(UpstreamTimeoutError):
                catalog.collections()
        assert server.connections() == 2
        assert catalog.in_flight == 0  # every slot given back


@contextmanager
def _trickling_server(body: bytes, interval: float) -> Iterator[str]:
    """A loopback HTTP server answering every request 200 with ``body``, a byte at a time."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def answer(connection: socket.socket) -> None:
        with connection:
            connection.recv(65536)
            head = "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n"
            connection.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode())
            for byte in body:
                if stop.wait(interval):
                    return
                connection.sendall(bytes([byte]))

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=answer, args=(connection,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()


def test_an_upstream_trickling_its_answer_is_cut_at_the_request_deadline() -> None:
    # A byte every 50 ms never trips the 1 s read timeout; the whole answer would take 10 s.
    body = json.dumps({"links": []}).ljust(200).encode()
    with _trickling_server(body, 0.05) as url:
        catalog = StacApiCatalog(url, timeout=1, retries=0, deadline=1.0)
        with pytest.raises(UpstreamTimeoutError) as caught:
            catalog.collections()
    assert caught.value.status_code == 504
    assert caught.value.message == (
        f"STAC API {url} did not finish answering GET {url} within 1 s (stac_request_deadline)"
    )
    assert catalog.in_flight == 0


def test_a_hung_search_holds_nothing_another_call_needs() -> None:
    release = threading.Event()

    def handle(request: Recorded, server: StubServer) -> StubResponse:
        if request.path == "/":
            return StubResponse(200, landing_page(server.url))
        if request.path == "/search":
            release.wait(30)
            return StubResponse(200, {"type": "FeatureCollection", "features": [], "links": []})
        return StubResponse(200, {"collections": [], "links": []})

    with StubServer(handle) as server:
        catalog = StacApiCatalog(server.url, timeout=30, retries=0)
        with ThreadPoolExecutor(1) as pool:
            search = pool.submit(catalog.search_page, SearchQuery())
            wait_until(lambda: server.count("POST", "/search") == 1, "the search to hang")
            try:
                assert catalog.collections() == []
                assert not search.done()  # answered while the search still hangs
                assert catalog.in_flight == 1
            finally:
                release.set()
            assert search.result(timeout=30).items == []


@pytest.mark.parametrize(
    ("call", "what"),
    [
        (lambda catalog: catalog.collections(), "the landing page is not a STAC catalog"),
        (lambda catalog: catalog.search_page(SearchQuery()), "sent an invalid item"),
    ],
)
def test_an_upstream_sending_typeless_stac_is_a_502(call: Callable, what: str) -> None:
    # pystac's STACTypeError is no STACError: it escaped as a 500.
    def handle(request: Recorded, server: StubServer) -> StubResponse:
        if request.path == "/":
            if what.startswith("the landing"):
                return StubResponse(200, {"links": []})
            return StubResponse(200, landing_page(server.url))
        return StubResponse(200, {"type": "FeatureCollection", "features": [{"id": "x"}]})

    with StubServer(handle) as server:
        with pytest.raises(UpstreamError, match=what) as caught:
            call(StacApiCatalog(server.url, retries=0))
    assert caught.value.status_code == 502


@contextmanager
def _hung_service(tmp_path: Path, upstream: str, **limits: Any) -> Iterator[tuple[str, Any]]:
    """The service under uvicorn over a hung STAC API: (base URL, its StacApiCatalog).

    Each test needs its own limits, hence an app per test here.
    """
    settings = Settings(
        catalog=upstream,
        data_dir=tmp_path,
        cache_control="",
        stac_timeout=3.0,
        stac_retries=0,
        **limits,
    )
    app = create_app(settings)
    server = LiveServer(app)
    try:
        yield server.start(), app.state.services.catalog.base  # the STAC API under the layers
    finally:
        server.stop()


def _hung_searches(url: str, count: int) -> tuple[list[httpx.Response], list[threading.Thread]]:
    """Start ``count`` GET /catalog/search in threads: (their answers as they come, threads)."""
    results: list[httpx.Response] = []

    def one() -> None:
        with httpx.Client(trust_env=False, timeout=60) as client:
            results.append(client.get(f"{url}/catalog/search"))

    threads = [threading.Thread(target=one, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    return results, threads


def test_a_saturated_upstream_is_a_fast_503_naming_the_limits(
    tmp_path: Path, silent: SilentServer
) -> None:
    limits = {"stac_max_concurrency": 2, "stac_queue_timeout": 0.2}
    with _hung_service(tmp_path, silent.url, **limits) as (url, catalog):
        results, threads = _hung_searches(url, 2)
        wait_until(lambda: catalog.in_flight == 2, "both slots taken by hung searches")
        with httpx.Client(trust_env=False, timeout=60) as client:
            busy = client.get(f"{url}/catalog/search")
            health = client.get(f"{url}/healthz")
        answered_first = not results  # the hung searches were still waiting
        for thread in threads:
            thread.join(30)
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
    assert "stac_max_concurrency" in busy.json()["detail"]
    assert "2 requests already in flight" in busy.json()["detail"]
    assert "stac_queue_timeout" in busy.json()["detail"]
    assert health.status_code == 200 and answered_first
    assert [r.status_code for r in results] == [504, 504]
    assert all("(stac_timeout)" in r.json()["detail"] for r in results)
    assert catalog.in_flight == 0


def test_healthz_and_metrics_answer_while_every_thread_waits_on_the_upstream(
    tmp_path: Path, silent: SilentServer
) -> None:
    # More hung searches than worker threads: /healthz and /metrics need none.
    limits = {"stac_max_concurrency": THREADPOOL_SIZE + 20, "stac_queue_timeout": 30.0}
    with _hung_service(tmp_path, silent.url, **limits) as (url, catalog):
        results, threads = _hung_searches(url, THREADPOOL_SIZE + 5)
        wait_until(lambda: catalog.in_flight == THREADPOOL_SIZE, "every worker thread hung")
        with httpx.Client(trust_env=False, timeout=60) as client:
            health = client.get(f"{url}/healthz")
            metrics = client.get(f"{url}/metrics")
        answered_first = not results
        for thread in threads:
            thread.join(60)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert metrics.status_code == 200 and "terratiler_requests" in metrics.text
    assert answered_first  # before any thread was freed by a timeout
    assert len(results) == THREADPOOL_SIZE + 5
    assert {r.status_code for r in results} == {504}


# --------------------------------------------------------------------------------------
# Item 7: redirects leaving the allow-list.


def _ranged(data: bytes, request: Recorded) -> StubResponse:
    """Serve ``data`` as an object store does: HEAD, and GET with one byte range."""
    headers = {"Content-Type": "image/tiff", "Accept-Ranges": "bytes"}
    match = re.match(r"bytes=(\d+)-(\d*)$", request.headers.get("range", ""))
    if request.method == "HEAD" or match is None:
        return StubResponse(200, data, headers)
    start = int(match.group(1))
    end = min(int(match.group(2) or len(data) - 1), len(data) - 1)
    headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
    return StubResponse(206, data[start : end + 1], headers)


def _item_json(hrefs: dict[str, str]) -> dict[str, Any]:
    item = json.loads((FIXTURES / "earth-search-v1-sentinel-2-l2a-item.json").read_text())
    item["assets"] = {
        key: {**item["assets"][key], "href": href}
        for key, href in hrefs.items()
        if key in item["assets"]
    }
    item["links"] = []
    return item


@pytest.fixture(scope="module")
def origin_b() -> Iterator[StubServer]:
    """The origin not allowed: every test checks it was never contacted."""
    with StubServer(lambda request, server: StubResponse(200, "secret")) as server:
        yield server


@pytest.fixture(scope="module")
def origin_a(origin_b: StubServer, demo_dir: Path) -> Iterator[StubServer]:
    """The allowed origin: answers redirects to B, to itself, and serves one real COG."""
    cog = sorted((demo_dir / "cogs").rglob("*.tif"))[0].read_bytes()

    def handle(request: Recorded, server: StubServer) -> StubResponse:
        path = request.path
        if path.startswith("/to-b/"):
            return StubResponse(302, "", {"Location": origin_b.url + path.removeprefix("/to-b")})
        if path == "/moved.tif":  # same origin, under the allowed prefix
            return StubResponse(301, "", {"Location": "/data/real.tif"})
        if path.startswith("/loop"):
            n = int(path.removeprefix("/loop").removesuffix(".tif") or 0)
            return StubResponse(302, "", {"Location": f"/loop{n + 1}.tif"})
        if path == "/data/real.tif":
            return _ranged(cog, request)
        if path == "/flip.json":  # no redirect for the check's ranged GET, one afterwards
            if "range" in request.headers:
                return StubResponse(206, "{", {"Content-Range": "bytes 0-0/1"})
            return StubResponse(302, "", {"Location": f"{origin_b.url}/item.json"})
        if path == "/item.json":
            return StubResponse(200, _item_json({"red": f"{server.url}/to-b/red.tif"}))
        return StubResponse(404, "no such file")

    with StubServer(handle) as server:
        yield server


@pytest.fixture(scope="module")
def redirect_client(
    origin_a: StubServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    settings = Settings(
        catalog=str(tmp_path_factory.mktemp("no-catalog")),
        data_dir=tmp_path_factory.mktemp("data"),
        allowed_sources=[f"{origin_a.url}/"],
        allow_private_sources=True,
        cache_control="",
    )
    with TestClient(create_app(settings)) as test_client:  # batch jobs too: a started app
        yield test_client


@pytest.mark.parametrize(
    "path",
    [
        "/cog/info?url={a}/to-b/x.tif",
        "/cog/tiles/WebMercatorQuad/10/500/300.png?url={a}/to-b/x.tif",
        "/stac/info?url={a}/to-b/item.json",
        "/stac/info?url={a}/item.json&assets=red",
    ],
)
def test_a_redirect_out_of_the_allow_list_is_refused_and_never_followed(
    redirect_client: TestClient, origin_a: StubServer, origin_b: StubServer, path: str
) -> None:
    response = redirect_client.get(path.format(a=origin_a.url))
    assert response.status_code == 403, response.text
    detail = response.json()["detail"]
    assert f"redirects to {origin_b.url}/" in detail
    assert f"refused: not in the allowed sources ({origin_a.url}/)" in detail
    assert origin_b.count() == 0


def test_a_redirect_inside_the_allow_list_is_followed_and_read(
    redirect_client: TestClient, origin_a: StubServer, origin_b: StubServer
) -> None:
    response = redirect_client.get(f"/cog/info?url={origin_a.url}/moved.tif")
    assert response.status_code == 200, response.text
    assert response.json()["width"] > 0
    # GDAL read the final URL: the redirecting one was asked once, by the hop check.
    assert origin_a.count(path="/moved.tif") == 1
    assert origin_a.count(path="/data/real.tif") >= 2
    assert origin_b.count() == 0


def test_a_stac_item_redirecting_only_after_the_check_is_not_followed(
    redirect_client: TestClient, origin_a: StubServer, origin_b: StubServer
) -> None:
    response = redirect_client.get(f"/stac/info?url={origin_a.url}/flip.json&assets=red")
    assert response.status_code == 502, response.text
    assert response.json()["detail"] == f"url: '{origin_a.url}/flip.json' answered 302"
    assert origin_b.count() == 0


def test_more_redirects_than_the_limit_are_refused_naming_the_setting(
    redirect_client: TestClient, origin_a: StubServer
) -> None:
    response = redirect_client.get(f"/cog/info?url={origin_a.url}/loop0.tif")
    assert response.status_code == 403
    assert response.json()["detail"] == (
        f"url: {origin_a.url}/loop0.tif redirects more than 3 times "
        "(source_max_redirects=3); not followed"
    )
    assert origin_a.count(path="/loop4.tif") == 0  # 3 hops followed, the 4th not


def test_a_batch_features_href_redirecting_out_is_refused(
    redirect_client: TestClient, origin_a: StubServer, origin_b: StubServer
) -> None:
    body = {
        "input": {
            "features": {"href": f"{origin_a.url}/to-b/fields.geojson"},
            "data": [{"type": "sentinel-2-l2a"}],
        },
        "aggregation": {
            "timeRange": {"from": "2023-04-01T00:00:00Z", "to": "2023-10-01T00:00:00Z"},
            "aggregationInterval": {"of": "P1D"},
            "outputs": {"ndvi": {"expression": "(nir-red)/(nir+red)"}},
        },
    }
    response = redirect_client.post("/batch/statistics", json=body)
    assert response.status_code == 403, response.text
    detail = response.json()["detail"]
    assert detail.startswith(f"input.features: {origin_a.url}/to-b/fields.geojson redirects to")
    assert "refused: not in the allowed sources" in detail
    assert origin_b.count() == 0


def test_features_are_read_over_http_without_following_redirects(
    origin_a: StubServer, origin_b: StubServer
) -> None:
    # A redirect answered only at read time (after the check) is not followed either: a 502
    # that says so.
    with pytest.raises(UpstreamError, match=r"answered with a redirect \(HTTP 302\)"):
        read_features(f"{origin_a.url}/to-b/fields.geojson")
    assert origin_b.count() == 0


def test_scene_reads_for_statistics_check_redirects(
    origin_a: StubServer, origin_b: StubServer
) -> None:
    item = pystac.Item.from_dict(_item_json({"red": f"{origin_a.url}/to-b/red.tif"}))
    reader = SceneReader([f"{origin_a.url}/"], allow_private=True)
    with pytest.raises(SceneReadError, match="redirects to .* refused: not in the allowed"):
        reader._source(item, "red")
    assert origin_b.count() == 0


def test_source_max_redirects_zero_refuses_every_redirect(origin_a: StubServer) -> None:
    redirects.configure(max_redirects=0)
    try:
        with pytest.raises(ForbiddenError) as caught:
            redirects.resolve_redirects(
                f"{origin_a.url}/moved.tif", [f"{origin_a.url}/"], allow_private=True
            )
        final = redirects.resolve_redirects(
            f"{origin_a.url}/data/real.tif", [f"{origin_a.url}/"], allow_private=True
        )
    finally:
        redirects.configure()  # the defaults, as the settings have them
    assert caught.value.status_code == 403
    assert "redirects more than 0 times (source_max_redirects=0)" in caught.value.message
    assert final == f"{origin_a.url}/data/real.tif"


def test_waiting_for_another_requests_index_build_is_bounded() -> None:
    # A slow upstream holds the first request's build; the others give up after the wait.
    release = threading.Event()

    def slow_build() -> FootprintIndex:
        release.wait(30)
        return FootprintIndex("a" * 16, [])

    cache = IndexCache(wait_timeout=0.2)
    with ThreadPoolExecutor(2) as pool:
        owner = pool.submit(cache.get, "a" * 16, slow_build)
        wait_until(lambda: cache.builds == 1, "the first build to start")
        waiter = pool.submit(cache.get, "a" * 16, slow_build)
        try:
            error = waiter.exception(timeout=20)
            assert not owner.done()  # the waiter gave up while the build still ran
        finally:
            release.set()
        assert len(owner.result(timeout=30)) == 0
    assert isinstance(error, UpstreamTimeoutError) and error.status_code == 504
    assert error.message == (
        f"search '{'a' * 16}': its item index is still being built after 0.2 s "
        "(mosaic_index_wait); try again shortly"
    )
    assert cache.builds == 1
