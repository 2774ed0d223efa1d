"""The reprojected grid of a whole dataset, computed once per georeferencing.

rio-tiler asks GDAL for a dataset's default grid in the tile matrix set's CRS
(``calculate_default_transform``: a GDALSuggestedWarpOutput pass over the dataset's
edges, 0.6-0.8 ms) once or twice for every asset of every tile, only to learn the
dataset's native resolution in that CRS. The answer depends on nothing but the source and
destination CRS, the dataset's size and its bounds, so it is kept here (least recently
used first out) and rio-tiler's tile path is given the cached function.

Not a workaround for an upstream bug: rio-tiler's answer is right, only recomputed. Its
``get_vrt_transform`` (every ``part``, so every tile) and ``get_overview_level`` call
``calculate_default_transform`` through the ``rio_tiler.utils`` module, e.g. rio-tiler
9.4.2 https://github.com/cogeotiff/rio-tiler/blob/9.4.2/rio_tiler/utils.py#L399 and
https://github.com/cogeotiff/rio-tiler/blob/9.4.2/rio_tiler/utils.py#L298 , and offers
no hook to pass the grid in; no upstream issue asks to cache it (cogeotiff/rio-tiler
searched for one when this was written). ``install`` replaces that module attribute, once
per process, from ``create_app``; readers used without the app read the same pixels,
uncached (``tests/test_reprojection.py`` checks both).
"""

from __future__ import annotations

import functools
from typing import Any

import rio_tiler.utils
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import calculate_default_transform

CACHE_SIZE = 4096

_uncached = calculate_default_transform


@functools.lru_cache(maxsize=CACHE_SIZE)
def _default_grid(
    src_crs: CRS, dst_crs: CRS, width: int, height: int, bounds: tuple[float, ...]
) -> tuple[Affine, int, int]:
    return _uncached(src_crs, dst_crs, width, height, *bounds)


def default_transform(
    src_crs: Any, dst_crs: Any, width: int, height: int, *bounds: float, **kwargs: Any
) -> tuple[Affine, int, int]:
    """``rasterio.warp.calculate_default_transform``, cached for whole-dataset grids.

    Calls with GCPs, RPCs, a resolution or an output size go to rasterio uncached.
    """
    if kwargs or len(bounds) != 4 or not isinstance(src_crs, CRS) or not isinstance(dst_crs, CRS):
        return _uncached(src_crs, dst_crs, width, height, *bounds, **kwargs)
    return _default_grid(src_crs, dst_crs, width, height, tuple(bounds))


def install() -> None:
    """Give rio-tiler's tile path (``rio_tiler.utils``) the cached function.

    Process-wide and idempotent: called at startup (``create_app``).
    """
    rio_tiler.utils.calculate_default_transform = default_transform
