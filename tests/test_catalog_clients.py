"""/catalog as the STAC clients people already use see it (issue 15, items 3, 5 and 6).

pystac-client against the service under a real uvicorn: ``limit`` above the maximum is
served as the maximum (OGC API - Features), ``query`` in pystac-client's string form
(``["eo:cloud_cover<10"]`` sends ``{"lt": "10"}``) compares numbers as numbers, ``in``
matches array properties; ``/openapi.json`` is served as the type ``service-desc`` declares
and every API link has a title. Expected items come from the demo items' own properties.
"""

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pystac
import pytest
from fastapi.testclient import TestClient
from harness.stubapi import Recorded, StubResponse, StubServer, landing_page
from live_server import live_server
from pystac_client import Client
from pystac_client.stac_api_io import StacApiIO

from app.catalog.base import SearchQuery
from app.catalog.local import LocalCatalog
from app.catalog.query import search_from_get, typed_query_operands
from app.catalog.stacapi import StacApiCatalog
from app.main import create_app
from app.openapi import MEDIA_OPENAPI
from app.settings import Settings

COLLECTION = "sentinel-2-l2a"
MAX_LIMIT = 2


@pytest.fixture(scope="module")
def small_max(demo_settings: Settings) -> Settings:
    """The demo service with a page size maximum below the number of demo items."""
    return demo_settings.model_copy(update={"max_search_limit": MAX_LIMIT})


@pytest.fixture(scope="module")
def base_url(small_max: Settings) -> Iterator[str]:
    with live_server(create_app(small_max)) as url:
        yield url


@pytest.fixture(scope="module")
def stac(base_url: str) -> Client:
    stac_io = StacApiIO()
    stac_io.session.trust_env = False  # loopback: never through a proxy from the env
    return Client.open(f"{base_url}/catalog", stac_io=stac_io)


@pytest.fixture(scope="module")
def api(small_max: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(small_max)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def items(demo_dir: Any) -> list[pystac.Item]:
    found = list(LocalCatalog(demo_dir).search(SearchQuery()))
    assert len(found) > MAX_LIMIT
    return found


def ids(results: Any) -> list[str]:
    return [item.id for item in results]


def where(items: list[pystac.Item], test: Callable[[dict[str, Any]], bool]) -> list[str]:
    return [item.id for item in items if test(item.properties)]


# ------------------------------------------------------------------------ item 3: limit


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_pystac_client_limit_above_the_maximum_pages_through_everything(
    stac: Client, items: list[pystac.Item], method: str
) -> None:
    search = stac.search(collections=[COLLECTION], limit=2000, method=method)
    pages = list(search.pages())
    assert [len(page.items) for page in pages[:-1]] == [MAX_LIMIT] * (len(pages) - 1)
    assert 1 <= len(pages[-1].items) <= MAX_LIMIT
    assert [item.id for page in pages for item in page.items] == ids(items)


@pytest.mark.parametrize("path", ["/catalog/search", f"/catalog/collections/{COLLECTION}/items"])
def test_limit_above_the_maximum_is_the_maximum(api: TestClient, path: str) -> None:
    for limit in ("3", "2000", str(10**12)):
        response = api.get(path, params={"limit": limit})
        assert response.status_code == 200, response.text
        assert len(response.json()["features"]) == MAX_LIMIT
    posted = api.post("/catalog/search", json={"limit": 2000})
    assert posted.status_code == 200, posted.text
    assert len(posted.json()["features"]) == MAX_LIMIT
    assert search_from_get({"limit": "2000"}, max_limit=MAX_LIMIT).limit == MAX_LIMIT


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_limit_below_one_is_still_400(api: TestClient, limit: str) -> None:
    for path in ("/catalog/search", f"/catalog/collections/{COLLECTION}/items"):
        response = api.get(path, params={"limit": limit})
        assert response.status_code == 400
        assert response.json()["detail"] == (
            f"limit: must be between 1 and {MAX_LIMIT} (got {limit})"
        )
    response = api.post("/catalog/search", json={"limit": 0})
    assert response.status_code == 400
    assert response.json()["detail"].startswith("limit:")


# ------------------------------------------------------------------------ item 5: query

STRING_FORMS: list[tuple[list[str], Callable[[dict[str, Any]], bool]]] = [
    # "42.1" < "5" as text: a string comparison would wrongly include 42.1.
    (["eo:cloud_cover<5"], lambda p: p["eo:cloud_cover"] < 5),
    (["eo:cloud_cover<=3.924561"], lambda p: p["eo:cloud_cover"] <= 3.924561),
    (["eo:cloud_cover>10"], lambda p: p["eo:cloud_cover"] > 10),
    (["eo:cloud_cover>=42.138672"], lambda p: p["eo:cloud_cover"] >= 42.138672),
    (["eo:cloud_cover=0"], lambda p: p["eo:cloud_cover"] == 0),
    (["eo:cloud_cover<>0"], lambda p: p["eo:cloud_cover"] != 0),
    (
        ["eo:cloud_cover>1", "eo:cloud_cover<50"],
        lambda p: 1 < p["eo:cloud_cover"] < 50,
    ),
    (["platform=sentinel-2a"], lambda p: p["platform"] == "sentinel-2a"),
    (
        ["earthsearch:boa_offset_applied=true"],
        lambda p: p["earthsearch:boa_offset_applied"] is True,
    ),
    (['{"eo:cloud_cover": {"lt": "5"}}'], lambda p: p["eo:cloud_cover"] < 5),
]


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize(("query", "expected"), STRING_FORMS)
def test_pystac_client_string_query_forms(
    stac: Client,
    items: list[pystac.Item],
    query: list[str],
    expected: Callable[[dict[str, Any]], bool],
    method: str,
) -> None:
    want = where(items, expected)
    assert want, "each form should match some demo item"
    got = ids(stac.search(collections=[COLLECTION], query=query, method=method).items())
    assert got == want


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_in_on_an_array_property(stac: Client, items: list[pystac.Item], method: str) -> None:
    assert all(item.properties["instruments"] == ["msi"] for item in items)

    def search(values: list[Any]) -> list[str]:
        query = {"instruments": {"in": values}}
        return ids(stac.search(collections=[COLLECTION], query=query, method=method).items())

    assert search(["msi"]) == ids(items)
    assert search(["olci", "msi"]) == ids(items)
    assert search(["olci"]) == []
    assert search(["sentinel-2a"]) == []


def test_a_non_numeric_string_against_a_number_matches_nothing(stac: Client) -> None:
    assert ids(stac.search(query=["eo:cloud_cover<low"]).items()) == []
    assert ids(stac.search(query=["eo:cloud_cover<nan"]).items()) == []


def test_typed_query_operands_for_upstream_apis() -> None:
    query = {
        "eo:cloud_cover": {"lt": "10", "in": ["1", 2, "x"]},
        "proj:epsg": {"eq": "32633"},
        "properties.view:sun_elevation": {"gte": "30.5"},
        "platform": {"eq": "10"},
        "custom:thing": {"lt": "10"},
        "s2:water_percentage": {"lt": "inf"},
    }
    assert typed_query_operands(query) == {
        "eo:cloud_cover": {"lt": 10.0, "in": [1.0, 2, "x"]},
        "proj:epsg": {"eq": 32633},
        "properties.view:sun_elevation": {"gte": 30.5},
        "platform": {"eq": "10"},  # a string property keeps its string
        "custom:thing": {"lt": "10"},  # unknown type: as sent
        "s2:water_percentage": {"lt": "inf"},
    }


def test_stac_api_catalog_forwards_numbers_for_numeric_properties() -> None:
    bodies: list[Any] = []

    def search(request: Recorded, server: StubServer) -> StubResponse:
        bodies.append(request.json)
        return StubResponse(200, {"type": "FeatureCollection", "features": [], "links": []})

    def handle(request: Recorded, server: StubServer) -> StubResponse:
        if request.path in ("", "/"):
            return StubResponse(200, landing_page(server.url))
        return search(request, server)

    with StubServer(handle) as server:
        catalog = StacApiCatalog(server.url, retries=0)
        query = search_from_get(
            {"query": '{"eo:cloud_cover": {"lt": "10"}, "platform": {"eq": "x"}}'}
        )
        assert catalog.search_page(query).items == []
    assert bodies[-1]["query"] == {"eo:cloud_cover": {"lt": 10.0}, "platform": {"eq": "x"}}


# ------------------------------------------------------------------ item 6: media, titles


def test_openapi_is_served_as_its_service_desc_type(base_url: str) -> None:
    landing = httpx.get(f"{base_url}/catalog", trust_env=False).json()
    (desc,) = [link for link in landing["links"] if link["rel"] == "service-desc"]
    assert desc["type"] == MEDIA_OPENAPI
    response = httpx.get(desc["href"], trust_env=False)
    assert response.status_code == 200
    assert response.headers["content-type"] == desc["type"]
    assert response.json()["openapi"].startswith("3.1")
    head = httpx.head(desc["href"], trust_env=False)
    assert head.status_code == 200
    assert head.headers["content-type"] == desc["type"]
    # Swagger UI still loads the document it points at.
    assert httpx.get(f"{base_url}/docs", trust_env=False).status_code == 200


def _links(body: Any) -> Iterator[dict[str, Any]]:
    if isinstance(body, dict):
        yield from body.get("links", [])
        for child in body.get("features", []) + body.get("collections", []):
            yield from _links(child)


def test_every_api_link_has_a_title(api: TestClient, items: list[pystac.Item]) -> None:
    item = items[0]
    bodies = [
        api.get("/catalog").json(),
        api.get("/catalog/collections").json(),
        api.get(f"/catalog/collections/{COLLECTION}").json(),
        api.get(f"/catalog/collections/{COLLECTION}/items").json(),
        api.get(f"/catalog/collections/{COLLECTION}/items/{item.id}").json(),
        api.get("/catalog/search").json(),
        api.post("/catalog/search", json={}).json(),
    ]
    links = [link for body in bodies for link in _links(body)]
    api_links = [link for link in links if link["href"].startswith("http://testserver/")]
    assert len(api_links) > 20
    untitled = [link for link in api_links if not link.get("title")]
    assert untitled == []
    landing = {(link["rel"], link.get("method")): link["title"] for link in bodies[0]["links"]}
    assert landing[("search", "GET")] == "Item search (GET)"
    assert landing[("service-desc", None)] == "OpenAPI document"
