"""rio-tiler readers that know Sentinel-2 and never read outside the allow-list.

One job a module:

- ``gtiff``: ``GTiffReader``, rio-tiler's ``Reader`` over a dataset lent by the process's
  pool (``app.datasets``), GeoTIFF driver only; every pixel the service serves is read here.
- ``template``: ``SizedReads``, rio-tiler's five reads (tile, part, preview, point,
  feature) written once: checked, sized, then handed to the reader's one hook.
- ``cog``: ``SafeCOGReader``, one COG with ``b1``-style band math by ``app.expressions``.
- ``stac``: ``S2STACReader``, a Sentinel-2 STAC item: assets by any name, band math over
  asset names, reflectance from ``raster:bands``, SCL cloud masks.
- ``sizing``: output pixels, native sizes and bytes per sample, shared by the readers and
  the mosaics.
- ``derived``: what rio-tiler derives from an item (grid, zooms), kept per item object.
- ``layers``: bands of a read by name, and a read's bands replaced.
- ``warp_scale``: one warp kernel size (GDAL's ``XSCALE``/``YSCALE``) for every tile of a
  kernel resampling (bilinear, cubic ...), so that neighbouring tiles meet without a step.

rio-tiler's tile path is given a cached ``calculate_default_transform`` at startup
(``app.reprojection.install``, called by ``create_app``), not here.
"""

from app.readers.cog import SafeCOGReader
from app.readers.gtiff import GTiffReader
from app.readers.layers import Layer
from app.readers.sizing import (
    PREVIEW_MAX_SIZE,
    STATISTICS_MAX_SIZE,
    tile_output_pixels,
)
from app.readers.stac import ReadPlan, S2STACReader

__all__ = [
    "PREVIEW_MAX_SIZE",
    "STATISTICS_MAX_SIZE",
    "GTiffReader",
    "Layer",
    "ReadPlan",
    "S2STACReader",
    "SafeCOGReader",
    "tile_output_pixels",
]
