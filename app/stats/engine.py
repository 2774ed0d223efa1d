"""The zonal statistics engine: Sentinel Hub Statistical API semantics over a STAC catalog.

Two entry points, no HTTP:

- ``compute_statistics(request, catalog, settings)``: one geometry (``input.bounds``), the
  response of ``POST /statistics``;
- ``compute_many(features, request, catalog, settings)``: many geometries with one request,
  one response each. Geometries are grouped into chunks of spatially close ones; for each
  chunk every scene's assets are read once (one window per asset), every geometry's pixel
  weights are computed once and reused for every interval and output, and the basic
  statistics of all geometries of a chunk come out of a few vectorized sums. Arguments and
  results are plain data (GeoJSON dicts, request dict or model, item dicts allowed as the
  catalog), so Dask workers can call it.

Semantics, per geometry and interval ``[from, to)``:

1. Scenes: items of the collection intersecting the geometry, acquired in the interval,
   with ``eo:cloud_cover <= maxCloudCoverage``. Intervals without scenes are omitted.
2. Grid: the native pixel grid (finest asset the outputs use, 10 m for B04/B08) of the
   scene first in mosaicking order, in its UTM CRS; the geometry is reprojected onto it,
   the raster never is. ``resx``/``resy`` (in the request CRS's units) give a grid of that
   size aligned to the scene's corner instead.
3. Mosaic: scenes in ``mosaickingOrder`` (mostRecent, leastRecent, leastCC); for each
   output band each pixel takes the value of the first scene where it is valid: inside the
   raster, not nodata, not masked (``scl-clear``: SCL classes in
   ``settings.scl_mask_classes``; a mask expression: where it is false), and finite. Only
   scenes on the same grid as the first are mosaicked (scenes of another UTM zone in the
   same interval would need the raster reprojected).
4. Statistics over the geometry's pixels (see ``app.stats.summary`` and
   ``app.stats.coverage``): ``sampleCount`` is the number of pixels the geometry covers
   under the pixel rule, ``noDataCount`` how many of them have no valid value; a geometry
   without a valid pixel gets ``"NaN"`` for min, max, mean, stDev and percentiles.

An interval whose scenes cannot be read becomes
``{"interval", "error": {"type": "EXECUTION_ERROR", "message"}}``; the status is ``PARTIAL``
when some intervals failed, ``FAILED`` when all did.
"""

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import shapely
import shapely.geometry

from app import sentinel2
from app.budget import HARMONIZED_BYTES, MATH_INPUT_BYTES, MATH_OUTPUT_BYTES, MATH_WORK_BYTES
from app.catalog.base import SearchQuery
from app.crs_input import EPSG_4326
from app.errors import BadRequestError, NotFoundError, TerratilerError, TooLargeError
from app.evalscript import EvalscriptBandMath
from app.evalscript.budget import request_budget
from app.ordering import MosaickingOrder, order_key
from app.sentinel2 import MASK_NONE, MASK_SCL_CLEAR, SCL_ASSET
from app.settings import Settings
from app.stats.chunking import DEFAULT_CHUNK_SIZE, spatial_chunks
from app.stats.coverage import Coverage, compute_coverages, window_pixels
from app.stats.geometry import (
    bounds_geometry,
    non_finite,
    pixel_size_in,
    polygonal,
    reproject,
)
from app.stats.grid import PixelGrid
from app.stats.layout import Layout
from app.stats.models import StatisticalRequest
from app.stats.plan import (
    Plan,
    band_math_assets,
    format_interval,
    make_plan,
)
from app.stats.reading import Scene, SceneReader, SceneReadError
from app.stats.results import (
    bad_request,
    empty_interval,
    failed,
    interval_error,
    layout_statistics,
    response,
)

logger = logging.getLogger(__name__)


__all__ = ["compute_many", "compute_statistics"]


# ------------------------------------------------------------------------- entry points


def _assets(catalog: Any, model: StatisticalRequest, settings: Settings) -> frozenset[str]:
    """The asset names the request's collection offers to band math."""
    data = model.input.data
    return band_math_assets(catalog, data[0].collection_id if data else "", settings)


def compute_statistics(
    request: StatisticalRequest | Mapping[str, Any],
    catalog: Any,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Compute the Statistical API response for the request's own geometry.

    Args:
        request: The request (model or its JSON as a dict); ``input.bounds`` is required.
        catalog: A ``Catalog`` (searched), or a sequence of STAC items (pystac Items or
            dicts) to use as they are.
        settings: Service settings (allow-list, SCL classes, limits); default ``Settings()``.

    Returns:
        The JSON-ready response ``{"data": [...], "status": ...}``.

    Raises:
        BadRequestError: An invalid request, a limit exceeded, or a geometry outside every
            scene of the collection.

    """
    settings = _settings(settings)
    model = _model(request)
    if model.input.bounds is None:
        raise BadRequestError("input.bounds: give a geometry or a bbox")
    geometry = bounds_geometry(model.input.bounds, settings.max_geometry_vertices)
    plan = make_plan(model, settings, _assets(catalog, model, settings))
    engine = _Engine(plan, catalog, settings, strict=True)
    # Every interval's V8 calls share evalscript_timeout_seconds (one request, one budget).
    with request_budget(settings.evalscript_timeout_seconds):
        return engine.run([geometry])[0]


def compute_many(
    features: Sequence[Mapping[str, Any]],
    request: StatisticalRequest | Mapping[str, Any],
    catalog: Any,
    settings: Settings | None = None,
    *,
    crs: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> list[dict[str, Any]]:
    """Compute the Statistical API response of many geometries with one request.

    Args:
        features: GeoJSON Features (or bare geometries); ``input.bounds`` of the request
            is ignored.
        request: The request (model or dict); ``input.bounds`` may be omitted.
        catalog: A ``Catalog``, or a sequence of STAC items (pystac Items or dicts).
        settings: Service settings; default ``Settings()``.
        crs: CRS of the features; default the request's ``input.bounds.properties.crs``,
            else EPSG:4326.
        chunk_size: Most geometries read together.

    Returns:
        One response per feature, in order. A feature whose geometry is unusable gets
        ``{"data": [], "status": "FAILED", "error": {"type": "BAD_REQUEST", "message"}}``.

    Raises:
        BadRequestError: An invalid request (the same for every feature).

    """
    settings = _settings(settings)
    model = _model(request)
    plan = make_plan(model, settings, _assets(catalog, model, settings))
    if crs is not None:
        plan = _with_crs(plan, crs)
    elif model.input.bounds is None:
        plan = _with_crs(plan, EPSG_4326)
    max_vertices = settings.max_geometry_vertices
    geometries: list[shapely.Geometry | BadRequestError] = []
    for position, feature in enumerate(features):
        value = feature.get("geometry", feature) if isinstance(feature, Mapping) else feature
        try:
            if value is None:
                raise BadRequestError(f"features[{position}]: no geometry")
            geometries.append(
                polygonal(value, f"features[{position}].geometry", max_vertices, plan.crs)
            )
        except BadRequestError as error:
            geometries.append(error)
    engine = _Engine(plan, catalog, settings, strict=False, chunk_size=chunk_size)
    return engine.run(geometries)


# ----------------------------------------------------------------------------- helpers


def _settings(settings: Settings | None) -> Settings:
    return Settings() if settings is None else settings


def _model(request: StatisticalRequest | Mapping[str, Any]) -> StatisticalRequest:
    if isinstance(request, StatisticalRequest):
        return request
    return StatisticalRequest.model_validate(request)


def _with_crs(plan: Plan, crs: str) -> Plan:
    return replace(plan, crs=crs)


def _order(scenes: list[Scene], order: MosaickingOrder) -> list[Scene]:
    # Ties go by item id; a scene without a cloud cover ranks as 100 % cloudy in leastCC.
    return sorted(
        scenes,
        key=lambda s: (*order_key(order, s.when, 100.0 if s.cloud is None else s.cloud), s.id),
    )


def bytes_per_cell(plan: Plan) -> int:
    """Bytes one grid cell of a geometry holds while its statistics are computed.

    The per-output results kept over the interval's scenes (float32 + a filled flag per
    band), a scene's assets read as float32 reflectance + mask, and one output's band math
    at a time (its inputs as float64, its bands as float32, the temporaries): see
    ``app.budget``.
    """
    bands = [len(output.expression.outputs) for output in plan.outputs]
    inputs = max(len(output.expression.names) for output in plan.outputs)
    return (
        sum(bands) * MATH_OUTPUT_BYTES
        + len(plan.assets) * HARMONIZED_BYTES
        + inputs * MATH_INPUT_BYTES
        + max(bands) * MATH_OUTPUT_BYTES
        + MATH_WORK_BYTES
    )


class _Engine:
    """One run of a plan over geometries: scene search, chunking, mosaics, statistics."""

    def __init__(
        self,
        plan: Plan,
        catalog: Any,
        settings: Settings,
        *,
        strict: bool,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ):
        self.plan = plan
        self.catalog = catalog
        self.settings = settings
        self.strict = strict
        self.chunk_size = max(int(chunk_size), 1)
        self.reader = SceneReader(list(settings.allowed_prefixes), settings.allow_private_sources)
        self.scl_classes = frozenset(settings.scl_mask_classes)
        self.max_pixels = settings.stats_max_pixels
        self.max_bytes = settings.max_request_bytes
        self.bytes_per_cell = bytes_per_cell(plan)
        self.output_assets = (
            tuple(
                dict.fromkeys(name for output in plan.outputs for name in output.expression.names)
            )
            or plan.assets
            or (SCL_ASSET,)
        )
        self._grids: dict[str, PixelGrid] = {}
        # Where a resx/resy given in degrees is measured: the geometries' centre (set by run).
        self._centre = (0.0, 0.0)
        self.interval_json = [format_interval(interval) for interval in plan.intervals]

    # ------------------------------------------------------------------------ scenes

    def _check_collection(self) -> None:
        try:
            self.catalog.get_collection(self.plan.collection)
        except NotFoundError:
            raise BadRequestError(
                f"input.data[0].type: unknown collection '{self.plan.collection}'"
            ) from None

    def _search(
        self,
        bbox: tuple[float, float, float, float],
        *,
        timed: bool,
        intersects: shapely.Geometry | None = None,
    ) -> list[Scene]:
        """Scenes of the collection over ``bbox`` (EPSG:4326), in the time range if timed.

        Untimed searches (is anything there at all?) return at most one scene, of those
        whose footprint intersects ``intersects`` when given.
        """
        plan = self.plan
        max_scenes = self.settings.stats_max_scenes
        start, end = plan.time_range
        if hasattr(self.catalog, "search"):
            query = SearchQuery.scenes(
                plan.collection,
                (start, end) if timed else None,
                plan.max_cloud_coverage if timed else None,
                bbox=None if intersects is not None else bbox,
                intersects=(
                    shapely.geometry.mapping(intersects) if intersects is not None else None
                ),
            )
            items: Iterable[Any] = self.catalog.search(
                query, max_items=max_scenes + 1 if timed else 1
            )
            scenes = [Scene.from_item(item) for item in items]
        else:
            box = intersects if intersects is not None else shapely.box(*bbox)
            scenes = [Scene.from_item(item) for item in self.catalog]
            scenes = [
                s
                for s in scenes
                if s.item.collection_id in (None, plan.collection)
                and (s.footprint is None or s.footprint.intersects(box))
            ]
            if timed and plan.max_cloud_coverage is not None:
                scenes = [
                    s for s in scenes if s.cloud is not None and s.cloud <= plan.max_cloud_coverage
                ]
        if timed:
            scenes = [s for s in scenes if start <= s.when < end]
            if len(scenes) > max_scenes:
                raise BadRequestError(
                    f"more than {max_scenes} scenes match, over the limit "
                    f"stats_max_scenes={max_scenes}; shorten aggregation.timeRange or lower "
                    "dataFilter.maxCloudCoverage"
                )
        return scenes

    def _grid(self, scene: Scene) -> PixelGrid:
        grid = self._grids.get(scene.id)
        if grid is None:
            resolution = None
            if self.plan.resolution is not None:
                crs, _ = self.reader.asset_georeference(scene.item, self.output_assets[0])
                resolution = pixel_size_in(self.plan.resolution, self.plan.crs, crs, self._centre)
                if not all(math.isfinite(size) and size > 0 for size in resolution):
                    resx, resy = self.plan.resolution
                    raise BadRequestError(
                        f"aggregation.resx/resy: {resx:g} x {resy:g} is no pixel size in "
                        f"{crs} (too small to tell apart from 0 at this place)"
                    )
            grid = self.reader.grid(scene, self.output_assets, resolution)
            self._grids[scene.id] = grid
        return grid

    # ---------------------------------------------------------------------------- run

    def run(self, geometries: Sequence[shapely.Geometry | BadRequestError]) -> list[dict]:
        """Compute every geometry's response (errors stay per geometry unless strict)."""
        plan = self.plan
        responses: list[dict | None] = [None] * len(geometries)
        usable: list[int] = []
        for position, geometry in enumerate(geometries):
            if isinstance(geometry, BadRequestError):
                responses[position] = failed(geometry.message)
            else:
                usable.append(position)
        projected = reproject([geometries[p] for p in usable], plan.crs, EPSG_4326)
        outside = non_finite(projected)
        if outside.any():
            error = BadRequestError(
                f"input.bounds: the geometry reaches outside the area {plan.crs} covers"
                " (its coordinates have no longitude and latitude)"
            )
            if self.strict:
                raise error
            for position in np.asarray(usable)[outside].tolist():
                responses[position] = failed(error.message)
            projected = [g for g, bad in zip(projected, outside, strict=True) if not bad]
            usable = [p for p, bad in zip(usable, outside, strict=True) if not bad]
        wgs84 = dict(zip(usable, projected, strict=True))
        if not usable:
            return [r for r in responses if r is not None]
        if hasattr(self.catalog, "get_collection"):
            self._check_collection()
        if not plan.intervals:
            for position in usable:
                responses[position] = {"data": [], "status": "OK"}
            return responses  # type: ignore[return-value]

        lonlat = np.array([wgs84[p] for p in usable], dtype=object)
        centre = shapely.get_coordinates(
            shapely.centroid(shapely.box(*shapely.total_bounds([geometries[p] for p in usable])))
        )[0]
        self._centre = (float(centre[0]), float(centre[1]))
        scenes = self._search(tuple(shapely.total_bounds(lonlat)), timed=True)  # type: ignore[arg-type]

        # Scenes per interval, in mosaicking order.
        by_interval: list[list[Scene]] = [[] for _ in plan.intervals]
        starts = [start for start, _ in plan.intervals]
        for scene in scenes:
            k = int(np.searchsorted(starts, scene.when, side="right")) - 1
            if k >= 0 and scene.when < plan.intervals[k][1]:
                by_interval[k].append(scene)
        ordered = [_order(group, plan.mosaicking_order) for group in by_interval]

        # Which scenes each geometry touches (vectorized per scene).
        results: dict[int, dict[int, dict]] = {p: {} for p in usable}
        touching: dict[int, set[str]] = {p: set() for p in usable}
        for scene in scenes:
            hits = (
                np.ones(len(usable), dtype=bool)
                if scene.footprint is None
                else shapely.intersects(scene.footprint, lonlat)
            )
            for i in np.flatnonzero(hits).tolist():
                touching[usable[i]].add(scene.id)
        if self.strict:
            self._check_inside(usable, wgs84, touching)

        centres = shapely.get_coordinates(shapely.centroid(lonlat))
        for chunk in spatial_chunks(centres, self.chunk_size):
            members = [usable[i] for i in chunk]
            _Chunk(self, members, geometries, touching, results).run(ordered)

        for position in usable:
            if responses[position] is None:
                responses[position] = response(plan, results[position])
        return responses  # type: ignore[return-value]

    def _check_inside(
        self,
        usable: list[int],
        wgs84: dict[int, shapely.Geometry],
        touching: dict[int, set[str]],
    ) -> None:
        """Refuse a geometry that no scene of the collection covers, at any time."""
        for position in usable:
            if touching[position]:
                continue
            geometry = wgs84[position]
            anywhere = self._search(
                tuple(geometry.bounds),  # type: ignore[arg-type]
                timed=False,
                intersects=geometry,
            )
            if not any(s.footprint is None or s.footprint.intersects(geometry) for s in anywhere):
                raise BadRequestError(
                    "input.bounds: the geometry lies outside every scene of collection "
                    f"'{self.plan.collection}'"
                )

    # ------------------------------------------------------------------------ pixels

    def _too_large(self, count: float, grid: PixelGrid) -> TerratilerError | None:
        """The error of a geometry of ``count`` pixels on ``grid`` over a limit, or None."""
        if np.isinf(count):
            return BadRequestError(
                f"input.bounds: the geometry cannot be drawn on the scene's {grid.crs} grid"
                " (it reaches too far from the area that CRS covers); use a smaller area"
            )
        if count > self.max_pixels:
            return BadRequestError(
                f"input.bounds: the geometry spans {count:.0f} pixels at "
                f"{grid.resx:g} x {grid.resy:g} {grid.crs} units, over the limit "
                f"stats_max_pixels={self.max_pixels}; use a smaller area or larger resx/resy"
            )
        needed = math.ceil(count) * self.bytes_per_cell
        if needed > self.max_bytes:
            return TooLargeError(
                f"input.bounds: the geometry's {count:.0f} pixels x {self.bytes_per_cell} bytes "
                f"per pixel (its outputs' bands and assets) need about {needed} bytes, over "
                f"the limit max_request_bytes={self.max_bytes}; use a smaller area, larger "
                "resx/resy or fewer outputs"
            )
        return None

    def coverages(
        self, geometries: Sequence[shapely.Geometry], grid: PixelGrid
    ) -> list[Coverage | TerratilerError]:
        """Each geometry's pixels on a grid, or the error of one over a limit.

        Limits: ``stats_max_pixels`` pixels, and ``max_request_bytes`` for what its pixels
        hold while computed (``bytes_per_cell``).
        """
        local = reproject(geometries, self.plan.crs, grid.crs)
        pixels = window_pixels(local, grid)
        errors = [self._too_large(count, grid) for count in pixels]
        fine = [i for i, error in enumerate(errors) if error is None]
        computed = iter(compute_coverages([local[i] for i in fine], grid, self.plan.pixel_rule))
        out: list[Coverage | TerratilerError] = []
        for error in errors:
            if error is None:
                out.append(next(computed))
                continue
            if self.strict:
                raise error
            out.append(error)
        return out

    def valid_mask(self, arrays: Mapping[str, np.ma.MaskedArray], size: int) -> np.ndarray:
        """Which cells the request's mask keeps."""
        mask = self.plan.mask
        if mask == MASK_SCL_CLEAR:
            return ~sentinel2.scl_invalid(arrays[SCL_ASSET], self.scl_classes)
        if mask == MASK_NONE:
            return np.ones(size, dtype=bool)
        assert not isinstance(mask, str)
        result = mask.evaluate({name: arrays[name] for name in mask.names})
        return ~np.ma.getmaskarray(result)[0] & (np.ma.getdata(result)[0] != 0)


class _Chunk:
    """The geometries of one chunk through every interval."""

    def __init__(
        self,
        engine: _Engine,
        members: list[int],
        geometries: Sequence[Any],
        touching: dict[int, set[str]],
        results: dict[int, dict[int, dict]],
    ):
        self.engine = engine
        self.members = members
        self.geometries = geometries
        self.touching = touching
        self.results = results
        self.coverages: dict[tuple[int, PixelGrid], Coverage | None] = {}
        self.layouts: dict[tuple[PixelGrid, tuple[int, ...]], Layout] = {}

    def run(self, ordered: list[list[Scene]]) -> None:
        engine = self.engine
        for k, scenes in enumerate(ordered):
            if not scenes:
                continue
            # Each geometry takes the grid of its first scene; geometries sharing a grid
            # are computed together.
            groups: dict[PixelGrid, list[int]] = {}
            for position in self.members:
                first = next((s for s in scenes if s.id in self.touching[position]), None)
                if first is None:
                    continue
                try:
                    grid = engine._grid(first)
                except SceneReadError as error:
                    self.results[position][k] = interval_error(engine.plan, k, str(error))
                    continue
                groups.setdefault(grid, []).append(position)
            for grid, positions in groups.items():
                self._interval(k, grid, positions, scenes)

    def _coverages(self, positions: list[int], grid: PixelGrid) -> list[Coverage | None]:
        missing = [p for p in positions if (p, grid) not in self.coverages]
        if missing:
            found = self.engine.coverages([self.geometries[p] for p in missing], grid)
            for position, coverage in zip(missing, found, strict=True):
                if isinstance(coverage, TerratilerError):
                    self.results[position]["error"] = bad_request(coverage.message)
                    self.coverages[(position, grid)] = None
                else:
                    self.coverages[(position, grid)] = coverage
        return [self.coverages[(p, grid)] for p in positions]

    def _interval(self, k: int, grid: PixelGrid, positions: list[int], scenes: list[Scene]) -> None:
        engine, plan = self.engine, self.engine.plan
        coverages = list(zip(positions, self._coverages(positions, grid), strict=True))
        covered = [(p, c) for p, c in coverages if c is not None and len(c)]
        empty = [p for p, c in coverages if c is not None and not len(c)]
        for position in empty:
            self.results[position][k] = empty_interval(plan, k)
        if not covered:
            return
        members = tuple(p for p, _ in covered)
        layout = self.layouts.get((grid, members))
        if layout is None:
            layout = Layout.build(grid, [c for _, c in covered], plan.pixel_rule == "exact")
            self.layouts[(grid, members)] = layout
        wanted = set().union(*(self.touching[p] for p in members))
        try:
            mosaic_scenes = [s for s in scenes if s.id in wanted and engine._grid(s) == grid]
            bands = self._mosaic(layout, mosaic_scenes)
        except SceneReadError as error:
            logger.warning("interval %s: %s", format_interval(plan.intervals[k]), error)
            for position in members:
                self.results[position][k] = interval_error(plan, k, str(error))
            return
        outputs = layout_statistics(plan, layout, bands)
        for local, position in enumerate(members):
            self.results[position][k] = {
                "interval": dict(engine.interval_json[k]),
                "outputs": outputs[local],
            }

    def _mosaic(
        self, layout: Layout, scenes: list[Scene]
    ) -> list[list[tuple[np.ndarray, np.ndarray]]]:
        """Per output and band, (values, filled) over the layout's cells."""
        engine, plan = self.engine, self.engine.plan
        size = len(layout.cells)
        bands = [
            [(np.zeros(size, dtype=np.float32), np.zeros(size, dtype=bool)) for _ in o.bands]
            for o in plan.outputs
        ]
        pending = np.arange(size)
        for scene in scenes:
            if not len(pending):
                break
            subset = None if len(pending) == size else pending
            arrays = engine.reader.read(scene, plan.assets, layout.cells, subset)
            keep = engine.valid_mask(arrays, len(pending))
            open_any = np.zeros(len(pending), dtype=bool)
            for output, slots in zip(plan.outputs, bands, strict=True):
                inputs = {name: arrays[name] for name in output.expression.names}
                if isinstance(output.expression, EvalscriptBandMath):
                    # The script's dataMask is 0 where the request's mask drops a pixel.
                    inputs = {
                        name: np.ma.MaskedArray(values, mask=np.ma.getmaskarray(values) | ~keep)
                        for name, values in inputs.items()
                    }
                evaluated = output.expression.evaluate(inputs)
                data, masked = np.ma.getdata(evaluated), np.ma.getmaskarray(evaluated)
                for b, (values, filled) in enumerate(slots):
                    take = keep & ~masked[b] & ~filled[pending]
                    cells = pending[take]
                    values[cells] = data[b][take]
                    filled[cells] = True
                    open_any |= ~filled[pending]
            pending = pending[open_any]
        return bands
