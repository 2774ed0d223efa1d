"""Mosaic tiles of a registered search: terratiler against titiler-pgstac, same items, same tiles.

Run by hand from the repository root::

    .venv/bin/python bench/mosaic.py                       # 2048 px x 12 scenes, z8-z14
    .venv/bin/python bench/mosaic.py --workers 1 --concurrency 8 --rounds 3

What it does:

1. writes the demo catalog (``terratiler demo DIR --size 2048 --scenes 12``) when missing;
2. starts the pgstac peer of the tests (``tests/harness/pgstac.py``: PostgreSQL + PostGIS +
   pgstac + stac-fastapi-pgstac) and loads the demo items into it;
3. installs ``titiler.pgstac==TITILER_PGSTAC_VERSION`` into its own venv
   (``.venv-titiler-pgstac``) when missing, and serves it on the peer's database;
4. serves terratiler with ``TERRATILER_CATALOG`` = the peer's STAC API: both servers get
   their items from the same pgstac database (terratiler through the STAC API, once per
   search; titiler-pgstac through SQL, once per tile);
5. registers the same search on both (``POST /searches/register``), requests the same
   tile set (every WebMercatorQuad tile z8-z14 over the items, capped per zoom) with the
   same concurrency, round after round, alternating servers;
6. writes tiles/s, p50 and p95 per server and layer, and the ratio, into its section of
   ``BENCHMARKS.md``.

Layers: true colour (3 assets, ``first``), NDVI (2 assets, ``first``), NDVI ``median`` over
every item (titiler-pgstac with ``exitwhenfull=false&skipcovered=false``: otherwise pgstac
returns only the first covering item and the "median" is of one scene). terratiler's NDVI
harmonizes reflectance (its default; titiler-pgstac computes on raw DN). A last layer,
NDVI ``first`` with ``mask=scl-clear``, has no titiler-pgstac equivalent and is terratiler
only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import morecantile

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import (  # noqa: E402
    BENCH_DATA,
    ROOT,
    Server,
    cpu_seconds,
    free_port,
    machine_description,
    percentile,
    write_section,
)

TITILER_PGSTAC_VERSION = "3.2.0"

NOTES = """\
What differs (both run rio-tiler 9.4.12 over the same local COGs, so GDAL's reading and
warping of the same blocks is common to both):

- the items of a tile: terratiler looks them up in its in-memory footprint index of the
  search (no database or STAC call per tile); titiler-pgstac runs a pgstac search per tile
  (cached per tile geometry for a few minutes: the measured rounds partly hit that cache);
- reading: terratiler keeps COGs open between tiles (a per-process pool of datasets, one
  thread at a time each) and reads items and their assets on long-lived threads;
  titiler-pgstac opens every asset for every tile and starts thread pools per tile;
- encoding: PNG zlib level 1 (terratiler's default) against 6;
- the same work otherwise: `items read / tile` is ~1 for `first` (edge tiles at the swath
  cut need a second item); for the median titiler-pgstac needs
  `exitwhenfull=false&skipcovered=false`, else pgstac returns one covering item and the
  "median" is of one scene. terratiler's NDVI harmonizes reflectance (more work than
  titiler-pgstac's DN math); the median is one sort of the stack instead of
  `numpy.ma.median`.
- `mask=scl-clear` + `first` (cloud-free NDVI) has no titiler-pgstac equivalent: it reads
  ~2 items per tile here (the newest scenes are cloudy) and stops when every pixel is clear.
"""
TITILER_PGSTAC_VENV = ROOT / ".venv-titiler-pgstac"
SECTION = "Mosaic tiles of a registered search (terratiler vs titiler-pgstac)"
DATETIME = "2023-01-01T00:00:00Z/2023-12-31T23:59:59Z"


def terratiler_app():
    """The service with the /searches router (mounted here if app.main does not yet)."""
    from app.main import create_app
    from app.routers import searches

    app = create_app()
    if not any(getattr(r, "path", "") == "/searches/register" for r in app.routes):
        app.include_router(searches.router, prefix="/searches", tags=["Mosaics"])
    return app


@dataclass
class Layer:
    """One rendering, as each server spells it (None: the server cannot)."""

    name: str
    ours: list[tuple[str, str]]
    peer: list[tuple[str, str]] | None


LAYERS = [
    Layer(
        "true colour, first",
        [("assets", "red"), ("assets", "green"), ("assets", "blue"), ("rescale", "0,3000")],
        [("assets", "red"), ("assets", "green"), ("assets", "blue"), ("rescale", "0,3000")],
    ),
    Layer(
        "NDVI, first",
        [
            ("expression", "(nir-red)/(nir+red)"),
            ("rescale", "-0.2,0.9"),
            ("colormap_name", "rdylgn"),
        ],
        [
            ("assets", "nir"),
            ("assets", "red"),
            ("expression", "(b1-b2)/(b1+b2)"),
            ("rescale", "-0.2,0.9"),
            ("colormap_name", "rdylgn"),
        ],
    ),
    Layer(
        "NDVI, median of all items",
        [
            ("expression", "(nir-red)/(nir+red)"),
            ("pixel_selection", "median"),
            ("rescale", "-0.2,0.9"),
            ("colormap_name", "rdylgn"),
        ],
        [
            ("assets", "nir"),
            ("assets", "red"),
            ("expression", "(b1-b2)/(b1+b2)"),
            ("pixel_selection", "median"),
            ("exitwhenfull", "false"),
            ("skipcovered", "false"),
            ("rescale", "-0.2,0.9"),
            ("colormap_name", "rdylgn"),
        ],
    ),
    Layer(
        "NDVI, first + mask=scl-clear (terratiler only)",
        [
            ("expression", "(nir-red)/(nir+red)"),
            ("mask", "scl-clear"),
            ("rescale", "-0.2,0.9"),
            ("colormap_name", "rdylgn"),
        ],
        None,
    ),
]


@dataclass
class Result:
    """Latencies of one round."""

    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    items_read: list[int] = field(default_factory=list)
    partial: int = 0
    # user+system CPU of the server's processes during the round (not its database's).
    server_cpu: float = 0.0

    @property
    def tiles_per_second(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else float("nan")

    @property
    def cpu_ms_per_tile(self) -> float:
        return 1000 * self.server_cpu / len(self.latencies) if self.latencies else float("nan")


# ---------------------------------------------------------------------- setup


def ensure_demo(path: Path, size: int, scenes: int) -> Path:
    if not (path / "collection.json").exists():
        print(f"writing the demo catalog ({size} px, {scenes} scenes) to {path} ...")
        subprocess.run(
            [str(ROOT / ".venv/bin/terratiler"), "demo", str(path), "--size", str(size)]
            + ["--scenes", str(scenes)],
            check=True,
        )
    return path


def ensure_titiler_pgstac(venv: Path, version: str) -> None:
    python = venv / "bin" / "python"
    probe = (
        subprocess.run(
            [
                str(python),
                "-c",
                "import importlib.metadata as m; print(m.version('titiler.pgstac'))",
            ],
            capture_output=True,
            text=True,
        )
        if python.exists()
        else None
    )
    if probe is not None and probe.returncode == 0 and probe.stdout.strip() == version:
        return
    print(f"installing titiler.pgstac=={version} into {venv} ...")
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", f"titiler.pgstac=={version}"]
        + ["psycopg[binary,pool]", "uvicorn"],
        check=True,
    )


def versions(python: Path, dists: list[str]) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {}\n"
        f"for d in {dists!r}:\n"
        "    try: out[d] = m.version(d)\n"
        "    except Exception: out[d] = '-'\n"
        "print(json.dumps(out))"
    )
    result = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def items_bbox(demo: Path) -> list[float]:
    boxes = [json.loads(p.read_text())["bbox"] for p in (demo / "items").glob("*.json")]
    return [
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    ]


def tile_set(bbox: list[float], zooms: range, per_zoom: int) -> list[tuple[int, int, int]]:
    """Every WebMercatorQuad tile over ``bbox`` at each zoom, at most ``per_zoom`` (spread)."""
    tms = morecantile.tms.get("WebMercatorQuad")
    out: list[tuple[int, int, int]] = []
    for z in zooms:
        tiles = [(t.z, t.x, t.y) for t in tms.tiles(*bbox, [z])]
        if len(tiles) > per_zoom:
            step = len(tiles) / per_zoom
            tiles = [tiles[int(i * step)] for i in range(per_zoom)]
        out.extend(tiles)
    return out


# ---------------------------------------------------------------------- measuring


async def _run(base: str, tiles: list, params: list[tuple[str, str]], concurrency: int) -> Result:
    result = Result()
    queue: asyncio.Queue = asyncio.Queue()
    for tile in tiles:
        queue.put_nowait(tile)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(trust_env=False, timeout=120.0, limits=limits) as client:

        async def worker() -> None:
            while not queue.empty():
                z, x, y = queue.get_nowait()
                started = time.perf_counter()
                response = await client.get(f"{base}/{z}/{x}/{y}.png", params=params)
                result.latencies.append(time.perf_counter() - started)
                result.statuses[response.status_code] = (
                    result.statuses.get(response.status_code, 0) + 1
                )
                used = response.headers.get("x-mosaic-items")
                if used:
                    result.items_read.append(int(used.split("/")[0]))
                if response.headers.get("x-mosaic-partial"):
                    result.partial += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.seconds = time.perf_counter() - started
    return result


def register(base: str, search: dict[str, Any]) -> str:
    with httpx.Client(trust_env=False, timeout=60) as client:
        r = client.post(f"{base}/searches/register", json=search)
        r.raise_for_status()
        return r.json()["id"]


# ---------------------------------------------------------------------- report


def _ms(value: float) -> str:
    return f"{value * 1000:.0f}"


def render(
    args: argparse.Namespace,
    results: dict[tuple[str, str], list[Result]],
    tiles: list,
    meta: dict[str, Any],
) -> str:
    lines = [
        f"Command: `{meta['command']}`",
        "",
        f"Machine: {machine_description()}; load average at start {meta['load_start']}, "
        f"at end {meta['load_end']} (a shared machine: other jobs ran meanwhile; both "
        "servers were measured in alternating rounds, so they saw the same conditions).",
        "",
        f"Data: `terratiler demo --size {args.size} --scenes {args.scenes}` "
        f"({meta['items']} items, all over the same {args.size * 10 / 1000:.1f} km square, "
        "co-registered, some cloudy, one cut by the swath edge), loaded into the pgstac peer "
        "of the tests (stac-fastapi-pgstac + pgstac on a private PostgreSQL). Search: "
        "`collections=[sentinel-2-l2a]`, the items' bbox, 2023.",
        "",
        f"Servers: uvicorn, {args.workers} worker(s) each, one at a time. terratiler "
        f"{meta['ours']['terratiler']} (rio-tiler {meta['ours']['rio-tiler']}, titiler.core "
        f"{meta['ours']['titiler.core']}), catalog = the peer's STAC API. titiler-pgstac "
        f"{meta['peer']['titiler.pgstac']} (rio-tiler {meta['peer']['rio-tiler']}, "
        f"titiler.core {meta['peer']['titiler.core']}) in `.venv-titiler-pgstac`, on the "
        "peer's database, default settings (its per-geometry search cache included).",
        "",
        f"Tiles: {len(tiles)} WebMercatorQuad tiles, z{args.min_zoom}-z{args.max_zoom} over "
        f"the items (at most {args.per_zoom} per zoom), 256 px PNG; {args.concurrency} "
        f"concurrent requests; {args.rounds} measured rounds per server and layer after a "
        "warm-up pass of every tile (figures: the median round). terratiler's "
        f"`mosaic_time_limit` was {args.time_limit:g} s, so that no tile is cut short "
        "(`partial` counts tiles answered with `X-Mosaic-Partial`); titiler-pgstac has no "
        "time limit on reading.",
        "",
        "Ratio: terratiler / titiler-pgstac tiles/s in each pair of rounds (the two servers "
        "take turns round by round), the median pair; CPU ratio: titiler-pgstac's server CPU "
        "per tile over terratiler's (their PostgreSQL's work for titiler-pgstac's per-tile "
        "searches is not counted: that favours titiler-pgstac).",
        "",
        "| layer | server | tiles/s | p50 ms | p95 ms | server CPU ms/tile | items read / tile "
        "| partial | non-200 | ratio tiles/s (rounds) | ratio CPU/tile |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    targets: list[tuple[str, float]] = []
    for layer in LAYERS:
        rows = {}
        for server in ("terratiler", "titiler-pgstac"):
            rounds = results.get((layer.name, server))
            if not rounds:
                continue
            ordered = sorted(rounds, key=lambda r: r.tiles_per_second)
            rows[server] = ordered[len(ordered) // 2]
        ratio = cpu_ratio = ""
        if "terratiler" in rows and "titiler-pgstac" in rows:
            pairs = [
                a.tiles_per_second / b.tiles_per_second
                for a, b in zip(
                    results[(layer.name, "terratiler")],
                    results[(layer.name, "titiler-pgstac")],
                    strict=False,
                )
            ]
            paired = statistics.median(pairs)
            targets.append((layer.name, paired))
            ratio = f"**{paired:.2f}x** ({', '.join(f'{p:.2f}' for p in pairs)})"
            cpu_ratio = f"{rows['titiler-pgstac'].cpu_ms_per_tile / rows['terratiler'].cpu_ms_per_tile:.2f}x"
        for server, r in rows.items():
            bad = sum(n for code, n in r.statuses.items() if code != 200)
            items = f"{sum(r.items_read) / len(r.items_read):.1f}" if r.items_read else "n/a"
            ours = server == "terratiler"
            lines.append(
                f"| {layer.name} | {server} | {r.tiles_per_second:.1f} | "
                f"{_ms(percentile(r.latencies, 50))} | {_ms(percentile(r.latencies, 95))} | "
                f"{r.cpu_ms_per_tile:.0f} | {items} | {r.partial if ours else 'n/a'} | {bad} | "
                f"{ratio if ours else ''} | {cpu_ratio if ours else ''} |"
            )
    if targets:
        low = [f"{name} ({value:.2f}x)" for name, value in targets if value < 2.0]
        lines += [
            "",
            "Target (issue 4): >= 2x titiler-pgstac's tiles/s: "
            + (
                "**met** on every layer."
                if not low
                else f"**NOT met** on {', '.join(low)}; met on the others."
            ),
        ]
    lines += ["", meta.get("notes", "")]
    return "\n".join(lines)


# ---------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--scenes", type=int, default=12)
    parser.add_argument("--demo", type=Path, default=None)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-zoom", type=int, default=8)
    parser.add_argument("--max-zoom", type=int, default=14)
    parser.add_argument("--per-zoom", type=int, default=64)
    parser.add_argument(
        "--time-limit",
        type=float,
        default=120.0,
        help="terratiler's mosaic_time_limit during the run (s): high, so no tile is partial",
    )
    parser.add_argument(
        "--layers", default="", help="comma-separated layer numbers to run (1-4), default all"
    )
    parser.add_argument("--no-write", action="store_true", help="print, do not edit BENCHMARKS.md")
    return parser.parse_args(argv)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    # Stoppable even when started in the background (where SIGINT is ignored): the
    # servers and the pgstac peer are stopped in the `finally` below.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    args = parse_args(argv)
    command = " ".join(
        [".venv/bin/python bench/mosaic.py", *(sys.argv[1:] if argv is None else argv)]
    )
    demo = ensure_demo(
        (args.demo or BENCH_DATA / f"mosaic-{args.size}x{args.scenes}").resolve(),
        args.size,
        args.scenes,
    )
    ensure_titiler_pgstac(TITILER_PGSTAC_VENV, TITILER_PGSTAC_VERSION)
    from tests.harness.pgstac import PgstacPeer

    load_start = " ".join(f"{v:.1f}" for v in os.getloadavg())
    workdir = Path(tempfile.mkdtemp(prefix="bench-mosaic-"))
    peer = PgstacPeer(workdir=workdir / "peer")
    servers: list[Server] = []
    results: dict[tuple[str, str], list[Result]] = {}
    try:
        print("starting the pgstac peer and loading the demo items ...")
        peer.start()
        peer.load(demo)
        bbox = items_bbox(demo)
        search = {"collections": ["sentinel-2-l2a"], "bbox": bbox, "datetime": DATETIME}

        env = {k: v for k, v in os.environ.items() if not k.startswith(("TERRATILER_", "PG"))}
        ours = Server(
            "terratiler",
            [str(ROOT / ".venv/bin/uvicorn"), "bench.mosaic:terratiler_app", "--factory"]
            + ["--host", "127.0.0.1", "--port", str(port := free_port())]
            + ["--workers", str(args.workers), "--log-level", "warning", "--no-access-log"],
            port,
            {
                **env,
                "TERRATILER_CATALOG": peer.url,
                "TERRATILER_ALLOWED_SOURCES": str(demo),
                "TERRATILER_DATA_DIR": str(workdir / "data"),
                "TERRATILER_CACHE_CONTROL": "",
                "TERRATILER_MOSAIC_TIME_LIMIT": str(args.time_limit),
            },
            log=workdir / "terratiler.log",
        )
        theirs = Server(
            "titiler-pgstac",
            [str(TITILER_PGSTAC_VENV / "bin/uvicorn"), "titiler.pgstac.main:app"]
            + ["--host", "127.0.0.1", "--port", str(port := free_port())]
            + ["--workers", str(args.workers), "--log-level", "warning", "--no-access-log"],
            port,
            {**env, "DATABASE_URL": peer.dsn},
            cwd=workdir,
            log=workdir / "titiler-pgstac.log",
        )
        for server in (ours, theirs):
            server.start("/healthz" if server is ours else "/healthz")
            servers.append(server)
        ids = {ours.name: register(ours.url, search), theirs.name: register(theirs.url, search)}
        tiles = tile_set(bbox, range(args.min_zoom, args.max_zoom + 1), args.per_zoom)
        print(f"{len(tiles)} tiles z{args.min_zoom}-z{args.max_zoom}; search ids {ids}")

        chosen = {int(n) for n in args.layers.split(",") if n.strip()} or set(range(1, 9))
        for number, layer in enumerate(LAYERS, start=1):
            if number not in chosen:
                continue
            pairs = [(ours, layer.ours)]
            if layer.peer is not None:
                pairs.append((theirs, layer.peer))
            for server, params in pairs:  # warm-up: every tile once
                base = f"{server.url}/searches/{ids[server.name]}/tiles/WebMercatorQuad"
                warm = asyncio.run(_run(base, tiles, params, args.concurrency))
                print(f"  warm {layer.name:48s} {server.name:15s} {warm.statuses}")
            for round_ in range(args.rounds):
                for server, params in pairs if round_ % 2 == 0 else list(reversed(pairs)):
                    base = f"{server.url}/searches/{ids[server.name]}/tiles/WebMercatorQuad"
                    cpu0 = cpu_seconds(server.proc.pid)
                    result = asyncio.run(_run(base, tiles, params, args.concurrency))
                    result.server_cpu = cpu_seconds(server.proc.pid) - cpu0
                    results.setdefault((layer.name, server.name), []).append(result)
                    print(
                        f"  {layer.name:48s} {server.name:15s} "
                        f"{result.tiles_per_second:6.1f} tiles/s "
                        f"p95 {percentile(result.latencies, 95) * 1000:6.0f} ms {result.statuses}"
                    )
        meta = {
            "notes": NOTES,
            "command": command,
            "load_start": load_start,
            "load_end": " ".join(f"{v:.1f}" for v in os.getloadavg()),
            "items": len(list((demo / "items").glob("*.json"))),
            "ours": versions(
                ROOT / ".venv/bin/python", ["terratiler", "rio-tiler", "titiler.core"]
            ),
            "peer": versions(
                TITILER_PGSTAC_VENV / "bin/python",
                ["titiler.pgstac", "rio-tiler", "titiler.core"],
            ),
        }
        text = render(args, results, tiles, meta)
        print(text)
        if not args.no_write:
            write_section(SECTION, text)
            print(f"written to {ROOT / 'BENCHMARKS.md'}")
    finally:
        for server in servers:
            server.stop()
        peer.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
