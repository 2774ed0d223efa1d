"""Tiles, crops, points, statistics: titiler.core's factories over terratiler's readers.

- ``/cog``: one COG by ``url=`` (allow-listed), ``b1``-style band math.
- ``/stac``: one STAC item by ``url=`` (allow-listed), Sentinel-2 aware.
- ``/collections/{collection_id}/items/{item_id}``: the same, the item resolved through the
  configured catalog (no URL from the user).

The item and ``/stac`` factories take ``preset=`` through their layer dependencies
(``app.layers``); ``/cog`` has no presets. Beside every TileJSON each serves
``/{tileMatrixSetId}/WMTSCapabilities.xml`` (``app.routers.wmts``); the item and ``/stac``
documents (TileJSON, map, WMTS) check their layer against the item before they list tiles.
"""

from collections.abc import Callable
from typing import Annotated, Any

import morecantile
from fastapi import APIRouter, Depends, Request
from starlette.datastructures import QueryParams
from titiler.core.factory import (
    ColorMapFactory,
    MultiBaseTilerFactory,
    TilerFactory,
    TMSFactory,
)

from app.dependencies import (
    COGReaderParams,
    GeometryBody,
    S2ReaderParams,
    allowed_url,
    catalog_item,
    histogram_params,
    post_process,
    statistics_params,
)
from app.layers import ITEM_LAYER, LayerDependencies
from app.middleware import TILE_SIZE
from app.readers import S2STACReader, SafeCOGReader
from app.rendering import render
from app.request_checks import check_renamed_parameters
from app.routers.wmts import WMTSExtension

ITEM_PREFIX = "/collections/{collection_id}/items/{item_id}"

# The routes that take a GeoJSON body (one path of each form the factories register).
GEOJSON_ROUTES = [
    {"path": path, "method": "POST"}
    for path in ("/statistics", "/feature", "/feature.png", "/feature/1x1.png")
]

# What every factory takes from terratiler instead of titiler: registered media types and
# post-processing, histogram and statistics options checked before they reach numpy, and
# the GeoJSON bodies' size checked before geojson-pydantic parses them.
SHARED_OPTIONS = {
    "render_func": render,
    "process_dependency": post_process,
    "histogram_dependency": histogram_params,
    "stats_dependency": statistics_params,
    "route_dependencies": [(GEOJSON_ROUTES, [Depends(GeometryBody())])],
}

TMS_IDS = tuple(morecantile.tms.list())


def _paths(*documents: str) -> list[dict[str, str]]:
    """The GET scopes of ``/{tms}/<document>`` for every TileMatrixSet."""
    return [
        {"path": f"/{tms}/{document}", "method": "GET"} for tms in TMS_IDS for document in documents
    ]


#: The documents that list a source's tiles: each checks its layer before it lists them.
DOCUMENT_ROUTES = _paths("tilejson.json", "map.html", "WMTSCapabilities.xml")
#: The routes whose links copy the request's query (the documents, tilesets).
LINK_ROUTES = DOCUMENT_ROUTES + [
    {"path": path, "method": "GET"} for path in ("/tiles", *(f"/tiles/{tms}" for tms in TMS_IDS))
]
#: titiler's TileJSON, whose tiles' URLs name their size.
TILEJSON_ROUTES = _paths("tilejson.json")


def no_renders(src: Any) -> None:
    """No ``raster_layers`` in TileJSON (titiler lists the item's ``renders``: none here)."""
    return None


async def no_links() -> None:
    """The links of ``/cog`` copy the request's query as it is."""


def tilejson_tile_size(links: Callable[..., Any]) -> Callable[..., Any]:
    """Route dependency: a TileJSON's tiles are ``TILE_SIZE`` px unless ``tilesize`` says.

    titiler's TileJSON lists ``tilesize=512`` tiles when the request names none; web maps
    (Leaflet, folium, MapLibre's default) lay tiles out in 256 px slots. The size joins the
    query the links carry (after ``links`` completed it), as if the request had given it.
    """

    async def tile_size(request: Request, _: Annotated[None, Depends(links)]) -> None:
        if "tilesize" not in request.query_params:
            query = [*request.query_params.multi_items(), ("tilesize", str(TILE_SIZE))]
            request._query_params = QueryParams(query)  # type: ignore[attr-defined]

    return tile_size


def layer_check(
    layer: LayerDependencies, path_dependency: Callable[..., Any]
) -> Callable[..., None]:
    """Route dependency of the documents: 400 for a layer the item cannot read.

    A TileJSON, map or WMTS document lists tiles; each tile would fail on an unknown asset
    or expression name, or a mask the item cannot apply: the document answers that instead
    (``S2STACReader.check_layer``, nothing read).
    """

    def check_layer(
        src_path: Annotated[Any, Depends(path_dependency)],
        reader_params: Annotated[S2ReaderParams, Depends(S2ReaderParams)],
        params: Annotated[Any, Depends(layer.layer)],
    ) -> None:
        with S2STACReader(src_path, **reader_params.as_dict()) as src:
            src.check_layer(**params.as_dict())

    return check_layer


def layer_options(layer: LayerDependencies, path_dependency: Callable[..., Any]) -> dict[str, Any]:
    """The options of a factory whose layer takes presets (and ``layer``'s defaults).

    What a preset sets (assets or expression, rescale, colormap, harmonize) is read by the
    layer, assets, colormap and rendering dependencies; the layer is resolved before any
    other dependency (an unknown preset is a 400 before the source is looked up), and the
    routes that build links hand them the completed query. The documents check the layer
    against the source (``path_dependency``'s) before they list its tiles.
    """
    return {
        "router": APIRouter(dependencies=[Depends(layer.query)]),
        "layer_dependency": layer.layer,
        "assets_dependency": layer.assets,
        "colormap_dependency": layer.colormap,
        "render_dependency": layer.render,
        "route_dependencies": [
            *SHARED_OPTIONS["route_dependencies"],
            (LINK_ROUTES, [Depends(layer.links)]),
            (TILEJSON_ROUTES, [Depends(tilejson_tile_size(layer.links))]),
            (DOCUMENT_ROUTES, [Depends(layer_check(layer, path_dependency))]),
        ],
        "extensions": [WMTSExtension()],
        "get_renders": no_renders,
    }


async def refuse_renamed_parameters(request: Request) -> None:
    """400 for a titiler parameter's old name (the layer query does it for presets)."""
    check_renamed_parameters(request.query_params.keys())


def cog_factory() -> TilerFactory:
    """The single-COG tiler mounted at ``/cog``."""
    return TilerFactory(
        router=APIRouter(dependencies=[Depends(refuse_renamed_parameters)]),
        reader=SafeCOGReader,
        path_dependency=allowed_url,
        reader_dependency=COGReaderParams,
        **SHARED_OPTIONS
        | {
            "route_dependencies": [
                *SHARED_OPTIONS["route_dependencies"],
                (TILEJSON_ROUTES, [Depends(tilejson_tile_size(no_links))]),
            ],
            "extensions": [WMTSExtension()],
            "get_renders": no_renders,
        },
        router_prefix="/cog",
    )


def stac_factory() -> MultiBaseTilerFactory:
    """The STAC-item-by-URL tiler mounted at ``/stac``."""
    return MultiBaseTilerFactory(
        reader=S2STACReader,
        path_dependency=allowed_url,
        reader_dependency=S2ReaderParams,
        **(SHARED_OPTIONS | layer_options(ITEM_LAYER, allowed_url)),
        router_prefix="/stac",
    )


def item_factory() -> MultiBaseTilerFactory:
    """The catalog-item tiler mounted at ``/collections/{collection_id}/items/{item_id}``."""
    return MultiBaseTilerFactory(
        reader=S2STACReader,
        path_dependency=catalog_item,
        reader_dependency=S2ReaderParams,
        **(SHARED_OPTIONS | layer_options(ITEM_LAYER, catalog_item)),
        router_prefix=ITEM_PREFIX,
    )


def colormap_factory() -> ColorMapFactory:
    """The colormaps the tile endpoints take as ``colormap_name``, at ``/colorMaps``."""
    return ColorMapFactory()


def tms_factory() -> TMSFactory:
    """The TileMatrixSets of morecantile at ``/tileMatrixSets``."""
    return TMSFactory()
