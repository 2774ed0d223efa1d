"""Evalscripts: Mpx/s of the corpus translated to numpy, in V8, and of the NDVI expression.

Every script of ``tests/evalscripts/`` runs over the same 1 Mpx (1024 x 1024) of random
reflectances (``Evalscript.evaluate`` for the translated path, ``run_v8`` for V8: a warm
worker process, a fresh V8 context per run as for every request), and the NDVI expression
through ``app.expressions`` (the service's band math). The time is the median of the runs;
pixels in memory already (no COG reads: tiles are ``bench/tiles.py``'s).

Run by hand (about a minute on 2 cores):

    .venv/bin/python bench/evalscript.py           # print the table
    .venv/bin/python bench/evalscript.py --write   # and update BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.evalscript.limits import EvalscriptLimits  # noqa: E402
from app.evalscript.script import parse_evalscript  # noqa: E402
from app.evalscript.v8 import run_v8  # noqa: E402
from app.expressions import parse_expression  # noqa: E402
from bench.common import ROOT, machine_description, write_section  # noqa: E402

CORPUS = ROOT / "tests" / "evalscripts"
SHAPE = (1024, 1024)
TITLE = "Evalscripts (translated, V8, expression)"


def median_seconds(run: Callable[[], object], repeat: int) -> float:
    """The median wall time of ``repeat`` runs after one warm-up run."""
    run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def pixels() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Random reflectances for every band the corpus reads, SCL classes, a validity mask."""
    rng = np.random.default_rng(16)
    bands = {
        name: rng.uniform(0.0, 0.6, SHAPE).astype(np.float32)
        for name in ("B02", "B03", "B04", "B08", "B8A", "B11")
    }
    bands["SCL"] = rng.integers(0, 12, SHAPE).astype(np.float32)
    return bands, rng.random(SHAPE) > 0.05


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per measure")
    args = parser.parse_args()
    limits = EvalscriptLimits.default()
    bands, valid = pixels()
    megapixels = valid.size / 1e6
    rows = []
    arrays = {name: np.ma.MaskedArray(bands[name], mask=~valid) for name in ("B04", "B08")}
    expression = parse_expression("(B08-B04)/(B08+B04)")
    seconds = median_seconds(lambda: expression.evaluate(arrays), args.repeat)
    rows.append(("NDVI `expression` (app.expressions, numpy)", f"{megapixels / seconds:.0f}", ""))
    for path in sorted(CORPUS.glob("*.js")):
        try:
            script = parse_evalscript(path.read_text(), limits)
        except Exception as error:  # noqa: BLE001 (a refused script is a row too)
            rows.append((path.stem, f"refused ({type(error).__name__})", ""))
            continue
        inputs = {name: bands[name] for name in script.inputs if name != "dataMask"}
        translated = ""
        if script.engine == "translated":
            seconds = median_seconds(lambda s=script, i=inputs: s.evaluate(i, valid), args.repeat)
            translated = f"{megapixels / seconds:.0f}"
        seconds = median_seconds(
            lambda s=script, i=inputs: run_v8(s.text, s.setup, i, valid, limits), args.repeat
        )
        rows.append((path.stem, translated or "V8 only", f"{megapixels / seconds:.1f}"))
    lines = [
        f"Machine: {machine_description()}. 1 Mpx (1024 x 1024) of random reflectances in "
        f"memory, median of {args.repeat} runs; V8 in blocks of {limits.block_pixels} px, a "
        "fresh context per run in a warm worker process.",
        "",
        "| script | translated Mpx/s | V8 Mpx/s |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {name} | {translated} | {v8} |" for name, translated, v8 in rows]
    body = "\n".join(lines)
    print(body)
    if args.write:
        write_section(TITLE, body)


if __name__ == "__main__":
    main()
