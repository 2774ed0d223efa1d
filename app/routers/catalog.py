"""The configured catalog served as a STAC API 1.0 (mounted under ``/catalog``).

Landing page, conformance, queryables, collections, items (STAC API - Features) and item
search (GET and POST, with the ``query``, ``filter``, ``sort`` and ``fields`` extensions), so that
pystac-client, QGIS and stac-browser can open the service itself.

The router is thin: it parses the request into a :class:`~app.catalog.base.SearchQuery`
(``app.catalog.query``), calls the :class:`~app.catalog.base.Catalog` and shapes STAC JSON.
The API links of collections and items (self, root, parent, collection, items) are rewritten
to point at this service; asset hrefs that are paths inside a local catalog's folder become
URLs of ``/catalog/data/{collection_id}/{path}`` (``app.routers.catalog_data``, which serves
those files with ranges), so STAC clients can read the data; every other asset href and
absolute link is left as the catalog gave it (relative links, meaningless at this service's
URLs, are dropped). Hrefs are absolute and built from the request (``root_path``,
``public_url`` and proxy headers respected).
Each item's ``raster:bands`` say the scale and offset the service applies
(``app.sentinel2.publish_scale_offset``): a generic client's ``DN * scale + offset`` is the
service's reflectance.
"""

import json
import re
from dataclasses import replace
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import pystac
from fastapi import APIRouter, Depends, Path, Query, Request
from titiler.core.resources.responses import GeoJSONResponse, JSONResponse

from app.catalog.base import Catalog, SearchPage, SearchQuery
from app.catalog.fields import FieldsRequest, fields_from_body, fields_from_get, select_fields
from app.catalog.query import (
    QUERYABLE_PROPERTIES,
    search_from_body,
    search_from_get,
    search_to_body,
    search_to_get_params,
)
from app.crs_input import OGC_CRS84
from app.dependencies import SettingsDep, get_catalog
from app.errors import BadRequestError
from app.input_limits import InputLimits, check_json_depth
from app.openapi import MEDIA_OPENAPI
from app.routers.catalog_data import AssetLinks
from app.routers.catalog_data import router as data_router
from app.sentinel2 import publish_scale_offset
from app.settings import Settings

STAC_VERSION = "1.0.0"

MEDIA_JSON = "application/json"
MEDIA_GEOJSON = "application/geo+json"
MEDIA_SCHEMA = "application/schema+json"
REL_QUERYABLES = "http://www.opengis.net/def/rel/ogc/1.0/queryables"

#: What this API implements. The CQL2 classes are those the ``cql2`` library evaluates in
#: ``LocalCatalog`` (checked in tests/test_catalog_api.py); no context or features-filter
#: (``filter`` on ``/collections/{id}/items``). The Fields extension is FIELDS_CONFORMANCE.
CONFORMANCE: list[str] = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/collections",
    "https://api.stacspec.org/v1.0.0/ogcapi-features",
    "https://api.stacspec.org/v1.0.0/item-search",
    "https://api.stacspec.org/v1.0.0/item-search#query",
    "https://api.stacspec.org/v1.0.0/item-search#sort",
    "https://api.stacspec.org/v1.0.0/item-search#filter",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-text",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-cql2",
    "http://www.opengis.net/spec/cql2/1.0/conf/advanced-comparison-operators",
    "http://www.opengis.net/spec/cql2/1.0/conf/case-insensitive-comparison",
    "http://www.opengis.net/spec/cql2/1.0/conf/accent-insensitive-comparison",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-functions",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-functions-plus",
    "http://www.opengis.net/spec/cql2/1.0/conf/spatial-functions",
    "http://www.opengis.net/spec/cql2/1.0/conf/temporal-functions",
    "http://www.opengis.net/spec/cql2/1.0/conf/array-functions",
    "http://www.opengis.net/spec/cql2/1.0/conf/property-property",
    "http://www.opengis.net/spec/cql2/1.0/conf/arithmetic",
]

#: The Fields extension (app.catalog.fields), per binding: applied by this router to the
#: Items any backend returns, so declared whenever the binding's base class is.
FIELDS_CONFORMANCE: dict[str, str] = {
    "https://api.stacspec.org/v1.0.0/item-search": (
        "https://api.stacspec.org/v1.0.0/item-search#fields"
    ),
    "https://api.stacspec.org/v1.0.0/ogcapi-features": (
        "https://api.stacspec.org/v1.0.0/ogcapi-features#fields"
    ),
}

#: Link relations that describe the API structure: replaced by links to this service.
_ITEM_API_RELS = frozenset({"self", "root", "parent", "collection"})
_COLLECTION_API_RELS = frozenset(
    {
        "self",
        "root",
        "parent",
        "child",
        "item",
        "items",
        "next",
        "prev",
        "search",
        "aggregate",
        "aggregations",
        REL_QUERYABLES,
    }
)

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")

#: The POST /search body, for the OpenAPI document (validation is ``search_from_body``'s).
_SEARCH_BODY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Item search",
    "properties": {
        "collections": {"type": "array", "items": {"type": "string"}},
        "ids": {"type": "array", "items": {"type": "string"}},
        "bbox": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 6},
        "intersects": {"type": "object", "description": "A GeoJSON geometry in EPSG:4326."},
        "datetime": {
            "type": "string",
            "description": "An RFC 3339 instant or interval `start/end`, `..` for an open end.",
        },
        "query": {
            "type": "object",
            "description": 'Query extension: `{"eo:cloud_cover": {"lt": 20}}`.',
        },
        "filter": {
            "description": "A CQL2 filter: a cql2-json object (or cql2-text with filter-lang)."
        },
        "filter-lang": {"type": "string", "enum": ["cql2-json", "cql2-text"]},
        "filter-crs": {
            "type": "string",
            "enum": [OGC_CRS84],
        },
        "sortby": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "field": {"type": "string"},
                    "direction": {"type": "string", "enum": ["asc", "desc"]},
                },
                "required": ["field"],
            },
        },
        "fields": {
            "type": "object",
            "description": "Fields extension: the Item fields to return (dotted paths; "
            "no `fields`: whole Items).",
            "properties": {
                "include": {"type": "array", "items": {"type": "string"}},
                "exclude": {"type": "array", "items": {"type": "string"}},
            },
        },
        "limit": {"type": "integer", "minimum": 1},
        "token": {"type": "string", "description": "The token of a `next` link."},
    },
    "example": {
        "collections": ["sentinel-2-l2a"],
        "bbox": [11.0, 46.0, 11.5, 46.5],
        "datetime": "2023-06-01T00:00:00Z/2023-08-31T23:59:59Z",
        "query": {"eo:cloud_cover": {"lt": 20}},
        "sortby": [{"field": "properties.eo:cloud_cover", "direction": "asc"}],
        "limit": 10,
    },
}

_GEOJSON_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {MEDIA_GEOJSON: {}}},
}


class SchemaJSONResponse(JSONResponse):
    """A JSON Schema document (queryables)."""

    media_type = MEDIA_SCHEMA


router = APIRouter()


# --- dependencies -------------------------------------------------------------------------
# The catalog and the settings come from app.dependencies (shared with the other routers):
# ``app.dependency_overrides[get_catalog]`` swaps the catalog of /catalog, the item
# endpoints and /statistics (mosaics and batch jobs: override get_mosaics / get_batch).


def stac_root(request: Request) -> str:
    """Return the absolute URL of the STAC API root, without a trailing slash.

    Built with ``request.url_for`` so that the ``root_path`` and the scheme/host seen through
    a proxy (uvicorn ``--proxy-headers``) end up in every href.
    """
    return str(request.url_for("stac_landing_page")).rstrip("/")


async def search_body(request: Request, settings: SettingsDep) -> dict[str, Any]:
    """Read the JSON object of a POST /search request; an empty body is an empty search.

    Raises:
        BadRequestError: the body is not JSON or not a JSON object.

    """
    raw = await request.body()
    if not raw.strip():
        return {}
    check_json_depth(raw, settings.max_json_depth)
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BadRequestError(f"body: invalid JSON ({exc})") from exc
    if not isinstance(body, dict):
        raise BadRequestError(f"body: a JSON object is expected, got {type(body).__name__}")
    return body


CatalogDep = Annotated[Catalog, Depends(get_catalog)]
RootDep = Annotated[str, Depends(stac_root)]


def asset_links(catalog: CatalogDep, root: RootDep) -> AssetLinks:
    """The request's ``AssetLinks``: local asset hrefs as URLs of ``/catalog/data``."""
    return AssetLinks(catalog, root)


AssetsDep = Annotated[AssetLinks, Depends(asset_links)]
CollectionId = Annotated[str, Path(description="A collection id.")]
ItemId = Annotated[str, Path(description="An item id.")]

# Query parameters are taken as strings and validated by app.catalog.query, so that bad
# input is a 400 naming the parameter (not FastAPI's 422).
BboxParam = Annotated[
    str | None,
    Query(
        description="`minx,miny,maxx,maxy` (or 6 numbers) in EPSG:4326.",
        openapi_examples={"bbox": {"value": "11.0,46.0,11.5,46.5"}},
    ),
]
DatetimeParam = Annotated[
    str | None,
    Query(
        description="An RFC 3339 instant or interval `start/end`, `..` for an open end.",
        openapi_examples={"interval": {"value": "2023-06-01T00:00:00Z/2023-08-31T23:59:59Z"}},
    ),
]
LimitParam = Annotated[
    str | None,
    Query(
        description="Page size (an integer >= 1); above the configured maximum the maximum is "
        "served (OGC API - Features)."
    ),
]
TokenParam = Annotated[
    str | None,
    Query(description="The opaque token of a `next` link."),
]
FieldsParam = Annotated[
    str | None,
    Query(
        description="Fields extension: comma-separated Item fields, `-` prefix to exclude "
        "(`id,properties.eo:cloud_cover`, `-geometry`); empty: the default set of a valid "
        "Item; absent: whole Items.",
        openapi_examples={"id and cloud cover": {"value": "id,properties.eo:cloud_cover"}},
    ),
]


# --- shaping ------------------------------------------------------------------------------


def _resolvable(link: dict[str, Any]) -> bool:
    """Whether a catalog link still means something once served from this API's URLs.

    A relative href (``../cogs/x/thumbnail.jpg``) was relative to the item's file; resolved
    against ``/catalog/collections/...`` it would point into this service, so it is dropped.
    """
    href = link.get("href")
    return isinstance(href, str) and bool(href) and (href.startswith("/") or _has_scheme(href))


def _has_scheme(href: str) -> bool:
    return bool(_SCHEME.match(href))


#: Titles of the links this API writes (clients such as STAC Browser show them); a
#: collection's own title replaces "Collection" on ``child`` links.
_LINK_TITLES: dict[str, str] = {
    "self": "This document",
    "root": "terratiler STAC API",
    "parent": "Parent",
    "collection": "Collection",
    "child": "Collection",
    "conformance": "Conformance classes",
    "data": "Collections",
    "items": "Items",
    "search": "Item search",
    "next": "Next page",
    "service-desc": "OpenAPI document",
    "service-doc": "API documentation (Swagger UI)",
    REL_QUERYABLES: "Queryables",
}


def _link(rel: str, href: str, media_type: str = MEDIA_JSON, **extra: Any) -> dict[str, Any]:
    title = _LINK_TITLES.get(rel, rel)
    if "method" in extra:
        title = f"{title} ({extra['method']})"
    return {"rel": rel, "type": media_type, "href": href, "title": title, **extra}


def _segment(value: str) -> str:
    return quote(value, safe="")


def _collection_url(root: str, collection_id: str) -> str:
    return f"{root}/collections/{_segment(collection_id)}"


def _with_query(url: str, params: dict[str, str] | str) -> str:
    query = params if isinstance(params, str) else urlencode(params)
    return f"{url}?{query}" if query else url


def item_to_json(item: pystac.Item, root: str, assets: AssetLinks | None = None) -> dict[str, Any]:
    """Shape an item as served here: API links point at this service, assets readable.

    Args:
        item: an item from the catalog.
        root: the STAC API root URL.
        assets: makes local asset hrefs URLs of ``/catalog/data`` (None: left as they are).

    Returns:
        The item's JSON (GeoJSON Feature).

    """
    data = item.to_dict(include_self_link=False, transform_hrefs=False)
    links = [
        link
        for link in data.get("links", [])
        if link.get("rel") not in _ITEM_API_RELS and _resolvable(link)
    ]
    api_links = [_link("root", root)]
    if item.collection_id:
        collection_url = _collection_url(root, item.collection_id)
        api_links = [
            _link("self", f"{collection_url}/items/{_segment(item.id)}", MEDIA_GEOJSON),
            _link("parent", collection_url),
            _link("collection", collection_url),
            *api_links,
        ]
    else:
        api_links.insert(0, _link("parent", root))
    data["links"] = api_links + links
    if assets is not None:
        assets.apply(data, item.collection_id)
    return publish_scale_offset(data)


def collection_to_json(
    collection: pystac.Collection, root: str, assets: AssetLinks | None = None
) -> dict[str, Any]:
    """Shape a collection as served here: API links point at this service.

    Args:
        collection: a collection from the catalog.
        root: the STAC API root URL.
        assets: makes local asset hrefs URLs of ``/catalog/data`` (None: left as they are).

    Returns:
        The collection's JSON.

    """
    data = collection.to_dict(include_self_link=False, transform_hrefs=False)
    links = [
        link
        for link in data.get("links", [])
        if link.get("rel") not in _COLLECTION_API_RELS and _resolvable(link)
    ]
    url = _collection_url(root, collection.id)
    data["links"] = [
        _link("self", url),
        _link("root", root),
        _link("parent", root),
        _link("items", f"{url}/items", MEDIA_GEOJSON),
        _link(REL_QUERYABLES, f"{url}/queryables", MEDIA_SCHEMA),
        *links,
    ]
    if assets is not None:
        assets.apply(data, collection.id)
    return data


def item_collection(
    page: SearchPage,
    root: str,
    links: list[dict[str, Any]],
    assets: AssetLinks | None = None,
    fields: FieldsRequest | None = None,
) -> dict[str, Any]:
    """Shape a page of items as a STAC ItemCollection (GeoJSON FeatureCollection).

    Args:
        page: the page the catalog returned.
        root: the STAC API root URL.
        links: the page's links (self, root, next ...).
        assets: makes local asset hrefs URLs of ``/catalog/data`` (None: left as they are).
        fields: the Fields extension's selection; None: whole Items.

    Returns:
        The ItemCollection JSON, with ``numberReturned`` and, when known, ``numberMatched``.

    """
    body: dict[str, Any] = {
        "type": "FeatureCollection",
        "features": [
            select_fields(item_to_json(item, root, assets), fields) for item in page.items
        ],
        "links": links,
        "numberReturned": len(page.items),
    }
    if page.number_matched is not None:
        body["numberMatched"] = page.number_matched
    return body


_VERSION = re.compile(r"^v?\d+(\.\d+)*(-[\w.]+)?$")


def _unversioned(uri: str) -> str:
    """A conformance URI without its version segments, to match across spec versions."""
    return "/".join(part for part in uri.split("/") if not _VERSION.match(part))


def conformance_classes(catalog: Catalog) -> list[str]:
    """List the conformance classes served for ``catalog``.

    A backend that forwards searches upstream (``StacApiCatalog``) exposes the upstream's
    classes as ``conformance``: only what both this router and the upstream implement is
    declared.
    """
    declared = getattr(catalog, "conformance", None)
    classes = list(CONFORMANCE)
    if isinstance(declared, list | tuple):
        upstream = {_unversioned(str(uri)) for uri in declared}
        classes = [uri for uri in CONFORMANCE if _unversioned(uri) in upstream]
    return classes + [FIELDS_CONFORMANCE[uri] for uri in classes if uri in FIELDS_CONFORMANCE]


def _queryables(url: str, title: str) -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2019-09/schema",
        "$id": url,
        "type": "object",
        "title": title,
        "properties": QUERYABLE_PROPERTIES,
        "additionalProperties": True,
    }


def _from_get(settings: Settings, params: dict[str, str | None]) -> SearchQuery:
    return search_from_get(
        {key: value for key, value in params.items() if value is not None},
        default_limit=settings.default_search_limit,
        max_limit=settings.max_search_limit,
        limits=InputLimits.from_settings(settings),
        strict=True,
    )


# --- endpoints ----------------------------------------------------------------------------


@router.get(
    "",
    name="stac_landing_page",
    summary="Landing page",
    response_class=JSONResponse,
    response_model=None,
)
@router.get("/", include_in_schema=False, response_class=JSONResponse, response_model=None)
def landing_page(request: Request, catalog: CatalogDep, root: RootDep) -> dict[str, Any]:
    """Describe the STAC API: a Catalog with its conformance classes and links."""
    links = [
        _link("self", root),
        _link("root", root),
        _link("conformance", f"{root}/conformance"),
        _link("data", f"{root}/collections"),
        _link("search", f"{root}/search", MEDIA_GEOJSON, method="GET"),
        _link("search", f"{root}/search", MEDIA_GEOJSON, method="POST"),
        _link(REL_QUERYABLES, f"{root}/queryables", MEDIA_SCHEMA),
    ]
    base = str(request.base_url).rstrip("/")
    if request.app.openapi_url:
        links.append(_link("service-desc", base + request.app.openapi_url, MEDIA_OPENAPI))
    if request.app.docs_url:
        links.append(_link("service-doc", base + request.app.docs_url, "text/html"))
    for collection in catalog.collections():
        child = _link("child", _collection_url(root, collection.id))
        if collection.title:
            child["title"] = collection.title
        links.append(child)
    return {
        "type": "Catalog",
        "stac_version": STAC_VERSION,
        "id": "terratiler",
        "title": "terratiler STAC API",
        "description": "Sentinel-2 scenes of the catalog this terratiler service serves.",
        "conformsTo": conformance_classes(catalog),
        "links": links,
    }


@router.get(
    "/conformance",
    name="stac_conformance",
    summary="Conformance classes",
    response_class=JSONResponse,
)
def conformance(catalog: CatalogDep) -> dict[str, list[str]]:
    """List the conformance classes this API implements."""
    return {"conformsTo": conformance_classes(catalog)}


@router.get(
    "/queryables",
    name="stac_queryables",
    summary="Queryables of all collections",
    response_class=SchemaJSONResponse,
    response_model=None,
    responses={200: {"content": {MEDIA_SCHEMA: {}}}},
)
def queryables(root: RootDep) -> dict[str, Any]:
    """Describe, as JSON Schema, the properties a CQL2 ``filter`` (or ``query``) can use."""
    return _queryables(f"{root}/queryables", "Queryables of the terratiler STAC API")


@router.get(
    "/collections",
    name="stac_collections",
    summary="Collections",
    response_class=JSONResponse,
    response_model=None,
)
def collections(catalog: CatalogDep, root: RootDep, assets: AssetsDep) -> dict[str, Any]:
    """All collections of the catalog."""
    served = [collection_to_json(c, root, assets) for c in catalog.collections()]
    return {
        "collections": served,
        "links": [
            _link("self", f"{root}/collections"),
            _link("root", root),
            _link("parent", root),
        ],
        "numberMatched": len(served),
        "numberReturned": len(served),
    }


@router.get(
    "/collections/{collection_id}",
    name="stac_collection",
    summary="One collection",
    response_class=JSONResponse,
    response_model=None,
)
def collection(
    collection_id: CollectionId, catalog: CatalogDep, root: RootDep, assets: AssetsDep
) -> dict[str, Any]:
    """One collection; 404 when unknown."""
    return collection_to_json(catalog.get_collection(collection_id), root, assets)


@router.get(
    "/collections/{collection_id}/queryables",
    name="stac_collection_queryables",
    summary="Queryables of one collection",
    response_class=SchemaJSONResponse,
    response_model=None,
    responses={200: {"content": {MEDIA_SCHEMA: {}}}},
)
def collection_queryables(
    collection_id: CollectionId, catalog: CatalogDep, root: RootDep
) -> dict[str, Any]:
    """Describe the properties a ``filter`` can use on one collection; 404 when unknown."""
    catalog.get_collection(collection_id)
    url = f"{_collection_url(root, collection_id)}/queryables"
    return _queryables(url, f"Queryables of {collection_id}")


@router.get(
    "/collections/{collection_id}/items",
    name="stac_items",
    summary="Items of one collection",
    response_class=GeoJSONResponse,
    response_model=None,
    responses=_GEOJSON_RESPONSE,
)
def items(
    request: Request,
    collection_id: CollectionId,
    catalog: CatalogDep,
    settings: SettingsDep,
    root: RootDep,
    assets: AssetsDep,
    bbox: BboxParam = None,
    datetime: DatetimeParam = None,
    limit: LimitParam = None,
    token: TokenParam = None,
    fields: FieldsParam = None,
) -> dict[str, Any]:
    """Page through a collection's items (OGC API - Features); 404 for an unknown collection."""
    catalog.get_collection(collection_id)
    params = {"bbox": bbox, "datetime": datetime, "limit": limit, "token": token}
    query = replace(_from_get(settings, params), collections=[collection_id])
    selection = fields_from_get(fields, InputLimits.from_settings(settings))
    page = catalog.search_page(query)

    collection_url = _collection_url(root, collection_id)
    url = f"{collection_url}/items"
    links = [
        _link("self", _with_query(url, request.url.query), MEDIA_GEOJSON),
        _link("root", root),
        _link("parent", collection_url),
        _link("collection", collection_url),
    ]
    if page.next_token:
        next_params = search_to_get_params(replace(query, token=page.next_token))
        next_params.pop("collections", None)
        if fields is not None:
            next_params["fields"] = fields
        links.append(_link("next", _with_query(url, next_params), MEDIA_GEOJSON, method="GET"))
    return item_collection(page, root, links, assets, selection)


@router.get(
    "/collections/{collection_id}/items/{item_id}",
    name="stac_item",
    summary="One item",
    response_class=GeoJSONResponse,
    response_model=None,
    responses=_GEOJSON_RESPONSE,
)
def item(
    collection_id: CollectionId,
    item_id: ItemId,
    catalog: CatalogDep,
    root: RootDep,
    assets: AssetsDep,
) -> dict[str, Any]:
    """One item; 404 when the collection or the item is unknown."""
    return item_to_json(catalog.get_item(collection_id, item_id), root, assets)


@router.get(
    "/search",
    name="stac_search_get",
    summary="Item search (GET)",
    response_class=GeoJSONResponse,
    response_model=None,
    responses=_GEOJSON_RESPONSE,
)
def search_get(
    request: Request,
    catalog: CatalogDep,
    settings: SettingsDep,
    root: RootDep,
    assets: AssetsDep,
    collections: Annotated[str | None, Query(description="Comma-separated collection ids.")] = None,
    ids: Annotated[str | None, Query(description="Comma-separated item ids.")] = None,
    bbox: BboxParam = None,
    intersects: Annotated[
        str | None, Query(description="A GeoJSON geometry (EPSG:4326), JSON-encoded.")
    ] = None,
    datetime: DatetimeParam = None,
    query: Annotated[
        str | None,
        Query(
            description='Query extension, JSON-encoded: `{"eo:cloud_cover": {"lt": 20}}`.',
        ),
    ] = None,
    cql_filter: Annotated[
        str | None,
        Query(
            alias="filter",
            description="A CQL2 filter: cql2-text (default), or cql2-json with filter-lang.",
            openapi_examples={"cql2-text": {"value": '"eo:cloud_cover" < 20'}},
        ),
    ] = None,
    filter_lang: Annotated[
        str | None,
        Query(alias="filter-lang", description="`cql2-text` (default) or `cql2-json`."),
    ] = None,
    filter_crs: Annotated[
        str | None,
        Query(
            alias="filter-crs",
            description="CRS of the filter's geometries: only OGC CRS84 (lon/lat, the default).",
        ),
    ] = None,
    sortby: Annotated[
        str | None,
        Query(
            description="Comma-separated fields, `-` prefix for descending.",
            openapi_examples={"cloud cover first": {"value": "properties.eo:cloud_cover"}},
        ),
    ] = None,
    limit: LimitParam = None,
    token: TokenParam = None,
    fields: FieldsParam = None,
) -> dict[str, Any]:
    """Search items across collections; the ``next`` link is a GET with a ``token``."""
    search = _from_get(
        settings,
        {
            "collections": collections,
            "ids": ids,
            "bbox": bbox,
            "intersects": intersects,
            "datetime": datetime,
            "query": query,
            "filter": cql_filter,
            "filter-lang": filter_lang,
            "filter-crs": filter_crs,
            "sortby": sortby,
            "limit": limit,
            "token": token,
        },
    )
    selection = fields_from_get(fields, InputLimits.from_settings(settings))
    page = catalog.search_page(search)
    url = f"{root}/search"
    links = [
        _link("self", _with_query(url, request.url.query), MEDIA_GEOJSON),
        _link("root", root),
    ]
    if page.next_token:
        params = search_to_get_params(replace(search, token=page.next_token))
        if fields is not None:
            params["fields"] = fields
        links.append(_link("next", _with_query(url, params), MEDIA_GEOJSON, method="GET"))
    return item_collection(page, root, links, assets, selection)


@router.post(
    "/search",
    name="stac_search_post",
    summary="Item search (POST)",
    response_class=GeoJSONResponse,
    response_model=None,
    responses=_GEOJSON_RESPONSE,
    openapi_extra={
        "requestBody": {
            "required": False,
            "content": {MEDIA_JSON: {"schema": _SEARCH_BODY_SCHEMA}},
        }
    },
)
def search_post(
    body: Annotated[dict[str, Any], Depends(search_body)],
    catalog: CatalogDep,
    settings: SettingsDep,
    root: RootDep,
    assets: AssetsDep,
) -> dict[str, Any]:
    """Search items across collections; the ``next`` link is a POST of the body + ``token``."""
    limits = InputLimits.from_settings(settings)
    search = search_from_body(
        body,
        default_limit=settings.default_search_limit,
        max_limit=settings.max_search_limit,
        limits=limits,
        strict=True,
    )
    selection = fields_from_body(body, limits)
    page = catalog.search_page(search)
    links = [_link("root", root)]
    if page.next_token:
        next_body = search_to_body(replace(search, token=page.next_token))
        if "fields" in body:
            next_body["fields"] = body["fields"]
        links.append(
            _link(
                "next",
                f"{root}/search",
                MEDIA_GEOJSON,
                method="POST",
                body=next_body,
                merge=False,
            )
        )
    return item_collection(page, root, links, assets, selection)


# GET|HEAD /data/{collection_id}/{path}: the files local asset hrefs point at.
router.include_router(data_router)
