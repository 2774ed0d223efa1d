"""``/searches``: register a STAC search, then serve the mosaic of its items.

- ``POST /searches/register`` a STAC search (+ ``metadata``) -> ``{id, links}``;
  ``GET /searches`` (list), ``GET /searches/{id}``, ``GET /searches/{id}/info``;
- ``GET /searches/{id}/tiles/{tms}/{z}/{x}/{y}[@{scale}x][.{format}]``,
  ``/{tms}/tilejson.json``, ``/{tms}/map.html``, ``/bbox/...``, ``/point/{lon},{lat}``,
  ``POST /searches/{id}/statistics``.

Every endpoint takes the single-item layer parameters (``assets`` / ``expression`` /
``preset``, ``mask=scl-clear``, ``harmonize``), plus ``pixel_selection`` and ``order``;
the search's ``metadata.defaults`` give those a request does not (``app.layers``).
A tile of the search's area that no item covers is a 404; a tile whose items are all
masked is a transparent image. Partial results carry ``X-Mosaic-Partial``
(``items-limit``, ``time-limit``, ``read-errors``); every mosaic response carries
``X-Mosaic-Items: <read>/<intersecting>``. The engine is ``app.mosaic``; this module parses
and shapes.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import morecantile
from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from geojson_pydantic import Feature, FeatureCollection
from pydantic import Field
from rio_tiler.constants import WGS84_CRS
from titiler.core.dependencies import (
    CoordCRSParams,
    CoverScaleParams,
    DstCRSParams,
    PartFeatureParams,
)
from titiler.core.factory import DEFAULT_TEMPLATES
from titiler.core.resources.enums import ImageType

from app import rendering
from app.dependencies import (
    GeometryBody,
    get_mosaics,
    get_settings,
    histogram_params,
    require_api_key,
    statistics_params,
)
from app.layers import SEARCH_LAYER, LayerQuery
from app.mosaic import MosaicRead, MosaicService, SearchRecord, query_pairs
from app.mosaic.reader import PARTIAL_READ_ERRORS, PARTIAL_TIME
from app.mosaic.search import canonical_json
from app.ordering import ItemOrder

router = APIRouter()

PixelSelection = Literal["first", "highest", "lowest", "mean", "median", "stdev", "count"]
TMS_IDS = tuple(morecantile.tms.list())
DEFAULT_TMS = "WebMercatorQuad"
#: Items listed by /info at most (mostRecent first).
INFO_ITEMS = 100


img_responses: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            "image/png": {},
            "image/jpeg": {},
            "image/webp": {},
            "image/tiff; application=geotiff": {},
            "application/x-binary": {},
        },
        "description": "An image. Inside the search's area but every item masked there "
        "(e.g. clouds with `mask=scl-clear`): a fully transparent image. Headers: "
        "`X-Mosaic-Items: <read>/<intersecting>`; `X-Mosaic-Partial: items-limit|"
        "time-limit|read-errors` when not every intersecting item went in.",
    },
    400: {"description": "Bad parameters; a tile below the minimum zoom (`mosaic_min_zoom`)."},
    404: {
        "description": "Unknown search; or the request lies outside the search (no item of "
        "the search intersects it, or it is outside the search's bbox/intersects)."
    },
    504: {"description": "No item could be read within `mosaic_time_limit`."},
}


# ---------------------------------------------------------------------- dependencies


def mosaic_params(
    pixel_selection: Annotated[
        PixelSelection,
        Query(
            description="How items are combined per pixel. `first`: the first item (in "
            "`order`) with a valid pixel; with `mask=scl-clear` a cloudy pixel comes from "
            "the next item where it is clear. `highest`/`lowest`/`mean`/`median`/`stdev`/"
            "`count` over the items' valid pixels.",
        ),
    ] = "first",
    order: Annotated[
        ItemOrder | None,
        Query(
            description="Item order: `mostRecent` (default), `leastRecent`, `leastCC` "
            "(lowest eo:cloud_cover first) or `search` (the search's own sortby; the "
            "default when it has one).",
        ),
    ] = None,
) -> dict[str, Any]:
    """``pixel_selection`` and ``order``."""
    return {"pixel_selection": pixel_selection, "order": order}


def map_tilesize(
    tilesize: Annotated[int, Query(gt=0, description="Tile size in pixels.")] = 256,
) -> int:
    """The tile size a map asks for."""
    return tilesize


# The layer of a search: the request's parameters, the search's defaults, a preset.
SearchLayerQuery = Annotated[LayerQuery, Depends(SEARCH_LAYER.query)]
search_mosaic_params = SEARCH_LAYER.resolved(mosaic_params)


SearchId = Annotated[str, Path(description="Search id, from `POST /searches/register`.")]
TmsId = Annotated[
    Literal[TMS_IDS],  # type: ignore[valid-type]
    Path(description="TileMatrixSet identifier (`WebMercatorQuad` for web maps)."),
]


def _read_options(*params: Any) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for param in params:
        options.update(param.as_dict())
    return options


def _headers(result: MosaicRead) -> dict[str, str]:
    headers = {"X-Mosaic-Items": f"{len(result.used)}/{result.candidates}"}
    if result.partial:
        headers["X-Mosaic-Partial"] = ",".join(result.partial)
        if {PARTIAL_TIME, PARTIAL_READ_ERRORS} & set(result.partial):
            # A slow or failed read is no reason to cache an incomplete picture.
            headers["Cache-Control"] = "no-store"
    return headers


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
    record, index = mosaics.index(search_id)
    tms = morecantile.tms.get(DEFAULT_TMS)
    info = mosaics.tile_info(search_id, tms)
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
    document["bounds"] = info["bounds"]
    document["minzoom"], document["maxzoom"] = info["minzoom"], info["maxzoom"]
    return JSONResponse(document, headers={"Cache-Control": "no-cache"})


# ---------------------------------------------------------------------- tiles


@router.get(
    "/{search_id}/tiles/{tileMatrixSetId}/{z}/{x}/{y}",
    name="search_tile",
    response_class=Response,
    responses=img_responses,
    summary="A mosaic tile",
)
@router.get(
    "/{search_id}/tiles/{tileMatrixSetId}/{z}/{x}/{y}.{format}",
    name="search_tile_with_format",
    response_class=Response,
    responses=img_responses,
    summary="A mosaic tile",
)
def tile(
    search_id: SearchId,
    tileMatrixSetId: TmsId,
    z: Annotated[int, Path(description="Zoom level")],
    x: Annotated[int, Path(description="Tile column")],
    y: Annotated[int, Path(description="Tile row")],
    mosaics: Annotated[MosaicService, Depends(get_mosaics)],
    format: Annotated[
        ImageType | None,
        Field(description="Output format; default PNG when masked, else JPEG."),
    ] = None,
    tilesize=Depends(SEARCH_LAYER.tilesize),
    layer=Depends(SEARCH_LAYER.layer),
    dataset=Depends(SEARCH_LAYER.dataset),
    tile_params=Depends(SEARCH_LAYER.tile),
    mosaic=Depends(search_mosaic_params),
    post_process=Depends(SEARCH_LAYER.post_process),
    colormap=Depends(SEARCH_LAYER.colormap),
    render=Depends(SEARCH_LAYER.render),
) -> Response:
    """One tile of the mosaic (404 outside the search's items, 400 below the min zoom)."""
    tms = morecantile.tms.get(tileMatrixSetId)
    result = mosaics.tile(
        search_id,
        tms,
        x,
        y,
        z,
        tilesize=tilesize,
        options=_read_options(layer, dataset, tile_params),
        **mosaic,
    )
    image = result.image
    assert image is not None
    if post_process:
        image = post_process(image)
    content, media_type = rendering.render(
        image, output_format=format, colormap=colormap, **render.as_dict()
    )
    return Response(content, media_type=media_type, headers=_headers(result))


@router.get(
    "/{search_id}/{tileMatrixSetId}/tilejson.json",
    name="search_tilejson",
    summary="TileJSON of the mosaic",
)
def tilejson(
    request: Request,
    search_id: SearchId,
    tileMatrixSetId: TmsId,
    mosaics: Annotated[MosaicService, Depends(get_mosaics)],
    layer_query: SearchLayerQuery,
    tile_format: Annotated[ImageType | None, Query(description="Tile format.")] = None,
    tilesize=Depends(SEARCH_LAYER.tilesize),
    minzoom: Annotated[int | None, Query(description="Override the minzoom.")] = None,
    maxzoom: Annotated[int | None, Query(description="Override the maxzoom.")] = None,
    layer=Depends(SEARCH_LAYER.layer),
    dataset=Depends(SEARCH_LAYER.dataset),
    tile_params=Depends(SEARCH_LAYER.tile),
    mosaic=Depends(search_mosaic_params),
    post_process=Depends(SEARCH_LAYER.post_process),
    colormap=Depends(SEARCH_LAYER.colormap),
    render=Depends(SEARCH_LAYER.render),
) -> JSONResponse:
    """TileJSON 3.0: bounds and zooms from the search's items (not the world)."""
    tms = morecantile.tms.get(tileMatrixSetId)
    info = mosaics.tile_info(search_id, tms)
    path = f"/searches/{search_id}/tiles/{tileMatrixSetId}/{{z}}/{{x}}/{{y}}"
    if tile_format:
        path += f".{tile_format.value}"
    drop = {"tile_format", "minzoom", "maxzoom"}
    # The tiles carry the layer as resolved (the search's defaults, the preset expanded).
    qs = [(k, v) for k, v in layer_query.params.multi_items() if k not in drop]
    url = str(request.base_url).rstrip("/") + path + (f"?{urlencode(qs)}" if qs else "")
    minzoom = info["minzoom"] if minzoom is None else max(minzoom, info["minzoom"])
    maxzoom = info["maxzoom"] if maxzoom is None else maxzoom
    minx, miny, maxx, maxy = info["bounds"]
    body = {
        "tilejson": "3.0.0",
        "name": info["name"] or search_id,
        "description": info["description"],
        "version": "1.0.0",
        "scheme": "xyz",
        "tiles": [url],
        "minzoom": minzoom,
        "maxzoom": maxzoom,
        "bounds": info["bounds"],
        "center": [(minx + maxx) / 2, (miny + maxy) / 2, minzoom],
    }
    return JSONResponse({k: v for k, v in body.items() if v is not None})


@router.get(
    "/{search_id}/{tileMatrixSetId}/map.html",
    response_class=HTMLResponse,
    summary="Map viewer of the mosaic",
)
def map_viewer(
    request: Request,
    search_id: SearchId,
    tileMatrixSetId: TmsId,
    mosaics: Annotated[MosaicService, Depends(get_mosaics)],
    layer_query: SearchLayerQuery,
    tilesize: Annotated[int, Depends(SEARCH_LAYER.resolved(map_tilesize))],
) -> HTMLResponse:
    """A Leaflet map of the mosaic (right-click: the point's value and time series)."""
    mosaics.get(search_id)  # 404 for an unknown search
    base = str(request.base_url).rstrip("/") + f"/searches/{search_id}"
    # The links carry the layer as resolved (the search's defaults, the preset expanded).
    query = layer_query.params
    qs = list(query.multi_items())
    if "tilesize" not in query:
        qs.append(("tilesize", str(tilesize)))
    tilejson_url = f"{base}/{tileMatrixSetId}/tilejson.json?{urlencode(qs)}"
    skip = {"tilesize", "tile_format", "minzoom", "maxzoom", "colormap", "colormap_name"}
    point_qs = [(k, v) for k, v in query.multi_items() if k not in skip]
    point_url = f"{base}/point/{{lon}},{{lat}}" + (f"?{urlencode(point_qs)}" if point_qs else "")
    tms = morecantile.tms.get(tileMatrixSetId)
    return DEFAULT_TEMPLATES.TemplateResponse(
        request,
        name="map.html",
        context={
            "tilejson_endpoint": tilejson_url,
            "point_endpoint": point_url,
            "tms": tms,
            "resolutions": [matrix.cellSize for matrix in tms],
        },
        media_type="text/html",
    )


# ---------------------------------------------------------------------- crops, points


@router.get(
    "/{search_id}/bbox/{minx},{miny},{maxx},{maxy}.{format}",
    response_class=Response,
    responses=img_responses,
    summary="A bbox crop of the mosaic",
)
@router.get(
    "/{search_id}/bbox/{minx},{miny},{maxx},{maxy}/{width}x{height}.{format}",
    response_class=Response,
    responses=img_responses,
    summary="A bbox crop of the mosaic, of a given size",
)
def bbox_image(
    search_id: SearchId,
    minx: Annotated[float, Path(description="Bounding box min X")],
    miny: Annotated[float, Path(description="Bounding box min Y")],
    maxx: Annotated[float, Path(description="Bounding box max X")],
    maxy: Annotated[float, Path(description="Bounding box max Y")],
    format: Annotated[ImageType, Path(description="Output format.")],
    mosaics: Annotated[MosaicService, Depends(get_mosaics)],
    width: Annotated[int | None, Field(gt=0, description="Output width.")] = None,
    height: Annotated[int | None, Field(gt=0, description="Output height.")] = None,
    max_size: Annotated[
        int | None, Query(gt=0, description="Longest side of the output, at most.")
    ] = None,
    coord_crs=Depends(CoordCRSParams),
    dst_crs=Depends(DstCRSParams),
    layer=Depends(SEARCH_LAYER.layer),
    dataset=Depends(SEARCH_LAYER.dataset),
    mosaic=Depends(search_mosaic_params),
    post_process=Depends(SEARCH_LAYER.post_process),
    colormap=Depends(SEARCH_LAYER.colormap),
    render=Depends(SEARCH_LAYER.render),
) -> Response:
    """A crop; without a size, at the finest native resolution of what is read."""
    result = mosaics.part(
        search_id,
        (minx, miny, maxx, maxy),
        bounds_crs=coord_crs or WGS84_CRS,
        dst_crs=dst_crs,
        width=width,
        height=height,
        max_size=max_size,
        options=_read_options(layer, dataset),
        **mosaic,
    )
    image = result.image
    assert image is not None
    if post_process:
        image = post_process(image)
    content, media_type = rendering.render(
        image, output_format=format, colormap=colormap, **render.as_dict()
    )
    headers = _headers(result)
    headers["Content-Bbox"] = ",".join(map(str, image.bounds))
    return Response(content, media_type=media_type, headers=headers)


@router.get("/{search_id}/point/{lon},{lat}", summary="Point time series of the mosaic")
def point(
    search_id: SearchId,
    lon: Annotated[float, Path(description="Longitude (or X in coord_crs)")],
    lat: Annotated[float, Path(description="Latitude (or Y in coord_crs)")],
    mosaics: Annotated[MosaicService, Depends(get_mosaics)],
    coord_crs=Depends(CoordCRSParams),
    layer=Depends(SEARCH_LAYER.layer),
    dataset=Depends(SEARCH_LAYER.dataset),
    mosaic=Depends(search_mosaic_params),
) -> JSONResponse:
    """The value of every item at the point (oldest first), and the mosaic's value there.

    ``values``/``band_names`` are the pixel selection over the items (as a single-item
    point answers); ``series`` is the time series: one entry per item with its id,
    collection, datetime and values (``null`` where masked, e.g. cloudy with
    ``mask=scl-clear``).
    """
    series = mosaics.point(
        search_id,
        lon,
        lat,
        coord_crs=coord_crs or WGS84_CRS,
        options=_read_options(layer, dataset),
        **mosaic,
    )
    headers = {"X-Mosaic-Items": f"{len(series.series)}/{series.candidates}"}
    if series.partial:
        headers["X-Mosaic-Partial"] = ",".join(series.partial)
    return JSONResponse(
        {
            "coordinates": series.coordinates,
            "band_names": series.band_names,
            "values": series.values,
            "series": series.series,
        },
        headers=headers,
    )


@router.post(
    "/{search_id}/statistics",
    summary="Statistics of the mosaic over GeoJSON",
    dependencies=[Depends(GeometryBody())],
)
def statistics(
    search_id: SearchId,
    geojson: Annotated[
        FeatureCollection | Feature, Body(description="GeoJSON Feature or FeatureCollection.")
    ],
    mosaics: Annotated[MosaicService, Depends(get_mosaics)],
    coord_crs=Depends(CoordCRSParams),
    dst_crs=Depends(DstCRSParams),
    layer=Depends(SEARCH_LAYER.layer),
    dataset=Depends(SEARCH_LAYER.dataset),
    image_params=Depends(PartFeatureParams),
    mosaic=Depends(search_mosaic_params),
    post_process=Depends(SEARCH_LAYER.post_process),
    cover_scale=Depends(CoverScaleParams),
    stats_params=Depends(statistics_params),
    histogram_params=Depends(histogram_params),
) -> JSONResponse:
    """Per-feature statistics of the mosaic, coverage-weighted, on the scenes' native grid.

    The output grid is the first item's CRS at the finest native resolution of what is
    read, unless ``dst_crs`` / ``width`` / ``height`` / ``max_size`` say otherwise. Each
    feature gets ``properties.statistics`` (as TiTiler's ``/statistics``) and
    ``properties.mosaic`` (items used, partial reasons).
    """
    features = geojson.features if isinstance(geojson, FeatureCollection) else [geojson]
    shape_crs = coord_crs or WGS84_CRS
    partial: set[str] = set()
    out = []
    for feature in features:
        shape = feature.model_dump(exclude_none=True)
        size = image_params.as_dict()
        result = mosaics.feature(
            search_id,
            shape,
            shape_crs=shape_crs,
            dst_crs=dst_crs,
            width=size.get("width"),
            height=size.get("height"),
            max_size=size.get("max_size"),
            options=_read_options(layer, dataset),
            **mosaic,
        )
        image = result.image
        assert image is not None
        coverage = image.get_coverage_array(shape, shape_crs=shape_crs, cover_scale=cover_scale)
        if post_process:
            image = post_process(image)
        stats = image.statistics(
            **stats_params.as_dict(),
            hist_options=histogram_params.as_dict(),
            coverage=coverage,
        )
        partial.update(result.partial)
        document = dict(shape)
        document["properties"] = {
            **(shape.get("properties") or {}),
            "statistics": {band: value.model_dump() for band, value in stats.items()},
            "mosaic": {
                "items": [getattr(u, "id", u) for u in result.used],
                "intersecting": result.candidates,
                "partial": result.partial,
            },
        }
        out.append(document)
    headers = {"X-Mosaic-Partial": ",".join(sorted(partial))} if partial else {}
    body = (
        out[0] if isinstance(geojson, Feature) else {"type": "FeatureCollection", "features": out}
    )
    return JSONResponse(body, media_type="application/geo+json", headers=headers)
