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
pixels the outline crosses plus the window size, with no per-pixel geometry operation.
"""

from dataclasses import dataclass
from typing import Literal

import numpy as np
import shapely
from rasterio.features import rasterize

from app.stats.grid import PixelGrid

PixelRule = Literal["exact", "center", "all_touched"]
PIXEL_RULES: tuple[str, ...] = ("exact", "center", "all_touched")

# Fractions below this are round-off of the accumulation (sums of pixel-sized numbers carry
# errors of ~1e-13), not area: a real sliver this thin would be 1e-7 m^2 of a 10 m pixel.
_ROUNDOFF = 1e-9


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


def _rings(geometry: shapely.Geometry) -> list[np.ndarray]:
    """Coordinate arrays of every ring of a (multi)polygon, exteriors and holes."""
    rings = []
    # Exteriors one way, holes the other: holes then subtract their area.
    for polygon in shapely.get_parts(shapely.orient_polygons(geometry)):
        if polygon.is_empty:
            continue
        rings.append(np.asarray(polygon.exterior.coords, dtype=np.float64))
        rings.extend(np.asarray(ring.coords, dtype=np.float64) for ring in polygon.interiors)
    return rings


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


def exact_fractions(u: np.ndarray, v: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Area fractions of pixels covered by closed rings given in pixel coordinates.

    Args:
        u: Column coordinates of the ring vertices, rings separated by NaN (a ring's last
            vertex repeats its first). Pixel (r, c) spans u in [c, c+1], v in [r, r+1].
        v: Row coordinates (growing downwards), same layout.
        shape: (rows, cols) of the window; every vertex must lie inside it.

    Returns:
        A (rows, cols) float64 array of signed fractions (sign set by ring orientation).

    """
    rows, cols = shape
    u0, v0, u1, v1 = u[:-1], v[:-1], u[1:], v[1:]
    keep = np.isfinite(u0) & np.isfinite(u1) & ((u0 != u1) | (v0 != v1))
    u0, v0, u1, v1 = u0[keep], v0[keep], u1[keep], v1[keep]
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
    col = np.clip(np.floor((ua + ub) / 2).astype(np.int64), 0, cols - 1)
    row = np.clip(np.floor((va + vb) / 2).astype(np.int64), 0, rows - 1)
    width = ub - ua
    # Area between the piece and its pixel's lower edge (v = row + 1), signed by direction.
    partial = width * ((row + 1 - va) + (row + 1 - vb)) / 2
    flat = row * cols + col
    size = rows * cols
    inside = np.bincount(flat, weights=partial, minlength=size).reshape(rows, cols)
    below = np.bincount(flat, weights=width, minlength=size).reshape(rows, cols)
    # Pixels below a piece (larger rows) get its full width: an exclusive cumulative sum.
    return inside + np.cumsum(below, axis=0) - below


def _local_coordinates(
    geometry: shapely.Geometry, grid: PixelGrid, row_off: int, col_off: int
) -> tuple[np.ndarray, np.ndarray]:
    """Ring vertices in window pixel coordinates, rings separated by NaN."""
    parts = []
    for ring in _rings(geometry):
        parts.append(ring)
        parts.append(np.full((1, ring.shape[1]), np.nan))
    xy = np.concatenate(parts) if parts else np.empty((0, 2))
    x0 = grid.x0 + col_off * grid.resx
    y0 = grid.y0 - row_off * grid.resy
    return (xy[:, 0] - x0) / grid.resx, (y0 - xy[:, 1]) / grid.resy


def compute_coverage(geometry: shapely.Geometry, grid: PixelGrid, rule: PixelRule) -> Coverage:
    """Find the pixels of ``grid`` a (multi)polygon covers under a pixel rule.

    Args:
        geometry: A valid Polygon or MultiPolygon in the grid's CRS.
        grid: The pixel grid.
        rule: ``exact``, ``center`` or ``all_touched`` (see the module docstring).

    Returns:
        The covered pixels (global rows/cols) and their weights, in row-major order.

    """
    row_off, col_off, rows, cols = grid.window(geometry.bounds)
    if rule == "exact":
        u, v = _local_coordinates(geometry, grid, row_off, col_off)
        fractions = exact_fractions(u, v, (rows, cols))
        if fractions.sum() < 0:
            fractions = -fractions
        fractions[fractions < _ROUNDOFF] = 0.0
        np.minimum(fractions, 1.0, out=fractions)
        r, c = np.nonzero(fractions)
        weights = fractions[r, c]
    else:
        burned = rasterize(
            [geometry],
            out_shape=(rows, cols),
            transform=grid.transform(row_off, col_off),
            fill=0,
            default_value=1,
            all_touched=rule == "all_touched",
            dtype="uint8",
        )
        r, c = np.nonzero(burned)
        weights = np.ones(len(r), dtype=np.float64)
    return Coverage(rows=r.astype(np.int64) + row_off, cols=c.astype(np.int64) + col_off, weights=weights)
