"""Which pixels of a grid a polygon covers, and how much: the three pixel rules.

- ``exact``: the fraction of each pixel's area inside the polygon, computed exactly (up to
  floating point) and weighted like exactextract does. Pixels with a fraction > 0 are the
  ones the polygon touches.
- ``center``: pixels whose centre lies inside the polygon, with weight 1 — GDAL's
  rasterization rule, the same pixels as ``rasterio.features.geometry_mask``.
- ``all_touched``: every pixel the polygon touches at all, with weight 1 — GDAL's
  ``all_touched`` rasterization, the same pixels as rasterstats with ``all_touched=True``.

The exact fractions come from signed-area accumulation (the technique of anti-aliasing
polygon rasterizers): every polygon edge is cut where it crosses pixel rows and columns;
each piece adds, to the pixel it lies in, the area between itself and that pixel's lower
edge, and to every pixel below it in its column, its full width. A cumulative sum down each
column turns these into the area inside the polygon, holes and multipolygons included
(edges of holes run the other way and subtract). The cost is proportional to the number of
pixels the outlines cross plus the windows' size, with no per-pixel geometry operation, and
many geometries are computed in one vectorized pass, each in its own window.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import shapely
from rasterio.features import rasterize

from app.stats.grid import PixelGrid

PixelRule = Literal["exact", "center", "all_touched"]

# Fractions below this are round-off of the accumulation (sums of pixel-sized numbers carry
# errors of ~1e-13), not area: a real sliver this thin would be 1e-7 m^2 of a 10 m pixel.
_ROUNDOFF = 1e-9
# Window pixels computed in one vectorized pass (memory: a few arrays of this many floats).
_BATCH_PIXELS = 4_000_000


@dataclass(frozen=True)
class Coverage:
    """The pixels a geometry covers on a grid, with their weights.

    Attributes:
        rows: Global row of each pixel (see ``PixelGrid``), int64.
        cols: Global column of each pixel, int64.
        weights: Coverage fraction in (0, 1] for ``exact``; 1.0 for the other rules.

    """

    rows: np.ndarray
    cols: np.ndarray
    weights: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)


def _crossings(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer lines strictly between a[i] and b[i]: (edge index, line value) per crossing."""
    low = np.floor(np.minimum(a, b)) + 1
    high = np.ceil(np.maximum(a, b)) - 1
    count = np.maximum(high - low + 1, 0).astype(np.int64)
    edge = np.repeat(np.arange(len(a)), count)
    # Offset of each crossing within its edge: 0, 1, ... count - 1.
    starts = np.cumsum(count) - count
    step = np.arange(count.sum()) - np.repeat(starts, count)
    return edge, np.repeat(low, count) + step


def window_fractions(
    u: np.ndarray,
    v: np.ndarray,
    window: np.ndarray,
    shapes: np.ndarray,
) -> np.ndarray:
    """Signed area fractions of pixels inside closed rings, in one or more windows.

    Args:
        u: Column coordinates of ring vertices in their window's pixel coordinates (pixel
            (r, c) spans u in [c, c+1], v in [r, r+1]); a ring's last vertex repeats its
            first; consecutive rings are separated by NaN.
        v: Row coordinates (growing downwards), same layout.
        window: Window index of each vertex.
        shapes: (rows, cols) of each window, shape (n, 2); vertices lie inside their window.

    Returns:
        The fractions of all windows, concatenated, each window column-major (column 0's
        rows, then column 1's ...). The sign follows the rings' orientation.

    """
    rows, cols = shapes[:, 0], shapes[:, 1]
    sizes = rows * cols
    offsets = np.cumsum(sizes) - sizes
    u0, v0, u1, v1, w = u[:-1], v[:-1], u[1:], v[1:], window[:-1]
    keep = np.isfinite(u0) & np.isfinite(u1) & ((u0 != u1) | (v0 != v1))
    u0, v0, u1, v1, w = u0[keep], v0[keep], u1[keep], v1[keep], w[keep]
    du, dv = u1 - u0, v1 - v0

    # Parameters t in [0, 1] where each edge enters a new pixel, plus its two ends.
    ex, cx = _crossings(u0, u1)
    ey, cy = _crossings(v0, v1)
    n = len(u0)
    with np.errstate(divide="ignore", invalid="ignore"):
        tx = (cx - u0[ex]) / du[ex]
        ty = (cy - v0[ey]) / dv[ey]
    edge = np.concatenate([np.arange(n), np.arange(n), ex, ey])
    t = np.concatenate([np.zeros(n), np.ones(n), tx, ty])
    order = np.lexsort((t, edge))
    edge, t = edge[order], t[order]
    same = edge[:-1] == edge[1:]
    e, ta, tb = edge[:-1][same], t[:-1][same], t[1:][same]

    # Each piece lies within one pixel: the one holding its midpoint.
    ua, ub = u0[e] + ta * du[e], u0[e] + tb * du[e]
    va, vb = v0[e] + ta * dv[e], v0[e] + tb * dv[e]
    we = w[e]
    col = np.clip(np.floor((ua + ub) / 2).astype(np.int64), 0, cols[we] - 1)
    row = np.clip(np.floor((va + vb) / 2).astype(np.int64), 0, rows[we] - 1)
    width = ub - ua
    # Area between the piece and its pixel's lower edge (v = row + 1), signed by direction.
    partial = width * ((row + 1 - va) + (row + 1 - vb)) / 2
    flat = offsets[we] + col * rows[we] + row
    total = int(sizes.sum())
    inside = np.bincount(flat, weights=partial, minlength=total)
    below = np.bincount(flat, weights=width, minlength=total)
    # Pixels below a piece (larger rows) get its full width: an exclusive cumulative sum
    # down each column. Columns are contiguous runs; subtract the sum before each run.
    running = np.cumsum(below)
    run_length = np.repeat(rows, cols)
    run_start = np.cumsum(run_length) - run_length
    before = np.where(run_start > 0, running[np.maximum(run_start - 1, 0)], 0.0)
    return inside + running - below - np.repeat(before, run_length)


def _window_floats(geometries: np.ndarray, grid: PixelGrid) -> np.ndarray:
    """(row_off, col_off, rows, cols) of every geometry's window as floats, shape (n, 4)."""
    minx, miny, maxx, maxy = shapely.bounds(geometries).T
    col0 = np.floor((minx - grid.x0) / grid.resx)
    col1 = np.ceil((maxx - grid.x0) / grid.resx)
    row0 = np.floor((grid.y0 - maxy) / grid.resy)
    row1 = np.ceil((grid.y0 - miny) / grid.resy)
    return np.column_stack([row0, col0, np.maximum(row1 - row0, 1), np.maximum(col1 - col0, 1)])


def _windows(geometries: np.ndarray, grid: PixelGrid) -> np.ndarray:
    """(row_off, col_off, rows, cols) of every geometry's window, shape (n, 4)."""
    return _window_floats(geometries, grid).astype(np.int64)


def window_pixels(geometries: Sequence[shapely.Geometry], grid: PixelGrid) -> np.ndarray:
    """Number of pixels in each geometry's bounding window on ``grid``.

    Counted in floats, so that a huge window is a huge count rather than an overflowed
    integer; ``inf`` for a geometry with non-finite coordinates.
    """
    windows = _window_floats(np.asarray(geometries, dtype=object), grid)
    count = windows[:, 2] * windows[:, 3]
    return np.where(np.isnan(count), np.inf, count)


def _exact_batch(geometries: np.ndarray, grid: PixelGrid, windows: np.ndarray) -> list[Coverage]:
    # Exteriors one way, holes the other: holes then subtract their area.
    oriented = shapely.orient_polygons(geometries)
    parts, part_owner = shapely.get_parts(oriented, return_index=True)
    rings, ring_part = shapely.get_rings(parts, return_index=True)
    xy, coord_ring = shapely.get_coordinates(rings, return_index=True)
    owner = part_owner[ring_part][coord_ring]
    # A NaN row after each ring keeps edges from joining consecutive rings.
    breaks = np.flatnonzero(np.diff(coord_ring)) + 1
    xy = np.insert(xy, breaks, np.nan, axis=0)
    owner = np.insert(owner, breaks, owner[np.maximum(breaks - 1, 0)])
    u = (xy[:, 0] - grid.x0) / grid.resx - windows[owner, 1]
    v = (grid.y0 - xy[:, 1]) / grid.resy - windows[owner, 0]
    shapes = windows[:, 2:4]
    fractions = window_fractions(u, v, owner, shapes)

    sizes = shapes[:, 0] * shapes[:, 1]
    cell_owner = np.repeat(np.arange(len(geometries)), sizes)
    signs = np.sign(np.bincount(cell_owner, weights=fractions, minlength=len(geometries)))
    fractions = fractions * np.where(signs < 0, -1.0, 1.0)[cell_owner]
    keep = np.flatnonzero(fractions >= _ROUNDOFF)
    who = cell_owner[keep]
    local = keep - (np.cumsum(sizes) - sizes)[who]
    height = shapes[who, 0]
    rows = local % height + windows[who, 0]
    cols = local // height + windows[who, 1]
    weights = np.minimum(fractions[keep], 1.0)
    bounds = np.searchsorted(who, np.arange(1, len(geometries)))
    return [
        Coverage(r, c, w)
        for r, c, w in zip(
            np.split(rows, bounds), np.split(cols, bounds), np.split(weights, bounds), strict=True
        )
    ]


def _rasterized(geometry: shapely.Geometry, grid: PixelGrid, window, all_touched: bool) -> Coverage:
    row_off, col_off, rows, cols = (int(value) for value in window)
    burned = rasterize(
        [geometry],
        out_shape=(rows, cols),
        transform=grid.transform(row_off, col_off),
        fill=0,
        default_value=1,
        all_touched=all_touched,
        dtype="uint8",
    )
    r, c = np.nonzero(burned)
    return Coverage(r.astype(np.int64) + row_off, c.astype(np.int64) + col_off, np.ones(len(r)))


def compute_coverages(
    geometries: Sequence[shapely.Geometry], grid: PixelGrid, rule: PixelRule
) -> list[Coverage]:
    """Find the pixels of ``grid`` each (multi)polygon covers under a pixel rule.

    Args:
        geometries: Valid Polygons or MultiPolygons in the grid's CRS.
        grid: The pixel grid.
        rule: ``exact``, ``center`` or ``all_touched`` (see the module docstring).

    Returns:
        One Coverage per geometry: its pixels (global rows/cols) and their weights.

    """
    array = np.asarray(geometries, dtype=object)
    windows = _windows(array, grid)
    if rule != "exact":
        return [
            _rasterized(g, grid, w, rule == "all_touched")
            for g, w in zip(array, windows, strict=True)
        ]
    out: list[Coverage] = []
    sizes = windows[:, 2] * windows[:, 3]
    start = 0
    while start < len(array):
        # As many geometries as fit the pixel budget (at least one).
        stop = start + max(int(np.searchsorted(np.cumsum(sizes[start:]), _BATCH_PIXELS)), 1)
        out.extend(_exact_batch(array[start:stop], grid, windows[start:stop]))
        start = stop
    return out
