"""``/searches``: register a STAC search, then serve the mosaic of its items.

- ``POST /searches/register`` a STAC search (+ ``metadata``) -> ``{id, links}``;
  ``GET /searches`` (list), ``GET /searches/{id}``, ``GET /searches/{id}/info``: here;
- ``GET /searches/{id}/tiles/{tms}/{z}/{x}/{y}[@{scale}x][.{format}]``,
  ``/{tms}/tilejson.json``, ``/{tms}/map.html``, ``/{tms}/WMTSCapabilities.xml``, ``/bbox/...``, ``/point/{lon},{lat}``,
  ``POST /searches/{id}/statistics``: ``SearchTilerFactory`` (``app.routers.search_tiler``),
  mounted here at ``/{search_id}``.

Every read endpoint takes the single-item layer parameters (``assets`` / ``expression`` /
``preset``, ``mask=scl-clear``, ``harmonize``), plus ``pixel_selection`` and ``order``;
the search's ``metadata.defaults`` give those a request does not (``app.layers``).
A tile of the search's area that no item covers is a 404; a tile whose items are all
masked is a transparent image. Partial results carry ``X-Mosaic-Partial``
(``items-limit``, ``time-limit``, ``read-errors``); every mosaic response carries
``X-Mosaic-Items: <read>/<intersecting>``. The engine is ``app.mosaic``; the routers parse
and shape.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import QueryParams

from app.dependencies import get_mosaics, get_settings, require_api_key
from app.errors import NotFoundError
from app.layers import SEARCH_LAYER, LayerQuery
from app.mosaic import MosaicService, SearchRecord, query_pairs
from app.mosaic.search import canonical_json
from app.routers.search_tiler import (
    MosaicParams,
    SearchId,
    SearchTilerFactory,
    map_tilesize,
    search_extent,
)
from app.routers.tiler import DOCUMENT_ROUTES, SHARED_OPTIONS
from app.routers.wmts import WMTSExtension

router = APIRouter()

DEFAULT_TMS = "WebMercatorQuad"
#: Items listed by /info at most (mostRecent first).
INFO_ITEMS = 100


# ---------------------------------------------------------------------- registry


def _query_string(defaults: dict[str, Any]) -> str:
    pairs = query_pairs(defaults)
    return f"?{urlencode(pairs)}" if pairs else ""


def _links(request: Request, record: SearchRecord) -> list[dict[str, Any]]:
    base = str(request.base_url).rstrip("/") + f"/searches/{record.id}"
    qs = _query_string(record.metadata.get("defaults") or {})
    return [
        {"rel": "self", "href": base, "type": "application/json", "title": "The search"},
        {
            "rel": "tilejson",
            "href": f"{base}/{DEFAULT_TMS}/tilejson.json{qs}",
            "type": "application/json",
            "title": "TileJSON of the mosaic",
        },
        {
            "rel": "tiles",
            "href": f"{base}/tiles/{DEFAULT_TMS}/{{z}}/{{x}}/{{y}}{qs}",
            "type": "image/png",
            "title": "Tile URL template",
            "templated": True,
        },
        {
            "rel": "map",
            "href": f"{base}/{DEFAULT_TMS}/map.html{qs}",
            "type": "text/html",
            "title": "Map viewer",
        },
        {
            "rel": "wmts",
            "href": f"{base}/{DEFAULT_TMS}/WMTSCapabilities.xml{qs}",
            "type": "application/xml",
            "title": "OGC WMTS capabilities (QGIS, GDAL)",
        },
        {
            "rel": "info",
            "href": f"{base}/info",
            "type": "application/json",
            "title": "The search's items and extent",
        },
    ]


def _search_document(request: Request, record: SearchRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "search": record.search,
        "metadata": record.metadata,
        "created": record.created_at.isoformat() if record.created_at else None,
        "updated": record.updated_at.isoformat() if record.updated_at else None,
        "links": _links(request, record),
    }


@router.post(
    "/register",
    summary="Register a STAC search as a mosaic",
    # A persistent write: like the batch endpoints, it needs a key when api_keys is set.
    dependencies=[Depends(require_api_key)],
    responses={
        200: {"description": "The search id and its links."},
        401: {"description": "`api_keys` is set and no API key was sent."},
        403: {"description": "The API key is not one of `api_keys`."},
        400: {"description": "A bad search or metadata; the message names the parameter."},
        413: {"description": "The search matches more than `mosaic_max_search_items` items."},
    },
)
def register(
    request: Request,
    body: Annotated[
        dict[str, Any],
        Body(
            description="A STAC item search (`collections`, `ids`, `bbox` or `intersects`, "
            "`datetime`, `query`, `filter` + `filter-lang`, `sortby`) and an optional "
            "`metadata` object: `name`, `description`, `minzoom`, `maxzoom`, `bounds`, "
            "`defaults` (query parameters the returned links carry, e.g. "
            '`{"preset": "ndvi", "mask": "scl-clear"}`). The id is a hash of the '
            "normalized search: registering the same search again returns the same id "
            "(and replaces its metadata).",
            examples=[
                {
                    "collections": ["sentinel-2-l2a"],
                    "bbox": [14.0, 49.9, 14.2, 50.1],
                    "datetime": "2023-06-01T00:00:00Z/2023-06-30T23:59:59Z",
                    "query": {"eo:cloud_cover": {"lt": 60}},
                    "metadata": {"name": "June", "defaults": {"preset": "ndvi"}},
                }
            ],
        ),
    ],
    mosaics: Annotated[MosaicService, Depends(get_mosaics)],
) -> JSONResponse:
    """Register a search; the same search always gets the same id."""
    search = {k: v for k, v in body.items() if k != "metadata"}
    record, matched = mosaics.register(search, body.get("metadata"))
    document = _search_document(request, record)
    document["numberMatched"] = matched
    return JSONResponse(document, headers={"Cache-Control": "no-store"})


def _within_bytes(records: list[SearchRecord], budget: int) -> list[SearchRecord]:
    """The first records whose searches fit in ``budget`` bytes together (at least one).

    Each search is at most ``max_search_bytes``; without this a page of 1000 of them would
    be a gigabyte. A shorter page's ``next`` link continues where it stopped.
    """
    kept, size = [], 0
    for record in records:
        size += len(canonical_json(record.search))
        if kept and size > budget:
            break
        kept.append(record)
    return kept


@router.get("", summary="List registered searches")
def list_searches(
    request: Request,
    mosaics: Annotated[MosaicService, Depends(get_mosaics)],
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size.")] = 10,
    offset: Annotated[int, Query(ge=0, description="Searches to skip.")] = 0,
) -> JSONResponse:
    """Registered searches, most recently registered first.

    A page holds at most `max_search_bytes` of searches (and at least one): it may be
    shorter than `limit`; its `next` link continues where it stopped.
    """
    records, total = mosaics.list(limit=limit, offset=offset)
    records = _within_bytes(records, get_settings(request).max_search_bytes)
    base = str(request.base_url).rstrip("/") + "/searches"
    links = [{"rel": "self", "href": f"{base}?{urlencode({'limit': limit, 'offset': offset})}"}]
    if offset + len(records) < total:
        query = urlencode({"limit": limit, "offset": offset + len(records)})
        links.append({"rel": "next", "href": f"{base}?{query}", "type": "application/json"})
    if offset > 0:
        query = urlencode({"limit": limit, "offset": max(0, offset - limit)})
        links.append({"rel": "prev", "href": f"{base}?{query}", "type": "application/json"})
    return JSONResponse(
        {
            "searches": [_search_document(request, r) for r in records],
            "numberMatched": total,
            "numberReturned": len(records),
            "links": links,
        },
        headers={"Cache-Control": "no-cache"},
    )


@router.get("/{search_id}", summary="A registered search")
def get_search(
    request: Request,
    search_id: SearchId,
    mosaics: Annotated[MosaicService, Depends(get_mosaics)],
) -> JSONResponse:
    """The search, its metadata and links."""
    record = mosaics.get(search_id)
    return JSONResponse(_search_document(request, record), headers={"Cache-Control": "no-cache"})


@router.get("/{search_id}/info", summary="The items and extent of a search's mosaic")
def search_info(
    request: Request,
    search_id: SearchId,
    mosaics: Annotated[MosaicService, Depends(get_mosaics)],
) -> JSONResponse:
    """The search, its footprint index (item count, extent) and per-TMS zooms."""
    src = mosaics.backend(search_id)
    record, index = src.record, src.index
    document = _search_document(request, record)
    document["numberOfItems"] = len(index)
    document["items"] = [
        {
            "id": entry.id,
            "collection": entry.collection,
            "datetime": entry.item.properties.get("datetime"),
            "eo:cloud_cover": entry.cloud_cover,
        }
        for entry in index.ordered("mostRecent")[:INFO_ITEMS]
    ]
    document["bounds"] = src.bounds
    document["minzoom"], document["maxzoom"] = src.minzoom, src.maxzoom
    return JSONResponse(document, headers={"Cache-Control": "no-cache"})


async def search_link_query(
    layer: Annotated[LayerQuery, Depends(SEARCH_LAYER.query)],
) -> QueryParams:
    """What a TileJSON's or map's links carry: the layer as resolved (defaults, preset)."""
    return layer.params


def search_layer_check(
    search_id: SearchId,
    mosaics: Annotated[MosaicService, Depends(get_mosaics)],
    layer: Annotated[Any, Depends(SEARCH_LAYER.layer)],
) -> None:
    """Route dependency of the documents: 400 for a layer the search's items cannot read.

    A TileJSON, map or WMTS document lists tiles: it answers what each would (an unknown
    asset or expression name, a mask the items cannot apply) instead of listing them
    (``SearchBackend.check_layer``: the first item of each collection, nothing read). An
    unknown search is left to the route's own 404.
    """
    try:
        backend = mosaics.backend(search_id)
        backend.record  # noqa: B018 (looks the search up)
    except NotFoundError:
        return
    backend.check_layer(**layer.as_dict())


# The layer of a search: the request's parameters, then the search's defaults, then a
# preset (``app.layers``). Registered after the registry's routes.
tiles = SearchTilerFactory(
    **SHARED_OPTIONS
    | {
        "mosaics_dependency": get_mosaics,
        "layer_dependency": SEARCH_LAYER.layer,
        "dataset_dependency": SEARCH_LAYER.dataset,
        "tile_dependency": SEARCH_LAYER.tile,
        "tilesize_dependency": SEARCH_LAYER.tilesize,
        "map_tilesize_dependency": SEARCH_LAYER.resolved(map_tilesize),
        "mosaic_dependency": SEARCH_LAYER.resolved(MosaicParams),
        "process_dependency": SEARCH_LAYER.post_process,
        "colormap_dependency": SEARCH_LAYER.colormap,
        "render_dependency": SEARCH_LAYER.render,
        "link_query_dependency": search_link_query,
        "route_dependencies": [
            *SHARED_OPTIONS["route_dependencies"],
            (DOCUMENT_ROUTES, [Depends(search_layer_check)]),
        ],
        "extensions": [
            WMTSExtension(
                extent=search_extent,
                tile_route="search_tile_with_format",
                link_query_dependency=search_link_query,
            )
        ],
        "router_prefix": "/searches/{search_id}",
    },
)
router.include_router(tiles.router, prefix="/{search_id}")
