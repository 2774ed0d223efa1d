"""A processing job's checks and analysis: the area, the grid's tiles, scenes per tile.

``check_request`` runs when a job is created, before any work: every parameter, and the
tile count from the grid alone (``grids.count_tiles``), so a country at 10 m on the wrong
grid is refused at once. ``analyse_job`` lists the tiles, finds the scenes over each
(one catalog search over the area, then footprints intersected), estimates bytes and
seconds, collects the job-wide dates of ``stack`` outputs and stages the tiles in the job
folder (``_batch/tiles.json``): the driver reads them back to build each tile's task.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import shapely
import shapely.geometry
from affine import Affine

from app.batch.analysis import Analysis
from app.batch.processing.models import BatchProcessRequest, TilingGridInput
from app.batch.processing.paths import check_output_urls, output_url
from app.batch.processing.spec import GridTile, TileRecipe
from app.batch.storage import JobFiles, Storage, join
from app.catalog.base import SearchQuery
from app.catalog.query import parse_rfc3339
from app.crs_input import EPSG_4326
from app.errors import BadRequestError, NotFoundError, TooLargeError
from app.evalscript import EvalscriptLimits
from app.settings import Settings
from app.stac_fields import item_datetime
from app.stats.geometry import bounds_geometry, non_finite, reproject

__all__ = [
    "ProcessPlan",
    "analyse_job",
    "check_request",
    "find_items",
    "load_tiles",
    "own_tiles",
    "tile_from_json",
    "tile_memory_bytes",
    "tile_json",
    "tiles_url",
]

# Scenes listed at most over a job's area (a remote catalog is paged through).
MAX_SCENES = 20_000
_COLLECTION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class ProcessPlan:
    """A processing request, checked.

    Attributes:
        recipe: What each tile computes.
        area: The area in EPSG:4326.
        collection: The collection id.
        time_range: [from, to).
        max_cloud_coverage: Largest ``eo:cloud_cover`` (None: no filter).
        tile_count: Tiles of a grid over the area (None for the user's own tiles).

    """

    recipe: TileRecipe
    area: shapely.Geometry
    collection: str
    time_range: tuple[datetime, datetime]
    max_cloud_coverage: float | None
    tile_count: int | None

    @property
    def stacked(self) -> bool:
        """Whether an output is a ``stack`` (one band per date of the job)."""
        return any(output.composite == "stack" for output in self.recipe.outputs)


def _time(value: str, field: str) -> datetime:
    try:
        return parse_rfc3339(value)
    except ValueError as error:
        raise BadRequestError(f"{field}: {error}") from None


def _area(
    request: BatchProcessRequest, settings: Settings, tiles: Sequence[GridTile] | None
) -> shapely.Geometry:
    bounds = request.processRequest.input.bounds
    if bounds is None:
        if isinstance(request.input, TilingGridInput):
            raise BadRequestError(
                "processRequest.input.bounds: required with a tiling-grid input (the area)"
            )
        if not tiles:
            raise BadRequestError("input.features: the file has no tiles")
        from app.batch.processing import grids

        # Own tiles without bounds: the tiles are the area.
        return shapely.union_all([grids.tile_footprint(tile) for tile in tiles])
    try:
        area = bounds_geometry(bounds, settings.max_geometry_vertices)
    except BadRequestError as error:
        message = error.message
        prefix = "processRequest." if message.startswith("input.bounds") else ""
        raise BadRequestError(prefix + message) from None
    (lonlat,) = reproject([area], bounds.properties.crs, EPSG_4326)
    if non_finite([lonlat]).any():
        raise BadRequestError(
            "processRequest.input.bounds: the area reaches outside the area its CRS covers"
        )
    if not lonlat.is_valid:
        lonlat = shapely.make_valid(lonlat)
    if lonlat.is_empty or lonlat.area <= 0:
        raise BadRequestError("processRequest.input.bounds: the area is empty")
    return lonlat


def _check_grid(
    grid: TilingGridInput, area: shapely.Geometry, settings: Settings, zarr: bool
) -> int:
    from app.batch.processing import grids

    grids.check_grid(grid.id, grid.resolution)
    if zarr and (grid.bufferX or grid.bufferY):
        raise BadRequestError(
            "input.bufferX/bufferY: Zarr output needs tiles without buffers (chunks are tiles)"
        )
    count = grids.count_tiles(area, grid.id, grid.resolution)
    if count == 0:
        raise BadRequestError(
            f"processRequest.input.bounds: the area has no tile in grid {grid.id}"
        )
    if count > settings.batch_max_tiles:
        raise TooLargeError(
            f"input: {count} tiles of grid {grid.id} at {grid.resolution:g} over the area, over "
            f"the limit batch_max_tiles={settings.batch_max_tiles}"
        )
    point = area.representative_point()
    tile = grids.tile_at(grid.id, grid.resolution, point.x, point.y)
    pixels = (tile.width + 2 * grid.bufferX) * (tile.height + 2 * grid.bufferY)
    if pixels > settings.batch_max_tile_pixels:
        raise TooLargeError(
            f"input.resolution: tiles of {pixels} pixels (buffers included), over the limit "
            f"batch_max_tile_pixels={settings.batch_max_tile_pixels}"
        )
    return count


def _check_output(request: BatchProcessRequest) -> None:
    output = request.output
    if output.skipExisting and output.overwrite:
        raise BadRequestError("output.skipExisting: not with output.overwrite (choose one)")
    if output.type == "raster" and output.cogParameters is not None:
        from app.batch.processing import cog

        checker = getattr(cog, "check_cog_parameters", None)
        if checker is not None:
            checker(output.cogParameters)
    if output.type == "zarr" and output.cogParameters is not None:
        raise BadRequestError("output.cogParameters: only for raster output")
    create = request.createCollection
    if create is not False:
        if output.type != "raster":
            raise BadRequestError(
                "createCollection: only raster (COG) output can be served by this service "
                "(the tiler reads COGs); a Zarr output gets a STAC collection.json beside "
                "its group, but is not added to the catalog"
            )
        if isinstance(create, str) and not _COLLECTION_ID.match(create):
            raise BadRequestError(
                "createCollection: a collection id is letters, digits, '.', '_', '-' (at most 100)"
            )


def check_request(
    request: BatchProcessRequest,
    settings: Settings,
    catalog: Any | None = None,
    tiles: Sequence[GridTile] | None = None,
) -> ProcessPlan:
    """Check a processing request before any work (4xx naming the parameter).

    Args:
        request: The request.
        settings: Limits (``batch_max_tiles``, ``batch_max_tile_pixels``, vertices).
        catalog: When given, the collection must be one of its collections.
        tiles: The user's own tiles (geopackage input), read and checked by
            ``own_tiles.read_own_tiles``: the area when no bounds are given; a Zarr output
            needs them on one lattice.

    Raises:
        BadRequestError: A bad parameter (named).
        TooLargeError: Over ``batch_max_tiles`` or ``batch_max_tile_pixels``.

    """
    recipe = request.recipe(EvalscriptLimits.from_settings(settings))
    outputs = len(recipe.outputs)
    if outputs > settings.batch_max_outputs:
        raise TooLargeError(
            f"processRequest.outputs: {outputs} outputs, over the limit "
            f"batch_max_outputs={settings.batch_max_outputs}"
        )
    data = request.processRequest.input.data[0]
    time_range = data.dataFilter.timeRange
    start = _time(time_range.from_, "processRequest.input.data[0].dataFilter.timeRange.from")
    end = _time(time_range.to, "processRequest.input.data[0].dataFilter.timeRange.to")
    if not start < end:
        raise BadRequestError(
            "processRequest.input.data[0].dataFilter.timeRange: `from` must be before `to`"
        )
    if catalog is not None:
        try:
            catalog.get_collection(data.collection_id)
        except NotFoundError:
            raise BadRequestError(
                f"processRequest.input.data[0].type: unknown collection '{data.collection_id}'"
            ) from None
    area = _area(request, settings, tiles)
    _check_output(request)
    count = None
    if isinstance(request.input, TilingGridInput):
        count = _check_grid(request.input, area, settings, request.output.type == "zarr")
    elif tiles is not None:
        count = len(tiles)
        if request.output.type == "zarr":
            _check_zarr_tiles(tiles, recipe)
    cloud = data.dataFilter.maxCloudCoverage
    return ProcessPlan(
        recipe=recipe,
        area=area,
        collection=data.collection_id,
        time_range=(start, end),
        max_cloud_coverage=cloud if cloud < 100 else None,
        tile_count=count,
    )


def _check_zarr_tiles(tiles: Sequence[GridTile], recipe: TileRecipe) -> None:
    """Own tiles for Zarr output: one size, one resolution, one lattice, no two alike."""
    from app.batch.processing.own_tiles import distinct_places
    from app.batch.processing.zarr_store import zarr_layout

    try:
        zarr_layout(list(tiles), recipe.outputs, ["1970-01-01"])
    except ValueError as error:
        raise BadRequestError(
            f"input.features: {error} (Zarr chunks are the tiles: give tiles of one size on "
            "one lattice, or raster output)"
        ) from None
    if not distinct_places(tiles):
        raise BadRequestError(
            "input.features: two tiles at the same place: a Zarr output writes each place once"
        )


# ----------------------------------------------------------------------------- scenes


def find_items(
    catalog: Any,
    collection: str,
    time_range: tuple[datetime, datetime],
    max_cloud_coverage: float | None,
    footprint: shapely.Geometry,
    max_items: int = MAX_SCENES,
) -> list[Any]:
    """The scenes over ``footprint`` (EPSG:4326) in ``[from, to)`` under the cloud limit."""
    query = SearchQuery.scenes(
        collection, time_range, max_cloud_coverage, bbox=tuple(footprint.bounds)
    )
    begin, end = time_range
    found = []
    for item in catalog.search(query, max_items=max_items):
        when = item_datetime(item)
        if when is None or not begin <= when < end:  # [from, to), as the statistics engine
            continue
        if item.geometry is not None and not footprint.intersects(
            shapely.geometry.shape(item.geometry)
        ):
            continue
        found.append(item)
    return found


# ------------------------------------------------------------------------------ tiles


def tile_json(tile: GridTile) -> dict[str, Any]:
    """A tile as staged (plain JSON)."""
    return {
        "grid": tile.grid,
        "name": tile.name,
        "crs": tile.crs,
        "transform": list(tile.transform)[:6],
        "width": tile.width,
        "height": tile.height,
        "resolution": tile.resolution,
    }


def tile_from_json(entry: dict[str, Any]) -> GridTile:
    """A staged tile back."""
    return GridTile(
        grid=entry["grid"],
        name=entry["name"],
        crs=entry["crs"],
        transform=Affine(*entry["transform"]),
        width=int(entry["width"]),
        height=int(entry["height"]),
        resolution=float(entry["resolution"]),
    )


def tiles_url(root: str) -> str:
    """The staged tiles of a job."""
    return join(JobFiles(root).work, "tiles.json")


def load_tiles(storage: Storage, root: str) -> dict[str, Any]:
    """The staged tiles document: ``{"tiles": [...], "stackDates": [...] | None}``."""
    return json.loads(storage.read(tiles_url(root)))


def own_tiles(
    request: BatchProcessRequest, features: dict[str, Any] | None, settings: Settings
) -> list[GridTile] | None:
    """The user's own tiles (None for a tiling grid), from the job's checked source.

    Args:
        request: The request.
        features: ``{"href", "layer"}`` as the service checked it (allow-list) at creation.
        settings: Limits.

    """
    if isinstance(request.input, TilingGridInput):
        return None
    from app.batch.processing.own_tiles import read_own_tiles

    if not features or not features.get("href"):
        raise BadRequestError("input.features: the job has no checked features source")
    return read_own_tiles(features["href"], features.get("layer"), settings)


def _list_tiles(
    request: BatchProcessRequest, plan: ProcessPlan, tiles: list[GridTile] | None
) -> list[GridTile]:
    from app.batch.processing import grids

    grid = request.input
    if not isinstance(grid, TilingGridInput):
        return list(tiles or [])
    return list(grids.tiles_for(plan.area, grid.id, grid.resolution, grid.bufferX, grid.bufferY))


def _existing(storage: Storage, urls: Sequence[str], limit: int = 3) -> list[str]:
    found = []
    for url in urls:
        if storage.exists(url):
            found.append(url)
            if len(found) >= limit:
                break
    return found


def tile_memory_bytes(tile: GridTile, recipe: TileRecipe, scenes: int, dates: int) -> int:
    """Rough bytes a tile's composites hold at once in a worker (float32 pixels).

    ``median`` keeps one layer per scene, ``stack`` one per date of the job; ``first``,
    ``mean``, ``max`` and ``min`` a few running arrays. Plus one scene's assets as read.
    """
    pixels = int(tile.width) * int(tile.height)
    layers = 0
    for spec in recipe.outputs:
        if spec.composite == "median":
            layers += max(scenes, 1)
        elif spec.composite == "stack":
            layers += 2 * max(dates, 1)  # the values and a "filled" mask per date
        else:
            layers += 3
    return pixels * 4 * (layers + 2 * len(recipe.outputs))


def _check_tile_memory(
    tiles: Sequence[GridTile], scenes: Sequence[int], dates: int, recipe: TileRecipe,
    settings: Settings,
) -> None:  # fmt: skip
    limit = settings.batch_max_tile_memory_mb * 1024 * 1024
    for tile, count in zip(tiles, scenes, strict=True):
        needed = tile_memory_bytes(tile, recipe, count, dates)
        if needed > limit:
            raise TooLargeError(
                f"input: tile {tile.name} needs about {needed // (1024 * 1024)} MB in a worker "
                f"({count} scenes, {dates} dates; median and stack outputs keep each one), "
                f"over the limit batch_max_tile_memory_mb={settings.batch_max_tile_memory_mb}: "
                "shorten processRequest.input.data[0].dataFilter.timeRange, lower "
                "maxCloudCoverage, or use smaller tiles"
            )


def analyse_job(
    request: BatchProcessRequest,
    job_id: str,
    root: str,
    template: str,
    storage: Storage,
    catalog: Any,
    settings: Settings,
    parallelism: int,
    features: dict[str, Any] | None = None,
) -> Analysis:
    """List the tiles, count scenes per tile, estimate, stage the tiles.

    ``features`` is the checked source of own tiles (``{"href", "layer"}``; geopackage
    input), read again here: the tiles staged are the file's at analysis time.

    Raises:
        BadRequestError: An invalid request; outputs that exist already with neither
            ``overwrite`` nor ``skipExisting``.
        TooLargeError: Over a tile limit.

    """
    from app.batch.processing import engine, grids

    given = own_tiles(request, features, settings)
    plan = check_request(request, settings, catalog, given)
    tiles = _list_tiles(request, plan, given)
    if not tiles:
        raise BadRequestError("processRequest.input.bounds: the area has no tile")
    if len(tiles) > settings.batch_max_tiles:
        raise TooLargeError(
            f"input: {len(tiles)} tiles, over the limit batch_max_tiles={settings.batch_max_tiles}"
        )
    items = find_items(
        catalog, plan.collection, plan.time_range, plan.max_cloud_coverage, plan.area
    )
    footprints = [grids.tile_footprint(tile) for tile in tiles]
    shapes = [shapely.geometry.shape(item.geometry) for item in items]
    tree = shapely.STRtree(shapes)
    scenes: list[int] = []
    used: set[int] = set()
    for footprint in footprints:
        hits = [int(i) for i in tree.query(footprint, predicate="intersects")]
        scenes.append(len(hits))
        used.update(hits)
    dates = sorted({items[i].datetime.date().isoformat() for i in used})
    stack_dates = dates if plan.stacked else None
    _check_tile_memory(tiles, scenes, len(dates), plan.recipe, settings)

    output = request.output
    if output.type == "raster":
        # Own tiles are read again here: their names are checked as staged.
        check_output_urls(
            template, job_id, [tile.name for tile in tiles], [s.id for s in plan.recipe.outputs]
        )
    if output.type == "raster" and not output.overwrite and not output.skipExisting:
        if "<requestId>" not in template:  # a new job id: nothing can be there
            urls = [
                output_url(template, job_id, tile.name, spec.id)
                for tile in tiles
                for spec in plan.recipe.outputs
            ]
            existing = _existing(storage, urls)
            if existing:
                raise BadRequestError(
                    f"output.overwrite: output files exist already ({', '.join(existing)}); "
                    "set output.overwrite or output.skipExisting"
                )

    estimated_bytes = sum(
        engine.estimate_tile_bytes(tile, plan.recipe, count)
        for tile, count in zip(tiles, scenes, strict=True)
    )
    megapixel_scenes = sum(
        tile.width * tile.height * count / 1e6 for tile, count in zip(tiles, scenes, strict=True)
    )
    estimate = megapixel_scenes * settings.batch_seconds_per_megapixel_scene / max(parallelism, 1)
    staged = {
        "tiles": [
            {**tile_json(tile), "scenes": count, "footprint": shapely.geometry.mapping(fp)}
            for tile, count, fp in zip(tiles, scenes, footprints, strict=True)
        ],
        "stackDates": stack_dates,
    }
    storage.write(tiles_url(root), json.dumps(staged).encode())
    summary = {
        "tileCount": len(tiles),
        "tilesWithoutScenes": sum(1 for count in scenes if count == 0),
        "grid": request.input.id if isinstance(request.input, TilingGridInput) else "custom",
        "resolution": tiles[0].resolution,
        "crs": sorted({tile.crs for tile in tiles}),
        "bbox": list(plan.area.bounds),
        "sceneCount": len(items),
        "sceneCountCapped": len(items) >= MAX_SCENES,
        "dates": len(dates),
        "stackDates": stack_dates,
        "outputs": [spec.id for spec in plan.recipe.outputs],
        "outputType": output.type,
        "estimatedBytes": int(estimated_bytes),
        "workers": parallelism,
        "estimatedSeconds": round(math.ceil(estimate * 10) / 10, 1),
    }
    return Analysis(summary=summary, unit_sizes=[1] * len(tiles))
