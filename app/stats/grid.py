"""The pixel grid statistics are computed on: a scene's native UTM grid, or one at resx/resy.

A ``PixelGrid`` is an infinite grid of ``resx`` x ``resy`` pixels in one CRS, anchored so that
a scene's pixel corners fall on it. Pixel ``(row, col)`` spans
``x in [x0 + col * resx, x0 + (col + 1) * resx]`` and
``y in [y0 - (row + 1) * resy, y0 - row * resy]``. Rows and columns are global integers (they
may be negative), so windows of different geometries and different scenes of one UTM zone
share one index space and can be mosaicked without resampling.
"""

import math
from dataclasses import dataclass

from affine import Affine


@dataclass(frozen=True)
class PixelGrid:
    """A north-up pixel grid: CRS, pixel size and the anchor its pixel corners align to.

    Attributes:
        crs: The CRS as the catalog names it (``EPSG:32633``).
        resx: Pixel width in CRS units.
        resy: Pixel height in CRS units (positive).
        x0: Easting of a pixel corner, reduced modulo ``resx`` (so equal grids compare equal).
        y0: Northing of a pixel corner, reduced modulo ``resy``.

    """

    crs: str
    resx: float
    resy: float
    x0: float
    y0: float

    @classmethod
    def aligned(cls, crs: str, resx: float, resy: float, x: float, y: float) -> "PixelGrid":
        """Build the grid of pixel size (resx, resy) with a pixel corner at (x, y).

        Args:
            crs: The CRS name.
            resx: Pixel width.
            resy: Pixel height (positive).
            x: Easting of any pixel corner (e.g. a scene's upper-left corner).
            y: Northing of the same corner.

        Returns:
            The grid, its anchor reduced so that grids of scenes on one pixel lattice
            (Sentinel-2 tiles of one UTM zone) compare equal.

        """
        # Rounded to a micrometre: tile origins given as floats must not make two grids differ.
        x0 = round(math.fmod(x, resx), 6) % resx
        y0 = round(math.fmod(y, resy), 6) % resy
        return cls(crs=crs, resx=float(resx), resy=float(resy), x0=x0, y0=y0)

    def window(self, bounds: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
        """Return the pixels covering ``bounds`` (minx, miny, maxx, maxy) in this grid's CRS.

        Returns:
            (row_off, col_off, rows, cols), at least one pixel each way.

        """
        minx, miny, maxx, maxy = bounds
        col0 = math.floor((minx - self.x0) / self.resx)
        col1 = math.ceil((maxx - self.x0) / self.resx)
        row0 = math.floor((self.y0 - maxy) / self.resy)
        row1 = math.ceil((self.y0 - miny) / self.resy)
        return row0, col0, max(row1 - row0, 1), max(col1 - col0, 1)

    def transform(self, row_off: int = 0, col_off: int = 0) -> Affine:
        """Return the transform of the window whose upper-left pixel is (row_off, col_off)."""
        return Affine(
            self.resx,
            0.0,
            self.x0 + col_off * self.resx,
            0.0,
            -self.resy,
            self.y0 - row_off * self.resy,
        )
