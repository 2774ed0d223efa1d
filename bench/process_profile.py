"""Where terratiler's batch-processing tile time goes, and what the engine's fast paths saved.

Run by bench/process.py ``--profile`` (or by hand)::

    python bench/process_profile.py data/bench/process-1280

1. pyinstrument profile of one tile (the fullest of the demo area, after a warm-up tile):
   ``engine.process_tile`` + ``cog.write_cog``, in this process;
2. every tile of the area run in turn with the engine as it is, then with the engine's
   previous median and placement patched back in here (``np.nanmedian`` of the whole
   stack, which takes its slow path on all-NaN pixels: a tile's outside; aligned assets
   placed by ``block[np.ix_(rows, cols)]``). The tiles' CPU seconds both ways, and the two
   outputs compared (NaN pattern and values).

Prints one JSON line (``profile``: the trimmed text of the profile).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import rasterio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.batch.processing import engine  # noqa: E402
from bench import process_ours  # noqa: E402
from bench.process import SEASON, grid1_tiles  # noqa: E402


def previous_bands(self: engine._Median) -> tuple[np.ndarray, list[str]]:
    """``_Median.bands`` before ``nan_median``: ``np.nanmedian`` of the whole stack."""
    if not self.layers:
        return np.full((1, *self.shape), np.nan, np.float32), [self.spec.id]
    stack = np.stack(self.layers)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = np.nanmedian(stack, axis=0).astype(np.float32)
    return result[None], [self.spec.id]


def previous_exact(self: engine._TileReader, dataset: rasterio.DatasetReader) -> np.ma.MaskedArray:
    """``_TileReader._exact`` before: the window placed by ``block[np.ix_(rows, cols)]``."""
    lookup = self._lookup(dataset.transform, dataset.height, dataset.width)
    shape = (self.tile.height, self.tile.width)
    if lookup.window is None:
        return np.ma.MaskedArray(np.zeros(shape, np.float32), mask=np.ones(shape, bool))
    block = dataset.read(1, window=lookup.window)
    values = block[np.ix_(lookup.rows, lookup.cols)]
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
        engine._Median.bands, engine._TileReader._exact = previous_bands, previous_exact
        previous = run_all({**job, "out": str(work / "previous")}, tiles)
        rounds.append((current, previous))
        print(
            f"round {index + 1}: current {current:.2f} s, previous {previous:.2f} s",
            file=sys.stderr,
        )
    engine._Median.bands, engine._TileReader._exact = original
    same, largest = compare(work / "current", work / "previous")
    result = {
        "tile": fullest["name"],
        "profile": text[text.index("\n", text.index("Profile at")) + 1 :].strip("\n"),
        "tiles": len(tiles),
        "current": min(r[0] for r in rounds),
        "previous": min(r[1] for r in rounds),
        "same_nodata": same,
        "max_diff": largest,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
