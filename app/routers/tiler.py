"""Tiles, crops, points, statistics: titiler.core's factories over terratiler's readers.

- ``/cog``: one COG by ``url=`` (allow-listed), ``b1``-style band math.
- ``/stac``: one STAC item by ``url=`` (allow-listed), Sentinel-2 aware.
- ``/collections/{collection_id}/items/{item_id}``: the same, the item resolved through the
  configured catalog (no URL from the user).

The item and ``/stac`` factories take ``preset=`` through their layer dependencies
(``app.layers``); ``/cog`` has no presets.
"""

from typing import Any

from fastapi import APIRouter, Depends, Request
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
from app.readers import S2STACReader, SafeCOGReader
from app.rendering import render
from app.request_checks import check_renamed_parameters

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

# The routes whose links copy the request's query (TileJSON, map.html, tilesets).
LINK_ROUTES = [
    {"path": path, "method": "GET"}
    for path in (
        "/WebMercatorQuad/tilejson.json",
        "/WebMercatorQuad/map.html",
        "/tiles",
        "/tiles/WebMercatorQuad",
    )
]


def layer_options(layer: LayerDependencies) -> dict[str, Any]:
    """The options of a factory whose layer takes presets (and ``layer``'s defaults).

    What a preset sets (assets or expression, rescale, colormap, harmonize) is read by the
    layer, assets, colormap and rendering dependencies; the layer is resolved before any
    other dependency (an unknown preset is a 400 before the source is looked up), and the
    routes that build links hand them the completed query.
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
        ],
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
        **SHARED_OPTIONS,
        router_prefix="/cog",
    )


def stac_factory() -> MultiBaseTilerFactory:
    """The STAC-item-by-URL tiler mounted at ``/stac``."""
    return MultiBaseTilerFactory(
        reader=S2STACReader,
        path_dependency=allowed_url,
        reader_dependency=S2ReaderParams,
        **(SHARED_OPTIONS | layer_options(ITEM_LAYER)),
        router_prefix="/stac",
    )


def item_factory() -> MultiBaseTilerFactory:
    """The catalog-item tiler mounted at ``/collections/{collection_id}/items/{item_id}``."""
    return MultiBaseTilerFactory(
        reader=S2STACReader,
        path_dependency=catalog_item,
        reader_dependency=S2ReaderParams,
        **(SHARED_OPTIONS | layer_options(ITEM_LAYER)),
        router_prefix=ITEM_PREFIX,
    )


def colormap_factory() -> ColorMapFactory:
    """The colormaps the tile endpoints take as ``colormap_name``, at ``/colorMaps``."""
    return ColorMapFactory()


def tms_factory() -> TMSFactory:
    """The TileMatrixSets of morecantile at ``/tileMatrixSets``."""
    return TMSFactory()
