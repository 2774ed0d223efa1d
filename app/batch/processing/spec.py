"""Plain data the batch-processing parts exchange: tiles, output recipes, tile results.

Only dataclasses here (picklable: they cross to Dask workers), so that the grids, the tile
engine, the writers and the job kind agree on one shape without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from affine import Affine

__all__ = [
    "COMPOSITES",
    "DATA_TYPES",
    "GridTile",
    "OutputRaster",
    "OutputSpec",
    "TileRecipe",
]

#: How the scenes over a pixel become its value.
COMPOSITES = ("first", "median", "mean", "max", "min", "stack")
#: Output data types (Sentinel Hub's sampleType names: UINT8, UINT16, FLOAT32).
DATA_TYPES = ("uint8", "uint16", "float32")


@dataclass(frozen=True)
class GridTile:
    """One tile of a tiling grid (or of the user's own tiles), buffer included.

    Attributes:
        grid: The grid id ("0".."3"), or "custom" for the user's own tiles.
        name: Deterministic tile name, stable across runs (file and item names use it).
        crs: The tile's CRS ("EPSG:32633"; "EPSG:4326" for grid 3).
        transform: Affine of the tile's upper-left pixel corner (buffer included).
        width: Pixels across (buffer included).
        height: Pixels down (buffer included).
        resolution: Pixel size in CRS units.

    """

    grid: str
    name: str
    crs: str
    transform: Affine
    width: int
    height: int
    resolution: float

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) in the tile's CRS."""
        t = self.transform
        return (t.c, t.f + t.e * self.height, t.c + t.a * self.width, t.f)


@dataclass(frozen=True)
class OutputSpec:
    """One output of a processing request, as the engine computes it.

    Attributes:
        id: The output id (file ``<outputId>.tif``, Zarr array name).
        expression: Band math over asset names (a preset already expanded), one band.
        data_type: One of ``DATA_TYPES``.
        nodata: The output's nodata value (written where no scene gives a value).
        rescale: (min, max) mapped linearly onto the data type's range, or None.
        composite: One of ``COMPOSITES``.
        mask: "scl-clear" (drop cloud, shadow, cirrus, snow... pixels by the SCL) or None.
        evalscript: A Sentinel Hub evalscript computing the output (its setup()'s output
            ``id``); ``expression`` is empty then.
        bands: The output's band count (an evalscript output may have several).

    """

    id: str
    expression: str
    data_type: str = "float32"
    nodata: float | None = None
    rescale: tuple[float, float] | None = None
    composite: str = "first"
    mask: str | None = None
    evalscript: str | None = None
    bands: int = 1


@dataclass(frozen=True)
class TileRecipe:
    """What every tile of a job computes.

    Attributes:
        outputs: The outputs (all computed from one read of each scene's assets).
        resampling: rasterio resampling name for assets onto the tile grid ("nearest").
        order: mosaicking order of the scenes: mostRecent | leastRecent | leastCC.

    """

    outputs: tuple[OutputSpec, ...]
    resampling: str = "nearest"
    order: str = "mostRecent"


@dataclass
class OutputRaster:
    """One output of one tile: the bands, ready to write.

    Attributes:
        data: (bands, height, width) in the output's data type, nodata where empty.
        nodata: The nodata value written.
        descriptions: One per band (the date for ``stack``, else the output id).

    """

    data: np.ndarray
    nodata: float | None
    descriptions: list[str] = field(default_factory=list)
