"""OGC WMTS capabilities: ``/{tileMatrixSetId}/WMTSCapabilities.xml`` beside every TileJSON.

``WMTSExtension`` is a titiler ``FactoryExtension``: registered on the item, ``/stac`` and
``/cog`` factories and on ``SearchTilerFactory``, it writes one RESTful WMTS 1.0.0 document
for one source in one TileMatrixSet, which QGIS, GDAL (``WMTS:<url>``), OpenLayers and
OWSLib open. The document has one layer: the request's (its query, completed by the
factory's layer dependencies as a TileJSON's is, goes into the tile URL template), and one
TileMatrixSet: the path's, down to the source's maxzoom, its tiles listed from the
source's minzoom (``TileMatrixSetLimits``). A client zoomed in further scales the finest
tiles, as a web map past its TileJSON's maxzoom.

titiler's own ``wmtsExtension`` (titiler.extensions) was not used: it serves
``/WMTSCapabilities.xml`` with a layer in every TileMatrixSet of morecantile (opening the
source once per set), checks the layer with titiler's plain dependencies (ours take
presets and a search's defaults), and needs a reader factory (a search has a mosaic).

What the source is comes from the ``extent`` dependency (``reader_extent`` for titiler's
reader factories; ``app.routers.search_tiler.search_extent`` for searches); whether the
layer can be read is the factory's document check (``app.routers.tiler``,
``app.routers.searches``), so the document never lists tiles that fail.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import jinja2
import morecantile
import pystac
import rasterio
from attrs import define, field
from fastapi import Depends, Path, Query, Request
from rio_tiler.constants import WGS84_CRS
from starlette.datastructures import QueryParams
from starlette.templating import Jinja2Templates
from titiler.core.factory import BaseFactory, FactoryExtension, TilerFactory
from titiler.core.resources.enums import ImageType
from titiler.core.resources.responses import XMLResponse

__all__ = ["WMTS_PATH", "Extent", "WMTSExtension", "reader_extent", "request_query"]

#: The capabilities route of a factory, for each TileMatrixSet.
WMTS_PATH = "/{tileMatrixSetId}/WMTSCapabilities.xml"

TEMPLATES = Jinja2Templates(
    env=jinja2.Environment(
        autoescape=True,
        loader=jinja2.FileSystemLoader(FilePath(__file__).parent.parent / "templates"),
    )
)

#: Query parameters of the capabilities request that are not the layer's: the document's
#: own, and the OGC key-value parameters clients (GDAL, OWSLib) add to its URL.
NOT_LAYER_PARAMETERS = frozenset(
    {
        "tile_format",
        "tilesize",
        "minzoom",
        "maxzoom",
        "service",
        "request",
        "version",
        "acceptversions",
        "sections",
        "updatesequence",
        "acceptformats",
    }
)

TmsId = Annotated[
    Literal[tuple(morecantile.tms.list())],  # type: ignore[valid-type]
    Path(description="TileMatrixSet identifier (`WebMercatorQuad` for web maps)."),
]


@dataclass(frozen=True)
class Extent:
    """What a capabilities document says of its source, in one TileMatrixSet.

    Attributes:
        identifier: The layer's identifier and title (an item id, a search's name).
        bounds: Lon/lat bounds.
        minzoom: The first zoom level the source is tiled at.
        maxzoom: The last one (its native resolution).
    """

    identifier: str
    bounds: tuple[float, float, float, float]
    minzoom: int
    maxzoom: int


async def request_query(request: Request) -> QueryParams:
    """The request's query (as the factory's link dependencies left it)."""
    return request.query_params


def _identifier(src: Any, source: Any) -> str:
    """A reader's source as a layer name: a STAC reader's item id, else the file name."""
    item = getattr(src, "item", None)  # rio-tiler's STACReader holds its pystac.Item
    if isinstance(item, pystac.Item):
        return item.id
    name = str(source).split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return name or "layer"


def reader_extent(factory: TilerFactory) -> Callable[..., Extent]:
    """The ``extent`` dependency of a titiler reader factory (items, ``/stac``, ``/cog``)."""

    def extent(
        tileMatrixSetId: TmsId,
        src_path=Depends(factory.path_dependency),
        reader_params=Depends(factory.reader_dependency),
        env=Depends(factory.environment_dependency),
    ) -> Extent:
        tms = factory.supported_tms.get(tileMatrixSetId)
        with (
            rasterio.Env(**env),
            factory.reader(src_path, tms=tms, **reader_params.as_dict()) as src,
        ):
            bounds = src.get_geographic_bounds(WGS84_CRS)
            return Extent(_identifier(src, src_path), tuple(bounds), src.minzoom, src.maxzoom)

    return extent


def _limits(
    tms: morecantile.TileMatrixSet, bounds: Sequence[float], minzoom: int, maxzoom: int
) -> list[dict[str, Any]]:
    """The tiles of ``bounds`` (lon/lat) in each matrix from ``minzoom`` to ``maxzoom``."""
    limits = []
    west, south, east, north = bounds
    for zoom in range(minzoom, maxzoom + 1):
        matrix = tms.matrix(zoom)
        corners = [
            tms.tile(lon, lat, zoom, geographic_crs=WGS84_CRS)
            for lon, lat in ((west, north), (east, south))
        ]
        cols = sorted(min(max(t.x, 0), matrix.matrixWidth - 1) for t in corners)
        rows = sorted(min(max(t.y, 0), matrix.matrixHeight - 1) for t in corners)
        limits.append(
            {
                "matrix": matrix.id,
                "min_row": rows[0],
                "max_row": rows[1],
                "min_col": cols[0],
                "max_col": cols[1],
            }
        )
    return limits


def _supported_crs(tms: morecantile.TileMatrixSet) -> str:
    """The TileMatrixSet's CRS as WMTS clients read it (``urn:ogc:def:crs:EPSG::3857``)."""
    epsg = tms.crs.to_epsg()
    return f"urn:ogc:def:crs:EPSG::{epsg}" if epsg else tms.crs.srs


@define
class WMTSExtension(FactoryExtension):
    """``/{tileMatrixSetId}/WMTSCapabilities.xml`` of a factory's source and layer.

    Attributes:
        extent: Builds, for the factory, the dependency answering its source's ``Extent``.
        tile_route: The name of the factory's tile route with a format.
        link_query_dependency: The query the tile URLs carry (the layer, completed).
    """

    extent: Callable[[Any], Callable[..., Extent]] = field(default=reader_extent)
    tile_route: str = field(default="tile")
    link_query_dependency: Callable[..., QueryParams] = field(default=request_query)

    def register(self, factory: BaseFactory) -> None:
        """Register the capabilities route on ``factory``'s router."""

        @factory.router.get(
            WMTS_PATH,
            response_class=XMLResponse,
            responses={200: {"content": {"application/xml": {}}}},
            summary="OGC WMTS capabilities (QGIS, GDAL, OpenLayers)",
            operation_id=f"{factory.operation_prefix}getWMTSCapabilities",
        )
        def wmts(
            request: Request,
            tileMatrixSetId: TmsId,
            extent: Annotated[Extent, Depends(self.extent(factory))],
            link_query: Annotated[QueryParams, Depends(self.link_query_dependency)],
            tile_format: Annotated[
                ImageType, Query(description="Format of the tiles (PNG keeps nodata transparent).")
            ] = ImageType.png,
            minzoom: Annotated[int | None, Query(description="Override the minzoom.")] = None,
            maxzoom: Annotated[int | None, Query(description="Override the maxzoom.")] = None,
        ) -> XMLResponse:
            """RESTful WMTS 1.0.0 capabilities: one layer (this request's), one TileMatrixSet.

            The layer's parameters (`assets`, `expression`, `preset`, `rescale`, colormap
            ...) are those of a tile and go into its tile URL template; a layer the source
            cannot read is a 400 here, not a document of failing tiles. Open it as
            `WMTS:<this URL>` in GDAL, or as a WMTS connection in QGIS.
            """
            tms = morecantile.tms.get(tileMatrixSetId)
            low = max(tms.minzoom, extent.minzoom if minzoom is None else minzoom)
            high = min(tms.maxzoom, max(low, extent.maxzoom if maxzoom is None else maxzoom))
            tile_url = factory.url_for(
                request,
                self.tile_route,
                tileMatrixSetId=tileMatrixSetId,
                z="{TileMatrix}",
                x="{TileCol}",
                y="{TileRow}",
                format=tile_format.value,
            )
            query = [
                (key, value)
                for key, value in link_query.multi_items()
                if key.lower() not in NOT_LAYER_PARAMETERS
            ]
            return TEMPLATES.TemplateResponse(
                request,
                name="wmts.xml",
                context={
                    "capabilities_url": str(request.url),
                    "layer": {
                        "identifier": extent.identifier,
                        "title": extent.identifier,
                        "bounds": extent.bounds,
                    },
                    "media_type": tile_format.mediatype,
                    "tms": tms,
                    "crs": _supported_crs(tms),
                    "matrices": [tms.matrix(zoom) for zoom in range(tms.minzoom, high + 1)],
                    "limits": _limits(tms, extent.bounds, low, high),
                    "tile_template": tile_url + (f"?{urlencode(query)}" if query else ""),
                },
                media_type="application/xml",
            )
