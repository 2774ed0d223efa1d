"""Memory soak: a fixed request mix for minutes, the server's RSS sampled, against titiler.

Run by hand from the repository root::

    .venv/bin/python bench/soak.py                       # 5 minutes a run, 16 clients
    .venv/bin/python bench/soak.py --minutes 2 --no-write
    .venv/bin/python bench/soak.py --run '' --run MALLOC_ARENA_MAX=2 --no-peer

What it does:

1. writes (or reuses) the synthetic catalog ``data/bench/demo-<size>/`` (as bench/tiles.py);
2. starts, one after the other on free loopback ports with one uvicorn worker each:
   terratiler with its default settings and with the memory settings turned down
   (or the ``--run K=V,...`` environments given); titiler.application 2.4.0 (the peer, in
   ``.venv-titiler``, with the same GDAL options) on the part of the mix it can serve;
3. for ``--minutes`` sends a fixed, seeded, cyclic mix with ``--concurrency`` requests in
   flight: tiles at zooms 10-14 of every item (true colour, NDVI), 512 px bbox crops as
   ``.npy``, points, feature statistics, and for terratiler also Statistical API requests,
   mosaic tiles of a registered search and ``/catalog/search`` pages;
4. samples the RSS of the server's process tree every ``--sample`` seconds and writes, per
   run, RSS at start / after each minute / at the end, the last minute's growth and the
   request counts, into the "Memory soak" section of BENCHMARKS.md.

A run with any 5xx is not written (a soak of errors is worthless); 4xx are counted and shown
(the mix is meant to be all 200s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shlex
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

import httpx
import psutil
import rasterio
from rasterio.warp import transform_bounds

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    BENCH_DATA,
    BENCHMARKS_MD,
    ROOT,
    Server,
    free_port,
    machine_description,
    write_section,
)
from bench.tiles import (  # noqa: E402
    TITILER_VENV,
    TITILER_VERSION,
    ensure_demo,
    ensure_titiler,
    tile_list,
)

COLLECTION = "sentinel-2-l2a"
# The turned-down run: GDAL's block cache, the open-dataset pool, requests computed at once.
SMALL_ENV = (
    "TERRATILER_GDAL_CACHEMAX_MB=64,TERRATILER_DATASET_POOL_SIZE=8,TERRATILER_REQUEST_THREADS=8"
)
SECTION = "Memory soak"
RGB = [("assets", "red"), ("assets", "green"), ("assets", "blue"), ("rescale", "0,3000")]
NDVI = [("expression", "(nir-red)/(nir+red)"), ("rescale", "-0.2,0.9")]
NDVI_TITILER = [
    ("assets", "nir"),
    ("assets", "red"),
    ("expression", "(b1-b2)/(b1+b2)"),
    ("rescale", "-0.2,0.9"),
]


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


@dataclass
class Request:
    """One request of the mix."""

    kind: str
    method: str
    url: str
    body: dict | None = None


@dataclass
class Run:
    """What one server did over the soak."""

    name: str
    env: str
    samples: list[tuple[float, int]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)

    @property
    def server_errors(self) -> int:
        return sum(n for code, n in self.statuses.items() if code >= 500)

    def rss_at(self, seconds: float) -> int:
        """The last sample at or before ``seconds`` into the run."""
        best = self.samples[0][1]
        for t, rss in self.samples:
            if t <= seconds:
                best = rss
        return best


def item_files(demo: Path) -> list[Path]:
    return sorted((demo / "items").glob("*.json"))


def scene_geometry(item_json: Path) -> tuple[tuple[float, float, float, float], dict]:
    """The red band's bounds in lon/lat and a small field-sized polygon at its centre."""
    item = json.loads(item_json.read_text())
    href = (item_json.parent / item["assets"]["red"]["href"]).resolve()
    with rasterio.open(href) as src:
        bounds = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    cx, cy = (bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2
    d = 0.004
    polygon = {
        "type": "Polygon",
        "coordinates": [
            [
                [cx - d, cy - d],
                [cx + d, cy - d],
                [cx + d, cy + d],
                [cx - d, cy + d],
                [cx - d, cy - d],
            ]
        ],
    }
    return bounds, polygon


def build_mix(
    base: str, demo: Path, peer: bool, search_id: str | None, seed: int = 7
) -> list[Request]:
    """The fixed mix: every kind of request, spread over the items and the scene."""
    rng = random.Random(seed)
    mix: list[Request] = []
    items = item_files(demo)
    for item_json in items:
        item_id = item_json.stem
        prefix = "/stac" if peer else f"/collections/{COLLECTION}/items/{item_id}"
        extra = [("url", str(item_json.resolve()))] if peer else []
        tiles = tile_list(item_json, [10, 11, 12, 13, 14], per_zoom=6)
        for z, x, y in tiles:
            for name, layer in (("tile rgb", RGB), ("tile ndvi", NDVI_TITILER if peer else NDVI)):
                query = urlencode([*extra, *layer])
                url = f"{base}{prefix}/tiles/WebMercatorQuad/{z}/{x}/{y}.png?{query}"
                mix.append(Request(name, "GET", url))
        bounds, polygon = scene_geometry(item_json)
        for _ in range(4):
            w = (bounds[2] - bounds[0]) / 6
            h = (bounds[3] - bounds[1]) / 6
            x0 = rng.uniform(bounds[0], bounds[2] - w)
            y0 = rng.uniform(bounds[1], bounds[3] - h)
            layer = NDVI_TITILER if peer else NDVI
            query = urlencode([*extra, *[p for p in layer if p[0] != "rescale"]])
            mix.append(
                Request(
                    "crop npy",
                    "GET",
                    f"{base}{prefix}/bbox/{x0},{y0},{x0 + w},{y0 + h}/512x512.npy?{query}",
                )
            )
            # The middle of the scene: its UTM footprint is not its lon/lat bounds.
            lon = rng.uniform(bounds[0] + 2 * w, bounds[2] - 2 * w)
            lat = rng.uniform(bounds[1] + 2 * h, bounds[3] - 2 * h)
            query = urlencode([*extra, ("assets", "red"), ("assets", "nir")])
            mix.append(Request("point", "GET", f"{base}{prefix}/point/{lon},{lat}?{query}"))
        feature = {"type": "Feature", "properties": {}, "geometry": polygon}
        query = urlencode([*extra, *[p for p in (NDVI_TITILER if peer else NDVI)]])
        mix.append(
            Request("feature statistics", "POST", f"{base}{prefix}/statistics?{query}", feature)
        )
        if not peer:
            mix.append(
                Request(
                    "statistical api",
                    "POST",
                    f"{base}/statistics",
                    {
                        "input": {
                            "bounds": {"geometry": polygon},
                            "data": [{"type": COLLECTION}],
                        },
                        "aggregation": {
                            "timeRange": {
                                "from": "2023-04-01T00:00:00Z",
                                "to": "2023-10-01T00:00:00Z",
                            },
                            "aggregationInterval": {"of": "P30D"},
                            "outputs": {"ndvi": {"expression": "(nir-red)/(nir+red)"}},
                            "mask": "scl-clear",
                        },
                    },
                )
            )
            mix.append(Request("catalog search", "GET", f"{base}/catalog/search?limit=5"))
    if search_id is not None:
        for z, x, y in tile_list(items[0], [11, 12, 13], per_zoom=8):
            url = f"{base}/searches/{search_id}/tiles/WebMercatorQuad/{z}/{x}/{y}.png?"
            mix.append(Request("mosaic tile", "GET", url + urlencode(NDVI)))
    rng.shuffle(mix)
    return mix


def register_search(base: str) -> str:
    body = {"collections": [COLLECTION], "datetime": "2023-01-01T00:00:00Z/2023-12-31T23:59:59Z"}
    with httpx.Client(trust_env=False, timeout=30) as client:
        response = client.post(f"{base}/searches/register", json=body)
        response.raise_for_status()
        return response.json()["id"]


async def soak(server: Server, mix: list[Request], run: Run, args: argparse.Namespace) -> None:
    start = time.monotonic()
    deadline = start + args.minutes * 60
    position = 0
    run.samples.append((0.0, rss_bytes(server.proc.pid)))

    async def sampler() -> None:
        while time.monotonic() < deadline:
            await asyncio.sleep(args.sample)
            run.samples.append((time.monotonic() - start, rss_bytes(server.proc.pid)))

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal position
        while time.monotonic() < deadline:
            request = mix[position % len(mix)]
            position += 1
            try:
                response = await client.request(request.method, request.url, json=request.body)
                code = response.status_code
                if code >= 400 and len(run.error_samples) < 8:
                    run.error_samples.append(f"{request.kind} {code}: {response.text[:160]}")
            except httpx.HTTPError as error:
                code = 599
                if len(run.error_samples) < 8:
                    run.error_samples.append(f"{request.kind}: {type(error).__name__}")
            run.statuses[code] = run.statuses.get(code, 0) + 1
            run.counts[request.kind] = run.counts.get(request.kind, 0) + 1

    limits = httpx.Limits(max_connections=args.concurrency)
    async with httpx.AsyncClient(trust_env=False, timeout=120, limits=limits) as client:
        await asyncio.gather(sampler(), *(client_loop(client) for _ in range(args.concurrency)))
    run.samples.append((time.monotonic() - start, rss_bytes(server.proc.pid)))


def mib(value: int) -> str:
    return f"{value / 2**20:,.0f}"


def render(args: argparse.Namespace, command: str, runs: list[Run]) -> str:
    minutes = list(range(1, max(1, int(args.minutes)) + 1))
    head = " | ".join(f"{m} min" for m in minutes)
    lines = [
        f"Written by `bench/soak.py` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        "",
        f"- Command: `{command}`",
        f"- Machine: {machine_description()}. Client and server share it.",
        f"- Load: {args.concurrency} requests in flight for {args.minutes:g} minutes per run, "
        "one uvicorn worker per server, a fixed seeded mix cycled in order (tiles at zooms "
        "10-14 true colour and NDVI, 512 px NDVI crops as .npy, points, feature statistics; "
        "terratiler also Statistical API requests, mosaic NDVI tiles of a registered search "
        "and /catalog/search pages). RSS of the server's process tree, MiB.",
        "",
        f"| run | settings | start | {head} | last minute's growth | requests | 4xx | 5xx |",
        "| --- | --- | ---: | "
        + " | ".join("---:" for _ in minutes)
        + " | ---: | ---: | ---: | ---: |",
    ]
    for run in runs:
        at = [run.rss_at(60 * m) for m in minutes]
        growth = at[-1] - (run.rss_at(60 * (minutes[-1] - 1)) if len(minutes) > 1 else at[0])
        errors4 = sum(n for c, n in run.statuses.items() if 400 <= c < 500)
        lines.append(
            f"| {run.name} | {run.env} | {mib(run.samples[0][1])} | "
            + " | ".join(mib(v) for v in at)
            + f" | {growth / 2**20:+,.0f} | {sum(run.counts.values()):,} | {errors4} | "
            f"{run.server_errors} |"
        )
    lines.append("")
    for run in runs:
        counts = ", ".join(f"{k} {v:,}" for k, v in sorted(run.counts.items()))
        lines.append(f"- {run.name}: {counts}.")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="soak length per run")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between RSS samples")
    parser.add_argument("--size", type=int, default=2048, help="demo scene size (px)")
    parser.add_argument("--scenes", type=int, default=12, help="demo scenes")
    parser.add_argument("--demo", type=Path, default=None, help="demo catalog folder")
    parser.add_argument(
        "--run",
        action="append",
        dest="runs",
        metavar="K=V,K=V",
        help="environment of one terratiler run (repeatable; '' = defaults); default: "
        f"the defaults, then {SMALL_ENV}",
    )
    parser.add_argument("--no-peer", action="store_true", help="skip titiler.application")
    parser.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = " ".join(["python bench/soak.py", *(shlex.quote(a) for a in (argv or sys.argv[1:]))])
    demo = ensure_demo(args.demo or BENCH_DATA / f"demo-{args.size}", args.size, args.scenes)
    if not args.no_peer:
        ensure_titiler(TITILER_VENV, TITILER_VERSION)

    from app.gdal_env import gdal_options

    gdal_env = gdal_options()
    log_dir = BENCH_DATA / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    base_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("TERRATILER_", "TITILER_"))
    }
    uvicorn_opts = ["--host", "127.0.0.1", "--no-access-log", "--log-level", "warning"]
    plans: list[tuple[str, str, list[str], dict[str, str], bool]] = []
    for run in args.runs or ["", SMALL_ENV]:
        env = dict(pair.split("=", 1) for pair in run.split(",") if pair)
        label = ", ".join(f"`{k}={v}`" for k, v in env.items()) or "defaults"
        plans.append(("terratiler", label, [], env, False))
    if not args.no_peer:
        plans.append(("titiler.application", "defaults (same GDAL options)", [], {}, True))
    runs: list[Run] = []
    for name, env_label, _, env, peer in plans:
        port = free_port()
        if peer:
            argv_ = [str(TITILER_VENV / "bin" / "uvicorn"), "titiler.application.main:app"]
        else:
            argv_ = [str(ROOT / ".venv" / "bin" / "uvicorn"), "app.main:create_app", "--factory"]
        data_dir = BENCH_DATA / f"soak-data-{port}"
        server = Server(
            name,
            [*argv_, "--port", str(port), *uvicorn_opts],
            port,
            {
                **base_env,
                **gdal_env,
                "TERRATILER_CATALOG": str(demo.resolve()),
                "TERRATILER_DATA_DIR": str(data_dir),
                **env,
            },
            log=log_dir / f"soak-{name}-{port}.log",
        )
        run = Run(name, env_label)
        with server:
            server.start("/healthz")
            search_id = None if peer else register_search(server.url)
            mix = build_mix(server.url, demo, peer, search_id)
            print(f"{name} ({env_label}): {len(mix)} requests in the mix, soaking ...", flush=True)
            asyncio.run(soak(server, mix, run, args))
        runs.append(run)
        print(
            f"  RSS {mib(run.samples[0][1])} -> {mib(run.samples[-1][1])} MiB, "
            f"{sum(run.counts.values())} requests, statuses {run.statuses}"
        )
        for sample in run.error_samples:
            print(f"    {sample}")
    body = render(args, command, runs)
    print()
    print(body)
    if any(run.server_errors for run in runs if run.name == "terratiler"):
        # The peer's own 5xx are shown in its row, not a reason to drop the figures.
        print("\nterratiler answered 5xx during the soak: results NOT written")
        return 1
    if not args.no_write:
        write_section(SECTION, body, BENCHMARKS_MD)
        print(f"\nwritten to {BENCHMARKS_MD} (section {SECTION})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
