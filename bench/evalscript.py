"""Evalscripts: Mpx/s of the corpus translated to numpy, in V8, and of the NDVI expression.

Every script of ``tests/evalscripts/`` runs over the same 1 Mpx (1024 x 1024) of random
reflectances (``Evalscript.evaluate`` for the translated path, ``run_v8`` for V8: a warm
worker process, a fresh V8 context per run as for every request), and the NDVI expression
``(B08-B04)/(B08+B04)`` through ``app.expressions`` (the service's band math) is the
yardstick. NDVI is measured on a 256 x 256 tile too, every engine in turn round by round
(the ratios are taken within a round, then their median), so that other load on the
machine falls on all alike. Pixels are in memory already (no COG reads: tiles are
``bench/tiles.py``'s). CPU time (this process and its children, the V8 workers) is measured
beside wall time: the machine is shared, and CPU time is what other load changes least.
Last, one V8 request's steps are timed one by one (``v8_phases``): where its time goes.

Targets of issue 16: the translated NDVI takes at most 1.5x the expression's time on a
256 x 256 tile and on 1 Mpx; V8 runs at least 30 Mpx/s.

Run by hand (about four minutes on 2 cores):

    .venv/bin/python bench/evalscript.py           # print the table
    .venv/bin/python bench/evalscript.py --write   # and update BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.evalscript.band_math import EvalscriptBandMath  # noqa: E402
from app.evalscript.limits import EvalscriptLimits  # noqa: E402
from app.evalscript.script import parse_evalscript  # noqa: E402
from app.evalscript.v8 import run_v8  # noqa: E402
from app.expressions import parse_expression  # noqa: E402
from bench.common import (  # noqa: E402
    ROOT,
    cpu_seconds,
    machine_description,
    system_busy_seconds,
    write_section,
)

CORPUS = ROOT / "tests" / "evalscripts"
TILE = (256, 256)
LARGE = (1024, 1024)
NDVI = "(B08-B04)/(B08+B04)"
TITLE = "Evalscripts (translated, V8, expression)"
TARGET_RATIO = 1.5  # translated NDVI time / expression time, at most
TARGET_V8 = 30.0  # Mpx/s, at least


def pixels(shape: tuple[int, int]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Random reflectances for every band the corpus reads, SCL classes, a validity mask."""
    rng = np.random.default_rng(16)
    bands = {
        name: rng.uniform(0.0, 0.6, shape).astype(np.float32)
        for name in ("B02", "B03", "B04", "B08", "B8A", "B11")
    }
    bands["SCL"] = rng.integers(0, 12, shape).astype(np.float32)
    return bands, rng.random(shape) > 0.05


@dataclass
class Measure:
    """Seconds per call of one run: the median wall time, and CPU time (mean)."""

    wall: float
    cpu: float


def per_call(run: Callable[[], object], min_seconds: float, min_calls: int = 3) -> Measure:
    """One run's time per call over at least ``min_calls`` calls and ``min_seconds``.

    CPU time is this process's and its children's (V8's worker processes): the time the
    machine's other load changes least.
    """
    times: list[float] = []
    cpu = cpu_seconds(os.getpid())
    began = time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - began < min_seconds:
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return Measure(statistics.median(times), (cpu_seconds(os.getpid()) - cpu) / len(times))


@dataclass
class Compared:
    """Runs measured in turn, round by round; the first run is the yardstick."""

    measures: dict[str, list[Measure]]

    def wall(self, name: str) -> float:
        """Median wall seconds per call."""
        return statistics.median(m.wall for m in self.measures[name])

    def cpu(self, name: str) -> float:
        """Median CPU seconds per call."""
        return statistics.median(m.cpu for m in self.measures[name])

    def ratios(self, name: str, kind: str = "wall") -> list[float]:
        """The run's time over the yardstick's, round by round (``wall`` or ``cpu``)."""
        base = self.measures[next(iter(self.measures))]
        return [
            getattr(m, kind) / getattr(b, kind)
            for m, b in zip(self.measures[name], base, strict=True)
        ]

    def ratio(self, name: str, kind: str = "wall") -> float:
        """Median of ``ratios``."""
        return statistics.median(self.ratios(name, kind))


def interleaved(runs: dict[str, Callable[[], object]], rounds: int, min_seconds: float) -> Compared:
    """Each run in turn, ``rounds`` times, after a warm-up call of each."""
    for run in runs.values():
        run()
    measures: dict[str, list[Measure]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            measures[name].append(per_call(run, min_seconds))
    return Compared(measures)


def ndvi_runs(shape: tuple[int, int], limits: EvalscriptLimits) -> dict[str, Callable[[], object]]:
    """The NDVI of one array of ``shape`` by each engine; the expression first."""
    bands, valid = pixels(shape)
    masked = {name: np.ma.MaskedArray(bands[name], mask=~valid) for name in ("B04", "B08")}
    inputs = {name: bands[name] for name in ("B04", "B08")}
    expression = parse_expression(NDVI)
    script = parse_evalscript((CORPUS / "ndvi.js").read_text(), limits)
    assert script.engine == "translated", script.translation_refused
    band_math = EvalscriptBandMath(script)
    return {
        "expression": lambda: expression.evaluate(masked),
        "translated": lambda: script.evaluate(inputs, valid),
        "translated, band math": lambda: band_math.evaluate(masked),
        "V8": lambda: run_v8(script.text, script.setup, inputs, valid, limits),
    }


def v8_phases(limits: EvalscriptLimits, repeat: int = 7) -> dict[str, float]:
    """Where one V8 request's time goes, NDVI over 1 Mpx, timed in this process.

    The worker's own steps (``app.evalscript.v8_worker.run_pixels``) one by one, in a fresh
    context each time: making the context, the driver and the script, each block of the
    pixel loop, closing the context. Medians over ``repeat`` requests, milliseconds.
    """
    import secrets  # noqa: PLC0415

    from py_mini_racer._dll import init_mini_racer  # noqa: PLC0415

    from app.evalscript import v8_worker  # noqa: PLC0415

    init_mini_racer(flags=())  # the worker's V8 flags (its defaults)
    names, outputs = ["B04", "B08"], [("default", 1)]
    block = limits.block_pixels
    blocks = LARGE[0] * LARGE[1] // block
    bands, valid = pixels(LARGE)
    data = np.stack([bands[name].reshape(-1) for name in names])
    text = (CORPUS / "ndvi.js").read_text()
    steps: dict[str, list[float]] = {}

    def timed(name: str, run: Callable[[], object]) -> object:
        start = time.perf_counter()
        value = run()
        steps.setdefault(name, []).append(1000 * (time.perf_counter() - start))
        return value

    for _ in range(repeat + 1):  # the first is a warm-up
        racer = timed("context", v8_worker.fresh_context)
        budget = v8_worker.Budget(limits.timeout_seconds)
        entry = f"__terratiler_{secrets.token_hex(8)}"
        source = v8_worker.driver_source(names, outputs, block, entry)
        driver = timed("driver and script", lambda r=racer, s=source: r.eval(s))
        timed(
            "driver and script",
            lambda r=racer, b=budget: v8_worker._load_script(r, text, b, limits.memory_mb),
        )
        views = [np.frombuffer(view, dtype=np.uint8) for view in driver["buffers"]]
        inputs = views[0].view(np.float32).reshape(len(names), block)
        for index in range(blocks):
            start = index * block
            inputs[:] = data[:, start : start + block]
            views[1][:] = valid.reshape(-1)[start : start + block]
            step = "first block" if index == 0 else "later block"
            timed(step, lambda r=racer, c=f"{entry}({block})": r.eval(c))
        timed("close", racer.close)
    medians = {}
    for name, times in steps.items():
        per_request = len(times) // (repeat + 1)
        medians[name] = statistics.median(
            sum(times[i * per_request : (i + 1) * per_request])
            / (1 if name != "later block" else per_request)
            for i in range(1, repeat + 1)
        )
    medians["blocks"] = blocks
    return medians


ENGINE_NOTES = {
    "expression": "`app.expressions` `Expression.evaluate` (masked arrays in and out)",
    "translated": "`Evalscript.evaluate` (numpy)",
    "translated, band math": "`EvalscriptBandMath.evaluate` (what tiles call: masks in and out)",
    "V8": "`run_v8` (a warm worker, a fresh context)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    parser.add_argument("--rounds", type=int, default=5, help="NDVI rounds per size")
    parser.add_argument(
        "--seconds", type=float, default=0.5, help="least time of one measure (repeated calls)"
    )
    parser.add_argument("--corpus-rounds", type=int, default=3, help="rounds per corpus script")
    args = parser.parse_args()
    limits = EvalscriptLimits.default()
    load_start = os.getloadavg()
    busy, own = system_busy_seconds(), cpu_seconds(os.getpid())
    began = time.perf_counter()

    # NDVI by every engine, both sizes, interleaved.
    ndvi: dict[tuple[int, int], Compared] = {}
    for shape in (TILE, LARGE):
        ndvi[shape] = interleaved(ndvi_runs(shape, limits), args.rounds, args.seconds)
        print(f"NDVI {shape}: { {n: round(ndvi[shape].wall(n) * 1e3, 2) for n in ENGINE_NOTES} }")

    # The corpus at 1 Mpx, each script translated (when it is) and in V8, each in turn with
    # the NDVI expression (the ratio's yardstick).
    bands, valid = pixels(LARGE)
    megapixels = valid.size / 1e6
    masked = {name: np.ma.MaskedArray(bands[name], mask=~valid) for name in ("B04", "B08")}
    expression = parse_expression(NDVI)
    corpus: list[tuple[str, str, Compared | None, str]] = []
    for path in sorted(CORPUS.glob("*.js")):
        try:
            script = parse_evalscript(path.read_text(), limits)
        except Exception as error:  # noqa: BLE001 (a refused script is a row too)
            corpus.append((path.stem, "refused", None, f"{type(error).__name__}: {error}"))
            continue
        inputs = {name: bands[name] for name in script.inputs if name != "dataMask"}
        engines: dict[str, Callable[[], object]] = {}
        if script.engine == "translated":
            engines["translated"] = lambda s=script, i=inputs: s.evaluate(i, valid)
        engines["V8"] = lambda s=script, i=inputs: run_v8(s.text, s.setup, i, valid, limits)
        for engine, run in engines.items():
            runs = {"expression": lambda: expression.evaluate(masked), engine: run}
            compared = interleaved(runs, args.corpus_rounds, args.seconds)
            note = ""
            if engine == "V8" and script.engine == "v8":
                note = f"V8 only: {script.translation_refused}"
            corpus.append((path.stem, engine, compared, note))
            print(f"{path.stem} {engine}: {megapixels / compared.wall(engine):.1f} Mpx/s")

    phases = v8_phases(limits)
    print(f"V8 phases: {phases}")

    wall = time.perf_counter() - began
    others = (system_busy_seconds() - busy - (cpu_seconds(os.getpid()) - own)) / wall
    load_end = os.getloadavg()

    def load_text(load: tuple[float, float, float]) -> str:
        return " ".join(f"{value:.1f}" for value in load)

    options = ""
    if args.rounds != 5 or args.corpus_rounds != 3 or args.seconds != 0.5:
        options = (
            f" --rounds {args.rounds} --corpus-rounds {args.corpus_rounds} --seconds {args.seconds}"
        )
    lines = [
        f"Command: `.venv/bin/python bench/evalscript.py{options} --write`. Machine: "
        f"{machine_description()}. A shared machine: load average {load_text(load_start)} at "
        f"the start, {load_text(load_end)} at the end; other processes used "
        f"{max(others, 0.0):.2f} cores of the 2 on average during the run ({wall:.0f} s).",
        "",
        "Random reflectances (0-0.6, float32) and SCL classes in memory, 5 % of the pixels "
        "invalid; no COG reads (those are `bench/tiles.py`'s). A measure: calls repeated for "
        f"at least {args.seconds} s after a warm-up call; Mpx/s from the median wall time of a "
        "call, Mpx per CPU s from the CPU time of this process and its children (V8's worker "
        "processes), which other load changes least. V8: `run_v8` in a warm worker process, "
        "a fresh context per call as for every request, blocks of "
        f"{limits.block_pixels:,} px. Ratios: the time over the NDVI expression's measured in "
        "turn with it, round by round, the median of the rounds (below 1: faster than the "
        "expression).",
        "",
        f"NDVI (`tests/evalscripts/ndvi.js`; the expression `{NDVI}`), every engine in turn, "
        f"{args.rounds} rounds per size:",
        "",
        "| size | engine | Mpx/s | Mpx / CPU s | ms / call | time / expression's, wall (rounds) "
        "| CPU time / expression's |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for shape, compared in ndvi.items():
        size = f"{shape[0]} x {shape[1]}"
        mpx = shape[0] * shape[1] / 1e6
        for engine in compared.measures:
            if engine == "expression":
                ratio_text, cpu_ratio = "1", "1"
            else:
                rounds = ", ".join(f"{r:.2f}" for r in compared.ratios(engine))
                ratio_text = f"**{compared.ratio(engine):.2f}x** ({rounds})"
                cpu_ratio = f"{compared.ratio(engine, 'cpu'):.2f}x"
            lines.append(
                f"| {size} | {ENGINE_NOTES[engine]} | {mpx / compared.wall(engine):,.1f} | "
                f"{mpx / compared.cpu(engine):,.1f} | {1000 * compared.wall(engine):.2f} | "
                f"{ratio_text} | {cpu_ratio} |"
            )
    lines += [
        "",
        f"The corpus (`tests/evalscripts/*.js`), 1024 x 1024, each engine in turn with the NDVI "
        f"expression, {args.corpus_rounds} rounds:",
        "",
        "| script | engine | Mpx/s | Mpx / CPU s | ms / call | time / NDVI expression's "
        "| CPU time / NDVI expression's |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, engine, compared, note in corpus:
        if compared is None:
            lines.append(f"| {name} | {engine}: {note} |  |  |  |  |  |")
            continue
        engine_text = engine + (f" ({note})" if note else "")
        lines.append(
            f"| {name} | {engine_text} | {megapixels / compared.wall(engine):,.1f} | "
            f"{megapixels / compared.cpu(engine):,.1f} | {1000 * compared.wall(engine):.1f} | "
            f"{compared.ratio(engine):.1f}x | {compared.ratio(engine, 'cpu'):.1f}x |"
        )

    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**not met**"

    tile, large = ndvi[TILE], ndvi[LARGE]
    v8_wall = megapixels / large.wall("V8")
    v8_cpu = megapixels / large.cpu("V8")
    tile_v8_wall = TILE[0] * TILE[1] / 1e6 / tile.wall("V8")
    tile_v8_cpu = TILE[0] * TILE[1] / 1e6 / tile.cpu("V8")
    v8_rates = [
        (megapixels / c.wall(engine), megapixels / c.cpu(engine))
        for _, engine, c, _ in corpus
        if engine == "V8" and c is not None
    ]
    block_mpx = limits.block_pixels / 1e6
    lines += [
        "",
        f"Where a V8 request's time goes (NDVI, 1 Mpx in {phases['blocks']:.0f} blocks of "
        f"{limits.block_pixels:,} px; the worker's steps timed one by one, a fresh context each "
        "time, median of 7): making the context (the worker makes the next one while idle, so "
        f"back-to-back requests wait for it) {phases['context']:.1f} ms, driver and script "
        f"{phases['driver and script']:.1f} ms, the first block {phases['first block']:.1f} ms "
        f"({block_mpx / phases['first block'] * 1000:.0f} Mpx/s: V8 compiles the loop and the "
        "script's code afresh in every context), each later block "
        f"{phases['later block']:.2f} ms ({block_mpx / phases['later block'] * 1000:.0f} Mpx/s), "
        f"closing the context {phases['close']:.1f} ms.",
        "",
        "Targets of issue 16:",
        "",
        f"- translated NDVI within {TARGET_RATIO}x the expression's time on a 256 x 256 tile: "
        f"{verdict(tile.ratio('translated') <= TARGET_RATIO)} "
        f"({tile.ratio('translated'):.2f}x wall, {tile.ratio('translated', 'cpu'):.2f}x CPU; "
        f"through `EvalscriptBandMath` {tile.ratio('translated, band math'):.2f}x); on 1 Mpx: "
        f"{verdict(large.ratio('translated') <= TARGET_RATIO)} "
        f"({large.ratio('translated'):.2f}x wall, {large.ratio('translated', 'cpu'):.2f}x CPU; "
        f"through `EvalscriptBandMath` {large.ratio('translated, band math'):.2f}x).",
        f"- V8 >= {TARGET_V8:.0f} Mpx/s, NDVI at 1 Mpx: {verdict(v8_cpu >= TARGET_V8)} per CPU "
        f"second ({v8_cpu:.1f} Mpx per CPU s; {v8_wall:.1f} Mpx/s wall on this loaded machine); "
        f"on a 256 x 256 tile {verdict(tile_v8_cpu >= TARGET_V8)} ({tile_v8_cpu:.1f} Mpx per "
        f"CPU s, {tile_v8_wall:.1f} Mpx/s wall: the per-request costs above). In the corpus, "
        f"{sum(c >= TARGET_V8 for _, c in v8_rates)} of the {len(v8_rates)} scripts reach it in "
        f"V8 per CPU second ({sum(w >= TARGET_V8 for w, _ in v8_rates)} by wall time).",
    ]
    body = "\n".join(lines)
    print(body)
    if args.write:
        write_section(TITLE, body)
        print("BENCHMARKS.md updated")


if __name__ == "__main__":
    main()
