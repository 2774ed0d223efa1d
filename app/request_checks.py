"""Checks of what a read request asks for, before GDAL sees it.

Every check raises ``BadRequestError`` (400) or ``TooLargeError`` (413) with a message
that names the parameter or the limit: user input must never reach GDAL, PROJ or numpy
in a shape that makes them fail with a server error (a zero-area bbox cannot invert a
geotransform, NaN is no uint16 nodata, ``max_size=0`` means "full resolution" to
rio-tiler).
"""

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import morecantile
import numpy as np
from rasterio.crs import CRS
from shapely.errors import ShapelyError
from shapely.geometry import shape as to_shape

from app.errors import BadRequestError, NotFoundError, TooLargeError
from app.stats.geometry import non_finite

Bounds = tuple[float, float, float, float]

POLYGON_TYPES = ("Polygon", "MultiPolygon")


def check_output_pixels(
    width: int | None,
    height: int | None,
    max_size: int | None,
    limit: int | None,
    aspect: Callable[[], float] | None = None,
) -> int | None:
    """Refuse a non-positive size (400) or an output over ``limit`` pixels (413).

    Args:
        width: Requested output width, if any.
        height: Requested output height, if any.
        max_size: Requested longest side, if any.
        limit: The ``max_output_pixels`` setting (None: no limit).
        aspect: The output's height / width, asked for only when one side is given
            (rio-tiler derives the other from it); None: square.

    Returns:
        The output's pixels (at most, for ``max_size`` alone); None without any size.

    """
    for name, value in (("width", width), ("height", height), ("max_size", max_size)):
        if value is not None and value <= 0:
            raise BadRequestError(f"{name}: must be a positive number of pixels, not {value}")
    if bool(width) != bool(height):
        ratio = aspect() if aspect is not None else 1.0
        width, height = width or height / ratio, height or width * ratio
    if width and height:
        pixels = math.ceil(width * height)
    elif max_size:
        pixels = max_size * max_size
    else:
        return None
    if limit is not None and pixels > limit:
        raise TooLargeError(
            f"output of {pixels} pixels is over the limit max_output_pixels={limit}; "
            "ask for a smaller area or size"
        )
    return pixels


def tile_pixels(tilesize: int, buffer: float | None, limit: int | None) -> int:
    """Pixels of a tile of ``tilesize`` with ``buffer`` on each side, at most ``limit``.

    rio-tiler reads ``tilesize + 2 * buffer`` a side: the buffer is output pixels too.
    """
    if buffer is not None and not (math.isfinite(buffer) and buffer >= 0):
        raise BadRequestError(f"buffer: must be a finite number of pixels >= 0, not {buffer}")
    side = math.ceil(tilesize + 2 * (buffer or 0))
    pixels = check_output_pixels(side, side, None, limit)
    assert pixels is not None
    return pixels


def check_tile_size(tilesize: int | None, limit: int | None) -> None:
    """Refuse a non-positive tile size (400) or one over ``limit`` pixels a side (413)."""
    if tilesize is not None and tilesize <= 0:
        raise BadRequestError(f"tilesize: must be a positive number of pixels, not {tilesize}")
    if limit is not None and tilesize and tilesize > limit:
        raise TooLargeError(f"tile size {tilesize} is over the limit max_tile_size={limit}")


#: The largest coordinate of a projected CRS: 250 times the Earth's circumference in metres
#: (or feet). GDAL's transform of a bbox takes 0.8 s at 1e15 and never returns at 1e30.
MAX_PROJECTED_COORDINATE = 1e10


def _check_geographic(crs: CRS | None, x: float, y: float, what: str) -> None:
    if (crs is None or crs.is_geographic) and not (-180 <= x <= 180 and -90 <= y <= 90):
        raise BadRequestError(f"{what}: longitude {x}, latitude {y} is not a place on Earth")
    limit = MAX_PROJECTED_COORDINATE
    if not (abs(x) <= limit and abs(y) <= limit):
        raise BadRequestError(
            f"{what}: coordinate {x:g},{y:g} is beyond the limit of {limit:g} in its CRS"
        )


def check_bbox(bbox: Sequence[float], crs: CRS | None, what: str = "bbox") -> Bounds:
    """A bbox with finite coordinates and a positive area, on Earth in a geographic CRS.

    Args:
        bbox: ``(minx, miny, maxx, maxy)``.
        crs: The bbox's CRS (None: lon/lat).
        what: The parameter named in the error message.

    Returns:
        The bbox as a tuple of four floats.

    """
    if len(bbox) != 4 or not all(math.isfinite(v) for v in bbox):
        raise BadRequestError(f"{what}: needs four finite numbers, not {list(bbox)}")
    minx, miny, maxx, maxy = (float(v) for v in bbox)
    if minx >= maxx or miny >= maxy:
        raise BadRequestError(
            f"{what}: minx < maxx and miny < maxy are needed, not {minx},{miny},{maxx},{maxy}"
        )
    _check_geographic(crs, minx, miny, what)
    _check_geographic(crs, maxx, maxy, what)
    return minx, miny, maxx, maxy


def check_point(lon: float, lat: float, crs: CRS | None) -> None:
    """A point with finite coordinates; within -180..180, -90..90 in a geographic CRS."""
    if not (math.isfinite(lon) and math.isfinite(lat)):
        raise BadRequestError(f"point: needs finite coordinates, not {lon},{lat}")
    _check_geographic(crs, lon, lat, "point")


def shape_bounds(shape: dict[str, Any], crs: CRS | None) -> Bounds:
    """The bounds of a GeoJSON Feature or geometry that rio-tiler can read (Polygons).

    Args:
        shape: A GeoJSON Feature or Polygon / MultiPolygon geometry.
        crs: The shape's CRS (None: lon/lat).

    Returns:
        Its bounds, checked like a bbox (and on Earth, in a geographic CRS).

    """
    geometry = shape.get("geometry") if shape.get("type") == "Feature" else shape
    if not isinstance(geometry, dict) or geometry.get("type") not in POLYGON_TYPES:
        kind = geometry.get("type") if isinstance(geometry, dict) else geometry
        raise BadRequestError(f"feature: needs a Polygon or MultiPolygon geometry, not {kind}")
    try:
        # shapely, not rasterio.features.bounds: that one crashes the process on
        # coordinates that are not numbers.
        parsed = to_shape(geometry)
    except (ShapelyError, ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
        raise BadRequestError(f"feature: invalid coordinates ({exc})") from exc
    # Bounds skip NaN vertices; GDAL's rasterizer does not.
    if non_finite([parsed])[0]:
        raise BadRequestError("feature: coordinates must be finite numbers")
    return check_bbox(parsed.bounds, crs, "feature")


def check_nodata(nodata: float | None, dtype: str) -> None:
    """Refuse a ``nodata`` value that the data type cannot hold (NaN for uint16 ...)."""
    if nodata is None:
        return
    kind = np.dtype(dtype).kind
    if kind in "iu":
        info = np.iinfo(dtype)
        if not (math.isfinite(nodata) and nodata == int(nodata) and info.min <= nodata <= info.max):
            raise BadRequestError(
                f"nodata: {nodata} is not a {dtype} value ({info.min}..{info.max})"
            )


def check_indexes(indexes: int | Sequence[int] | None, count: int) -> None:
    """Refuse band indexes outside ``1..count``."""
    if indexes is None:
        return
    for index in [indexes] if isinstance(indexes, int) else indexes:
        if not 1 <= index <= count:
            raise BadRequestError(f"bidx: band {index} out of range; this COG has {count} bands")


def check_histogram(
    bins: int | Sequence[float] | None, value_range: Sequence[float] | None, max_bins: int
) -> None:
    """Refuse histogram options numpy cannot use, or more than ``max_bins`` bins.

    Args:
        bins: A number of bins, or the bin edges.
        value_range: ``(min, max)`` of the bins, if given.
        max_bins: The ``max_histogram_bins`` setting.

    """
    if isinstance(bins, int):
        if not 1 <= bins <= max_bins:
            raise BadRequestError(
                f"histogram_bins: {bins} bins; 1..{max_bins} (the limit max_histogram_bins)"
            )
    elif bins is not None:
        if len(bins) - 1 > max_bins:
            raise BadRequestError(
                f"histogram_bins: {len(bins) - 1} bins is over the limit "
                f"max_histogram_bins={max_bins}"
            )
        if not all(math.isfinite(v) for v in bins) or any(
            b > a for a, b in zip(bins[1:], bins, strict=False)
        ):
            raise BadRequestError("histogram_bins: bin edges must be finite and increasing")
    if value_range is not None:
        low, high = value_range
        if not (math.isfinite(low) and math.isfinite(high) and low <= high):
            raise BadRequestError(f"histogram_range: needs finite min <= max, not {low},{high}")


def check_tile(tms: morecantile.TileMatrixSet, x: int, y: int, z: int) -> None:
    """A 404 for a tile its tile matrix does not have (row 72 of a 16-row level).

    Zooms past the set's last level stay allowed where morecantile can extend it (as
    rio-tiler does), not for sets with variable matrix widths.
    """
    if not tms.is_valid(morecantile.Tile(x, y, z), strict=False):
        raise NotFoundError(f"tile {z}/{x}/{y} is not in {tms.id}")


def check_percentiles(percentiles: Sequence[float] | None) -> None:
    """Refuse percentiles outside 0..100."""
    for value in percentiles or ():
        if not (math.isfinite(value) and 0 <= value <= 100):
            raise BadRequestError(f"p: percentiles are 0..100, not {value}")


#: Query parameters of older titiler versions (and their tutorials) -> today's parameter and
#: how to write it. An unknown parameter is otherwise ignored: ``color_map=viridis`` gave a
#: grey tile with no hint why.
RENAMED_PARAMETERS: dict[str, tuple[str, str]] = {
    # titiler 0.1 (``color_map``), 0.2 (``colormap`` became ``colormap_name``; ``colormap``
    # is a custom colormap today, so it cannot be refused).
    "color_map": ("colormap_name", "colormap_name=viridis"),
    # titiler 0.5: the ``resampling`` alias replaced the attribute's name.
    "resampling_method": ("resampling", "resampling=bilinear"),
    "reproject_method": ("reproject", "reproject=bilinear"),
    # titiler 0.14: ``-`` became ``_``.
    "coord-crs": ("coord_crs", "coord_crs=EPSG:4326"),
    "dst-crs": ("dst_crs", "dst_crs=EPSG:3857"),
    # titiler 2.0: no ``tile_scale`` (tiles of 512 px: ``tilesize=512``) and no per-asset
    # band options (band math over asset names: ``expression=(B08-B04)/(B08+B04)``).
    "tile_scale": ("tilesize", "tilesize=512"),
    "asset_expression": ("expression", "expression=(B08-B04)/(B08+B04)"),
    "asset_bidx": ("assets", "assets=B04&assets=B03&assets=B02"),
    "asset_indexes": ("assets", "assets=B04&assets=B03&assets=B02"),
}


def check_renamed_parameters(names: Iterable[str]) -> None:
    """Refuse a query parameter titiler has renamed, naming the current one (400).

    Args:
        names: The request's query parameter names.

    Raises:
        BadRequestError: ``names`` holds a key of ``RENAMED_PARAMETERS``.

    """
    for name in names:
        renamed = RENAMED_PARAMETERS.get(name)
        if renamed is not None:
            current, example = renamed
            raise BadRequestError(
                f"{name}: not a parameter (an older titiler name); use {current}, e.g. {example}"
            )
