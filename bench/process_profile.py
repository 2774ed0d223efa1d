"""Where terratiler's batch-processing tile time goes, and what two engine changes would save.

Run by bench/process.py ``--profile`` (or by hand)::

    python bench/process_profile.py data/bench/process-1280

1. pyinstrument profile of one tile (the fullest of the demo area, after a warm-up tile):
   ``engine.process_tile`` + ``cog.write_cog``, in this process;
2. every tile of the area run in turn with the engine as it is, then with two changes
   patched in here (suggestions for ``app/batch/processing/engine.py``, not the engine's
   code): the median by one ``np.sort`` of the stack over the pixels some scene covers
   (``np.nanmedian`` takes its slow path on all-NaN pixels: a tile's outside), and the
   aligned-grid placement by ``np.repeat`` of the window (the grids nest, so each source
   row and column repeats 1 or 2 times) instead of ``block[np.ix_(rows, cols)]``. The
   tiles' CPU seconds both ways, and the two outputs compared (NaN pattern and values).

Prints one JSON line (``profile``: the trimmed text of the profile).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.batch.processing import engine  # noqa: E402
from bench import process_ours  # noqa: E402
from bench.process import SEASON, grid1_tiles  # noqa: E402


def sorted_median(stack: np.ndarray) -> np.ndarray:
    """``nanmedian`` over axis 0 of a float32 stack by one sort (NaN sorts last)."""
    count = np.count_nonzero(~np.isnan(stack), axis=0)
    ordered = np.sort(stack, axis=0)
    low = np.take_along_axis(ordered, np.maximum((count - 1) // 2, 0)[None], 0)[0]
    high = np.take_along_axis(ordered, (count // 2)[None], 0)[0]
    result = (low + high) * np.float32(0.5)
    result[count == 0] = np.nan
    return result


def suggested_bands(self: engine._Median) -> tuple[np.ndarray, list[str]]:
    """``_Median.bands`` with the median of the covered pixels only, by one sort."""
    if not self.layers:
        return np.full((1, *self.shape), np.nan, np.float32), [self.spec.id]
    stack = np.stack(self.layers)
    covered = ~np.isnan(stack).all(axis=0)
    result = np.full(self.shape, np.nan, np.float32)
    result[covered] = sorted_median(stack[:, covered])
    return result[None], [self.spec.id]


def suggested_exact(self: engine._TileReader, dataset: rasterio.DatasetReader) -> np.ma.MaskedArray:
    """``_TileReader._exact`` placing the window by ``np.repeat`` (nested grids)."""
    lookup = self._lookup(dataset.transform, dataset.height, dataset.width)
    shape = (self.tile.height, self.tile.width)
    if lookup.window is None:
        return np.ma.MaskedArray(np.zeros(shape, np.float32), mask=np.ones(shape, bool))
    block = dataset.read(1, window=lookup.window)
    rows = np.bincount(lookup.rows, minlength=block.shape[0])
    cols = np.bincount(lookup.cols, minlength=block.shape[1])
    values = np.repeat(np.repeat(block, rows, axis=0), cols, axis=1)
    mask = ~lookup.inside
    if dataset.nodata is not None:
        mask = mask | (values == dataset.nodata)
    return np.ma.MaskedArray(values.astype(np.float32), mask=mask)


def run_all(job: dict, tiles: list[dict]) -> float:
    """CPU seconds of every tile in turn."""
    started = time.process_time()
    for tile in tiles:
        process_ours.run_tile(job, tile)
    return time.process_time() - started


def compare(first: Path, second: Path) -> tuple[bool, float]:
    """(same NaN pattern everywhere, largest difference) of two folders of tiles."""
    same, largest = True, 0.0
    for path in sorted(first.glob("*.tif")):
        with rasterio.open(path) as a, rasterio.open(second / path.name) as b:
            x, y = a.read(1), b.read(1)
        same &= bool((np.isnan(x) == np.isnan(y)).all())
        both = ~np.isnan(x) & ~np.isnan(y)
        if both.any():
            largest = max(largest, float(np.abs(x[both] - y[both]).max()))
    return same, largest


def main() -> int:
    from pyinstrument import Profiler

    from app.gdal_env import gdal_options

    os.environ.update(gdal_options())
    demo = Path(sys.argv[1]).resolve()
    tiles = grid1_tiles(demo)
    work = Path(tempfile.mkdtemp(prefix="bench-process-profile-"))
    job = {"catalog": str(demo), "collection": "sentinel-2-l2a", "datetime": SEASON}
    fullest = max(tiles, key=lambda t: t["covered"])
    process_ours.run_tile({**job, "out": str(work / "warm")}, tiles[0])  # opens, caches
    profiler = Profiler(interval=0.001)
    profiler.start()
    process_ours.run_tile({**job, "out": str(work / "profile")}, fullest)
    profiler.stop()
    text = profiler.output_text(
        unicode=False, color=False, processor_options={"filter_threshold": 0.02}
    )
    rounds = []
    original = (engine._Median.bands, engine._TileReader._exact)
    for index in range(2):  # alternating, twice: the machine's load changes meanwhile
        engine._Median.bands, engine._TileReader._exact = original
        current = run_all({**job, "out": str(work / "current")}, tiles)
        engine._Median.bands, engine._TileReader._exact = suggested_bands, suggested_exact
        suggested = run_all({**job, "out": str(work / "suggested")}, tiles)
        rounds.append((current, suggested))
        print(
            f"round {index + 1}: current {current:.2f} s, suggested {suggested:.2f} s",
            file=sys.stderr,
        )
    engine._Median.bands, engine._TileReader._exact = original
    same, largest = compare(work / "current", work / "suggested")
    result = {
        "tile": fullest["name"],
        "profile": text[text.index("\n", text.index("Profile at")) + 1 :].strip("\n"),
        "tiles": len(tiles),
        "current": min(r[0] for r in rounds),
        "suggested": min(r[1] for r in rounds),
        "same_nodata": same,
        "max_diff": largest,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
