"""Writing a tile's output as a Cloud-Optimized GeoTIFF, atomically, locally or on ``s3://``.

The file is made in memory: the bands go into a staging GeoTIFF (``/vsimem/``), its
overviews are built there (``gdaladdo``'s levels, or powers of 2 down to
``overviewMinSize``, with ``resamplingAlgorithm``; GDAL's averaging skips nodata), and
GDAL's COG driver copies it with those overviews (``OVERVIEWS=FORCE_USE_EXISTING``):
internal square tiles, DEFLATE with a predictor (2 for integers, 3 for float32), the nodata
value and the band descriptions (the dates of a stack, else the output id). The bytes then
go through ``Storage.write``: a temporary beside the target renamed over it locally, one PUT
on an object store. A reader never sees half a COG; a tile run twice writes the same bytes.

``cogParameters`` are Sentinel Hub's (Batch Processing v2 ``BatchV2CogParameters``):
``overviewLevels``, ``overviewMinSize``, ``resamplingAlgorithm``, ``blockxsize``,
``blockysize``, ``usePredictor``. ``check_cog_parameters`` validates them before any work
(400 naming ``output.cogParameters.<key>``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.enums import Resampling
from rasterio.io import MemoryFile

from app.batch.storage import Storage
from app.errors import BadRequestError

from .spec import DATA_TYPES, GridTile, OutputRaster

__all__ = [
    "COG_PARAMETERS",
    "CogOptions",
    "check_cog_parameters",
    "cog_bytes",
    "cog_options",
    "write_cog",
]

#: Internal tile side (pixels) unless ``blockxsize`` / ``blockysize`` say otherwise.
DEFAULT_BLOCKSIZE = 512
#: Lossless, read by every GDAL; with a predictor the Sentinel-2 outputs shrink ~2x more.
COMPRESSION = "DEFLATE"
#: Sentinel Hub's overview resampling names (gdaladdo ``-r``) and its default.
RESAMPLINGS = (
    "nearest",
    "average",
    "gauss",
    "cubic",
    "cubicspline",
    "lanczos",
    "average_magphase",
    "mode",
)
DEFAULT_RESAMPLING = "average"
#: The keys of ``cogParameters``.
COG_PARAMETERS = (
    "overviewLevels",
    "overviewMinSize",
    "resamplingAlgorithm",
    "blockxsize",
    "blockysize",
    "usePredictor",
)
# Bounds of what is accepted (GDAL wants tile sides in multiples of 16).
_MIN_BLOCK, _MAX_BLOCK = 16, 4096
_MAX_LEVELS = 16
_MAX_FACTOR = 2**16
# Deterministic bytes: one thread, no side-car files.
_ENV = {"GDAL_NUM_THREADS": "1", "GDAL_PAM_ENABLED": "NO"}


@dataclass(frozen=True)
class CogOptions:
    """``cogParameters``, checked, with their defaults.

    Attributes:
        overview_levels: Explicit overview factors (increasing), or None for automatic.
        overview_min_size: Automatic levels go down to this side (default: the block side).
        resampling: Overview resampling (gdaladdo ``-r``).
        blocksize: Internal tile side in pixels.
        predictor: Whether to use a TIFF predictor (2 integers, 3 floats).

    """

    overview_levels: tuple[int, ...] | None = None
    overview_min_size: int | None = None
    resampling: str = DEFAULT_RESAMPLING
    blocksize: int = DEFAULT_BLOCKSIZE
    predictor: bool = True

    def levels(self, width: int, height: int) -> list[int]:
        """The overview factors of a raster of this size.

        Explicit levels are kept while the overview still has a pixel; automatic levels
        halve until the larger side is at most ``overview_min_size`` (gdaladdo's
        ``-minsize``; default the block side), none when the raster already is.
        """
        side = max(width, height)
        if self.overview_levels is not None:
            # A level of one pixel or less is no overview.
            return [factor for factor in self.overview_levels if factor < side]
        minimum = self.overview_min_size or self.blocksize
        levels: list[int] = []
        factor = 2
        while math.ceil(side / (factor // 2)) > minimum and factor <= _MAX_FACTOR:
            levels.append(factor)
            factor *= 2
        return levels


def _bad(key: str, message: str) -> BadRequestError:
    return BadRequestError(f"output.cogParameters.{key}: {message}")


def _integer(params: Mapping[str, Any], key: str, low: int, high: int) -> int | None:
    value = params.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(key, f"must be an integer, got {value!r}")
    if not low <= value <= high:
        raise _bad(key, f"must be between {low} and {high}, got {value}")
    return value


def _block(params: Mapping[str, Any], key: str) -> int | None:
    value = _integer(params, key, _MIN_BLOCK, _MAX_BLOCK)
    if value is not None and value % 16:
        raise _bad(key, f"must be a multiple of 16, got {value}")
    return value


def _levels(params: Mapping[str, Any]) -> tuple[int, ...] | None:
    key = "overviewLevels"
    value = params.get(key)
    if value is None:
        return None
    if not isinstance(value, list | tuple):
        raise _bad(key, f"must be a list of integers, got {value!r}")
    if len(value) > _MAX_LEVELS:
        raise _bad(key, f"at most {_MAX_LEVELS} levels, got {len(value)}")
    levels = []
    for level in value:
        if isinstance(level, bool) or not isinstance(level, int) or not 2 <= level <= _MAX_FACTOR:
            raise _bad(key, f"levels are integers from 2 to {_MAX_FACTOR}, got {level!r}")
        if levels and level <= levels[-1]:
            raise _bad(key, f"levels must increase, got {list(value)}")
        levels.append(level)
    return tuple(levels)


def check_cog_parameters(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate Sentinel Hub's ``cogParameters`` (call it before any work).

    Args:
        params: See ``cog_options``.

    Returns:
        The parameters with their defaults filled in, by Sentinel Hub's keys (what
        ``write_cog`` accepts too).

    Raises:
        BadRequestError: Naming ``output.cogParameters.<key>`` and what it accepts.

    """
    options = cog_options(params)
    return {
        "overviewLevels": None
        if options.overview_levels is None
        else list(options.overview_levels),
        "overviewMinSize": options.overview_min_size,
        "resamplingAlgorithm": options.resampling,
        "blockxsize": options.blocksize,
        "blockysize": options.blocksize,
        "usePredictor": options.predictor,
    }


def cog_options(params: Mapping[str, Any] | None) -> CogOptions:
    """Sentinel Hub's ``cogParameters`` as checked options.

    Args:
        params: ``overviewLevels`` (increasing integers >= 2), ``overviewMinSize``
            (pixels), ``resamplingAlgorithm`` (one of ``RESAMPLINGS``), ``blockxsize`` and
            ``blockysize`` (equal: the COG driver's tiles are square; multiples of 16 from
            16 to 4096), ``usePredictor`` (boolean); None or {} for the defaults.

    Returns:
        The options, defaults filled in.

    Raises:
        BadRequestError: Naming ``output.cogParameters.<key>`` and what it accepts.

    """
    if params is None:
        return CogOptions()
    if not isinstance(params, Mapping):
        raise BadRequestError(f"output.cogParameters: must be an object, got {params!r}")
    for key in params:
        if key not in COG_PARAMETERS:
            raise _bad(str(key), f"unknown parameter; one of {', '.join(COG_PARAMETERS)}")
    levels = _levels(params)
    min_size = _integer(params, "overviewMinSize", 1, 2**20)
    resampling = params.get("resamplingAlgorithm", DEFAULT_RESAMPLING)
    if not isinstance(resampling, str) or resampling.lower() not in RESAMPLINGS:
        raise _bad("resamplingAlgorithm", f"one of {', '.join(RESAMPLINGS)}, got {resampling!r}")
    x, y = _block(params, "blockxsize"), _block(params, "blockysize")
    if x is not None and y is not None and x != y:
        raise _bad("blockysize", f"must equal blockxsize ({x}): COG tiles are square, got {y}")
    predictor = params.get("usePredictor", True)
    if not isinstance(predictor, bool):
        raise _bad("usePredictor", f"must be true or false, got {predictor!r}")
    return CogOptions(
        overview_levels=levels,
        overview_min_size=min_size,
        resampling=resampling.lower(),
        blocksize=x or y or DEFAULT_BLOCKSIZE,
        predictor=predictor,
    )


def cog_bytes(
    raster: OutputRaster,
    tile: GridTile,
    data_type: str,
    cog_parameters: Mapping[str, Any] | CogOptions | None = None,
) -> bytes:
    """The COG of one output of one tile, as bytes (see ``write_cog``)."""
    if data_type not in DATA_TYPES:
        raise ValueError(f"data type '{data_type}' is not one of {', '.join(DATA_TYPES)}")
    options = (
        cog_parameters if isinstance(cog_parameters, CogOptions) else cog_options(cog_parameters)
    )
    data = np.asarray(raster.data)
    if data.ndim == 2:
        data = data[None]
    count, height, width = data.shape
    if (height, width) != (tile.height, tile.width) or count < 1:
        raise ValueError(
            f"raster of shape {data.shape} does not fit tile '{tile.name}'"
            f" ({tile.height} x {tile.width})"
        )
    data = data.astype(data_type, copy=False)
    floating = data_type == "float32"
    nodata = raster.nodata
    if nodata is None:
        nodata = float("nan") if floating else 0
    descriptions = list(raster.descriptions) + [""] * (count - len(raster.descriptions))
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": data_type,
        "crs": tile.crs,
        "transform": tile.transform,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": options.blocksize,
        "blockysize": options.blocksize,
        "interleave": "band",
    }
    predictor = (3 if floating else 2) if options.predictor else 1
    levels = options.levels(width, height)
    with rasterio.Env(**_ENV), MemoryFile() as staging, MemoryFile() as result:
        with staging.open(**profile) as src:
            src.write(data)
            for band, description in enumerate(descriptions[:count], start=1):
                src.set_band_description(band, description)
            if levels:
                src.build_overviews(levels, Resampling[options.resampling])
        with staging.open() as src:
            rasterio.shutil.copy(
                src,
                result.name,
                driver="COG",
                BLOCKSIZE=options.blocksize,
                COMPRESS=COMPRESSION,
                PREDICTOR=predictor,
                OVERVIEWS="FORCE_USE_EXISTING" if levels else "NONE",
                NUM_THREADS=1,
            )
        return result.read()


def write_cog(
    storage: Storage,
    url: str,
    raster: OutputRaster,
    tile: GridTile,
    data_type: str,
    cog_parameters: Mapping[str, Any] | CogOptions | None = None,
) -> None:
    """Write one output of one tile as a COG, atomically.

    Args:
        storage: Where (``Storage.for_url``: a local folder or ``s3://``).
        url: The file's URL or path.
        raster: The output's bands (``process_tile``), in ``data_type``.
        tile: The tile (CRS, transform, size).
        data_type: One of ``spec.DATA_TYPES``.
        cog_parameters: Sentinel Hub's ``cogParameters`` (or checked ``CogOptions``).

    Raises:
        BadRequestError: Invalid ``cogParameters`` (``output.cogParameters.<key>``).
        ValueError: The raster does not fit the tile, or an unknown data type.

    """
    storage.write(url, cog_bytes(raster, tile, data_type, cog_parameters))
