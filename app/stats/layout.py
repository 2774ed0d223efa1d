"""The pixels of a group of geometries on one grid: what is read and how it is summed."""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from app.stats.coverage import Coverage
from app.stats.grid import PixelGrid
from app.stats.reading import Cells


@dataclass
class Layout:
    """The pixels of a group of geometries on one grid, concatenated geometry by geometry.

    ``cells`` are the distinct cells of all geometries (what is read); ``index`` points
    every geometry pixel at its cell, ``owner`` says which geometry (0..n-1) it belongs to
    (non-decreasing) and ``weights`` holds its weight.
    """

    cells: Cells
    index: np.ndarray
    owner: np.ndarray
    weights: np.ndarray
    count: int

    @classmethod
    def build(cls, grid: PixelGrid, coverages: Sequence[Coverage], weighted: bool) -> "Layout":
        """Lay out the pixels of geometries (their coverages, in order) on ``grid``.

        Args:
            grid: The grid of the coverages.
            coverages: One per geometry, each with at least one pixel.
            weighted: Keep the coverage weights (``exact``), else weigh every pixel 1.

        Returns:
            The layout.

        """
        rows = np.concatenate([c.rows for c in coverages])
        cols = np.concatenate([c.cols for c in coverages])
        row0, col0 = rows.min(), cols.min()
        width = int(cols.max() - col0 + 1)
        keys = (rows - row0) * width + (cols - col0)
        cells, index = np.unique(keys, return_inverse=True)
        owner = np.repeat(np.arange(len(coverages)), [len(c) for c in coverages])
        weights = np.concatenate([c.weights for c in coverages]) if weighted else np.ones(len(keys))
        return cls(
            cells=Cells(grid, cells // width + row0, cells % width + col0),
            index=index.ravel(),
            owner=owner,
            weights=weights,
            count=len(coverages),
        )
