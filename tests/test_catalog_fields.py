"""The STAC API Fields extension on /catalog (issue 15 item 4).

The include/exclude rules are checked against the table of the extension's "Include/Exclude
Semantics" section on a hand-written Item; pystac-client's ``fields=`` (GET and POST) is
checked against the service under uvicorn, the expected values read from the demo items;
the StacApiCatalog backend through a stub upstream serving the same items.
"""

from collections.abc import Iterator
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
from app.catalog.fields import (
    DEFAULT_FIELDS,
    FieldsRequest,
    fields_from_body,
    fields_from_get,
    select_fields,
)
from app.catalog.local import LocalCatalog
from app.catalog.stacapi import StacApiCatalog
from app.dependencies import get_catalog
from app.input_limits import DEFAULT_LIMITS
from app.main import create_app
from app.settings import Settings

COLLECTION = "sentinel-2-l2a"
ITEM_SEARCH_FIELDS = "https://api.stacspec.org/v1.0.0/item-search#fields"
FEATURES_FIELDS = "https://api.stacspec.org/v1.0.0/ogcapi-features#fields"

ITEM: dict[str, Any] = {
    "type": "Feature",
    "stac_version": "1.0.0",
    "stac_extensions": ["https://stac-extensions.github.io/eo/v1.1.0/schema.json"],
    "id": "S2A_1",
    "geometry": {"type": "Point", "coordinates": [11.0, 46.0]},
    "bbox": [11.0, 46.0, 11.0, 46.0],
    "properties": {
        "datetime": "2023-06-01T10:00:00Z",
        "eo:cloud_cover": 12.5,
        "platform": "sentinel-2a",
        "foo": {"bar": 1, "baz": 2},
    },
    "links": [{"rel": "self", "href": "http://x/items/S2A_1"}],
    "assets": {"red": {"href": "http://x/B04.tif"}},
    "collection": COLLECTION,
}
DEFAULT_KEYS = {
    "type",
    "stac_version",
    "stac_extensions",
    "id",
    "geometry",
    "bbox",
    "links",
    "assets",
    "collection",
    "properties",
}
IDENTITY = {"type", "stac_version", "id", "collection"}


def select(request: FieldsRequest | None) -> dict[str, Any]:
    return select_fields(ITEM, request)


# ------------------------------------------------------------------------------- the rules


def test_no_fields_is_the_whole_item() -> None:
    assert select(None) == ITEM


@pytest.mark.parametrize(
    "request_",
    [
        fields_from_get("", DEFAULT_LIMITS),
        fields_from_body({"fields": {}}, DEFAULT_LIMITS),
        fields_from_body({"fields": None}, DEFAULT_LIMITS),
        fields_from_body({"fields": {"include": None, "exclude": None}}, DEFAULT_LIMITS),
        fields_from_body({"fields": {"include": [], "exclude": []}}, DEFAULT_LIMITS),
    ],
)
def test_empty_fields_is_the_default_set(request_: FieldsRequest) -> None:
    item = select(request_)
    assert set(item) == DEFAULT_KEYS
    assert item["properties"] == {"datetime": ITEM["properties"]["datetime"]}
    assert {k: item[k] for k in DEFAULT_KEYS - {"properties"}} == {
        k: ITEM[k] for k in DEFAULT_KEYS - {"properties"}
    }
    assert "properties.datetime" in DEFAULT_FIELDS


def test_a_null_datetime_brings_start_and_end() -> None:
    ranged = {
        **ITEM,
        "properties": {"datetime": None, "start_datetime": "a", "end_datetime": "b", "x": 1},
    }
    item = select_fields(ranged, FieldsRequest(include=()))
    assert item["properties"] == {"datetime": None, "start_datetime": "a", "end_datetime": "b"}


def test_include_only_returns_those_fields_and_the_identity() -> None:
    item = select(FieldsRequest(include=("properties.eo:cloud_cover", "bbox")))
    assert set(item) == IDENTITY | {"bbox", "properties"}
    assert item["properties"] == {"eo:cloud_cover": 12.5}
    # Unprefixed names are properties.
    assert select(FieldsRequest(include=("eo:cloud_cover",))) == {
        **{key: ITEM[key] for key in IDENTITY},
        "properties": {"eo:cloud_cover": 12.5},
    }
    # A field the item lacks is no error and no key.
    assert "properties" not in select(FieldsRequest(include=("properties.nothing",)))


def test_exclude_with_include_missing_is_the_whole_item_minus() -> None:
    item = select(fields_from_body({"fields": {"exclude": ["geometry"]}}, DEFAULT_LIMITS))
    assert item == {key: value for key, value in ITEM.items() if key != "geometry"}


@pytest.mark.parametrize(
    "request_",
    [
        fields_from_get("-geometry", DEFAULT_LIMITS),
        fields_from_body({"fields": {"include": [], "exclude": ["geometry"]}}, DEFAULT_LIMITS),
        fields_from_body({"fields": {"include": None, "exclude": ["geometry"]}}, DEFAULT_LIMITS),
    ],
)
def test_exclude_with_empty_include_is_the_default_set_minus(request_: FieldsRequest) -> None:
    assert set(select(request_)) == DEFAULT_KEYS - {"geometry"}


def test_nested_paths_most_specific_wins() -> None:
    # Exclude an object, include one of its fields: only that field.
    item = select(fields_from_get("-properties,+properties.eo:cloud_cover", DEFAULT_LIMITS))
    assert item["properties"] == {"eo:cloud_cover": 12.5}
    assert "geometry" not in item
    # Include an object, exclude one of its fields: all the others.
    item = select(FieldsRequest(include=("properties",), exclude=("properties.foo.bar",)))
    assert item["properties"] == {**ITEM["properties"], "foo": {"baz": 2}}
    item = select(fields_from_get("id,properties,-properties.foo", DEFAULT_LIMITS))
    assert item["properties"] == {
        key: value for key, value in ITEM["properties"].items() if key != "foo"
    }


def test_a_field_in_both_lists_is_included() -> None:
    assert "geometry" in select(fields_from_get("+geometry,-geometry", DEFAULT_LIMITS))
    assert "geometry" in select(
        fields_from_body(
            {"fields": {"include": ["geometry"], "exclude": ["geometry"]}}, DEFAULT_LIMITS
        )
    )
    # ["a"] / ["a", "b"]: a only.
    item = select(FieldsRequest(include=("bbox",), exclude=("bbox", "assets")))
    assert "bbox" in item and "assets" not in item


def test_an_excluded_identity_field_goes() -> None:
    assert set(select(FieldsRequest(include=("bbox",), exclude=("collection",)))) == {
        "type",
        "stac_version",
        "id",
        "bbox",
    }


def test_the_item_is_not_modified() -> None:
    before = repr(ITEM)
    select(FieldsRequest(include=("properties",), exclude=("properties.foo.bar",)))
    assert repr(ITEM) == before


def test_get_parsing() -> None:
    assert fields_from_get(None, DEFAULT_LIMITS) is None
    # "+" unencoded in a URL arrives as a space.
    assert fields_from_get(" id,+bbox,-geometry,", DEFAULT_LIMITS) == FieldsRequest(
        include=("id", "bbox"), exclude=("geometry",)
    )
    assert fields_from_body({}, DEFAULT_LIMITS) is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"fields": "id"}, "fields: expected an object"),
        ({"fields": {"include": "id"}}, "fields.include: expected a list"),
        ({"fields": {"exclude": [1]}}, "fields.exclude: expected field names"),
        ({"fields": {"includes": ["id"]}}, "fields: unknown keys ['includes']"),
        ({"fields": {"include": ["properties..x"]}}, "fields.include: 'properties..x'"),
    ],
)
def test_bad_fields_are_a_400_naming_the_field(
    api: TestClient, body: dict[str, Any], message: str
) -> None:
    response = api.post("/catalog/search", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["detail"].startswith(message)


def test_too_many_fields_is_a_413(api: TestClient, demo_settings: Settings) -> None:
    many = [f"f{i}" for i in range(demo_settings.max_search_list_items + 1)]
    response = api.post("/catalog/search", json={"fields": {"include": many}})
    assert response.status_code == 413
    assert "max_search_list_items" in response.json()["detail"]
    response = api.get("/catalog/search", params={"fields": "x" * 300})
    assert response.status_code == 400
    assert response.json()["detail"].startswith("fields:")


# --------------------------------------------------------------------- the service, live


@pytest.fixture(scope="module")
def api(demo_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(demo_settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def base_url(demo_settings: Settings) -> Iterator[str]:
    with live_server(create_app(demo_settings)) as url:
        yield url


@pytest.fixture(scope="module")
def stac(base_url: str) -> Client:
    stac_io = StacApiIO()
    stac_io.session.trust_env = False
    return Client.open(f"{base_url}/catalog", stac_io=stac_io)


@pytest.fixture(scope="module")
def demo_items(demo_dir: Any) -> list[pystac.Item]:
    return list(LocalCatalog(demo_dir).search(SearchQuery()))


def test_conformance_declares_both_bindings(api: TestClient, stac: Client) -> None:
    for body in (api.get("/catalog").json(), api.get("/catalog/conformance").json()):
        assert ITEM_SEARCH_FIELDS in body["conformsTo"]
        assert FEATURES_FIELDS in body["conformsTo"]
    assert stac.conforms_to("FIELDS")


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_pystac_client_fields(stac: Client, demo_items: list[pystac.Item], method: str) -> None:
    search = stac.search(
        collections=[COLLECTION],
        fields=["id", "properties.eo:cloud_cover", "-links"],
        limit=2,  # several pages: the next links carry fields too
        method=method,
    )
    got = list(search.items_as_dicts())
    assert [item["id"] for item in got] == [item.id for item in demo_items]
    assert [item["properties"] for item in got] == [
        {"eo:cloud_cover": item.properties["eo:cloud_cover"]} for item in demo_items
    ]
    assert all(set(item) == IDENTITY | {"properties"} for item in got)


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_pystac_client_exclude_geometry(
    stac: Client, demo_items: list[pystac.Item], method: str
) -> None:
    got = list(stac.search(fields=["-geometry"], method=method).items_as_dicts())
    assert len(got) == len(demo_items)
    assert all("geometry" not in item and item["assets"] for item in got)


def test_item_list_fields(base_url: str, demo_items: list[pystac.Item]) -> None:
    url = f"{base_url}/catalog/collections/{COLLECTION}/items"
    body = httpx.get(url, params={"fields": "eo:cloud_cover", "limit": 1}, trust_env=False).json()
    assert body["features"][0]["properties"] == {
        "eo:cloud_cover": demo_items[0].properties["eo:cloud_cover"]
    }
    (next_link,) = [link for link in body["links"] if link["rel"] == "next"]
    following = httpx.get(next_link["href"], trust_env=False).json()
    assert set(following["features"][0]) == IDENTITY | {"properties"}
    full = httpx.get(url, params={"limit": 1}, trust_env=False).json()["features"][0]
    assert set(full) >= DEFAULT_KEYS and len(full["properties"]) > 5


# ------------------------------------------------------------------ the StacApiCatalog backend


def test_fields_over_an_upstream_stac_api(api: TestClient, demo_items: list[pystac.Item]) -> None:
    features = [
        {**item.to_dict(include_self_link=False, transform_hrefs=False), "links": []}
        for item in demo_items[:2]
    ]
    requests: list[Recorded] = []

    def handle(request: Recorded, server: StubServer) -> StubResponse:
        if request.path in ("", "/"):
            return StubResponse(200, landing_page(server.url))
        requests.append(request)
        body = {"type": "FeatureCollection", "features": features, "links": []}
        return StubResponse(200, body, {"Content-Type": "application/geo+json"})

    with StubServer(handle) as server:
        catalog = StacApiCatalog(server.url, retries=0)
        api.app.dependency_overrides[get_catalog] = lambda: catalog
        try:
            conformance = api.get("/catalog/conformance").json()["conformsTo"]
            got = api.get("/catalog/search", params={"fields": "-properties,+eo:cloud_cover"})
            posted = api.post("/catalog/search", json={"fields": {"exclude": ["assets"]}})
        finally:
            api.app.dependency_overrides.pop(get_catalog)
    assert ITEM_SEARCH_FIELDS in conformance and FEATURES_FIELDS in conformance
    assert got.status_code == 200, got.text
    assert [f["properties"] for f in got.json()["features"]] == [
        {"eo:cloud_cover": item.properties["eo:cloud_cover"]} for item in demo_items[:2]
    ]
    assert posted.status_code == 200, posted.text
    assert [set(f) for f in posted.json()["features"]] == [set(features[0]) - {"assets"}] * 2
    # Whole items are asked upstream (the selection is applied here).
    assert all("fields" not in r.query and "fields" not in (r.json or {}) for r in requests)


def test_an_upstream_without_item_search_declares_no_search_fields(api: TestClient) -> None:
    features_only = [
        "https://api.stacspec.org/v1.0.0/core",
        "https://api.stacspec.org/v1.0.0/ogcapi-features",
    ]

    def handle(request: Recorded, server: StubServer) -> StubResponse:
        return StubResponse(200, landing_page(server.url, conforms_to=features_only))

    with StubServer(handle) as server:
        catalog = StacApiCatalog(server.url, retries=0)
        api.app.dependency_overrides[get_catalog] = lambda: catalog
        try:
            conformance = api.get("/catalog/conformance").json()["conformsTo"]
        finally:
            api.app.dependency_overrides.pop(get_catalog)
    assert FEATURES_FIELDS in conformance
    assert ITEM_SEARCH_FIELDS not in conformance
