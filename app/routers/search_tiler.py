"""``SearchTilerFactory``: the read endpoints of a registered search's mosaic, registered once.

Mounted at ``/searches/{search_id}`` (``app.routers.searches``):

- ``/tiles/{tms}/{z}/{x}/{y}[.{format}]``, ``/{tms}/tilejson.json``, ``/{tms}/map.html``
  (and ``/{tms}/WMTSCapabilities.xml``: ``app.routers.wmts``, an extension);
- ``/bbox/{minx},{miny},{maxx},{maxy}[/{width}x{height}].{format}``;
- ``/bbox/{minx},{miny},{maxx},{maxy}/{width}x{height}.{gif|webp}``: an animation, one
  frame per scene date (``app.routers.animation``);
- ``/point/{lon},{lat}``: the time series at a point;
- ``POST /statistics``: per-feature statistics over GeoJSON.

A titiler factory (``titiler.core.factory.BaseFactory``), shaped like titiler's
``MosaicTilerFactory``: what each endpoint takes is an attribute (the search in the path,
the item layer, dataset and tile options, the mosaic's ``pixel_selection`` / ``order``,
post-processing, colormap, rendering, statistics), so a new layer dependency or endpoint is
written once here, or as a ``FactoryExtension`` shared with the single-item factories. The
reading is the engine's: ``MosaicService.backend`` opens the search's mosaic
(``app.mosaic.SearchBackend``); this module parses parameters and shapes responses.

Partial results carry ``X-Mosaic-Partial`` (``items-limit``, ``time-limit``,
``read-errors``); every image carries ``X-Mosaic-Items: <read>/<intersecting>``.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import morecantile
from attrs import define
from fastapi import Body, Depends, Path, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from geojson_pydantic import Feature, FeatureCollection
from pydantic import Field
from rio_tiler.constants import WGS84_CRS
from rio_tiler.models import ImageData
from starlette.datastructures import QueryParams
from titiler.core.dependencies import (
    ColorMapParams,
    CoordCRSParams,
    CoverScaleParams,
    DatasetParams,
    DefaultDependency,
    DstCRSParams,
    ImageRenderingParams,
    PartFeatureParams,
    TileParams,
)
from titiler.core.factory import BaseFactory
from titiler.core.resources.enums import ImageType

from app import rendering
from app.animation import AnimationFormat
from app.dependencies import S2LayerParams, histogram_params, post_process, statistics_params
from app.layers import tilesize_params
from app.mosaic import PIXEL_SELECTIONS, MosaicRead, MosaicService
from app.mosaic.reader import PARTIAL_READ_ERRORS, PARTIAL_TIME
from app.ordering import ItemOrder
from app.routers.animation import (
    ANIMATION_PATHS,
    AnimationConfig,
    AnimationParams,
    animation_config,
    animation_format,
    animation_response,
    animation_responses,
)
from app.routers.wmts import Extent

__all__ = [
    "MosaicParams",
    "SearchTilerFactory",
    "img_responses",
    "map_tilesize",
    "search_extent",
    "search_path",
]

TMS_IDS = tuple(morecantile.tms.list())

SearchId = Annotated[str, Path(description="Search id, from `POST /searches/register`.")]
TmsId = Annotated[
    Literal[TMS_IDS],  # type: ignore[valid-type]
    Path(description="TileMatrixSet identifier (`WebMercatorQuad` for web maps)."),
]

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


async def search_path(search_id: SearchId) -> str:
    """The search of the path: its id (looked up when its mosaic is first read)."""
    return search_id


@dataclass
class MosaicParams(DefaultDependency):
    """How the items of a search combine: ``pixel_selection`` and ``order``."""

    pixel_selection: Annotated[
        Literal[PIXEL_SELECTIONS],  # type: ignore[valid-type]
        Query(
            description="How items are combined per pixel. `first`: the first item (in "
            "`order`) with a valid pixel; with `mask=scl-clear` a cloudy pixel comes from "
            "the next item where it is clear. `highest`/`lowest`/`mean`/`median`/`stdev`/"
            "`count` over the items' valid pixels.",
        ),
    ] = "first"
    order: Annotated[
        ItemOrder | None,
        Query(
            description="Item order: `mostRecent` (default), `leastRecent`, `leastCC` "
            "(lowest eo:cloud_cover first) or `search` (the search's own sortby; the "
            "default when it has one).",
        ),
    ] = None


def map_tilesize(
    tilesize: Annotated[int, Query(gt=0, description="Tile size in pixels.")] = 256,
) -> int:
    """The tile size a map asks for (sync: ``LayerDependencies.resolved`` calls it)."""
    return tilesize


async def request_query(request: Request) -> QueryParams:
    """The request's query: what the links a response returns carry over."""
    return request.query_params


@dataclass(frozen=True)
class ImageOutput:
    """What becomes of a mosaic image: post-processing, then rendering with a colormap."""

    post_process: Callable[[ImageData], ImageData] | None
    colormap: Any
    render: DefaultDependency


def mosaic_headers(result: MosaicRead) -> dict[str, str]:
    """``X-Mosaic-Items``, and ``X-Mosaic-Partial`` with ``Cache-Control`` when partial."""
    headers = {"X-Mosaic-Items": f"{len(result.used)}/{result.candidates}"}
    if result.partial:
        headers["X-Mosaic-Partial"] = ",".join(result.partial)
        if {PARTIAL_TIME, PARTIAL_READ_ERRORS} & set(result.partial):
            # A slow or failed read is no reason to cache an incomplete picture.
            headers["Cache-Control"] = "no-store"
    return headers


def search_extent(factory: "SearchTilerFactory") -> Callable[..., Extent]:
    """The ``extent`` dependency of a search's WMTS capabilities (``app.routers.wmts``)."""

    def extent(
        search_id: Annotated[str, Depends(factory.path_dependency)],
        tileMatrixSetId: TmsId,
        mosaics: Annotated[MosaicService, Depends(factory.mosaics_dependency)],
    ) -> Extent:
        src = mosaics.backend(search_id, morecantile.tms.get(tileMatrixSetId))
        name = src.record.metadata.get("name") or search_id
        return Extent(str(name), src.bounds, src.minzoom, src.maxzoom)

    return extent


@define(kw_only=True)
class SearchTilerFactory(BaseFactory):
    """The read endpoints of a registered search's mosaic.

    Endpoints take the dependencies below; ``reads`` (layer + dataset: what each item
    read takes) and ``output`` (post-process, colormap, render: what becomes of the
    image) compose them, in the order their query parameters are documented. The
    dependencies written here are ``async``: no I/O, so they run on the event loop
    rather than costing a worker thread hop each (as a sync dependency does).

    Attributes:
        mosaics_dependency: the app's ``MosaicService`` (opens a search's mosaic).
        path_dependency: the search id of the path.
        layer_dependency: what each item reads (assets or expression, mask, harmonize).
        dataset_dependency: nodata, unscale, resampling of each item read.
        tile_dependency: buffer and padding of tiles.
        tilesize_dependency: the size of tiles (and of TileJSON's tiles).
        map_tilesize_dependency: the size of a map's tiles.
        img_part_dependency: width, height, max_size of crops over features.
        mosaic_dependency: ``pixel_selection`` and ``order``.
        process_dependency: post-processing (``algorithm``).
        colormap_dependency: the colormap of rendered images.
        render_dependency: rescale, color formula, ``return_mask``.
        stats_dependency: statistics options (categorical, percentiles).
        histogram_dependency: histogram options (bins, range).
        link_query_dependency: the query a TileJSON's or map's links carry over.
        animation_dependency: fps, interval, min_clear, label of animations.
        animation_config_dependency: the animation settings (limits, frame rates).
        render_func: image encoding.

    """

    mosaics_dependency: Callable[..., MosaicService]
    path_dependency: Callable[..., str] = search_path

    layer_dependency: Callable[..., DefaultDependency] = S2LayerParams
    dataset_dependency: Callable[..., DefaultDependency] = DatasetParams
    tile_dependency: Callable[..., DefaultDependency] = TileParams
    tilesize_dependency: Callable[..., int | None] = tilesize_params
    map_tilesize_dependency: Callable[..., int] = map_tilesize
    img_part_dependency: Callable[..., DefaultDependency] = PartFeatureParams
    mosaic_dependency: Callable[..., DefaultDependency] = MosaicParams

    process_dependency: Callable[..., Any] = post_process
    colormap_dependency: Callable[..., Any] = ColorMapParams
    render_dependency: Callable[..., DefaultDependency] = ImageRenderingParams
    stats_dependency: Callable[..., DefaultDependency] = statistics_params
    histogram_dependency: Callable[..., DefaultDependency] = histogram_params
    link_query_dependency: Callable[..., QueryParams] = request_query
    animation_dependency: Callable[..., DefaultDependency] = AnimationParams
    animation_config_dependency: Callable[..., AnimationConfig] = animation_config

    render_func: Callable[..., tuple[bytes, str]] = rendering.render

    def register_routes(self) -> None:
        """Register the endpoints (``route_dependencies`` are added by ``BaseFactory``)."""
        self.tile()
        self.tilejson()
        self.map_viewer()
        self.animation()  # before bbox: its `.gif` / `.webp` paths are bbox paths too
        self.bbox()
        self.point()
        self.statistics()

    # ------------------------------------------------------------------ composed

    def reads(self) -> Callable[..., dict[str, Any]]:
        """A dependency: the options of each item read (layer, then dataset)."""

        async def reads(
            layer=Depends(self.layer_dependency),
            dataset=Depends(self.dataset_dependency),
        ) -> dict[str, Any]:
            return {**layer.as_dict(), **dataset.as_dict()}

        return reads

    def output(self) -> Callable[..., ImageOutput]:
        """A dependency: what becomes of the image (post-process, colormap, render)."""

        async def output(
            post_process=Depends(self.process_dependency),
            colormap=Depends(self.colormap_dependency),
            render=Depends(self.render_dependency),
        ) -> ImageOutput:
            return ImageOutput(post_process, colormap, render)

        return output

    def image_response(
        self,
        result: MosaicRead,
        output: ImageOutput,
        output_format: ImageType | None,
        content_bbox: bool = False,
    ) -> Response:
        """The rendered image of ``result``, with its ``X-Mosaic-*`` headers."""
        image = result.image
        assert image is not None
        if output.post_process:
            image = output.post_process(image)
        content, media_type = self.render_func(
            image,
            output_format=output_format,
            colormap=output.colormap,
            **output.render.as_dict(),
        )
        headers = mosaic_headers(result)
        if content_bbox:
            headers["Content-Bbox"] = ",".join(map(str, image.bounds))
        return Response(content, media_type=media_type, headers=headers)

    # ------------------------------------------------------------------ tiles

    def tile(self) -> None:
        """Register ``/tiles/{tileMatrixSetId}/{z}/{x}/{y}[.{format}]``."""

        @self.router.get(
            "/tiles/{tileMatrixSetId}/{z}/{x}/{y}",
            name="search_tile",
            response_class=Response,
            responses=img_responses,
            summary="A mosaic tile",
        )
        @self.router.get(
            "/tiles/{tileMatrixSetId}/{z}/{x}/{y}.{format}",
            name="search_tile_with_format",
            response_class=Response,
            responses=img_responses,
            summary="A mosaic tile",
        )
        def tile(
            search_id: Annotated[str, Depends(self.path_dependency)],
            tileMatrixSetId: TmsId,
            z: Annotated[int, Path(description="Zoom level")],
            x: Annotated[int, Path(description="Tile column")],
            y: Annotated[int, Path(description="Tile row")],
            mosaics: Annotated[MosaicService, Depends(self.mosaics_dependency)],
            format: Annotated[
                ImageType | None,
                Field(description="Output format; default PNG when masked, else JPEG."),
            ] = None,
            tilesize=Depends(self.tilesize_dependency),
            reads=Depends(self.reads()),
            tile_params=Depends(self.tile_dependency),
            mosaic=Depends(self.mosaic_dependency),
            output=Depends(self.output()),
        ) -> Response:
            """One tile of the mosaic (404 outside the search's items, 400 below the min zoom)."""
            src = mosaics.backend(search_id, morecantile.tms.get(tileMatrixSetId))
            result = src.tile(
                x,
                y,
                z,
                tilesize=tilesize,
                **reads,
                **tile_params.as_dict(),
                **mosaic.as_dict(),
            )
            return self.image_response(result, output, format)

    def tilejson(self) -> None:
        """Register ``/{tileMatrixSetId}/tilejson.json``."""

        @self.router.get(
            "/{tileMatrixSetId}/tilejson.json",
            name="search_tilejson",
            summary="TileJSON of the mosaic",
        )
        def tilejson(
            request: Request,
            search_id: Annotated[str, Depends(self.path_dependency)],
            tileMatrixSetId: TmsId,
            mosaics: Annotated[MosaicService, Depends(self.mosaics_dependency)],
            link_query: Annotated[QueryParams, Depends(self.link_query_dependency)],
            tile_format: Annotated[ImageType | None, Query(description="Tile format.")] = None,
            tilesize=Depends(self.tilesize_dependency),
            minzoom: Annotated[int | None, Query(description="Override the minzoom.")] = None,
            maxzoom: Annotated[int | None, Query(description="Override the maxzoom.")] = None,
            # Parsed (and checked) as a tile parses them: the tiles' URLs carry them.
            reads=Depends(self.reads()),
            tile_params=Depends(self.tile_dependency),
            mosaic=Depends(self.mosaic_dependency),
            output=Depends(self.output()),
        ) -> JSONResponse:
            """TileJSON 3.0: bounds and zooms from the search's items (not the world)."""
            src = mosaics.backend(search_id, morecantile.tms.get(tileMatrixSetId))
            bounds = src.bounds
            path = f"/searches/{search_id}/tiles/{tileMatrixSetId}/{{z}}/{{x}}/{{y}}"
            if tile_format:
                path += f".{tile_format.value}"
            drop = {"tile_format", "minzoom", "maxzoom"}
            qs = [(k, v) for k, v in link_query.multi_items() if k not in drop]
            url = str(request.base_url).rstrip("/") + path + (f"?{urlencode(qs)}" if qs else "")
            minzoom = src.minzoom if minzoom is None else max(minzoom, src.minzoom)
            maxzoom = src.maxzoom if maxzoom is None else maxzoom
            minx, miny, maxx, maxy = bounds
            metadata = src.record.metadata
            body = {
                "tilejson": "3.0.0",
                "name": metadata.get("name") or search_id,
                "description": metadata.get("description"),
                "version": "1.0.0",
                "scheme": "xyz",
                "tiles": [url],
                "minzoom": minzoom,
                "maxzoom": maxzoom,
                "bounds": list(bounds),
                "center": [(minx + maxx) / 2, (miny + maxy) / 2, minzoom],
            }
            return JSONResponse({k: v for k, v in body.items() if v is not None})

    def map_viewer(self) -> None:
        """Register ``/{tileMatrixSetId}/map.html``."""

        @self.router.get(
            "/{tileMatrixSetId}/map.html",
            response_class=HTMLResponse,
            summary="Map viewer of the mosaic",
        )
        def map_viewer(
            request: Request,
            search_id: Annotated[str, Depends(self.path_dependency)],
            tileMatrixSetId: TmsId,
            mosaics: Annotated[MosaicService, Depends(self.mosaics_dependency)],
            link_query: Annotated[QueryParams, Depends(self.link_query_dependency)],
            tilesize: Annotated[int, Depends(self.map_tilesize_dependency)],
        ) -> HTMLResponse:
            """A Leaflet map of the mosaic (right-click: the point's value and time series)."""
            mosaics.get(search_id)  # 404 for an unknown search (its items are not needed)
            base = str(request.base_url).rstrip("/") + f"/searches/{search_id}"
            qs = list(link_query.multi_items())
            if "tilesize" not in link_query:
                qs.append(("tilesize", str(tilesize)))
            tilejson_url = f"{base}/{tileMatrixSetId}/tilejson.json?{urlencode(qs)}"
            skip = {"tilesize", "tile_format", "minzoom", "maxzoom", "colormap", "colormap_name"}
            point_qs = [(k, v) for k, v in link_query.multi_items() if k not in skip]
            point_url = f"{base}/point/{{lon}},{{lat}}" + (
                f"?{urlencode(point_qs)}" if point_qs else ""
            )
            tms = morecantile.tms.get(tileMatrixSetId)
            return self.templates.TemplateResponse(
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

    # ------------------------------------------------------------------ crops, points

    def bbox(self) -> None:
        """Register ``/bbox/{minx},{miny},{maxx},{maxy}[/{width}x{height}].{format}``."""

        @self.router.get(
            "/bbox/{minx},{miny},{maxx},{maxy}.{format}",
            response_class=Response,
            responses=img_responses,
            summary="A bbox crop of the mosaic",
        )
        @self.router.get(
            "/bbox/{minx},{miny},{maxx},{maxy}/{width}x{height}.{format}",
            response_class=Response,
            responses=img_responses,
            summary="A bbox crop of the mosaic, of a given size",
        )
        def bbox_image(
            search_id: Annotated[str, Depends(self.path_dependency)],
            minx: Annotated[float, Path(description="Bounding box min X")],
            miny: Annotated[float, Path(description="Bounding box min Y")],
            maxx: Annotated[float, Path(description="Bounding box max X")],
            maxy: Annotated[float, Path(description="Bounding box max Y")],
            format: Annotated[ImageType, Path(description="Output format.")],
            mosaics: Annotated[MosaicService, Depends(self.mosaics_dependency)],
            width: Annotated[int | None, Field(gt=0, description="Output width.")] = None,
            height: Annotated[int | None, Field(gt=0, description="Output height.")] = None,
            max_size: Annotated[
                int | None, Query(gt=0, description="Longest side of the output, at most.")
            ] = None,
            coord_crs=Depends(CoordCRSParams),
            dst_crs=Depends(DstCRSParams),
            reads=Depends(self.reads()),
            mosaic=Depends(self.mosaic_dependency),
            output=Depends(self.output()),
        ) -> Response:
            """A crop; without a size, at the finest native resolution of what is read."""
            result = mosaics.backend(search_id).part(
                (minx, miny, maxx, maxy),
                bounds_crs=coord_crs or WGS84_CRS,
                dst_crs=dst_crs,
                width=width,
                height=height,
                max_size=max_size,
                **reads,
                **mosaic.as_dict(),
            )
            return self.image_response(result, output, format, content_bbox=True)

    def animation(self) -> None:
        """Register ``/bbox/{minx},{miny},{maxx},{maxy}/{width}x{height}.gif`` (and ``.webp``).

        One literal path per format (``ANIMATION_PATHS``), registered before the crops': a
        ``{format}`` path would be the crops' own path, one entry in the OpenAPI document.
        """

        def animation(
            search_id: Annotated[str, Depends(self.path_dependency)],
            minx: Annotated[float, Path(description="Bounding box min X")],
            miny: Annotated[float, Path(description="Bounding box min Y")],
            maxx: Annotated[float, Path(description="Bounding box max X")],
            maxy: Annotated[float, Path(description="Bounding box max Y")],
            width: Annotated[int, Path(gt=0, description="Frame width.")],
            height: Annotated[int, Path(gt=0, description="Frame height.")],
            format: Annotated[AnimationFormat, Depends(animation_format)],
            mosaics: Annotated[MosaicService, Depends(self.mosaics_dependency)],
            config: Annotated[AnimationConfig, Depends(self.animation_config_dependency)],
            params=Depends(self.animation_dependency),
            coord_crs=Depends(CoordCRSParams),
            dst_crs=Depends(DstCRSParams),
            reads=Depends(self.reads()),
            mosaic=Depends(self.mosaic_dependency),
            output=Depends(self.output()),
        ) -> Response:
            """One frame per scene date of the search (or per `interval`) over the bbox.

            Each frame is the bbox crop of its date's items alone, with the search's layer
            (defaults, `preset`, `expression`, `mask`, `rescale`, colormap) and
            `pixel_selection` among that date's items; frames whose clear fraction is under
            `min_clear` are dropped. Items are read in parallel on the shared read threads.
            """
            return animation_response(
                mosaics.backend(search_id),
                (minx, miny, maxx, maxy),
                (width, height),
                format,
                params,
                config,
                reads=reads,
                mosaic=mosaic.as_dict(),
                post_process=output.post_process,
                colormap=output.colormap,
                render=output.render.as_dict(),
                coord_crs=coord_crs,
                dst_crs=dst_crs,
            )

        for output_format, suffix in ANIMATION_PATHS.items():
            self.router.add_api_route(
                "/bbox/{minx},{miny},{maxx},{maxy}/{width}x{height}" + suffix,
                animation,
                methods=["GET"],
                name=f"search_animation_{output_format.value}",
                response_class=Response,
                responses=animation_responses,
                summary=f"An animation of the mosaic over a bbox ({output_format.value.upper()})"
                ": one frame per date",
            )

    def point(self) -> None:
        """Register ``/point/{lon},{lat}``."""

        @self.router.get("/point/{lon},{lat}", summary="Point time series of the mosaic")
        def point(
            search_id: Annotated[str, Depends(self.path_dependency)],
            lon: Annotated[float, Path(description="Longitude (or X in coord_crs)")],
            lat: Annotated[float, Path(description="Latitude (or Y in coord_crs)")],
            mosaics: Annotated[MosaicService, Depends(self.mosaics_dependency)],
            coord_crs=Depends(CoordCRSParams),
            reads=Depends(self.reads()),
            mosaic=Depends(self.mosaic_dependency),
        ) -> JSONResponse:
            """The value of every item at the point (oldest first), and the mosaic's value there.

            ``values``/``band_names`` are the pixel selection over the items (as a single-item
            point answers); ``series`` is the time series: one entry per item with its id,
            collection, datetime and values (``null`` where masked, e.g. cloudy with
            ``mask=scl-clear``).
            """
            series = mosaics.backend(search_id).point(
                lon, lat, coord_crs=coord_crs or WGS84_CRS, **reads, **mosaic.as_dict()
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

    def statistics(self) -> None:
        """Register ``POST /statistics``."""

        @self.router.post("/statistics", summary="Statistics of the mosaic over GeoJSON")
        def statistics(
            search_id: Annotated[str, Depends(self.path_dependency)],
            geojson: Annotated[
                FeatureCollection | Feature,
                Body(description="GeoJSON Feature or FeatureCollection."),
            ],
            mosaics: Annotated[MosaicService, Depends(self.mosaics_dependency)],
            coord_crs=Depends(CoordCRSParams),
            dst_crs=Depends(DstCRSParams),
            reads=Depends(self.reads()),
            image_params=Depends(self.img_part_dependency),
            mosaic=Depends(self.mosaic_dependency),
            post_process=Depends(self.process_dependency),
            cover_scale=Depends(CoverScaleParams),
            stats_params=Depends(self.stats_dependency),
            histogram_params=Depends(self.histogram_dependency),
        ) -> JSONResponse:
            """Per-feature statistics of the mosaic, coverage-weighted, on the scenes' native grid.

            The output grid is the first item's CRS at the finest native resolution of what is
            read, unless ``dst_crs`` / ``width`` / ``height`` / ``max_size`` say otherwise. Each
            feature gets ``properties.statistics`` (as TiTiler's ``/statistics``) and
            ``properties.mosaic`` (items used, partial reasons).
            """
            features = geojson.features if isinstance(geojson, FeatureCollection) else [geojson]
            size = image_params.as_dict()
            result = mosaics.backend(search_id).feature_statistics(
                [feature.model_dump(exclude_none=True) for feature in features],
                shape_crs=coord_crs or WGS84_CRS,
                cover_scale=cover_scale,
                statistics_options=stats_params.as_dict(),
                histogram_options=histogram_params.as_dict(),
                post_process=post_process,
                dst_crs=dst_crs,
                width=size.get("width"),
                height=size.get("height"),
                max_size=size.get("max_size"),
                **reads,
                **mosaic.as_dict(),
            )
            headers = {"X-Mosaic-Partial": ",".join(result.partial)} if result.partial else {}
            body = (
                result.features[0]
                if isinstance(geojson, Feature)
                else {"type": "FeatureCollection", "features": result.features}
            )
            return JSONResponse(body, media_type="application/geo+json", headers=headers)
