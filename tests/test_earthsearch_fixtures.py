"""The recorded Earth-Search v1 responses, served from loopback, through StacApiCatalog.

A stub imitates Earth-Search (stac-server): landing page, collections, the item, and a
search whose first page links to the second with a POST ``next`` link carrying a ``next``
token in its body (``merge: false``), exactly as recorded. By default the stub rewrites
Earth-Search's absolute links onto its loopback root; served unrewritten, the links name
the public host, and StacApiCatalog must rebase them onto the configured root (the API's
advertised root) rather than leave loopback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pystac
import pytest
from harness.stubapi import Recorded, StubResponse, StubServer

from app.catalog.query import search_from_body
from app.catalog.stacapi import StacApiCatalog
from app.errors import NotFoundError
from app.settings import EARTH_SEARCH_COGS, EARTH_SEARCH_URL

FIXTURES = Path(__file__).parent / "fixtures"
LANDING = "earth-search-v1-landing.json"
PAGE_1 = "earth-search-v1-search-response.json"
PAGE_2 = "earth-search-v1-search-response-page2.json"
COLLECTION = "earth-search-v1-collection-sentinel-2-l2a.json"
ITEM = "earth-search-v1-sentinel-2-l2a-item.json"
ITEM_ID = "S2A_13TDE_20231008_0_L2A"
COLLECTION_ID = "sentinel-2-l2a"


def _fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


# The search the recorded pages answer (see the recorded next link's body).
RECORDED_SEARCH = {
    "collections": ["sentinel-2-l2a", "landsat-c2-l2"],
    "intersects": {"type": "Point", "coordinates": [-105.1019, 40.1672]},
    "datetime": "2023-10-08T00:00:00Z/2023-10-08T23:59:59Z",
}


class EarthSearchStub(StubServer):
    """A loopback Earth-Search v1 serving the recorded responses under ``/v1``."""

    def __init__(self, *, rewrite: bool = True):
        super().__init__(self._handle)
        self.rewrite = rewrite
        self.root = f"{self.url}/v1"

    def _send(self, name: str, status: int = 200) -> StubResponse:
        text = (FIXTURES / name).read_text()
        if self.rewrite:
            text = text.replace(EARTH_SEARCH_URL, self.root)
        return StubResponse(status, text.encode(), {"Content-Type": "application/json"})

    def _handle(self, request: Recorded, server: StubServer) -> StubResponse:
        path = request.path.rstrip("/")
        if path == "/v1" and request.method == "GET":
            return self._send(LANDING)
        if path == "/v1/search" and request.method == "POST":
            body = request.json or {}
            return self._send(PAGE_2 if "next" in body else PAGE_1)
        if path == "/v1/collections":
            collection = _fixture(COLLECTION)
            page = {"collections": [collection], "links": []}
            text = json.dumps(page)
            if self.rewrite:
                text = text.replace(EARTH_SEARCH_URL, self.root)
            return StubResponse(200, text.encode(), {"Content-Type": "application/json"})
        if path == f"/v1/collections/{COLLECTION_ID}":
            return self._send(COLLECTION)
        if path == f"/v1/collections/{COLLECTION_ID}/items/{ITEM_ID}":
            return self._send(ITEM)
        return StubResponse(404, {"code": 404, "description": "Not Found"})

    def searches(self) -> list[Recorded]:
        """The search requests received, in order."""
        return [r for r in self.requests if r.path.rstrip("/") == "/v1/search"]


@pytest.fixture
def earth_search() -> Iterator[EarthSearchStub]:
    with EarthSearchStub() as stub:
        yield stub


def _next_body() -> dict[str, Any]:
    link = next(link for link in _fixture(PAGE_1)["links"] if link["rel"] == "next")
    return link["body"]


def test_search_follows_the_post_next_link(earth_search: EarthSearchStub) -> None:
    catalog = StacApiCatalog(earth_search.root, retries=0)
    items = list(catalog.search(search_from_body(RECORDED_SEARCH)))
    assert [item.id for item in items] == [
        feature["id"] for feature in _fixture(PAGE_1)["features"]
    ]
    assert all(isinstance(item, pystac.Item) for item in items)
    searches = earth_search.searches()
    assert len(searches) == 2, "both pages are requested"
    first, second = searches
    assert first.method == second.method == "POST"
    assert first.json["collections"] == RECORDED_SEARCH["collections"]
    assert first.json["intersects"] == RECORDED_SEARCH["intersects"]
    assert "next" not in first.json
    # merge: false -- the second request is the recorded link's body, token included.
    assert second.json == _next_body()
    assert second.json["next"] == (
        "2023-10-08T17:37:26.656958Z,LC08_L2SP_033032_20231008_02_T1,landsat-c2-l2"
    )
    assert earth_search.count("GET", "/v1") == 1


def test_search_page_token_replays_the_next_link(earth_search: EarthSearchStub) -> None:
    catalog = StacApiCatalog(earth_search.root, retries=0)
    query = search_from_body({**RECORDED_SEARCH, "limit": 10})
    first = catalog.search_page(query)
    assert [item.id for item in first.items] == [ITEM_ID, "LC08_L2SP_033032_20231008_02_T1"]
    assert first.number_matched == 2
    assert first.next_token
    assert earth_search.root not in first.next_token and "earth-search" not in first.next_token

    query.token = first.next_token
    second = catalog.search_page(query)
    assert second.items == [] and second.next_token is None
    assert second.number_matched == 2
    searches = earth_search.searches()
    assert len(searches) == 2
    assert searches[1].json == _next_body()


def test_get_item_is_usable_by_the_service(earth_search: EarthSearchStub) -> None:
    catalog = StacApiCatalog(earth_search.root, retries=0)
    item = catalog.get_item(COLLECTION_ID, ITEM_ID)
    recorded = _fixture(ITEM)
    assert item.id == ITEM_ID and item.collection_id == COLLECTION_ID
    assert list(item.assets) == list(recorded["assets"])
    assert {"red", "nir", "scl", "visual", "red-jp2"} <= set(item.assets)
    red = item.assets["red"]
    bands = red.extra_fields["raster:bands"]
    assert bands[0]["scale"] == 0.0001
    assert bands[0]["offset"] == -0.1
    assert red.href.startswith(EARTH_SEARCH_COGS) and red.href.endswith("/B04.tif")
    assert item.properties["eo:cloud_cover"] == recorded["properties"]["eo:cloud_cover"]
    assert item.properties["proj:epsg"] == recorded["properties"]["proj:epsg"]
    assert item.datetime is not None and item.bbox == recorded["bbox"]
    # Served as recorded: no migration rewrote the item.
    assert item.to_dict(include_self_link=False)["properties"] == recorded["properties"]


def test_collections_and_unknown_ids(earth_search: EarthSearchStub) -> None:
    catalog = StacApiCatalog(earth_search.root, retries=0)
    assert [c.id for c in catalog.collections()] == [COLLECTION_ID]
    collection = catalog.get_collection(COLLECTION_ID)
    assert collection.id == COLLECTION_ID
    assert "item_assets" in collection.extra_fields
    with pytest.raises(NotFoundError):
        catalog.get_item(COLLECTION_ID, "S2A_NOPE")
    with pytest.raises(NotFoundError):
        catalog.get_collection("nope")


def test_links_naming_the_public_host_are_rebased_onto_the_configured_root() -> None:
    # Served as recorded: every link names https://earth-search.aws.element84.com/v1 (the
    # API's advertised root). The catalog rebases them onto loopback, never leaving it.
    with EarthSearchStub(rewrite=False) as stub:
        catalog = StacApiCatalog(stub.root, retries=0, timeout=5)
        items = list(catalog.search(search_from_body(RECORDED_SEARCH)))
        assert len(items) == 2
        assert len(stub.searches()) == 2
        assert stub.searches()[1].json == _next_body()
        query = search_from_body(RECORDED_SEARCH)
        page = catalog.search_page(query)
        assert page.next_token and "earth-search" not in page.next_token
        query.token = page.next_token
        assert catalog.search_page(query).items == []
        assert len(stub.searches()) == 4
        assert catalog.get_item(COLLECTION_ID, ITEM_ID).id == ITEM_ID
        assert [c.id for c in catalog.collections()] == [COLLECTION_ID]
