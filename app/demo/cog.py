"""Writing Cloud-Optimized GeoTIFFs and the JPEG thumbnail, byte for byte reproducibly."""

import math
import warnings
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning

from app.demo.grid import EPSG

BLOCKSIZE = 512
# No threads and no side-car files: the same arrays always give the same bytes.
_ENV = {"GDAL_NUM_THREADS": "1", "GDAL_PAM_ENABLED": "NO"}


def overview_count(side: int) -> int:
    """Count overview levels: halve down to 256 px or less, at least one level.

    Small demo rasters are smaller than one 512 px tile; they still get one level so that
    readers exercise their overview code paths on them.

    Args:
        side: the larger dimension of the raster in pixels.

    Returns:
        The number of overview levels (0 for a raster of one pixel).

    """
    if side < 2:
        return 0
    return max(1, math.ceil(math.log2(side / 256))) if side > 256 else 1


def write_cog(
    path: Path,
    data: np.ndarray,
    transform: Affine,
    nodata: float | None = 0,
    resampling: str = "average",
    epsg: int = EPSG,
) -> None:
    """Write a COG: 512 px tiles, DEFLATE with horizontal predictor, internal overviews.

    Args:
        path: destination file.
        data: (rows, cols) or (bands, rows, cols) array.
        transform: the affine transform of the array.
        nodata: the nodata value.
        resampling: overview resampling (``average`` for measurements, ``nearest`` for
            classes).
        epsg: the CRS of ``transform``.

    """
    if data.ndim == 2:
        data = data[None]
    count, rows, cols = data.shape
    profile = {
        "driver": "COG",
        "width": cols,
        "height": rows,
        "count": count,
        "dtype": data.dtype.name,
        "crs": f"EPSG:{epsg}",
        "transform": transform,
        "nodata": nodata,
        "BLOCKSIZE": BLOCKSIZE,
        "COMPRESS": "DEFLATE",
        "PREDICTOR": 2,
        "OVERVIEWS": "AUTO",
        "OVERVIEW_COUNT": overview_count(max(rows, cols)),
        "RESAMPLING": resampling.upper(),
    }
    with rasterio.Env(**_ENV), rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if count == 3:
            dst.colorinterp = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)


def write_thumbnail(path: Path, rgb: np.ndarray, max_side: int = 256) -> None:
    """Write a small JPEG preview of a (3, rows, cols) uint8 true-colour array.

    Args:
        path: destination ``.jpg`` file.
        rgb: the true-colour image.
        max_side: the thumbnail's larger side at most, in pixels.

    """
    _, rows, cols = rgb.shape
    factor = max(1, math.ceil(max(rows, cols) / max_side))
    rows_t, cols_t = rows // factor, cols // factor
    blocks = rgb[:, : rows_t * factor, : cols_t * factor].reshape(3, rows_t, factor, cols_t, factor)
    small = np.rint(blocks.mean(axis=(2, 4))).astype(np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with (
            rasterio.Env(**_ENV),
            rasterio.open(
                path,
                "w",
                driver="JPEG",
                width=cols_t,
                height=rows_t,
                count=3,
                dtype="uint8",
                QUALITY=85,
            ) as dst,
        ):
            dst.write(small)
