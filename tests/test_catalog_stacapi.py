"""StacApiCatalog: against a real STAC API (stac-fastapi-pgstac) and scripted loopback peers.

The pgstac tests load the demo catalog into the peer and check that every kind of search
gives the same items, in the same order, through ``StacApiCatalog(peer)`` as through
``LocalCatalog(demo_dir)``. The stub tests prove the failure handling: retries with backoff
on 429/503 and dropped connections, ``Retry-After``, timeouts, a stopped upstream, 4xx
mapping, paging tokens that cannot leave the API root, one landing-page fetch.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pystac
import pytest
from harness.stubapi import Recorded, SilentServer, StubResponse, StubServer, landing_page
from pgstac_fixtures import pgstac_api, pgstac_peer  # noqa: F401

from app.catalog import Catalog, SearchQuery
from app.catalog.local import LocalCatalog
from app.catalog.query import format_datetime, search_from_body, search_from_get
from app.catalog.stacapi import StacApiCatalog
from app.errors import BadRequestError, NotFoundError, UpstreamError, UpstreamTimeoutError

FIXTURE_ITEM = json.loads(
    (Path(__file__).parent / "fixtures" / "earth-search-v1-sentinel-2-l2a-item.json").read_text()
)

# --------------------------------------------------------------------------------------
# Against the real pgstac peer, compared with LocalCatalog on the same demo folder.


@pytest.fixture(scope="module")
def local(demo_dir: Path) -> LocalCatalog:
    return LocalCatalog(demo_dir)


@pytest.fixture(scope="module")
def remote(pgstac_api: str) -> StacApiCatalog:  # noqa: F811
    return StacApiCatalog(pgstac_api, timeout=30, retries=2, backoff=0.1)


@pytest.fixture(scope="module")
def demo_items(local: LocalCatalog) -> list[pystac.Item]:
    items = sorted(local.search(SearchQuery()), key=lambda item: item.datetime)
    assert len(items) >= 4, "the comparison needs a demo catalog of at least 4 scenes"
    return items


def _clouds(items: list[pystac.Item]) -> list[float]:
    return sorted(item.properties["eo:cloud_cover"] for item in items)


def _centre(item: pystac.Item) -> tuple[float, float]:
    minx, miny, maxx, maxy = item.bbox
    return (minx + maxx) / 2, (miny + maxy) / 2


def _iso(item: pystac.Item) -> str:
    return format_datetime(item.datetime)


Search = Callable[[list[pystac.Item]], SearchQuery]


def _body(build: Callable[[list[pystac.Item]], dict[str, Any]]) -> Search:
    return lambda items: search_from_body(build(items))


def _get(build: Callable[[list[pystac.Item]], dict[str, str]]) -> Search:
    return lambda items: search_from_get(build(items))


FAR_AWAY = {
    "type": "Polygon",
    "coordinates": [[[10.0, 10.0], [11.0, 10.0], [11.0, 11.0], [10.0, 11.0], [10.0, 10.0]]],
}

SEARCHES: dict[str, Search] = {
    "everything": _body(lambda items: {}),
    "ids": _body(lambda items: {"ids": [items[0].id, items[-1].id]}),
    "collections": _body(lambda items: {"collections": [items[0].collection_id]}),
    "unknown collection": _body(lambda items: {"collections": ["no-such-collection"]}),
    "bbox inside": _body(
        lambda items: {
            "bbox": [
                _centre(items[0])[0] - 0.001,
                _centre(items[0])[1] - 0.001,
                _centre(items[0])[0] + 0.001,
                _centre(items[0])[1] + 0.001,
            ]
        }
    ),
    "bbox elsewhere": _body(lambda items: {"bbox": [10.0, 10.0, 11.0, 11.0]}),
    "intersects point": _body(
        lambda items: {"intersects": {"type": "Point", "coordinates": list(_centre(items[0]))}}
    ),
    "intersects elsewhere": _body(lambda items: {"intersects": FAR_AWAY}),
    "datetime instant": _body(lambda items: {"datetime": _iso(items[1])}),
    "datetime closed": _body(lambda items: {"datetime": f"{_iso(items[1])}/{_iso(items[3])}"}),
    "datetime open start": _body(lambda items: {"datetime": f"../{_iso(items[2])}"}),
    "datetime open end": _body(lambda items: {"datetime": f"{_iso(items[2])}/.."}),
    "query eq": _body(lambda items: {"query": {"eo:cloud_cover": {"eq": _clouds(items)[1]}}}),
    "query lt": _body(
        lambda items: {"query": {"eo:cloud_cover": {"lt": _clouds(items)[len(items) // 2]}}}
    ),
    "query gte": _body(
        lambda items: {"query": {"eo:cloud_cover": {"gte": _clouds(items)[len(items) // 2]}}}
    ),
    "query in": _body(
        lambda items: {"query": {"eo:cloud_cover": {"in": [_clouds(items)[0], _clouds(items)[-1]]}}}
    ),
    "query range": _body(
        lambda items: {
            "query": {"eo:cloud_cover": {"gt": _clouds(items)[0], "lte": _clouds(items)[-2]}}
        }
    ),
    "filter cql2-json": _body(
        lambda items: {
            "filter": {
                "op": "and",
                "args": [
                    {
                        "op": "<",
                        "args": [{"property": "eo:cloud_cover"}, _clouds(items)[len(items) // 2]],
                    },
                    {"op": "=", "args": [{"property": "collection"}, items[0].collection_id]},
                ],
            },
            "filter-lang": "cql2-json",
        }
    ),
    "filter cql2-text": _get(
        lambda items: {
            "filter": f"eo:cloud_cover >= {_clouds(items)[len(items) // 2]}",
            "filter-lang": "cql2-text",
        }
    ),
    "filter on datetime": _get(
        lambda items: {"filter": f"datetime > TIMESTAMP('{_iso(items[2])}')"}
    ),
    "filter s_intersects": _body(
        lambda items: {
            "filter": {
                "op": "s_intersects",
                "args": [
                    {"property": "geometry"},
                    {"type": "Point", "coordinates": list(_centre(items[0]))},
                ],
            }
        }
    ),
    "sortby cloud asc": _body(
        lambda items: {"sortby": [{"field": "eo:cloud_cover", "direction": "asc"}]}
    ),
    "sortby cloud desc": _get(lambda items: {"sortby": "-eo:cloud_cover"}),
    "sortby properties.cloud desc": _body(
        lambda items: {"sortby": [{"field": "properties.eo:cloud_cover", "direction": "desc"}]}
    ),
    "sortby datetime asc": _get(lambda items: {"sortby": "datetime"}),
    "sortby datetime desc": _body(
        lambda items: {"sortby": [{"field": "datetime", "direction": "desc"}]}
    ),
    # Total orders (cloud cover ties broken by datetime): ids must match exactly.
    "sortby cloud asc, datetime desc": _get(lambda items: {"sortby": "eo:cloud_cover,-datetime"}),
    "sortby cloud desc, datetime asc": _body(
        lambda items: {
            "sortby": [
                {"field": "eo:cloud_cover", "direction": "desc"},
                {"field": "datetime", "direction": "asc"},
            ]
        }
    ),
    "combined": _body(
        lambda items: {
            "collections": [items[0].collection_id],
            "intersects": {"type": "Point", "coordinates": list(_centre(items[0]))},
            "datetime": f"{_iso(items[0])}/{_iso(items[-1])}",
            "query": {"eo:cloud_cover": {"lte": _clouds(items)[-2]}},
            "sortby": [
                {"field": "eo:cloud_cover", "direction": "desc"},
                {"field": "datetime", "direction": "desc"},
            ],
        }
    ),
}


def _ids(items: Any) -> list[str]:
    return [item.id for item in items]


def _sort_keys(items: list[pystac.Item], query: SearchQuery) -> list[tuple[Any, ...]]:
    """What a search orders by: its sortby fields, else the default (datetime)."""
    fields = [s.field.removeprefix("properties.") for s in query.sortby] or ["datetime"]
    return [tuple(item.properties.get(name) for name in fields) for item in items]


@pytest.mark.pgstac
@pytest.mark.parametrize("name", list(SEARCHES))
def test_search_matches_local_catalog(
    name: str, local: LocalCatalog, remote: StacApiCatalog, demo_items: list[pystac.Item]
) -> None:
    query = SEARCHES[name](demo_items)
    expected = list(local.search(query))
    got = list(remote.search(query))
    assert sorted(_ids(got)) == sorted(_ids(expected))
    # Same order of what the search sorts by; items that tie on it may come in any order
    # (implementations break ties differently), so exact order is checked where the keys
    # are unique, which the total-order searches ("..., datetime ...") guarantee.
    keys = _sort_keys(expected, query)
    assert _sort_keys(got, query) == keys
    if len(set(keys)) == len(keys):
        assert _ids(got) == _ids(expected)
    if ", datetime" in name or name == "combined":
        assert len(set(keys)) == len(keys)
    if name not in ("unknown collection", "bbox elsewhere", "intersects elsewhere"):
        assert expected, f"the search {name!r} should match some demo items"


@pytest.mark.pgstac
@pytest.mark.parametrize(
    "name",
    [
        "everything",
        "sortby cloud asc, datetime desc",
        "sortby cloud desc, datetime asc",
        "combined",
    ],
)
def test_paging_matches_local_catalog(
    name: str, local: LocalCatalog, remote: StacApiCatalog, demo_items: list[pystac.Item]
) -> None:
    def pages(catalog: Catalog) -> tuple[list[list[str]], list[int | None]]:
        query = SEARCHES[name](demo_items)
        query.limit = 2
        result: list[list[str]] = []
        matched: list[int | None] = []
        while True:
            page = catalog.search_page(query)
            result.append(_ids(page.items))
            matched.append(page.number_matched)
            if page.next_token is None:
                return result, matched
            assert len(result) < 50, "paging does not end"
            query.token = page.next_token

    local_pages, local_matched = pages(local)
    remote_pages, remote_matched = pages(remote)
    assert remote_pages == local_pages
    assert sum(len(page) for page in remote_pages) == len(
        _ids(local.search(SEARCHES[name](demo_items)))
    )
    assert remote_matched == local_matched


@pytest.mark.pgstac
def test_search_max_items_and_page_size(
    local: LocalCatalog, remote: StacApiCatalog, demo_items: list[pystac.Item]
) -> None:
    query = SEARCHES["sortby cloud desc, datetime asc"](demo_items)
    assert _ids(remote.search(query, max_items=3)) == _ids(local.search(query, max_items=3))
    # Walking all pages two items at a time gives the same as one big page.
    small_pages = StacApiCatalog(remote.url, page_size=2)
    assert _ids(small_pages.search(query)) == _ids(local.search(query))


@pytest.mark.pgstac
def test_get_item_matches_local_catalog(
    local: LocalCatalog, remote: StacApiCatalog, demo_items: list[pystac.Item]
) -> None:
    for expected in demo_items:
        item = remote.get_item(expected.collection_id, expected.id)
        assert isinstance(item, pystac.Item)
        assert item.id == expected.id
        assert item.collection_id == expected.collection_id
        assert item.datetime == expected.datetime
        assert item.bbox == pytest.approx(expected.bbox)
        assert item.geometry == expected.geometry
        assert item.properties == expected.properties
        # Asset hrefs absolute and identical: what the readers will open.
        assert {k: a.to_dict() for k, a in item.assets.items()} == {
            k: a.to_dict() for k, a in expected.assets.items()
        }
        assert all(Path(a.href).is_absolute() for a in item.assets.values())


@pytest.mark.pgstac
def test_collections_match_local_catalog(local: LocalCatalog, remote: StacApiCatalog) -> None:
    assert [c.id for c in remote.collections()] == [c.id for c in local.collections()]
    for expected in local.collections():
        collection = remote.get_collection(expected.id)
        assert isinstance(collection, pystac.Collection)
        assert collection.id == expected.id
        assert collection.description == expected.description


@pytest.mark.pgstac
def test_unknown_item_and_collection_are_not_found(
    local: LocalCatalog, remote: StacApiCatalog, demo_items: list[pystac.Item]
) -> None:
    collection = demo_items[0].collection_id
    for catalog in (local, remote):
        with pytest.raises(NotFoundError):
            catalog.get_item(collection, "no-such-item")
        with pytest.raises(NotFoundError):
            catalog.get_item("no-such-collection", demo_items[0].id)
        with pytest.raises(NotFoundError):
            catalog.get_collection("no-such-collection")


@pytest.mark.pgstac
def test_a_local_token_is_refused_by_the_api_catalog(
    local: LocalCatalog, remote: StacApiCatalog, demo_items: list[pystac.Item]
) -> None:
    query = SearchQuery(limit=1)
    token = local.search_page(query).next_token
    assert token
    with pytest.raises(BadRequestError, match="token"):
        remote.search_page(SearchQuery(limit=1, token=token))


# --------------------------------------------------------------------------------------
# Scripted loopback peers: failures, retries, timeouts, tokens.


def _item(item_id: str) -> dict[str, Any]:
    item = json.loads(json.dumps(FIXTURE_ITEM))
    item["id"] = item_id
    item["links"] = []
    return item


def _page(url: str, ids: list[str], next_link: dict[str, Any] | None = None) -> dict[str, Any]:
    links = [{"rel": "root", "href": url}]
    if next_link:
        links.append({"rel": "next", **next_link})
    return {
        "type": "FeatureCollection",
        "features": [_item(i) for i in ids],
        "links": links,
        "numberMatched": len(ids),
    }


def _api(
    search: Callable[[Recorded, StubServer], StubResponse] | None = None,
    item: Callable[[Recorded, StubServer], StubResponse] | None = None,
) -> StubServer:
    """A stub STAC API: landing page, then ``search`` / ``item`` handlers."""

    def handle(request: Recorded, server: StubServer) -> StubResponse:
        if request.path in ("", "/"):
            return StubResponse(200, landing_page(server.url))
        if request.path == "/search" and search is not None:
            return search(request, server)
        if request.path.startswith("/collections/") and item is not None:
            return item(request, server)
        return StubResponse(404, {"code": "NotFoundError", "description": "no such thing"})

    return StubServer(handle)


def _failing(statuses: list[int], headers: dict[str, str] | None = None) -> Callable[..., Any]:
    """A search handler answering ``statuses`` in turn, then one page of one item."""
    remaining = list(statuses)

    def search(request: Recorded, server: StubServer) -> StubResponse:
        if remaining:
            status = remaining.pop(0)
            if status == 0:
                return StubResponse(drop=True)
            return StubResponse(status, {"description": f"try again ({status})"}, headers or {})
        return StubResponse(200, _page(server.url, ["S2A_OK"]))

    return search


@pytest.mark.parametrize("statuses", [[503, 503], [429, 500, 502], [504], [0, 0]])
def test_retries_transient_failures_then_answers(statuses: list[int]) -> None:
    with _api(search=_failing(statuses)) as server:
        catalog = StacApiCatalog(server.url, retries=3, backoff=0.01)
        assert _ids(catalog.search(SearchQuery())) == ["S2A_OK"]
        assert server.count("POST", "/search") == len(statuses) + 1


def test_retries_exhausted_is_an_upstream_error_naming_the_upstream() -> None:
    with _api(search=_failing([503] * 10)) as server:
        catalog = StacApiCatalog(server.url, retries=2, backoff=0.01)
        with pytest.raises(UpstreamError) as caught:
            list(catalog.search(SearchQuery()))
        assert caught.value.status_code == 502
        assert server.url in caught.value.message
        assert "503" in caught.value.message
        assert server.count("POST", "/search") == 3


def test_no_retries_when_disabled() -> None:
    with _api(search=_failing([503])) as server:
        catalog = StacApiCatalog(server.url, retries=0)
        with pytest.raises(UpstreamError):
            catalog.search_page(SearchQuery())
        assert server.count("POST", "/search") == 1


def test_backoff_is_exponential() -> None:
    with _api(search=_failing([503, 503, 503])) as server:
        catalog = StacApiCatalog(server.url, retries=3, backoff=0.2)
        assert _ids(catalog.search(SearchQuery())) == ["S2A_OK"]
        times = [r.at for r in server.requests if r.path == "/search"]
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert len(gaps) == 3
        for gap, expected in zip(gaps, [0.2, 0.4, 0.8], strict=True):
            # The lower bounds show the doubling; the upper ones only that nothing waited
            # far longer (generous: this machine is shared).
            assert expected - 0.05 <= gap < expected + 1.5


def test_retry_after_is_honoured() -> None:
    with _api(search=_failing([429], headers={"Retry-After": "1"})) as server:
        catalog = StacApiCatalog(server.url, retries=3, backoff=0.01)
        started = time.monotonic()
        assert _ids(catalog.search(SearchQuery())) == ["S2A_OK"]
        assert time.monotonic() - started >= 0.95
        times = [r.at for r in server.requests if r.path == "/search"]
        assert times[1] - times[0] >= 0.95


def test_retry_after_is_capped_at_the_timeout() -> None:
    with _api(search=_failing([503], headers={"Retry-After": "3600"})) as server:
        catalog = StacApiCatalog(server.url, timeout=1, retries=1, backoff=0.01)
        started = time.monotonic()
        assert _ids(catalog.search(SearchQuery())) == ["S2A_OK"]
        assert time.monotonic() - started < 5


def test_upstream_stopped_mid_test_is_an_upstream_error() -> None:
    server = _api(search=lambda request, server: StubResponse(200, _page(server.url, ["A"])))
    server.start()
    catalog = StacApiCatalog(server.url, timeout=2, retries=2, backoff=0.01)
    try:
        assert _ids(catalog.search(SearchQuery())) == ["A"]
    finally:
        server.stop()
    for call in (
        lambda: catalog.search_page(SearchQuery()),
        lambda: list(catalog.search(SearchQuery())),
        lambda: catalog.get_item("sentinel-2-l2a", "A"),
        lambda: catalog.collections(),
    ):
        with pytest.raises(UpstreamError) as caught:
            call()
        assert caught.value.status_code == 502
        assert not isinstance(caught.value, UpstreamTimeoutError)
        assert "cannot reach" in caught.value.message and server.url in caught.value.message


def test_an_unreachable_upstream_on_first_use_is_an_upstream_error() -> None:
    server = StubServer(lambda request, server: StubResponse(200, {}))
    url = server.url
    server.stop()  # never started: the port is closed
    catalog = StacApiCatalog(url, timeout=2, retries=1, backoff=0.01)
    with pytest.raises(UpstreamError) as caught:
        catalog.collections()
    assert caught.value.status_code == 502 and url in caught.value.message


def test_a_silent_upstream_times_out_within_the_timeout() -> None:
    with SilentServer() as silent:
        catalog = StacApiCatalog(silent.url, timeout=1, retries=3, backoff=0.01)
        started = time.monotonic()
        with pytest.raises(UpstreamTimeoutError) as caught:
            catalog.search_page(SearchQuery())
        elapsed = time.monotonic() - started
        connections = silent.connections()
    assert caught.value.status_code == 504
    assert silent.url in caught.value.message
    assert connections == 1  # a hung read is not retried
    assert 0.9 <= elapsed < 3.5  # one timeout of 1 s, not the 4 that retrying would take


def test_a_search_that_hangs_times_out() -> None:
    release = threading.Event()

    def hang(request: Recorded, server: StubServer) -> StubResponse:
        release.wait(10)
        return StubResponse(200, _page(server.url, []))

    with _api(search=hang) as server:
        catalog = StacApiCatalog(server.url, timeout=1, retries=2, backoff=0.01)
        started = time.monotonic()
        try:
            with pytest.raises(UpstreamTimeoutError):
                list(catalog.search(SearchQuery()))
        finally:
            release.set()
        assert time.monotonic() - started < 5  # the hung answer would come at 10 s
        assert server.count("POST", "/search") == 1


def test_a_400_on_search_is_a_bad_request_carrying_the_upstream_message() -> None:
    def reject(request: Recorded, server: StubServer) -> StubResponse:
        return StubResponse(400, {"code": "BadRequest", "description": "Invalid filter: wat"})

    with _api(search=reject) as server:
        catalog = StacApiCatalog(server.url, retries=3, backoff=0.01)
        with pytest.raises(BadRequestError, match="Invalid filter: wat"):
            catalog.search_page(SearchQuery())
        assert server.count("POST", "/search") == 1  # a 400 is not retried
        # search() asks for the first page when called, so it raises before iterating.
        with pytest.raises(BadRequestError, match="Invalid filter: wat"):
            catalog.search(SearchQuery())


def test_a_failed_landing_page_is_fetched_again_later() -> None:
    answers = [503]

    def handle(request: Recorded, server: StubServer) -> StubResponse:
        if request.path == "/" and answers:
            return StubResponse(answers.pop(), "down for maintenance")
        if request.path == "/":
            return StubResponse(200, landing_page(server.url))
        return StubResponse(200, _page(server.url, ["A"]))

    with StubServer(handle) as server:
        catalog = StacApiCatalog(server.url, retries=0)
        with pytest.raises(UpstreamError, match="503"):
            catalog.search(SearchQuery())
        assert _ids(catalog.search(SearchQuery())) == ["A"]
        assert _ids(catalog.search(SearchQuery())) == ["A"]
        assert server.count("GET", "/") == 2


def test_item_404_is_not_found_and_500_is_an_upstream_error() -> None:
    def item(request: Recorded, server: StubServer) -> StubResponse:
        if request.path.endswith("/broken"):
            return StubResponse(500, "boom")
        if request.path.endswith("/S2A_OK"):
            return StubResponse(200, _item("S2A_OK"))
        return StubResponse(404, {"code": "NotFoundError", "description": "Item nope not found"})

    with _api(item=item) as server:
        catalog = StacApiCatalog(server.url, retries=1, backoff=0.01)
        assert catalog.get_item("sentinel-2-l2a", "S2A_OK").id == "S2A_OK"
        with pytest.raises(NotFoundError, match="nope"):
            catalog.get_item("sentinel-2-l2a", "nope")
        with pytest.raises(NotFoundError):
            catalog.get_collection("nope")
        with pytest.raises(UpstreamError) as caught:
            catalog.get_item("sentinel-2-l2a", "broken")
        assert caught.value.status_code == 502 and not isinstance(caught.value, NotFoundError)
        # Ids are quoted into the path, never able to climb out of it.
        with pytest.raises(NotFoundError):
            catalog.get_item("sentinel-2-l2a", "../../x")
        assert server.requests[-1].path == "/collections/sentinel-2-l2a/items/..%2F..%2Fx"


def test_the_landing_page_is_fetched_once_even_from_many_threads() -> None:
    with _api(search=lambda request, server: StubResponse(200, _page(server.url, ["A"]))) as server:
        catalog = StacApiCatalog(server.url)
        errors: list[BaseException] = []

        def work() -> None:
            try:
                for _ in range(5):
                    assert _ids(catalog.search(SearchQuery())) == ["A"]
            except BaseException as error:  # noqa: BLE001
                errors.append(error)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors
        assert server.count("GET", "/") == 1
        assert server.count("POST", "/search") == 40


def test_search_body_passes_query_filter_and_sortby_through() -> None:
    with _api(search=lambda request, server: StubResponse(200, _page(server.url, []))) as server:
        catalog = StacApiCatalog(server.url)
        query = search_from_body(
            {
                "collections": ["sentinel-2-l2a"],
                "datetime": "2023-10-01T00:00:00Z/..",
                "query": {"eo:cloud_cover": {"lt": 20, "in": [1, 2]}},
                "filter": {"op": "=", "args": [{"property": "platform"}, "sentinel-2a"]},
                "sortby": [{"field": "eo:cloud_cover", "direction": "desc"}, {"field": "id"}],
                "limit": 7,
            }
        )
        catalog.search_page(query)
        body = server.requests[-1].json
    # The stub does not conform to filter: query goes as it is, whatever its operators.
    assert body["query"] == query.query
    assert set(body["query"]["eo:cloud_cover"]) == {"lt", "in"}
    assert body["filter"] == query.filter and body["filter-lang"] == "cql2-json"
    assert body["sortby"] == [
        {"field": "properties.eo:cloud_cover", "direction": "desc"},
        {"field": "id", "direction": "asc"},
    ]
    assert body["datetime"] == "2023-10-01T00:00:00Z/.."
    assert body["collections"] == ["sentinel-2-l2a"] and body["limit"] == 7
    assert "token" not in body


def _paged_api(next_link: Callable[[str], dict[str, Any]]) -> StubServer:
    """A stub whose first search page links to ``next_link(server.url)``."""

    def search(request: Recorded, server: StubServer) -> StubResponse:
        body = request.json or {}
        if request.method == "POST" and body.get("token") == "page-2":
            return StubResponse(200, _page(server.url, ["B"]))
        if request.method == "GET" and request.query.get("token") == ["page-2"]:
            return StubResponse(200, _page(server.url, ["B"]))
        return StubResponse(200, _page(server.url, ["A"], next_link(server.url)))

    return _api(search=search)


def test_tokens_replay_the_upstream_next_link_post_and_get() -> None:
    links = {
        "POST": lambda url: {
            "href": f"{url}/search",
            "method": "POST",
            "body": {"token": "page-2", "limit": 1},
        },
        "POST merge": lambda url: {
            "href": f"{url}/search",
            "method": "POST",
            "merge": True,
            "body": {"token": "page-2"},
        },
        "GET": lambda url: {"href": f"{url}/search?token=page-2&limit=1", "method": "GET"},
    }
    for name, link in links.items():
        with _paged_api(link) as server:
            catalog = StacApiCatalog(server.url)
            query = SearchQuery(collections=["sentinel-2-l2a"], limit=1)
            first = catalog.search_page(query)
            assert _ids(first.items) == ["A"] and first.next_token, name
            assert server.url not in _decode(first.next_token), "tokens hold no URL"
            second = catalog.search_page(
                SearchQuery(collections=["sentinel-2-l2a"], limit=1, token=first.next_token)
            )
            assert _ids(second.items) == ["B"], name
            assert second.next_token is None
            last = server.requests[-1]
            if name == "POST":  # merge false: the link's body is the whole request
                assert last.json == {"token": "page-2", "limit": 1}
            elif name == "POST merge":  # merged into the first request's body
                assert last.json["collections"] == ["sentinel-2-l2a"]
                assert last.json["token"] == "page-2"
            else:
                assert last.method == "GET" and last.query["token"] == ["page-2"]
            # search() follows the same links.
            assert _ids(catalog.search(query)) == ["A", "B"]


def _decode(token: str) -> str:
    return zlib.decompress(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))).decode()


def _forge(data: dict[str, Any]) -> str:
    raw = zlib.compress(json.dumps(data).encode())
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        "not a token",
        "",
        _forge({"v": 1, "m": "GET", "p": "//169.254.169.254/latest/meta-data"}),
        _forge({"v": 1, "m": "GET", "p": "@169.254.169.254/x"}),
        _forge({"v": 1, "m": "GET", "p": "/../../etc"}),
        _forge({"v": 1, "m": "GET", "p": "/%2e%2e/x"}),
        _forge({"v": 1, "m": "GET", "p": ".evil.example/search"}),
        _forge({"v": 1, "m": "GET", "p": ":8080/search"}),
        _forge({"v": 1, "m": "DELETE", "p": "/search"}),
        _forge({"v": 1, "m": "POST", "p": "/search", "s": [], "u": []}),
        _forge({"v": 2, "m": "GET", "p": "/search"}),
        base64.urlsafe_b64encode(zlib.compress(b"x" * 10_000_000)).decode(),
    ],
)
def test_forged_tokens_are_refused_and_nothing_leaves_the_root(token: str) -> None:
    with _paged_api(lambda url: {"href": f"{url}/search", "method": "GET"}) as server:
        catalog = StacApiCatalog(server.url)
        if token == "":
            # An empty token is no token: the first page.
            assert _ids(catalog.search_page(SearchQuery(token=token)).items) == ["A"]
            return
        with pytest.raises(BadRequestError, match="token"):
            catalog.search_page(SearchQuery(token=token))
        assert server.count(path="/search") == 0


def test_a_token_only_reaches_paths_under_the_root() -> None:
    # A well-formed token for another path of the same API is replayed there, under the
    # root: nothing else is reachable.
    with _paged_api(lambda url: {"href": f"{url}/search", "method": "GET"}) as server:
        catalog = StacApiCatalog(server.url, retries=0)
        with pytest.raises(UpstreamError):
            catalog.search_page(SearchQuery(token=_forge({"v": 1, "m": "GET", "p": "/other"})))
        assert server.requests[-1].path == "/other"


@pytest.mark.parametrize(
    "href",
    ["http://169.254.169.254/latest/meta-data", "http://127.0.0.2:1/search", "file:///etc/passwd"],
)
def test_a_next_link_outside_the_root_is_not_followed(href: str) -> None:
    with _paged_api(lambda url: {"href": href, "method": "GET"}) as server:
        catalog = StacApiCatalog(server.url)
        with pytest.raises(UpstreamError, match="outside its root"):
            list(catalog.search(SearchQuery()))
        with pytest.raises(UpstreamError, match="outside its root"):
            catalog.search_page(SearchQuery())
        assert server.count(path="/search") == 2


def test_a_catalog_under_a_path_stays_under_it() -> None:
    def handle(request: Recorded, server: StubServer) -> StubResponse:
        root = f"{server.url}/v1"
        if request.path in ("/v1", "/v1/"):
            return StubResponse(200, landing_page(root))
        if request.path == "/v1/search":
            # A next link to a sibling of the root's path: refused.
            return StubResponse(200, _page(root, ["A"], {"href": f"{server.url}/v10/search"}))
        return StubResponse(404, {"description": "nope"})

    with StubServer(handle) as server:
        catalog = StacApiCatalog(f"{server.url}/v1/")
        with pytest.raises(UpstreamError, match="outside its root"):
            list(catalog.search(SearchQuery()))
        assert server.count(path="/v10/search") == 0


def test_redirects_are_followed_only_under_the_root() -> None:
    with StubServer(lambda request, server: StubResponse(200, {})) as elsewhere:

        def item(request: Recorded, server: StubServer) -> StubResponse:
            if request.path.endswith("/moved"):
                return StubResponse(301, "", {"Location": f"{server.url}/collections/c/items/A"})
            if request.path.endswith("/away"):
                return StubResponse(302, "", {"Location": f"{elsewhere.url}/x"})
            return StubResponse(200, _item("A"))

        with _api(item=item) as server:
            catalog = StacApiCatalog(server.url)
            assert catalog.get_item("c", "moved").id == "A"
            with pytest.raises(UpstreamError, match="302"):
                catalog.get_item("c", "away")
        assert elsewhere.count() == 0


def test_invalid_urls_are_refused() -> None:
    for url in ("ftp://example.com", "/local/path", "http://user:pw@example.com/v1"):
        with pytest.raises(ValueError):
            StacApiCatalog(url)


def test_implements_the_catalog_protocol() -> None:
    assert isinstance(StacApiCatalog("http://127.0.0.1:1"), Catalog)
