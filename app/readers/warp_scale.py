"""One warp kernel size for every tile: GDAL's ``XSCALE`` / ``YSCALE`` set from the grids.

GDAL's warper sizes a resampling kernel (bilinear, cubic, average ...) by the ratio of
destination to source pixels, which it computes for each warped chunk from the chunk's
source window (GDAL's warp options ``XSCALE`` / ``YSCALE``: "automatically computed, for
each processing chunk, and may thus vary among them"). A tile partly outside the dataset
has its source window cut at the dataset's edge: its ratio, so its kernel, differs from its
neighbour's, and the two tiles meet at a step (at zoom 13 of the demo, bilinear, the tile
holding the scene's edge differed from one reprojection of the whole area by up to 175
DN; its neighbour by 0). Set once from the dataset's resolution and the output's, the
ratio is the same for every tile.

Nearest-neighbour has no kernel: its reads are left as they are.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import rio_tiler.utils
from rasterio.crs import CRS
from rasterio.io import DatasetReader
from rasterio.warp import transform_bounds
from rio_tiler.reader import output_size

# GDAL's default GDAL_OVERVIEW_OVERSAMPLING_THRESHOLD (GDALBandGetBestOverviewLevel2):
# an overview is read when its decimation is at most the request's times this.
OVERSAMPLING_THRESHOLD = {"nearest": 1.2, "other": 1.0}


def warp_scale(
    dataset: DatasetReader, bbox: Sequence[float], options: Mapping[str, Any]
) -> dict[str, str] | None:
    """The ``XSCALE`` / ``YSCALE`` warp options of rio-tiler's ``part`` read of ``bbox``.

    Args:
        dataset: The dataset read.
        bbox: The bbox of the read (in ``bounds_crs``, else in ``dst_crs``).
        options: The read's options (``dst_crs``, ``bounds_crs``, ``width``, ``height``,
            ``max_size``, ``reproject_method``, ``resampling_method``, ``padding``).

    Returns:
        The options (destination pixels per source pixel of the level GDAL reads), or None
        when the read warps nothing or has no kernel: the same CRS, nearest-neighbour,
        or a padded read (read through a window, block by block, at the VRT's own grid).

    """
    if (options.get("reproject_method") or "nearest") == "nearest" or options.get("padding"):
        return None
    dst_crs = options.get("dst_crs") or dataset.crs
    if dst_crs == dataset.crs:
        return None
    bounds = bbox
    bounds_crs = options.get("bounds_crs")
    if bounds_crs and bounds_crs != dst_crs:
        bounds = transform_bounds(bounds_crs, dst_crs, *bbox, densify_pts=21)
    height, width = options.get("height"), options.get("width")
    vrt_transform, vrt_width, vrt_height = rio_tiler.utils.get_vrt_transform(
        dataset, bounds, height, width, dst_crs=dst_crs
    )
    out_height, out_width = output_size(
        dataset_height=vrt_height,
        dataset_width=vrt_width,
        output_height=height,
        output_width=width,
        max_size=options.get("max_size"),
    )
    # The dataset's own pixel size in dst_crs, as rio-tiler computes it (cached).
    native, _, _ = rio_tiler.utils.calculate_default_transform(
        dataset.crs, CRS.from_user_input(dst_crs), dataset.width, dataset.height, *dataset.bounds
    )
    factor = _overview_factor(dataset, vrt_width, vrt_height, out_width, out_height, options)
    x_scale = abs(native.a) * factor / (abs(vrt_transform.a) * vrt_width / out_width)
    y_scale = abs(native.e) * factor / (abs(vrt_transform.e) * vrt_height / out_height)
    return {"XSCALE": repr(x_scale), "YSCALE": repr(y_scale)}


def _overview_factor(
    dataset: DatasetReader,
    vrt_width: int,
    vrt_height: int,
    out_width: int,
    out_height: int,
    options: Mapping[str, Any],
) -> float:
    """The decimation of the overview GDAL reads for the VRT read (1: full resolution).

    As GDAL's GDALBandGetBestOverviewLevel2 picks among the warped VRT's overviews (one
    per overview of the dataset): the coarsest no coarser than the request allows.
    """
    x_factor, y_factor = vrt_width / out_width, vrt_height / out_height
    if x_factor <= 1 and y_factor <= 1:
        return 1.0
    desired = x_factor if (1 <= x_factor < y_factor) or y_factor < 1 else y_factor
    nearest = (options.get("resampling_method") or "nearest") == "nearest"
    threshold = OVERSAMPLING_THRESHOLD["nearest" if nearest else "other"]
    best = 1.0
    for level in dataset.overviews(1):
        overview_width = round(vrt_width / level)
        factor = vrt_width / overview_width if overview_width else level
        if best < factor <= desired * threshold:
            best = factor
    return best
