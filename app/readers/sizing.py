"""Sizes of reads: output pixels, native sizes, aspects, bytes per sample.

What the COG and the Sentinel-2 readers (and the mosaics) count before they read, so that a
request is refused (413) on its size and memory, not after GDAL allocated it.
"""

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from rasterio.crs import CRS
from rasterio.warp import transform_bounds

from app.errors import BadRequestError
from app.request_checks import tile_pixels

Bounds = tuple[float, float, float, float]

# rio-tiler's default decimation of statistics (``Reader.statistics(max_size=1024)``).
STATISTICS_MAX_SIZE = 1024
# rio-tiler's default size of previews (``Reader.preview(max_size=1024)``).
PREVIEW_MAX_SIZE = 1024
# Bytes per sample assumed for an asset whose item does not give its data type.
UNKNOWN_ITEMSIZE = 8


def bounds_in(bbox: Sequence[float], bounds_crs: CRS, crs: CRS) -> Bounds:
    """``bbox`` (in ``bounds_crs``) in ``crs``; a 400 when it has no extent there."""
    bounds = transform_bounds(bounds_crs, crs, *bbox, densify_pts=21)
    minx, miny, maxx, maxy = bounds
    if not all(math.isfinite(v) for v in bounds) or minx >= maxx or miny >= maxy:
        # PROJ answers inf for what has no place in the target CRS (a bbox of a whole
        # hemisphere in a UTM zone).
        raise BadRequestError(f"bbox: {list(bbox)} has no extent in the CRS {crs}")
    return bounds


def native_pixels(
    bbox: Sequence[float], bounds_crs: CRS, crs: CRS, resolution: float
) -> tuple[int, int]:
    """Width/height of ``bbox`` (in ``bounds_crs``) on a grid of ``resolution`` in ``crs``."""
    minx, miny, maxx, maxy = bounds_in(bbox, bounds_crs, crs)
    return max(1, round((maxx - minx) / resolution)), max(1, round((maxy - miny) / resolution))


def laid_out_in(
    width: int, height: int, bbox: Sequence[float], bounds_crs: CRS, dst_crs: CRS
) -> tuple[int, int]:
    """The same pixel count as ``width`` x ``height``, laid out as ``bbox`` is in ``dst_crs``."""
    dminx, dminy, dmaxx, dmaxy = transform_bounds(bounds_crs, dst_crs, *bbox)
    aspect = (dmaxx - dminx) / (dmaxy - dminy) if dmaxy > dminy else 1.0
    side = (width * height) ** 0.5
    return max(1, round(side * aspect**0.5)), max(1, round(side / aspect**0.5))


def bbox_aspect(bbox: Sequence[float], bounds_crs: CRS, crs: CRS) -> Callable[[], float]:
    """Height / width of ``bbox`` laid out in ``crs``, computed when asked."""

    def aspect() -> float:
        minx, miny, maxx, maxy = bounds_in(bbox, bounds_crs, crs)
        return (maxy - miny) / (maxx - minx)

    return aspect


def tile_output_pixels(
    tms: Any, tile_z: int, tilesize: int | None, buffer: float | None, limit: int | None
) -> int:
    """Output pixels of a tile: ``tilesize`` (default: the matrix's) plus its buffer.

    Args:
        tms: The tile matrix set (``morecantile.TileMatrixSet``).
        tile_z: The zoom level (its matrix gives the default tile size).
        tilesize: The requested tile size, if any.
        buffer: Output pixels added on each side, if any.
        limit: The ``max_output_pixels`` setting (None: no limit).

    Returns:
        The tile's output pixels (413 over ``limit``).

    """
    if not tilesize:
        matrix = tms.matrix(tile_z)
        tilesize = max(matrix.tileWidth, matrix.tileHeight)
    return tile_pixels(tilesize, buffer, limit)


def itemsize(dtype: str | None) -> int:
    """Bytes per sample of ``dtype`` (``UNKNOWN_ITEMSIZE`` when unknown or unreadable)."""
    try:
        return np.dtype(dtype).itemsize if dtype else UNKNOWN_ITEMSIZE
    except TypeError:
        return UNKNOWN_ITEMSIZE
