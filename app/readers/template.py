"""One read template for terratiler's rio-tiler readers.

rio-tiler's readers answer five reads: ``tile``, ``part``, ``preview``, ``point`` and
``feature``. ``SizedReads`` writes each of them once, for every reader it is mixed into
(before the rio-tiler class: ``class SafeCOGReader(SizedReads, GTiffReader)``): the request
is checked (tile in its matrix, bbox and point on Earth, tile size) and sized (its output
pixels, against ``max_output_pixels``) before anything is read, then handed, as rio-tiler's
own read bound to its geometry, to the reader's one hook. A reader supplies, the way
rio-tiler's ``io/stac.py`` customises through ``_get_asset_info``:

- ``_read_layer(read, pixels, sized, **options)``: read what ``options`` ask for (bands,
  assets, an expression, a mask ...) by calling ``read(**kw)``, within the memory budget for
  ``pixels`` output pixels. ``sized``: ``read`` takes ``width``/``height``/``max_size``
  (part, preview, feature; not tiles nor points).
- ``_native_output_size(bbox, bounds_crs, dst_crs, options)``: the output size of a crop
  or feature asked for without any size (rio-tiler reads those at native resolution).
- ``_grid_aspect()``: height / width of the whole dataset or item (previews).
- ``explicit_grid``: whether ``part`` gives the read its output grid (the output CRS and,
  without a size, that native size), as several assets of different resolutions need to
  come out on one grid; False: rio-tiler's own defaults decide (one COG).

rio-tiler's ``Reader.tile`` and ``Reader.feature`` read through ``self.part``: for a COG
those reads come back through ``part`` here, and are checked again (they always pass).
"""

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, ClassVar

from morecantile import TileMatrixSet
from rasterio.crs import CRS
from rio_tiler.constants import WGS84_CRS
from rio_tiler.models import ImageData, PointData

from app.readers.layers import Layer
from app.readers.sizing import PREVIEW_MAX_SIZE, Bounds, bbox_aspect, tile_output_pixels
from app.request_checks import (
    check_bbox,
    check_output_pixels,
    check_point,
    check_tile,
    check_tile_size,
    shape_bounds,
)

SIZE_OPTIONS = ("width", "height", "max_size")


class SizedReads:
    """rio-tiler's five reads, each checked and sized once, then given to ``_read_layer``."""

    # Set by the reader classes (attrs fields, or rio-tiler's own).
    tms: TileMatrixSet
    crs: CRS | None
    max_pixels: int | None
    max_tile_size: int | None
    explicit_grid: ClassVar[bool] = False

    # --- the hooks ----------------------------------------------------------------------

    def _read_layer(
        self, read: Callable[..., Layer], pixels: int, sized: bool, **options: Any
    ) -> Layer:
        """Read ``options`` through ``read`` within the budget of ``pixels`` output pixels."""
        raise NotImplementedError

    def _native_output_size(
        self, bbox: Bounds, bounds_crs: CRS, dst_crs: CRS, options: Mapping[str, Any]
    ) -> tuple[int, int]:
        """Output width/height of an unsized read of ``bbox`` (in ``bounds_crs``)."""
        raise NotImplementedError

    def _grid_aspect(self) -> float:
        """Height / width of the whole dataset or item."""
        raise NotImplementedError

    def _whole_read_pixels(self, options: Mapping[str, Any], max_size: int) -> int | None:
        """Output pixels of a read of the whole dataset or item (``max_size``: the default)."""
        return check_output_pixels(
            options.get("width"),
            options.get("height"),
            options.get("max_size", max_size),
            self.max_pixels,
            self._grid_aspect,
        )

    # --- rio-tiler's reads --------------------------------------------------------------

    def tile(self, tile_x: int, tile_y: int, tile_z: int, **options: Any) -> ImageData:
        """Read a map tile (rio-tiler's ``tile``, checked and sized)."""
        check_tile(self.tms, tile_x, tile_y, tile_z)
        check_tile_size(options.get("tilesize"), self.max_tile_size)
        pixels = tile_output_pixels(
            self.tms, tile_z, options.get("tilesize"), options.get("buffer"), self.max_pixels
        )
        read = partial(super().tile, tile_x, tile_y, tile_z)
        return self._read_layer(read, pixels, sized=False, **options)

    def part(self, bbox: Bounds, **options: Any) -> ImageData:
        """Read a bbox (rio-tiler's ``part``). Without a size, at native resolution."""
        bounds_crs = options.get("bounds_crs") or WGS84_CRS
        check_bbox(bbox, bounds_crs)
        dst_crs = options.get("dst_crs") or bounds_crs  # rio-tiler's default
        if self.explicit_grid:
            options.update(bounds_crs=bounds_crs, dst_crs=dst_crs)
        width, height, max_size = (options.get(name) for name in SIZE_OPTIONS)
        if not (width or height or max_size):
            width, height = self._native_output_size(bbox, bounds_crs, dst_crs, options)
            if self.explicit_grid:
                options.update(width=width, height=height)
        aspect = bbox_aspect(bbox, bounds_crs, dst_crs)
        pixels = check_output_pixels(width, height, max_size, self.max_pixels, aspect)
        read = partial(super().part, bbox)
        return self._read_layer(read, pixels or 1, sized=True, **options)

    def preview(self, **options: Any) -> ImageData:
        """Read a decimated view of the whole dataset or item (rio-tiler's ``preview``)."""
        pixels = self._whole_read_pixels(options, PREVIEW_MAX_SIZE)
        read = super().preview
        return self._read_layer(read, pixels or 1, sized=True, **options)

    def point(self, lon: float, lat: float, **options: Any) -> PointData:
        """Read the values at a point (rio-tiler's ``point``)."""
        check_point(lon, lat, options.get("coord_crs") or WGS84_CRS)
        read = partial(super().point, lon, lat)
        return self._read_layer(read, 1, sized=False, **options)

    def feature(self, shape: dict, **options: Any) -> ImageData:
        """Read the pixels of a GeoJSON feature (rio-tiler's ``feature``).

        Without ``dst_crs`` the pixels are the source's own, in its CRS (a Sentinel-2
        scene's UTM zone), so that statistics of a lon/lat polygon are computed on the
        native grid, not on pixels resampled onto lon/lat (titiler's default). Without a
        size, the read is at native resolution over the feature's bounds: that is what is
        checked against the output limit.
        """
        shape_crs = options.get("shape_crs") or WGS84_CRS
        bounds = shape_bounds(shape, shape_crs)
        dst_crs = options["dst_crs"] = options.get("dst_crs") or self.crs or shape_crs
        width, height, max_size = (options.get(name) for name in SIZE_OPTIONS)
        if not (width or height or max_size):
            width, height = self._native_output_size(bounds, shape_crs, dst_crs, options)
        aspect = bbox_aspect(bounds, shape_crs, dst_crs)
        pixels = check_output_pixels(width, height, max_size, self.max_pixels, aspect)
        read = partial(super().feature, shape)
        return self._read_layer(read, pixels or 1, sized=True, **options)
