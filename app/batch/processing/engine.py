"""One tile of a batch-processing job: its outputs from the scenes over it.

``process_tile`` orders the scenes (``recipe.order``), skips those whose footprint misses
the tile, and reads each remaining scene's assets ONCE for all outputs: the union of the
names the output expressions use, plus the SCL when an output masks with ``scl-clear``,
and only what the outputs still need (a ``first`` output whose pixels are all filled
needs no more scenes; when every output is such, reading stops).

Each asset is read over the tile's window only and put on the tile's pixel grid:

- same CRS and the tile grid aligned on the asset's pixel grid (the UTM grids in a scene's
  own zone): the pixel holding each tile pixel's centre, by numpy indexing of one window
  read. No resampling: a 20 m SCL lands on the 10 m grid pixel for pixel, and the values
  are exactly the source's;
- otherwise (another UTM zone, the EPSG:4326 grid, a tile grid coarser than the asset or
  not aligned with it): one window read, decimated (from the overviews) when the tile's
  pixels span several of the asset's, warped onto the tile with ``recipe.resampling``
  (``rasterio.warp.reproject``, in float32 with NaN as nodata). The SCL is always warped
  with ``nearest``: its values are classes.

Values are harmonized (``sentinel2.scale_offset``: DN * scale + offset), each output's
expression is evaluated (``app.expressions``), ``scl-clear`` masks the SCL classes of
``sentinel2.DEFAULT_SCL_MASK`` (nodata included), and the composite reduces the scenes:
``first`` (first valid pixel in order, no stack held), ``median`` (the scenes' float32
layers, ``nan_median``: numpy's ``nanmedian`` over the covered pixels only), ``mean`` /
``max`` / ``min`` (running sums or extrema), ``stack`` (one band per date, the scenes of
one date mosaicked ``first``). Last, ``rescale`` maps (min, max) onto the data type's
range, values are clipped and cast, and nodata goes where no scene gave a value.

Every href is checked against the allow-list (``app.security.check_source``, redirects
through ``app.redirects``) before GDAL sees it, and datasets come from the process's pool
(``app.datasets``), through the statistics engine's ``SceneReader``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC

import numpy as np
import pystac
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.io import DatasetReader
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window, from_bounds

from app import sentinel2
from app.band_math import BandMath, parse_band_math
from app.errors import BadRequestError
from app.evalscript import EvalscriptBandMath, EvalscriptLimits
from app.ordering import order_key
from app.settings import Settings
from app.stats.reading import Scene, SceneReader, SceneReadError

from .spec import GridTile, OutputRaster, OutputSpec, TileRecipe

__all__ = [
    "DATA_RANGES",
    "RESAMPLINGS",
    "TileReadError",
    "check_resampling",
    "estimate_tile_bytes",
    "finish",
    "nan_median",
    "process_tile",
]

#: The values of each integer data type; float32 outputs rescale onto (0, 1).
DATA_RANGES: dict[str, tuple[float, float]] = {
    "uint8": (0.0, 255.0),
    "uint16": (0.0, 65535.0),
    "float32": (0.0, 1.0),
}
# Integer outputs without a nodata value get 0 (Sentinel-2's own nodata DN).
DEFAULT_INTEGER_NODATA = 0
# Source pixels around the tile read besides its footprint: room for the resampling
# kernels (cubic and lanczos reach 2-3 pixels) and the footprint's rounding.
_WARP_MARGIN = 3
# Relative tolerance of "the same pixel size" and "on the same grid".
_ALIGN_TOLERANCE = 1e-6


#: Resampling of assets onto tile grids (rasterio's names; Sentinel Hub's upper-case
#: NEAREST / BILINEAR / BICUBIC are accepted too).
RESAMPLINGS = ("nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average", "mode")
_RESAMPLING_ALIASES = {"bicubic": "cubic", "cubicspline": "cubic_spline"}


def check_resampling(name: str) -> str:
    """The rasterio resampling name of ``name`` (case-insensitive; ``BICUBIC`` is ``cubic``).

    Raises:
        BadRequestError: Naming ``processRequest.resampling`` and the accepted names.

    """
    key = str(name).strip().lower()
    key = _RESAMPLING_ALIASES.get(key, key)
    if key not in RESAMPLINGS:
        raise BadRequestError(
            f"processRequest.resampling: one of {', '.join(RESAMPLINGS)}, got '{name}'"
        )
    return key


class TileReadError(Exception):
    """A scene of the tile could not be read: the tile is recorded failed with this message.

    The message names the item and asset (never a local folder of this machine).
    """


def process_tile(
    tile: GridTile,
    items: Sequence[pystac.Item],
    recipe: TileRecipe,
    settings: Settings,
    stack_dates: Sequence[str] | None = None,
) -> dict[str, OutputRaster]:
    """Compute every output of one tile from the scenes over it.

    Args:
        tile: The tile (its CRS, transform and size, buffer included).
        items: The catalog items found for the tile (any order; those whose footprint
            misses the tile are skipped without a read).
        recipe: The outputs, the resampling and the mosaicking order.
        settings: The allow-list (``allowed_prefixes``, ``allow_private_sources``).
        stack_dates: The dates (``YYYY-MM-DD``, UTC) of ``stack`` outputs' bands, the
            same for every tile of a job; None: the dates of ``items``.

    Returns:
        Output id -> its raster: (bands, height, width) in the output's data type, with
        nodata where no scene gives a value.

    Raises:
        TileReadError: An asset is missing, outside the allow-list, or unreadable.
        BadRequestError: An output expression does not parse or has several bands, an
            unknown composite or resampling.

    """
    scenes = [Scene.from_item(item) for item in items]
    dates = list(stack_dates) if stack_dates is not None else _dates(scenes)
    limits = EvalscriptLimits.from_settings(settings)
    composers = [_composer(spec, tile, dates, limits) for spec in recipe.outputs]
    reader = _TileReader(tile, recipe.resampling, settings)
    footprint = tile_bbox_4326(tile)
    for scene in _ordered(scenes, recipe.order):
        if all(composer.finished for composer in composers):
            break  # every output is `first` (or a stack) and full: no more reads
        wanted = [composer for composer in composers if composer.wants(scene)]
        if not wanted or not _intersects(scene, footprint):
            continue
        arrays, clear = reader.read(scene, wanted)
        for composer in wanted:
            composer.add(scene, composer.evaluate(scene, arrays, clear))
    return {composer.spec.id: composer.raster() for composer in composers}


def estimate_tile_bytes(tile: GridTile, recipe: TileRecipe, scenes: int) -> int:
    """Decoded source bytes a tile reads at most, for the analysis' estimates.

    Every distinct asset the outputs name (plus the SCL when an output masks with it),
    at the tile's pixel count, 2 bytes a pixel (Sentinel-2 bands are uint16; the SCL 1),
    for every scene. An upper bound: ``first`` outputs stop early, 20 m assets hold a
    quarter of the pixels of a 10 m tile.

    Args:
        tile: The tile.
        recipe: What it computes.
        scenes: Scenes found over it.

    Returns:
        Bytes (0 for no scene).

    """
    known = set(sentinel2.BAND_ALIASES.values())
    assets: set[str] = set()
    for spec in recipe.outputs:
        for name in band_math(spec).names:
            assets.add(sentinel2.resolve_asset(name, known) or name)
        if spec.mask == sentinel2.MASK_SCL_CLEAR:
            assets.add(sentinel2.SCL_ASSET)
    per_pixel = sum(1 if key == sentinel2.SCL_ASSET else 2 for key in assets)
    return int(tile.width) * int(tile.height) * per_pixel * max(int(scenes), 0)


# --- scenes -----------------------------------------------------------------------------


def _ordered(scenes: list[Scene], order: str) -> list[Scene]:
    """Scenes in mosaicking order, ties broken by item id (deterministic)."""
    return sorted(scenes, key=lambda s: (*order_key(order, s.when, s.cloud), s.id))  # type: ignore[arg-type]


def _date(scene: Scene) -> str:
    """The scene's date (``YYYY-MM-DD``, UTC): its band of a ``stack``."""
    when = scene.when.astimezone(UTC) if scene.when.tzinfo is not None else scene.when
    return when.date().isoformat()


def _dates(scenes: list[Scene]) -> list[str]:
    return sorted({_date(scene) for scene in scenes})


def tile_bbox_4326(tile: GridTile) -> shapely.Geometry:
    """The tile's bounding box in EPSG:4326 (densified edges): what scenes must touch."""
    if CRS.from_user_input(tile.crs) == CRS.from_epsg(4326):
        return shapely.box(*tile.bounds)
    return shapely.box(*transform_bounds(tile.crs, "EPSG:4326", *tile.bounds, densify_pts=21))


def _intersects(scene: Scene, footprint: shapely.Geometry) -> bool:
    # An item without a geometry is read: its window decides.
    return scene.footprint is None or scene.footprint.intersects(footprint)


# --- reading assets onto the tile grid -----------------------------------------------------


@dataclass(frozen=True)
class _Lookup:
    """Where the tile's pixel centres fall in an asset of one georeference (exact path)."""

    window: Window | None
    rows: np.ndarray  # row in the window of each tile row (clipped)
    cols: np.ndarray
    inside: np.ndarray  # (height, width) bool: the centre lies on the asset


class _TileReader:
    """Reads scenes' assets onto one tile's grid, each asset once per scene."""

    def __init__(self, tile: GridTile, resampling: str, settings: Settings):
        self.tile = tile
        self.crs = CRS.from_user_input(tile.crs)
        self.resampling = Resampling[check_resampling(resampling)]
        self.scenes = SceneReader(list(settings.allowed_prefixes), settings.allow_private_sources)
        self._lookups: dict[tuple, _Lookup] = {}

    def read(
        self, scene: Scene, composers: list[_Composer]
    ) -> tuple[dict[str, np.ma.MaskedArray], np.ndarray | None]:
        """The assets the composers need, harmonized, and the SCL's clear pixels.

        Returns:
            (user name -> (height, width) float32 masked array, clear mask or None when
            no composer masks with the SCL).

        """
        names: list[str] = []
        for composer in composers:
            names.extend(n for n in composer.expression.names if n not in names)
        wants_scl = any(c.spec.mask == sentinel2.MASK_SCL_CLEAR for c in composers)
        item = scene.item
        by_key: dict[str, np.ma.MaskedArray] = {}
        arrays: dict[str, np.ma.MaskedArray] = {}
        for name in names:
            key = self._asset_key(item, name)
            if key not in by_key:
                by_key[key] = self._harmonized(item, key)
            arrays[name] = by_key[key]
        clear = None
        if wants_scl:
            key = self._asset_key(item, sentinel2.SCL_ASSET)
            scl = by_key.get(key)
            if scl is None:
                scl = self._read(item, key, nearest=True)
            clear = ~sentinel2.scl_invalid(scl)
        return arrays, clear

    def _asset_key(self, item: pystac.Item, name: str) -> str:
        key = sentinel2.resolve_asset(name, item.assets)
        if key is None:
            raise TileReadError(f"item '{item.id}' has no asset '{name}'")
        return key

    def _harmonized(self, item: pystac.Item, key: str) -> np.ma.MaskedArray:
        values = self._read(item, key, nearest=key == sentinel2.SCL_ASSET)
        scale, offset = sentinel2.scale_offset(item, key)
        if (scale, offset) != (1.0, 0.0):
            values = sentinel2.harmonize(values, scale, offset)
        return values

    def _read(self, item: pystac.Item, key: str, nearest: bool) -> np.ma.MaskedArray:
        """The asset's DN on the tile grid, float32, masked at nodata and off the asset."""
        try:
            with self.scenes.open_asset(item, key) as (_, dataset):
                if self._aligned(dataset):
                    return self._exact(dataset)
                return self._warped(dataset, Resampling.nearest if nearest else self.resampling)
        except SceneReadError as error:
            raise TileReadError(str(error)) from None

    def _aligned(self, dataset: DatasetReader) -> bool:
        """Same CRS, and every tile pixel inside one asset pixel (the grids nest)."""
        if dataset.crs is None or dataset.crs != self.crs:
            return False
        src, dst = dataset.transform, self.tile.transform
        if src.b or src.d or dst.b or dst.d or src.a <= 0 or dst.a <= 0:
            return False
        if src.e >= 0 or dst.e >= 0:
            return False
        return all(
            _whole(ratio)
            for ratio in (
                src.a / dst.a,
                src.e / dst.e,
                (dst.c - src.c) / dst.a,
                (dst.f - src.f) / dst.e,
            )
        ) and (src.a / dst.a >= 1 - _ALIGN_TOLERANCE)

    def _exact(self, dataset: DatasetReader) -> np.ma.MaskedArray:
        lookup = self._lookup(dataset.transform, dataset.height, dataset.width)
        shape = (self.tile.height, self.tile.width)
        if lookup.window is None:
            return np.ma.MaskedArray(np.zeros(shape, np.float32), mask=np.ones(shape, bool))
        block = dataset.read(1, window=lookup.window)
        values = _place(_place(block, lookup.rows, 0), lookup.cols, 1)
        mask = ~lookup.inside
        if dataset.nodata is not None:
            mask = mask | (values == dataset.nodata)
        return np.ma.MaskedArray(values.astype(np.float32), mask=mask)

    def _lookup(self, transform: Affine, height: int, width: int) -> _Lookup:
        key = (tuple(transform)[:6], height, width)
        found = self._lookups.get(key)
        if found is None:
            found = self._lookups[key] = self._locate(transform, height, width)
        return found

    def _locate(self, src: Affine, height: int, width: int) -> _Lookup:
        dst = self.tile.transform
        x = dst.c + (np.arange(self.tile.width) + 0.5) * dst.a
        y = dst.f + (np.arange(self.tile.height) + 0.5) * dst.e
        cols = np.floor((x - src.c) / src.a).astype(np.int64)
        rows = np.floor((y - src.f) / src.e).astype(np.int64)
        col_in = (cols >= 0) & (cols < width)
        row_in = (rows >= 0) & (rows < height)
        inside = row_in[:, None] & col_in[None, :]
        if not inside.any():
            return _Lookup(None, rows, cols, inside)
        c0, c1 = int(cols[col_in].min()), int(cols[col_in].max())
        r0, r1 = int(rows[row_in].min()), int(rows[row_in].max())
        return _Lookup(
            Window(c0, r0, c1 - c0 + 1, r1 - r0 + 1),
            np.clip(rows - r0, 0, r1 - r0),
            np.clip(cols - c0, 0, c1 - c0),
            inside,
        )

    def _warped(self, dataset: DatasetReader, resampling: Resampling) -> np.ma.MaskedArray:
        tile = self.tile
        shape = (tile.height, tile.width)
        empty = np.ma.MaskedArray(np.zeros(shape, np.float32), mask=np.ones(shape, bool))
        if dataset.crs is None:
            return empty
        left, bottom, right, top = transform_bounds(
            self.crs, dataset.crs, *tile.bounds, densify_pts=21
        )
        src = dataset.transform
        # Source pixels per tile pixel: from 2 on, read the overview whose pixels are the
        # largest not coarser than the tile's (gdalwarp's -ovr AUTO) rather than decoding
        # pixels the warp would skip; the window snaps to that overview's pixels, so the
        # read copies them (no resampling before the warp).
        across = (right - left) / abs(src.a) / tile.width
        down = (top - bottom) / abs(src.e) / tile.height
        factor = max([f for f in dataset.overviews(1) if f <= min(across, down)], default=1)
        bounds = from_bounds(left, bottom, right, top, src)
        col0 = _snap_down(bounds.col_off - _WARP_MARGIN * factor, factor)
        row0 = _snap_down(bounds.row_off - _WARP_MARGIN * factor, factor)
        col1 = min(
            _snap_up(bounds.col_off + bounds.width + _WARP_MARGIN * factor, factor), dataset.width
        )
        row1 = min(
            _snap_up(bounds.row_off + bounds.height + _WARP_MARGIN * factor, factor), dataset.height
        )
        if col1 <= col0 or row1 <= row0:
            return empty
        window = Window(col0, row0, col1 - col0, row1 - row0)
        out_shape = (-(-window.height // factor), -(-window.width // factor))
        data = dataset.read(1, window=window, out_shape=out_shape, resampling=Resampling.nearest)
        source = data.astype(np.float32)
        if dataset.nodata is not None:
            source[data == dataset.nodata] = np.nan
        window_transform = src @ Affine.translation(col0, row0) @ Affine.scale(factor)
        destination = np.full(shape, np.nan, dtype=np.float32)
        reproject(
            source,
            destination,
            src_transform=window_transform,
            src_crs=dataset.crs,
            src_nodata=np.nan,
            dst_transform=tile.transform,
            dst_crs=self.crs,
            dst_nodata=np.nan,
            resampling=resampling,
            num_threads=1,
        )
        mask = np.isnan(destination)
        return np.ma.MaskedArray(np.where(mask, 0, destination), mask=mask)


def _place(block: np.ndarray, index: np.ndarray, axis: int) -> np.ndarray:
    """``block`` indexed by ``index`` along ``axis``: a view when the index is a run.

    Same resolution, the tile's pixels are a run of the window's (a slice, no copy);
    nested grids (a 20 m asset on a 10 m tile) repeat each source pixel, which one
    ``np.take`` per axis copies 3-4x faster than ``block[np.ix_(rows, cols)]``.
    """
    start = int(index[0])
    if index[-1] - start == index.size - 1 and bool((np.diff(index) == 1).all()):
        return (
            block[start : start + index.size] if axis == 0 else block[:, start : start + index.size]
        )
    return np.take(block, index, axis=axis)


def _snap_down(value: float, step: int) -> int:
    return max(int(np.floor(value / step)) * step, 0)


def _snap_up(value: float, step: int) -> int:
    return int(np.ceil(value / step)) * step


def _whole(value: float) -> bool:
    return abs(value - round(value)) <= _ALIGN_TOLERANCE * max(1.0, abs(value))


# --- composites ------------------------------------------------------------------------------


@dataclass
class _Composer:
    """Gathers one output's values scene after scene, then gives its raster."""

    spec: OutputSpec
    expression: BandMath
    shape: tuple[int, int]

    @property
    def finished(self) -> bool:
        """No scene can change the result any more."""
        return False

    def wants(self, scene: Scene) -> bool:
        """Whether this scene may change the result."""
        return True

    def evaluate(
        self, scene: Scene, arrays: dict[str, np.ma.MaskedArray], clear: np.ndarray | None
    ) -> np.ma.MaskedArray:
        """The output's (bands, height, width) values from one scene, masked where not valid."""
        inputs = {name: arrays[name] for name in self.expression.names}
        dropped = None
        if self.spec.mask == sentinel2.MASK_SCL_CLEAR and clear is not None:
            dropped = ~clear
            if isinstance(self.expression, EvalscriptBandMath):
                # The script's dataMask is 0 where the SCL drops a pixel.
                inputs = {
                    name: np.ma.MaskedArray(values, mask=np.ma.getmaskarray(values) | dropped)
                    for name, values in inputs.items()
                }
        values = self.expression.evaluate(inputs)
        if dropped is not None:
            values = np.ma.MaskedArray(values.data, mask=np.ma.getmaskarray(values) | dropped)
        return values

    def names(self) -> list[str]:
        """The band descriptions: the output id, or ``<id>_B<n>`` for several bands."""
        if self.spec.bands == 1:
            return [self.spec.id]
        return [f"{self.spec.id}_B{band}" for band in range(self.spec.bands)]

    def add(self, scene: Scene, values: np.ma.MaskedArray) -> None:  # pragma: no cover
        """Take one scene's values."""
        raise NotImplementedError

    def bands(self) -> tuple[np.ndarray, list[str]]:  # pragma: no cover
        """(bands, height, width) float32 with NaN where no value, and the descriptions."""
        raise NotImplementedError

    def raster(self) -> OutputRaster:
        """The output, rescaled and cast to its data type."""
        values, descriptions = self.bands()
        data, nodata = finish(values, self.spec)
        return OutputRaster(data=data, nodata=nodata, descriptions=descriptions)


@dataclass
class _First(_Composer):
    """First valid value in mosaicking order: one array and a mask, no stack."""

    data: np.ndarray = field(init=False)
    filled: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.data = np.full((self.spec.bands, *self.shape), np.nan, dtype=np.float32)
        self.filled = np.zeros((self.spec.bands, *self.shape), dtype=bool)

    @property
    def finished(self) -> bool:  # noqa: D102 (see _Composer)
        return bool(self.filled.all())

    def wants(self, scene: Scene) -> bool:  # noqa: D102
        return not self.finished

    def add(self, scene: Scene, values: np.ma.MaskedArray) -> None:  # noqa: D102
        take = ~np.ma.getmaskarray(values) & ~self.filled
        self.data[take] = values.data[take]
        self.filled |= take

    def bands(self) -> tuple[np.ndarray, list[str]]:  # noqa: D102
        return self.data, self.names()


@dataclass
class _Median(_Composer):
    """The scenes' float32 values (NaN where masked), reduced by ``nan_median``."""

    layers: list[np.ndarray] = field(default_factory=list)

    def add(self, scene: Scene, values: np.ma.MaskedArray) -> None:  # noqa: D102
        mask = np.ma.getmaskarray(values)
        if mask.all():
            return  # no valid pixel (all clouds, or off the tile): the median is the same
        self.layers.append(
            np.where(mask, np.float32(np.nan), values.data.astype(np.float32, copy=False))
        )

    def bands(self) -> tuple[np.ndarray, list[str]]:  # noqa: D102
        medians = [
            nan_median([layer[band] for layer in self.layers], self.shape)
            for band in range(self.spec.bands)
        ]
        return np.stack(medians), self.names()


def nan_median(layers: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """``numpy.nanmedian`` over the layers, bit for bit, computing covered pixels only.

    ``np.nanmedian`` over a short axis goes through ``numpy.ma.median`` and then calls
    ``warnings.warn`` once per all-NaN pixel in a Python loop: a tile mostly outside the
    scenes cost more than a full one. Here the pixels some layer covers are gathered as
    (pixels, layers) rows, each row sorted (NaN last), and the median is picked by each
    row's count of values with numpy's own arithmetic: ``(low + high) / 2`` in float32,
    ``low`` and ``high`` being the same value for an odd count (so an odd count's
    ``x + x`` overflows to inf above half of float32's maximum just as numpy's does).

    Args:
        layers: (height, width) float32 arrays, NaN where no value.
        shape: (height, width) of the result (for no layer at all).

    Returns:
        (height, width) float32, NaN where no layer has a value.

    """
    result = np.full(shape[0] * shape[1], np.nan, dtype=np.float32)
    if not layers:
        return result.reshape(shape)
    covered = np.zeros(shape, dtype=bool)
    for layer in layers:
        covered |= ~np.isnan(layer)
    where = np.flatnonzero(covered)
    if where.size:
        rows = np.empty((where.size, len(layers)), dtype=np.float32)
        for index, layer in enumerate(layers):
            rows[:, index] = layer.ravel()[where]
        count = np.count_nonzero(~np.isnan(rows), axis=1)
        rows.sort(axis=1)  # NaN last
        pick = np.arange(where.size)
        low, high = rows[pick, (count - 1) // 2], rows[pick, count // 2]
        with np.errstate(over="ignore"):
            result[where] = (low + high) / np.float32(2)
    return result.reshape(shape)


@dataclass
class _Running(_Composer):
    """mean / max / min as running arrays: no stack of the scenes."""

    total: np.ndarray = field(init=False)
    count: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        shape = (self.spec.bands, *self.shape)
        if self.spec.composite == "mean":
            self.total = np.zeros(shape, dtype=np.float64)
        else:
            self.total = np.full(shape, np.nan, dtype=np.float32)
        self.count = np.zeros(shape, dtype=np.int32)

    def add(self, scene: Scene, values: np.ma.MaskedArray) -> None:  # noqa: D102
        valid = ~np.ma.getmaskarray(values)
        data = values.data
        if self.spec.composite == "mean":
            self.total[valid] += data[valid]
        elif self.spec.composite == "max":
            self.total = np.fmax(self.total, np.where(valid, data, np.nan))
        else:
            self.total = np.fmin(self.total, np.where(valid, data, np.nan))
        self.count += valid

    def bands(self) -> tuple[np.ndarray, list[str]]:  # noqa: D102
        if self.spec.composite == "mean":
            with np.errstate(all="ignore"):
                result = np.where(self.count > 0, self.total / self.count, np.nan)
        else:
            result = self.total
        return result.astype(np.float32), self.names()


@dataclass
class _Stack(_Composer):
    """One band per date; the scenes of one date mosaicked ``first`` in order."""

    dates: list[str] = field(default_factory=list)
    layers: dict[str, _First] = field(init=False)

    def __post_init__(self) -> None:
        self.layers = {date: _First(self.spec, self.expression, self.shape) for date in self.dates}

    @property
    def finished(self) -> bool:  # noqa: D102
        return all(layer.finished for layer in self.layers.values())

    def wants(self, scene: Scene) -> bool:  # noqa: D102
        layer = self.layers.get(_date(scene))
        return layer is not None and not layer.finished

    def add(self, scene: Scene, values: np.ma.MaskedArray) -> None:  # noqa: D102
        self.layers[_date(scene)].add(scene, values)

    def bands(self) -> tuple[np.ndarray, list[str]]:  # noqa: D102
        if not self.layers:
            return np.zeros((0, *self.shape), np.float32), []
        # Date by date, each date's bands in order: ``<date>`` or ``<date>_B<n>``.
        names = [
            date if self.spec.bands == 1 else f"{date}_B{band}"
            for date in self.layers
            for band in range(self.spec.bands)
        ]
        return np.concatenate([layer.data for layer in self.layers.values()]), names


def band_math(spec: OutputSpec, limits: EvalscriptLimits | None = None) -> BandMath:
    """What computes an output: its expression, or its evalscript's output ``spec.id``.

    Args:
        spec: The output.
        limits: The evalscript limits (the settings' defaults when omitted).

    Returns:
        The band math, of ``spec.bands`` bands.

    Raises:
        BadRequestError: It does not parse, or gives another band count.

    """
    parsed = parse_band_math(spec.expression or None, spec.evalscript, limits, output=spec.id)
    where = "evalscript" if spec.evalscript else "expression"
    if parsed is None or len(parsed.outputs) != spec.bands:
        count = 0 if parsed is None else len(parsed.outputs)
        raise BadRequestError(
            f"processRequest.outputs.{spec.id}.{where}: {spec.bands} band(s) expected, got {count}"
        )
    return parsed


def _composer(
    spec: OutputSpec, tile: GridTile, dates: list[str], limits: EvalscriptLimits | None
) -> _Composer:
    expression = band_math(spec, limits)
    shape = (tile.height, tile.width)
    if spec.composite == "first":
        return _First(spec, expression, shape)
    if spec.composite == "median":
        return _Median(spec, expression, shape)
    if spec.composite in ("mean", "max", "min"):
        return _Running(spec, expression, shape)
    if spec.composite == "stack":
        return _Stack(spec, expression, shape, dates)
    raise BadRequestError(
        f"processRequest.outputs.{spec.id}.composite: one of first, median, mean, max, min,"
        f" stack; got '{spec.composite}'"
    )


# --- data types -------------------------------------------------------------------------------


def finish(values: np.ndarray, spec: OutputSpec) -> tuple[np.ndarray, float | None]:
    """Rescale, clip and cast float32 values (NaN: no value) to the output's data type.

    ``rescale`` (lo, hi) maps linearly onto the data type's range (``DATA_RANGES``:
    0-255, 0-65535, and 0-1 for float32); integer values are rounded and clipped to the
    range. Where no scene gives a value: the output's nodata (integers without one: 0;
    float32 without one: NaN). An integer nodata at an end of the range is kept for the
    empty pixels alone: valid values that would equal it are clipped one step inside.

    Args:
        values: (bands, height, width) float32, NaN where no value.
        spec: The output.

    Returns:
        (data in ``spec.data_type``, the nodata value written).

    """
    lo, hi = DATA_RANGES[spec.data_type]
    empty = np.isnan(values)
    scaled = values.astype(np.float64)
    if spec.rescale is not None:
        low, high = spec.rescale
        span = high - low
        scaled = (scaled - low) / (span if span else 1.0) * (hi - lo) + lo
        scaled = np.clip(scaled, lo, hi)
    if spec.data_type == "float32":
        nodata = spec.nodata
        fill = np.nan if nodata is None else nodata
        return np.where(empty, fill, scaled).astype(np.float32), nodata
    nodata = DEFAULT_INTEGER_NODATA if spec.nodata is None else spec.nodata
    floor, ceiling = lo, hi
    if nodata == lo:
        floor = lo + 1
    elif nodata == hi:
        ceiling = hi - 1
    with np.errstate(invalid="ignore"):
        rounded = np.clip(np.rint(np.where(empty, floor, scaled)), floor, ceiling)
    data = np.where(empty, nodata, rounded).astype(spec.data_type)
    return data, nodata
