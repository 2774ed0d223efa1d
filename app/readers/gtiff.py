"""rio-tiler's ``Reader`` over a pooled GeoTIFF dataset, its reads checked and named.

Every reader of the service reads its pixels here, one dataset at a time: the COG reader is
this class, and the Sentinel-2 reader reads each asset with it.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import attr
from rasterio.errors import RasterioIOError
from rasterio.warp import transform_bounds
from rio_tiler.io import Reader
from rio_tiler.models import ImageData, PointData
from rio_tiler.utils import get_vrt_transform

from app.datasets import dataset_pool
from app.readers.warp_scale import warp_scale
from app.request_checks import check_nodata
from app.security import redact_source, shown_source


@attr.s
class GTiffReader(Reader):
    """rio-tiler's Reader over a dataset lent by the process's ``DatasetPool``.

    Sources are opened with the GeoTIFF driver only: a remote "COG" that is really a VRT,
    WMS or other indirection document cannot be sniffed before opening; restricting the
    driver means GDAL never interprets it. The dataset goes back to the pool when the
    reader closes (closed instead when the ``with`` block raised).
    """

    # Who the dataset is, for "read failed" messages: the item's asset key, and the
    # allow-list whose folders are hidden from them (no absolute paths of this machine).
    asset: str | None = attr.ib(default=None, kw_only=True)
    allowed_sources: Sequence[str] = attr.ib(factory=tuple, kw_only=True)
    # max_output_pixels: also the most source pixels a padded tile may warp (_padding).
    max_pixels: int | None = attr.ib(default=None, kw_only=True)

    def __attrs_post_init__(self):
        """Borrow the dataset, then let rio-tiler read its metadata."""
        if not self.dataset:
            with self._read_errors():
                self.dataset = self._ctx_stack.enter_context(dataset_pool().open(self.input))
        super().__attrs_post_init__()

    @contextmanager
    def _read_errors(self) -> Iterator[None]:
        """GDAL's open/read failures as a 502 naming the asset, its path made relative."""
        try:
            yield
        except RasterioIOError as error:
            shown = shown_source(self.input, self.allowed_sources)
            what = f"asset '{self.asset}' ({shown})" if self.asset else f"'{shown}'"
            reason = redact_source(str(error), self.input, self.allowed_sources)
            # Still a RasterioIOError (502, "unreadable" to mosaics), with a safe message.
            raise RasterioIOError(f"read failed: {what}: {reason}") from None

    def __exit__(self, exc_type, exc_value, traceback):
        """Close, telling the pool whether the reads failed."""
        self._ctx_stack.__exit__(exc_type, exc_value, traceback)

    # rio-tiler reads a dataset's pixels in three methods: tiles and features go through
    # part; previews and statistics (per asset too) through read. Each checks the options
    # that must fit the data type, and names the dataset in GDAL's failures.
    def part(self, bbox: Sequence[float], *args: Any, **kwargs: Any) -> ImageData:
        """Read a bbox (rio-tiler's ``Reader.part``)."""
        check_nodata(kwargs.get("nodata"), self.dataset.dtypes[0])
        if kwargs.get("padding"):
            kwargs["padding"] = self._padding(bbox, kwargs)
        scale = warp_scale(self.dataset, bbox, kwargs)
        if scale:
            # One kernel size for every tile (app.readers.warp_scale).
            kwargs["vrt_options"] = {**scale, **(kwargs.get("vrt_options") or {})}
        with self._read_errors():
            return super().part(bbox, *args, **kwargs)

    def read(self, *args: Any, **kwargs: Any) -> ImageData:
        """Read the whole dataset, maybe decimated (rio-tiler's ``Reader.read``)."""
        check_nodata(kwargs.get("nodata"), self.dataset.dtypes[0])
        with self._read_errors():
            return super().read(*args, **kwargs)

    def point(self, *args: Any, **kwargs: Any) -> PointData:
        """Read a point (rio-tiler's ``Reader.point``)."""
        check_nodata(kwargs.get("nodata"), self.dataset.dtypes[0])
        with self._read_errors():
            return super().point(*args, **kwargs)

    def _padding(self, bbox: Sequence[float], kwargs: dict[str, Any]) -> int:
        """``padding``, or 0 where honouring it would warp over ``max_pixels`` source pixels.

        rio-tiler reads a padded, reprojected tile through a WarpedVRT window at the
        dataset's own resolution, so GDAL cannot use overviews: a padded zoom-0 tile of a
        60 m band took 25-67 s (unpadded: 0.2 s). Tiles that far from the data's
        resolution show no edge effect to pad against, so they are read without it.
        """
        padding = int(kwargs["padding"])
        dst_crs = kwargs.get("dst_crs") or self.dataset.crs
        if self.max_pixels is None:
            return padding
        if dst_crs == self.dataset.crs:
            # No VRT: the padded window is read with overviews, but into one array of the
            # padded output size: padding=20000 on a 256 px tile was a 1.6 G pixel array.
            width, height = kwargs.get("width"), kwargs.get("height")
            if width and height:
                padded = (int(width) + 2 * padding) * (int(height) + 2 * padding)
                return padding if padded <= self.max_pixels else 0
            return padding
        bounds = bbox
        bounds_crs = kwargs.get("bounds_crs")
        if bounds_crs and bounds_crs != dst_crs:
            bounds = transform_bounds(bounds_crs, dst_crs, *bbox, densify_pts=21)
        _, width, height = get_vrt_transform(
            self.dataset, bounds, kwargs.get("height"), kwargs.get("width"), dst_crs=dst_crs
        )
        return padding if (width + 2 * padding) * (height + 2 * padding) <= self.max_pixels else 0
