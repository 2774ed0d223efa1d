"""The /catalog STAC API.

pystac-client against the service under a real uvicorn on loopback (what users run), with
every answer checked against the item properties and against LocalCatalog searched directly;
TestClient for the landing page, links, errors and next-link round trips.
"""

import math
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pystac
import pytest
import shapely.geometry
from fastapi.testclient import TestClient
from live_server import live_server
from pystac_client import Client, ItemSearch
from pystac_client.conformance import ConformanceClasses
from pystac_client.stac_api_io import StacApiIO

from app.catalog.base import SearchPage, SearchQuery, SortField
from app.catalog.local import LocalCatalog
from app.dependencies import get_catalog
from app.errors import UpstreamError, UpstreamTimeoutError
from app.main import create_app
from app.routers.catalog import CONFORMANCE, FIELDS_CONFORMANCE
from app.settings import Settings

COLLECTION = "sentinel-2-l2a"
CQL2 = "http://www.opengis.net/spec/cql2/1.0/conf/"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def base_url(demo_settings: Settings) -> Iterator[str]:
    """The service over the demo catalog, under uvicorn on a free loopback port."""
    with live_server(create_app(demo_settings)) as url:
        yield url


@pytest.fixture(scope="module")
def stac(base_url: str) -> Client:
    stac_io = StacApiIO()
    stac_io.session.trust_env = False  # loopback: never through a proxy from the env
    return Client.open(f"{base_url}/catalog", stac_io=stac_io)


@pytest.fixture(scope="module")
def api(demo_settings: Settings) -> Iterator[TestClient]:
    """One TestClient for the module: these tests only read."""
    with TestClient(create_app(demo_settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def local(demo_dir: Path) -> LocalCatalog:
    """The same catalog, searched directly: what every API answer is compared with."""
    return LocalCatalog(demo_dir)


@pytest.fixture(scope="module")
def items(local: LocalCatalog) -> list[pystac.Item]:
    found = list(local.search(SearchQuery()))
    assert len(found) >= 5, "the demo catalog should have enough items to page through"
    return found


def local_ids(local: LocalCatalog, **search: Any) -> list[str]:
    return [item.id for item in local.search(SearchQuery(**search))]


def ids_of(results: Any) -> list[str]:
    return [item.id for item in results]


def cloud(item: pystac.Item) -> float:
    return item.properties["eo:cloud_cover"]


def acquired(item: pystac.Item) -> datetime:
    assert item.datetime is not None
    return item.datetime


def footprint(item: pystac.Item) -> shapely.Geometry:
    return shapely.geometry.shape(item.geometry)


def cloud_threshold(items: list[pystac.Item]) -> float:
    """A cloud cover that some items are under and some are not."""
    values = sorted({cloud(item) for item in items})
    assert len(values) >= 3
    return values[len(values) // 2]


def features(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [feature["id"] for feature in response.json()["features"]]


def link(body: dict[str, Any], rel: str, method: str | None = None) -> dict[str, Any] | None:
    for candidate in body["links"]:
        if candidate["rel"] == rel and (method is None or candidate.get("method") == method):
            return candidate
    return None


# --------------------------------------------------------------------------- pystac-client


def test_pystac_client_opens_the_service(stac: Client, base_url: str) -> None:
    assert stac.id == "terratiler"
    assert stac.get_self_href() == f"{base_url}/catalog"
    for conformance in (
        "CORE",
        "COLLECTIONS",
        "FEATURES",
        "ITEM_SEARCH",
        "QUERY",
        "SORT",
        "FIELDS",
    ):
        assert stac.conforms_to(ConformanceClasses[conformance]), conformance
    assert stac.conforms_to(ConformanceClasses.FILTER)
    assert not stac.conforms_to(ConformanceClasses.CONTEXT)
    search_links = {
        (link.extra_fields.get("method"), link.href) for link in stac.get_links("search")
    }
    assert search_links == {
        ("GET", f"{base_url}/catalog/search"),
        ("POST", f"{base_url}/catalog/search"),
    }


def test_collections_listing_and_get_collection(
    stac: Client, local: LocalCatalog, base_url: str
) -> None:
    assert [c.id for c in stac.get_collections()] == [c.id for c in local.collections()]
    collection = stac.get_collection(COLLECTION)
    expected = local.get_collection(COLLECTION)
    assert collection.id == COLLECTION
    assert collection.get_self_href() == f"{base_url}/catalog/collections/{COLLECTION}"
    assert collection.extent.spatial.bboxes == expected.extent.spatial.bboxes
    assert collection.description == expected.description
    items_link = collection.get_single_link("items")
    assert items_link is not None
    assert items_link.href == f"{base_url}/catalog/collections/{COLLECTION}/items"


def test_get_items_through_the_features_endpoint(
    stac: Client, local: LocalCatalog, items: list[pystac.Item], base_url: str
) -> None:
    collection = stac.get_collection(COLLECTION)
    assert ids_of(collection.get_items()) == local_ids(local, collections=[COLLECTION])

    # Paged by 2 through /collections/{id}/items and its GET next links.
    search = ItemSearch(
        url=f"{base_url}/catalog/collections/{COLLECTION}/items",
        method="GET",
        limit=2,
        client=stac,  # and so its StacApiIO
    )
    pages = list(search.pages())
    assert len(pages) == math.ceil(len(items) / 2)
    assert [len(page.items) for page in pages[:-1]] == [2] * (len(pages) - 1)
    assert [item.id for page in pages for item in page.items] == local_ids(
        local, collections=[COLLECTION]
    )

    one = items[1]
    fetched = collection.get_item(one.id)
    assert fetched is not None and fetched.id == one.id
    # (pystac-client migrates extensions on reading, e.g. proj:epsg -> proj:code: compare a few)
    for name in ("datetime", "eo:cloud_cover", "platform", "grid:code"):
        assert fetched.properties[name] == one.properties[name]


def test_items_point_at_the_service_and_at_their_files(
    stac: Client, local: LocalCatalog, base_url: str
) -> None:
    found = list(stac.search(collections=[COLLECTION], limit=3).items())
    assert found
    for item in found:
        self_href = f"{base_url}/catalog/collections/{COLLECTION}/items/{item.id}"
        assert item.get_self_href() == self_href
        for rel in ("parent", "collection"):
            served = item.get_single_link(rel)
            assert served is not None
            assert served.href == f"{base_url}/catalog/collections/{COLLECTION}"
        original = local.get_item(COLLECTION, item.id)
        data = f"{base_url}/catalog/data/{COLLECTION}"  # the local files, over HTTP
        assert {key: asset.href for key, asset in item.assets.items()} == {
            key: f"{data}/{Path(asset.href).relative_to(local.path)}"
            for key, asset in original.assets.items()
        }
        response = httpx.get(self_href, trust_env=False)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/geo+json"
        assert response.json()["id"] == item.id


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_search_query_extension(
    stac: Client, local: LocalCatalog, items: list[pystac.Item], method: str
) -> None:
    threshold = cloud_threshold(items)
    query = {"eo:cloud_cover": {"lt": threshold}}
    expected = [item.id for item in items if cloud(item) < threshold]
    assert 0 < len(expected) < len(items)

    got = ids_of(stac.search(collections=[COLLECTION], query=query, method=method).items())
    assert got == expected
    assert got == local_ids(local, collections=[COLLECTION], query=query)


@pytest.mark.parametrize(
    ("lang", "method"),
    [("cql2-text", "GET"), ("cql2-text", "POST"), ("cql2-json", "GET"), ("cql2-json", "POST")],
)
def test_search_filter_cql2(
    stac: Client, local: LocalCatalog, items: list[pystac.Item], lang: str, method: str
) -> None:
    threshold = cloud_threshold(items)
    expected = [
        item.id
        for item in items
        if cloud(item) >= threshold and item.properties["platform"] == "sentinel-2b"
    ]
    assert 0 < len(expected) < len(items)
    cql_json = {
        "op": "and",
        "args": [
            {"op": ">=", "args": [{"property": "eo:cloud_cover"}, threshold]},
            {"op": "=", "args": [{"property": "platform"}, "sentinel-2b"]},
        ],
    }
    cql_text = f"\"eo:cloud_cover\" >= {threshold} AND platform = 'sentinel-2b'"
    cql = cql_text if lang == "cql2-text" else cql_json
    search = stac.search(filter=cql, filter_lang=lang, method=method, limit=2)
    got = ids_of(search.items())
    assert got == expected
    assert got == ids_of(local.search(SearchQuery(filter=cql_json)))


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_search_sortby_descending_cloud_cover(
    stac: Client, local: LocalCatalog, items: list[pystac.Item], method: str
) -> None:
    found = list(stac.search(sortby=["-properties.eo:cloud_cover"], limit=2, method=method).items())
    covers = [cloud(item) for item in found]
    assert len(found) == len(items)
    assert covers == sorted((cloud(item) for item in items), reverse=True)
    assert covers[0] > covers[-1]
    assert ids_of(found) == local_ids(
        local, sortby=[SortField("properties.eo:cloud_cover", "desc")]
    )

    ascending = list(stac.search(sortby=["+properties.eo:cloud_cover"], method=method).items())
    assert [cloud(item) for item in ascending] == sorted(covers)


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_search_datetime_ranges(stac: Client, items: list[pystac.Item], method: str) -> None:
    days = sorted({acquired(item).date() for item in items})
    assert len(days) >= 4
    first, last = days[1], days[3]

    def search(datetime_: str) -> list[str]:
        return ids_of(stac.search(datetime=datetime_, method=method).items())

    closed = [item.id for item in items if first <= acquired(item).date() <= last]
    assert search(f"{first.isoformat()}/{last.isoformat()}") == closed
    assert 0 < len(closed) < len(items)

    until = [item.id for item in items if acquired(item).date() <= first]
    assert search(f"../{first.isoformat()}T23:59:59Z") == until

    since = [item.id for item in items if acquired(item).date() >= last]
    assert search(f"{last.isoformat()}T00:00:00Z/..") == since

    instant = items[0].datetime
    assert instant is not None
    exact = instant.astimezone(UTC).isoformat().replace("+00:00", "Z")
    assert search(exact) == [items[0].id]


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_search_bbox_and_intersects(stac: Client, items: list[pystac.Item], method: str) -> None:
    footprints = {item.id: footprint(item) for item in items}
    minx, miny, maxx, maxy = shapely.union_all(list(footprints.values())).bounds
    left_edges = sorted({geometry.bounds[0] for geometry in footprints.values()})
    strip = (
        minx,
        miny,
        (left_edges[0] + left_edges[-1]) / 2 if len(left_edges) > 1 else minx + 1e-4,
        maxy,
    )
    boxes = {
        "everything": (minx - 0.01, miny - 0.01, maxx + 0.01, maxy + 0.01),
        "left strip": strip,
        "far away": (minx + 5, miny + 5, maxx + 5, maxy + 5),
    }
    answers = []
    for name, bbox in boxes.items():
        region = shapely.geometry.box(*bbox)
        expected = [item.id for item in items if footprints[item.id].intersects(region)]
        got = ids_of(stac.search(bbox=list(bbox), method=method).items())
        assert got == expected, name
        answers.append(expected)
    assert answers[0] == [item.id for item in items] and answers[2] == []

    centre = shapely.geometry.Point((minx + maxx) / 2, (miny + maxy) / 2)
    far = shapely.geometry.box(*boxes["far away"])
    for geometry in (centre, far, shapely.geometry.box(*strip)):
        expected = [item.id for item in items if footprints[item.id].intersects(geometry)]
        got = ids_of(
            stac.search(intersects=shapely.geometry.mapping(geometry), method=method).items()
        )
        assert got == expected


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_search_paging_returns_every_match_once(
    stac: Client, local: LocalCatalog, items: list[pystac.Item], method: str
) -> None:
    search = stac.search(collections=[COLLECTION], limit=2, method=method)
    pages = list(search.pages())
    assert len(pages) == math.ceil(len(items) / 2)
    got = [item.id for page in pages for item in page.items]
    assert got == local_ids(local, collections=[COLLECTION])
    assert len(set(got)) == len(got) == len(items)
    assert search.matched() == len(items)

    capped = stac.search(collections=[COLLECTION], limit=2, max_items=len(items) - 1, method=method)
    assert ids_of(capped.items()) == got[: len(items) - 1]

    # Paging a filtered, sorted search keeps its filter and its order across pages.
    threshold = cloud_threshold(items)
    filtered = stac.search(
        query={"eo:cloud_cover": {"gte": threshold}},
        sortby=["-properties.eo:cloud_cover"],
        limit=1,
        method=method,
    )
    expected = local_ids(
        local,
        query={"eo:cloud_cover": {"gte": threshold}},
        sortby=[SortField("properties.eo:cloud_cover", "desc")],
    )
    assert len(expected) >= 2
    assert ids_of(filtered.items()) == expected


def test_queryables_through_pystac_client(stac: Client) -> None:
    queryables = stac.get_queryables()
    assert queryables["properties"]["eo:cloud_cover"]["type"] == "number"
    assert "datetime" in queryables["properties"]


def test_proxy_headers_reach_the_hrefs(base_url: str) -> None:
    # uvicorn trusts X-Forwarded-* from 127.0.0.1 by default.
    response = httpx.get(
        f"{base_url}/catalog", headers={"X-Forwarded-Proto": "https"}, trust_env=False
    )
    assert response.status_code == 200
    host = base_url.removeprefix("http://")
    assert link(response.json(), "self")["href"] == f"https://{host}/catalog"  # type: ignore[index]


# --------------------------------------------------------------------------- TestClient


def test_landing_page(api: TestClient, local: LocalCatalog) -> None:
    response = api.get("/catalog")
    assert response.status_code == 200
    body = response.json()
    assert body["type"] == "Catalog"
    assert body["stac_version"] == "1.0.0"
    assert body["id"] == "terratiler" and body["title"] and body["description"]

    conforms = body["conformsTo"]
    assert conforms[: len(CONFORMANCE)] == CONFORMANCE
    assert sorted(conforms[len(CONFORMANCE) :]) == sorted(FIELDS_CONFORMANCE.values())
    for required in (
        "https://api.stacspec.org/v1.0.0/core",
        "https://api.stacspec.org/v1.0.0/collections",
        "https://api.stacspec.org/v1.0.0/ogcapi-features",
        "https://api.stacspec.org/v1.0.0/item-search",
        "https://api.stacspec.org/v1.0.0/item-search#filter",
        "https://api.stacspec.org/v1.0.0/item-search#query",
        "https://api.stacspec.org/v1.0.0/item-search#sort",
        "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
        "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
        CQL2 + "cql2-text",
        CQL2 + "cql2-json",
        CQL2 + "basic-cql2",
    ):
        assert required in conforms
    assert [uri for uri in conforms if uri.endswith("#fields")] == [
        "https://api.stacspec.org/v1.0.0/ogcapi-features#fields",
        "https://api.stacspec.org/v1.0.0/item-search#fields",
    ]
    assert not [uri for uri in conforms if uri.endswith("#context")]
    assert not [uri for uri in conforms if "features-filter" in uri or uri.endswith("/oas30")]

    root = "http://testserver/catalog"
    hrefs = {(item["rel"], item.get("method")): item["href"] for item in body["links"]}
    assert hrefs[("self", None)] == root
    assert hrefs[("root", None)] == root
    assert hrefs[("conformance", None)] == f"{root}/conformance"
    assert hrefs[("data", None)] == f"{root}/collections"
    assert hrefs[("search", "GET")] == f"{root}/search"
    assert hrefs[("search", "POST")] == f"{root}/search"
    assert hrefs[("service-desc", None)] == "http://testserver/openapi.json"
    assert hrefs[("service-doc", None)] == "http://testserver/docs"
    assert hrefs[("http://www.opengis.net/def/rel/ogc/1.0/queryables", None)] == (
        f"{root}/queryables"
    )
    children = [item["href"] for item in body["links"] if item["rel"] == "child"]
    assert children == [f"{root}/collections/{c.id}" for c in local.collections()]

    assert api.get("/catalog/", follow_redirects=False).json() == body
    assert api.get("/catalog/conformance").json() == {"conformsTo": conforms}
    assert api.get("/healthz").json()["status"] == "ok"
    assert api.get("/docs").status_code == 200
    openapi = api.get(hrefs[("service-desc", None)]).json()
    assert {"/catalog", "/catalog/search", "/catalog/collections/{collection_id}/items"} <= set(
        openapi["paths"]
    )
    assert "requestBody" in openapi["paths"]["/catalog/search"]["post"]


def test_hrefs_follow_root_path_and_host(demo_settings: Settings) -> None:
    app = create_app(demo_settings)
    with TestClient(app, root_path="/proxy") as proxied:
        body = proxied.get("/catalog").json()
        assert link(body, "self")["href"] == "http://testserver/proxy/catalog"  # type: ignore[index]
        assert link(body, "service-desc")["href"] == "http://testserver/proxy/openapi.json"  # type: ignore[index]
    with TestClient(app) as plain:
        body = plain.get("/catalog/collections", headers={"host": "tiles.example.org"}).json()
        assert link(body, "self")["href"] == "http://tiles.example.org/catalog/collections"  # type: ignore[index]
        served = body["collections"][0]
        assert link(served, "items")["href"] == (  # type: ignore[index]
            f"http://tiles.example.org/catalog/collections/{served['id']}/items"
        )


def test_collections_and_queryables(api: TestClient) -> None:
    body = api.get("/catalog/collections").json()
    assert [c["id"] for c in body["collections"]] == [COLLECTION]
    assert body["numberReturned"] == 1
    collection = api.get(f"/catalog/collections/{COLLECTION}").json()
    assert collection == body["collections"][0]
    rels = {item["rel"]: item["href"] for item in collection["links"]}
    assert rels["self"] == f"http://testserver/catalog/collections/{COLLECTION}"
    assert rels["parent"] == rels["root"] == "http://testserver/catalog"
    for item in collection["links"]:
        assert item["href"].startswith(("http://", "https://", "/")), item

    for path in ("/catalog/queryables", f"/catalog/collections/{COLLECTION}/queryables"):
        response = api.get(path)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/schema+json"
        schema = response.json()
        assert schema["$id"] == f"http://testserver{path}"
        assert schema["additionalProperties"] is True
        assert {"id", "collection", "geometry", "datetime", "eo:cloud_cover"} <= set(
            schema["properties"]
        )


def test_item_and_item_collections_are_geojson(
    api: TestClient, items: list[pystac.Item], local: LocalCatalog
) -> None:
    one = items[0]
    responses = {
        "item": api.get(f"/catalog/collections/{COLLECTION}/items/{one.id}"),
        "items": api.get(f"/catalog/collections/{COLLECTION}/items"),
        "search GET": api.get("/catalog/search"),
        "search POST": api.post("/catalog/search", json={}),
    }
    for name, response in responses.items():
        assert response.status_code == 200, name
        assert response.headers["content-type"] == "application/geo+json", name

    item = responses["item"].json()
    assert item["id"] == one.id and item["properties"] == one.properties
    data = f"http://testserver/catalog/data/{COLLECTION}"
    assert {key: asset["href"] for key, asset in item["assets"].items()} == {
        key: f"{data}/{Path(asset.href).relative_to(local.path)}"
        for key, asset in one.assets.items()
    }
    root = "http://testserver/catalog"
    rels = {entry["rel"]: entry["href"] for entry in item["links"]}
    assert rels["self"] == f"{root}/collections/{COLLECTION}/items/{one.id}"
    assert rels["parent"] == rels["collection"] == f"{root}/collections/{COLLECTION}"
    assert rels["root"] == root
    for entry in item["links"]:  # relative links of the item file would resolve here: dropped
        assert entry["href"].startswith(("http://", "https://", "/")), entry

    page = responses["search GET"].json()
    assert page["type"] == "FeatureCollection"
    assert page["numberMatched"] == len(items)
    assert page["numberReturned"] == len(page["features"]) == min(len(items), 10)


def test_items_endpoint_filters_and_pages(api: TestClient, items: list[pystac.Item]) -> None:
    days = sorted({acquired(item).date() for item in items})
    window = f"{days[1].isoformat()}T00:00:00Z/{days[-1].isoformat()}T23:59:59.999999Z"
    expected = [item.id for item in items if days[1] <= acquired(item).date() <= days[-1]]
    assert len(expected) >= 3
    # The STAC API takes RFC 3339 date-times only: no bare dates, no missing offsets.
    for bare in (f"{days[1].isoformat()}/..", f"{days[1].isoformat()}T00:00:00/.."):
        response = api.get(f"/catalog/collections/{COLLECTION}/items", params={"datetime": bare})
        assert response.status_code == 400
        assert response.json()["detail"].startswith("datetime: ")

    url: str | None = f"/catalog/collections/{COLLECTION}/items?limit=2&datetime={window}"
    got: list[str] = []
    while url:
        response = api.get(url)
        body = response.json()
        got += features(response)
        assert body["numberMatched"] == len(expected)
        assert body["numberReturned"] == len(body["features"]) <= 2
        next_link = link(body, "next")
        if next_link is None:
            break
        assert next_link["href"].startswith(
            f"http://testserver/catalog/collections/{COLLECTION}/items?"
        )
        assert "collections=" not in next_link["href"]
        url = next_link["href"]
    assert got == expected


def test_get_next_links_round_trip(
    api: TestClient, local: LocalCatalog, items: list[pystac.Item]
) -> None:
    threshold = cloud_threshold(items)
    params = {
        "limit": "2",
        "sortby": "-eo:cloud_cover",
        "filter": f'"eo:cloud_cover" <= {threshold}',
    }
    expected = local_ids(
        local,
        filter={"op": "<=", "args": [{"property": "eo:cloud_cover"}, threshold]},
        sortby=[SortField("eo:cloud_cover", "desc")],
    )
    assert len(expected) > 2

    response = api.get("/catalog/search", params=params)
    got = features(response)
    body = response.json()
    assert link(body, "self")["href"].startswith("http://testserver/catalog/search?")  # type: ignore[index]
    pages = 1
    while (next_link := link(body, "next")) is not None:
        assert next_link["method"] == "GET"
        assert next_link["href"].startswith("http://testserver/catalog/search?")
        assert "token=" in next_link["href"]
        response = api.get(next_link["href"])
        got += features(response)
        body = response.json()
        pages += 1
    assert got == expected
    assert pages == math.ceil(len(expected) / 2)


def test_post_next_links_round_trip(
    api: TestClient, local: LocalCatalog, items: list[pystac.Item]
) -> None:
    threshold = cloud_threshold(items)
    search = {
        "collections": [COLLECTION],
        "query": {"eo:cloud_cover": {"lte": threshold}},
        "sortby": [{"field": "properties.eo:cloud_cover", "direction": "asc"}],
        "limit": 2,
    }
    expected = local_ids(
        local,
        collections=[COLLECTION],
        query={"eo:cloud_cover": {"lte": threshold}},
        sortby=[SortField("properties.eo:cloud_cover", "asc")],
    )
    assert len(expected) > 2

    response = api.post("/catalog/search", json=search)
    got = features(response)
    body = response.json()
    while (next_link := link(body, "next")) is not None:
        assert next_link["method"] == "POST"
        assert next_link["merge"] is False
        assert next_link["href"] == "http://testserver/catalog/search"
        assert next_link["body"]["token"]
        assert {key: next_link["body"][key] for key in search} == search
        response = api.post(next_link["href"], json=next_link["body"])
        got += features(response)
        body = response.json()
    assert got == expected


GET_SEARCH_ERRORS = [
    ({"bbox": "1,2,3"}, "bbox"),
    ({"bbox": "a,b,c,d"}, "bbox"),
    ({"bbox": "10,50,5,40"}, "bbox"),
    ({"datetime": "yesterday"}, "datetime"),
    ({"datetime": "2023-09-01/2023-01-01"}, "datetime"),
    ({"intersects": '{"type": "Point"'}, "intersects"),
    ({"intersects": '{"type": "Point", "coordinates": [500, 0]}'}, "intersects"),
    ({"query": "{eo:cloud_cover"}, "query"),
    ({"query": '{"eo:cloud_cover": {"less": 5}}'}, "query"),
    ({"filter": "eo:cloud_cover <<< 5"}, "filter"),
    ({"filter": '{"op": "<", "args": [', "filter-lang": "cql2-json"}, "filter"),
    ({"filter": "eo:cloud_cover < 5", "filter-lang": "xml"}, "filter-lang"),
    ({"filter": "eo:cloud_cover < 5", "filter-crs": "EPSG:32633"}, "filter-crs"),
    ({"sortby": "eo:cloud_cover;drop"}, "sortby"),
    ({"limit": "abc"}, "limit"),
    ({"limit": "0"}, "limit"),
    ({"token": "not-a-token"}, "token"),
    (
        {
            "ids": "a,b",
            "collections": COLLECTION,
            "bbox": "0,0,1,1",
            "intersects": '{"type": "Point", "coordinates": [0, 0]}',
        },
        "intersects",
    ),
]


@pytest.mark.parametrize(("params", "name"), GET_SEARCH_ERRORS)
def test_get_search_bad_input_is_400_naming_the_parameter(
    api: TestClient, params: dict[str, str], name: str
) -> None:
    response = api.get("/catalog/search", params=params)
    assert response.status_code == 400, response.text
    assert response.json()["detail"].startswith(f"{name}:"), response.json()


POST_SEARCH_ERRORS = [
    (b'{"limit": 2', "body"),
    (b"[1, 2]", "body"),
    ({"bbox": [1, 2]}, "bbox"),
    ({"intersects": {"type": "Blob", "coordinates": []}}, "intersects"),
    ({"datetime": 5}, "datetime"),
    ({"ids": [1, 2]}, "ids"),
    ({"query": []}, "query"),
    ({"filter": {"op": "nope", "args": []}}, "filter"),
    ({"filter": "eo:cloud_cover <", "filter-lang": "cql2-text"}, "filter"),
    ({"filter": "eo:cloud_cover < 5", "filter-crs": {}}, "filter-crs"),
    ({"filter": "eo:cloud_cover < 5", "filter-lang": {}}, "filter-lang"),
    ({"sortby": [{"field": "eo:cloud_cover", "direction": "sideways"}]}, "sortby"),
    ({"limit": "many"}, "limit"),
    ({"limit": 0}, "limit"),
    ({"token": "not-a-token"}, "token"),
]


@pytest.mark.parametrize(("body", "name"), POST_SEARCH_ERRORS)
def test_post_search_bad_input_is_400_naming_the_parameter(
    api: TestClient, body: Any, name: str
) -> None:
    if isinstance(body, bytes):
        response = api.post(
            "/catalog/search", content=body, headers={"content-type": "application/json"}
        )
    else:
        response = api.post("/catalog/search", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["detail"].startswith(f"{name}:"), response.json()


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"bbox": "1,2"}, "bbox"),
        ({"datetime": "2023-13-01"}, "datetime"),
        ({"limit": "-1"}, "limit"),
        ({"token": "%%%"}, "token"),
    ],
)
def test_items_bad_input_is_400_naming_the_parameter(
    api: TestClient, params: dict[str, str], name: str
) -> None:
    response = api.get(f"/catalog/collections/{COLLECTION}/items", params=params)
    assert response.status_code == 400, response.text
    assert response.json()["detail"].startswith(f"{name}:")


def test_a_token_only_works_for_its_own_search(api: TestClient) -> None:
    first = api.get("/catalog/search", params={"limit": "1", "sortby": "eo:cloud_cover"})
    next_link = link(first.json(), "next")
    assert next_link is not None
    token = httpx.URL(next_link["href"]).params["token"]
    assert api.get("/catalog/search", params={"limit": "1", "token": token}).status_code == 400
    other = api.get(
        "/catalog/search", params={"limit": "1", "sortby": "-eo:cloud_cover", "token": token}
    )
    assert other.status_code == 400
    assert other.json()["detail"].startswith("token:")


@pytest.mark.parametrize(
    "path",
    [
        "/catalog/collections/nope",
        "/catalog/collections/nope/items",
        "/catalog/collections/nope/queryables",
        "/catalog/collections/nope/items/S2A_33TWM_20230402_0_L2A",
        f"/catalog/collections/{COLLECTION}/items/no-such-item",
    ],
)
def test_unknown_collection_or_item_is_404(api: TestClient, path: str) -> None:
    response = api.get(path)
    assert response.status_code == 404
    detail = response.json()["detail"]
    assert "nope" in detail or "no-such-item" in detail


def test_search_of_an_unknown_collection_is_empty(api: TestClient) -> None:
    body = api.get("/catalog/search", params={"collections": "nope"}).json()
    assert body["features"] == [] and body["numberMatched"] == 0
    assert link(body, "next") is None


class _FailingCatalog:
    """A catalog whose upstream is down: the router must answer 502 / 504, not 500."""

    def __init__(self, error: Exception):
        self.error = error

    def search_page(self, query: SearchQuery) -> SearchPage:
        raise self.error

    def collections(self) -> list[pystac.Collection]:
        return []

    def get_collection(self, collection_id: str) -> pystac.Collection:
        raise self.error

    def get_item(self, collection_id: str, item_id: str) -> pystac.Item:
        raise self.error


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (UpstreamError("upstream STAC API answered 503"), 502),
        (UpstreamTimeoutError("upstream STAC API did not answer in 30 s"), 504),
    ],
)
def test_upstream_failures_surface_as_502_504(
    demo_settings: Settings, error: Exception, status: int
) -> None:
    app = create_app(demo_settings)
    app.dependency_overrides[get_catalog] = lambda: _FailingCatalog(error)
    with TestClient(app) as swapped:
        landing = swapped.get("/catalog").json()
        assert [entry for entry in landing["links"] if entry["rel"] == "child"] == []
        for response in (
            swapped.get("/catalog/search"),
            swapped.post("/catalog/search", json={"limit": 1}),
            swapped.get(f"/catalog/collections/{COLLECTION}/items"),
            swapped.get(f"/catalog/collections/{COLLECTION}/items/x"),
        ):
            assert response.status_code == status
            assert response.json() == {"detail": error.args[0]}


# --------------------------------------------------------------------------- CQL2 classes

MAY_1 = datetime(2023, 5, 1, tzinfo=UTC)
JUL_1 = datetime(2023, 7, 1, tzinfo=UTC)
JUL_31 = datetime(2023, 7, 31, tzinfo=UTC)

#: One or more filters per advertised CQL2 conformance class, with the Python predicate
#: that says which items they must return: what is advertised is what evaluates.
CQL2_CASES: list[tuple[str, str, Any]] = [
    ("basic-cql2", "\"eo:cloud_cover\" = 0 AND NOT (platform = 'sentinel-2b')",
     lambda i: cloud(i) == 0 and i.properties["platform"] != "sentinel-2b"),
    ("basic-cql2", "platform IS NULL", lambda i: False),
    ("basic-cql2", "\"s2:not_a_property\" IS NULL", lambda i: True),
    ("basic-cql2", "datetime >= TIMESTAMP('2023-07-01T00:00:00Z')",
     lambda i: acquired(i) >= JUL_1),
    ("advanced-comparison-operators", "\"eo:cloud_cover\" BETWEEN 1 AND 50",
     lambda i: 1 <= cloud(i) <= 50),
    ("advanced-comparison-operators", "platform IN ('sentinel-2a')",
     lambda i: i.properties["platform"] == "sentinel-2a"),
    ("advanced-comparison-operators", "platform LIKE '%2b'",
     lambda i: i.properties["platform"].endswith("2b")),
    ("case-insensitive-comparison", "CASEI(platform) = casei('SENTINEL-2B')",
     lambda i: i.properties["platform"] == "sentinel-2b"),
    ("accent-insensitive-comparison", "ACCENTI(platform) = accenti('séntinel-2b')",
     lambda i: i.properties["platform"] == "sentinel-2b"),
    ("basic-spatial-functions", "S_INTERSECTS(geometry, POINT({cx} {cy}))",
     lambda i, g: footprint(i).intersects(g["centre"])),
    ("basic-spatial-functions", "S_INTERSECTS(geometry, BBOX({fx0}, {fy0}, {fx1}, {fy1}))",
     lambda i, g: False),
    ("basic-spatial-functions-plus", "S_INTERSECTS(geometry, {strip_wkt})",
     lambda i, g: footprint(i).intersects(g["strip"])),
    ("spatial-functions", "S_WITHIN(geometry, {strip_wkt})",
     lambda i, g: footprint(i).within(g["strip"])),
    ("spatial-functions", "S_DISJOINT(geometry, {strip_wkt})",
     lambda i, g: footprint(i).disjoint(g["strip"])),
    ("spatial-functions", "S_CONTAINS(geometry, POINT({cx} {cy}))",
     lambda i, g: footprint(i).contains(g["centre"])),
    ("temporal-functions", "T_AFTER(datetime, TIMESTAMP('2023-07-01T00:00:00Z'))",
     lambda i: acquired(i) > JUL_1),
    ("temporal-functions",
     "T_INTERSECTS(datetime, INTERVAL('2023-05-01T00:00:00Z', '2023-07-31T00:00:00Z'))",
     lambda i: MAY_1 <= acquired(i) <= JUL_31),
    ("array-functions", "A_CONTAINS(instruments, ('msi'))",
     lambda i: "msi" in i.properties["instruments"]),
    ("array-functions", "A_OVERLAPS(instruments, ('olci', 'slstr'))", lambda i: False),
    ("property-property", "\"s2:vegetation_percentage\" > \"eo:cloud_cover\"",
     lambda i: i.properties["s2:vegetation_percentage"] > cloud(i)),
    ("arithmetic", "\"eo:cloud_cover\" * 2 < 10", lambda i: cloud(i) * 2 < 10),
]  # fmt: skip


def test_every_advertised_cql2_class_is_tested() -> None:
    advertised = {uri.removeprefix(CQL2) for uri in CONFORMANCE if uri.startswith(CQL2)}
    languages = {"cql2-text", "cql2-json"}
    assert advertised - languages == {name for name, _, _ in CQL2_CASES}


@pytest.fixture(scope="module")
def geometries(items: list[pystac.Item]) -> dict[str, Any]:
    union = shapely.union_all([footprint(item) for item in items])
    minx, miny, maxx, maxy = union.bounds
    centre = union.centroid
    left_edges = sorted({footprint(item).bounds[0] for item in items})
    edge = (left_edges[0] + left_edges[-1]) / 2 if len(left_edges) > 1 else minx + 1e-4
    strip = shapely.geometry.box(minx - 0.001, miny - 0.001, edge, maxy + 0.001)
    return {
        "centre": centre,
        "strip": strip,
        "format": {
            "cx": centre.x,
            "cy": centre.y,
            "fx0": minx + 5,
            "fy0": miny + 5,
            "fx1": maxx + 5,
            "fy1": maxy + 5,
            "strip_wkt": strip.wkt,
        },
    }


@pytest.mark.parametrize(("conformance", "text", "predicate"), CQL2_CASES)
def test_advertised_cql2_class_evaluates(
    api: TestClient,
    items: list[pystac.Item],
    geometries: dict[str, Any],
    conformance: str,
    text: str,
    predicate: Any,
) -> None:
    cql = text.format(**geometries["format"])
    if predicate.__code__.co_argcount == 2:
        expected = [item.id for item in items if predicate(item, geometries)]
    else:
        expected = [item.id for item in items if predicate(item)]
    got = features(api.get("/catalog/search", params={"filter": cql, "limit": "100"}))
    assert got == expected, cql
    as_json = api.post(
        "/catalog/search",
        json={"filter": cql, "filter-lang": "cql2-text", "limit": 100},
    )
    assert features(as_json) == expected


def test_remote_backend_declares_only_the_conformance_it_shares(demo_settings):
    from app.dependencies import get_catalog

    app = create_app(demo_settings)

    class Upstream:
        conformance = [
            "https://api.stacspec.org/v1.0.0-rc.2/core",
            "https://api.stacspec.org/v1.0.0-rc.2/item-search",
        ]

        def __getattr__(self, name):
            return getattr(app.state.services.catalog, name)

    app.dependency_overrides[get_catalog] = Upstream
    with TestClient(app) as client:
        declared = client.get("/catalog").json()["conformsTo"]
    assert "https://api.stacspec.org/v1.0.0/core" in declared
    assert "https://api.stacspec.org/v1.0.0/item-search" in declared
    assert not any("filter" in uri or "cql2" in uri for uri in declared)
