"""Spatial chunks: geometries grouped so that each chunk reads compact COG windows."""

import itertools

import numpy as np

# Chunks of geometries read together: those whose centres fall in one cell of this many
# degrees (about 4-5 km, some 500 pixels of 10 m: a COG block), at most this many at once.
DEFAULT_CHUNK_SIZE = 2048
CHUNK_CELL_DEGREES = 0.05


def morton(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Interleave the bits of 16-bit x and y: a Z-order key keeping neighbours together."""
    key = np.zeros(len(x), dtype=np.int64)
    for bit in range(16):
        key |= ((x >> bit) & 1) << (2 * bit)
        key |= ((y >> bit) & 1) << (2 * bit + 1)
    return key


def spatial_chunks(
    centres: np.ndarray, size: int, cell: float = CHUNK_CELL_DEGREES
) -> list[list[int]]:
    """Group points (lon, lat) into chunks of spatially close ones.

    Points are binned into square cells of ``cell`` degrees, cells taken row by row (north
    to south) so that neighbouring chunks follow each other and share COG blocks while
    they are cached; a cell with more than ``size`` points is cut in Z-order.
    """
    if len(centres) == 0:
        return []
    column = np.floor(centres[:, 0] / cell).astype(np.int64)
    row = -np.floor(centres[:, 1] / cell).astype(np.int64)
    inner = (centres - np.floor(centres / cell) * cell) / cell * 65535
    z = morton(inner[:, 0].astype(np.int64), inner[:, 1].astype(np.int64))
    order = np.lexsort((z, column, row))
    chunks: list[list[int]] = []
    for _, members in itertools.groupby(order.tolist(), key=lambda i: (row[i], column[i])):
        members = list(members)
        chunks.extend(members[i : i + size] for i in range(0, len(members), size))
    return chunks
