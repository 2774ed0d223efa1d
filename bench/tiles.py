"""Tile throughput: terratiler against titiler.application on the same demo data.

Run by hand from the repository root::

    .venv/bin/python bench/tiles.py                 # 2048 px demo, 2 workers each
    .venv/bin/python bench/tiles.py --size 4096 --workers 2 --rounds 3
    .venv/bin/python bench/tiles.py --no-write --terratiler-env RIO_TILER_MAX_THREADS=1

What it does:

1. writes (or reuses) a synthetic Sentinel-2 catalog ``data/bench/demo-<size>/``
   (``terratiler demo``);
2. installs ``titiler.application==TITILER_VERSION`` into ``.venv-titiler`` when missing
   (its own venv: the project's ``.venv`` is never touched);
3. starts titiler.application (``uvicorn titiler.application.main:app``) and terratiler
   (``uvicorn app.main:create_app --factory``) with the same number of workers on free
   loopback ports, both with the GDAL options of ``app.gdal_env`` and no access log;
4. for each layer (single band, true colour, NDVI from two assets) requests a fixed list
   of WebMercatorQuad tiles covering the scene at a few zooms, each once per round, with
   a fixed number of requests in flight, the services taking turns block by block (so
   outside load falls on both alike); every response must be a 200 PNG of the requested
   size (anything else is counted and the results are not written);
5. writes tiles/s, p50/p95 latency, server CPU per tile and the terratiler/titiler ratio
   into the "Tiles" section of BENCHMARKS.md.

titiler is given the item by ``/stac/...?url=<item json path>``; terratiler by
``/collections/sentinel-2-l2a/items/{id}/...`` through its catalog. terratiler harmonizes
reflectance for expressions by default; NDVI is run both ways (default and
``harmonize=false``, which is the same work titiler does).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import io
import json
import os
import random
import shlex
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

import httpx
import morecantile
import numpy as np
import psutil
import rasterio
from PIL import Image
from rasterio.warp import transform_geom
from shapely.geometry import box, shape

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    BENCH_DATA,
    BENCHMARKS_MD,
    ROOT,
    Server,
    cpu_seconds,
    free_port,
    machine_description,
    percentile,
    write_section,
)

TITILER_VERSION = "2.4.0"
TITILER_VENV = ROOT / ".venv-titiler"
COLLECTION = "sentinel-2-l2a"
TMS = "WebMercatorQuad"
TILESIZE = 256
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# NDVI as titiler.application accepts it for a STAC item with assets red and nir: the
# first spelling its version answers 200 to is used (and printed).
TITILER_NDVI_CANDIDATES: list[list[tuple[str, str]]] = [
    [
        ("assets", "red"),
        ("assets", "nir"),
        ("asset_as_band", "true"),
        ("expression", "(nir-red)/(nir+red)"),
    ],
    [("assets", "red"), ("assets", "nir"), ("expression", "(nir_b1-red_b1)/(nir_b1+red_b1)")],
    # rio-tiler 9: the assets' bands are stacked as b1, b2 ... in the order of `assets`.
    [("assets", "red"), ("assets", "nir"), ("expression", "(b2-b1)/(b2+b1)")],
]
NDVI_RENDER = [("rescale", "-1,1"), ("colormap_name", "rdylgn")]
# The same NDVI as a Sentinel Hub evalscript (terratiler translates it to numpy).
NDVI_EVALSCRIPT = """//VERSION=3
function setup() {
  return { input: ["B04", "B08"], output: { bands: 1, sampleType: "FLOAT32" } };
}
function evaluatePixel(sample) {
  return [(sample.B08 - sample.B04) / (sample.B08 + sample.B04)];
}
"""
REFLECTANCE_RENDER = [("rescale", "0,3000")]


@dataclass
class Layer:
    """One kind of tile, as each service spells it."""

    key: str
    title: str
    # (label, service, query parameters); the first is titiler, the reference.
    variants: list[tuple[str, str, list[tuple[str, str]]]]


@dataclass
class Result:
    """What one (service, layer) run measured."""

    service: str
    layer: str
    planned: int
    done: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    cpu_seconds: float = 0.0
    client_cpu_seconds: float = 0.0
    machine_cpu_seconds: float = 0.0
    # The first correct PNG of each tile, to compare the services' pixels.
    images: dict[tuple[int, int, int], bytes] = field(default_factory=dict)
    truncated: bool = False

    @property
    def kib_per_tile(self) -> float:
        """Mean size of the tiles' PNGs."""
        sizes = [len(content) for content in self.images.values()]
        return sum(sizes) / len(sizes) / 1024 if sizes else float("nan")

    @property
    def ok(self) -> int:
        """Tiles answered correctly."""
        return self.done - self.errors

    @property
    def tiles_per_second(self) -> float:
        """Correct tiles per wall-clock second."""
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms_per_tile(self) -> float:
        """Server CPU time (all worker processes) per tile, in ms."""
        return 1000 * self.cpu_seconds / self.done if self.done else float("nan")


# --- setup -------------------------------------------------------------------------------


def ensure_demo(path: Path, size: int, scenes: int) -> Path:
    """The demo catalog at ``path``: reused when its items exist, generated otherwise."""
    if (path / "collection.json").exists() and list((path / "items").glob("*.json")):
        print(f"reusing demo catalog {path}")
        return path
    print(f"writing demo catalog {path} (--size {size} --scenes {scenes}) ...")
    subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "terratiler"),
            "demo",
            str(path),
            "--size",
            str(size),
            "--scenes",
            str(scenes),
        ],
        check=True,
    )
    return path


def _venv_version(venv: Path, dist: str) -> str | None:
    python = venv / "bin" / "python"
    if not python.exists():
        return None
    out = subprocess.run(
        [str(python), "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() if out.returncode == 0 else None


def ensure_titiler(venv: Path, version: str) -> None:
    """``titiler.application==version`` (and the project's uvicorn) in their own venv."""
    if _venv_version(venv, "titiler.application") == version:
        return
    uvicorn_version = importlib.metadata.version("uvicorn")
    print(f"installing titiler.application=={version} into {venv} ...")
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            f"titiler.application=={version}",
            f"uvicorn[standard]=={uvicorn_version}",
        ],
        check=True,
    )


def versions_of(python: Path, dists: list[str]) -> dict[str, str]:
    """Distribution versions (and GDAL's) as seen by the interpreter ``python``."""
    code = (
        "import importlib.metadata as m, json, rasterio\n"
        f"v = {{d: m.version(d) for d in {dists!r}}}\n"
        "v['GDAL'] = rasterio.__gdal_version__\n"
        "print(json.dumps(v))"
    )
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def pick_item(demo: Path, item_id: str | None) -> tuple[str, Path]:
    """The item to tile: ``item_id`` or the first by id."""
    items = sorted((demo / "items").glob("*.json"))
    if item_id:
        items = [p for p in items if p.stem == item_id]
        if not items:
            raise SystemExit(f"no item {item_id} in {demo}")
    return items[0].stem, items[0].resolve()


def tile_list(
    item_json: Path, zooms: list[int], per_zoom: int | None = None
) -> list[tuple[int, int, int]]:
    """WebMercatorQuad tiles whose bounds intersect the red band's footprint.

    With ``per_zoom``, at most that many tiles of each zoom, evenly spaced in row-major
    order (so still spread over the whole scene).
    """
    item = json.loads(item_json.read_text())
    href = (item_json.parent / item["assets"]["red"]["href"]).resolve()
    with rasterio.open(href) as src:
        footprint = shape(transform_geom(src.crs, "EPSG:4326", box(*src.bounds).__geo_interface__))
    tms = morecantile.tms.get(TMS)
    tiles = []
    for z in zooms:
        level = []
        for t in tms.tiles(*footprint.bounds, [z]):
            b = tms.bounds(t)
            # Strictly inside by a hair, so edge-touching tiles (404 on both) are left out.
            if footprint.buffer(-1e-7).intersects(box(b.left, b.bottom, b.right, b.top)):
                level.append((t.z, t.x, t.y))
        if per_zoom and len(level) > per_zoom:
            level = [level[i * len(level) // per_zoom] for i in range(per_zoom)]
        tiles.extend(level)
    return tiles


# --- HTTP --------------------------------------------------------------------------------


def png_size(content: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG's IHDR, None when it is not a PNG."""
    if len(content) < 24 or not content.startswith(PNG_SIGNATURE) or content[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", content[16:24])


def tile_url(base: str, prefix: str, tile: tuple[int, int, int], params: list) -> str:
    """``{base}{prefix}/tiles/WebMercatorQuad/{z}/{x}/{y}.png?{params}``."""
    z, x, y = tile
    return f"{base}{prefix}/tiles/{TMS}/{z}/{x}/{y}.png?{urlencode(params)}"


def check_tile(response: httpx.Response) -> str | None:
    """Why a tile response is wrong, or None when it is a 200 PNG of TILESIZE."""
    if response.status_code != 200:
        return f"HTTP {response.status_code}: {response.text[:160]}"
    if not response.headers.get("content-type", "").startswith("image/png"):
        return f"content-type {response.headers.get('content-type')}"
    size = png_size(response.content)
    if size != (TILESIZE, TILESIZE):
        return f"image size {size}, expected {TILESIZE}x{TILESIZE}"
    return None


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine spent busy (all processes, all cores)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


@dataclass
class Variant:
    """One service's spelling of a layer, and what it measured."""

    service: str
    key: str
    pid: int
    urls: list[tuple[tuple[int, int, int], str]]
    result: Result


async def _warm(variant: Variant, count: int, concurrency: int) -> None:
    """Untimed requests: open files, fill caches, resolve the item."""
    step = max(1, len(variant.urls) // max(1, count))
    warm = variant.urls[::step][:count]
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(trust_env=False, timeout=60.0, limits=limits) as client:
        await asyncio.gather(*(client.get(u) for _, u in warm))


async def _block(variant: Variant, plan: list, concurrency: int) -> None:
    """Request every URL of ``plan`` once, ``concurrency`` at a time; time and check each."""
    result = variant.result
    # A fresh client (so fresh keep-alive connections) each block: uvicorn's workers share
    # one listening socket and a kept-alive connection stays with the worker that
    # accepted it, so one block's split of connections between workers is luck; over
    # blocks it averages out.
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(trust_env=False, timeout=60.0, limits=limits) as client:
        queue: asyncio.Queue = asyncio.Queue()
        for entry in plan:
            queue.put_nowait(entry)

        async def worker() -> None:
            while not queue.empty():
                tile, url = queue.get_nowait()
                t0 = time.perf_counter()
                try:
                    response = await client.get(url)
                    problem = check_tile(response)
                except httpx.HTTPError as exc:
                    response, problem = None, f"{type(exc).__name__}: {exc}"
                result.latencies.append(time.perf_counter() - t0)
                result.done += 1
                if problem:
                    result.errors += 1
                    if len(result.error_samples) < 5:
                        result.error_samples.append(f"{tile}: {problem}")
                elif tile not in result.images:
                    result.images[tile] = response.content

        cpu0, client0, busy0 = cpu_seconds(variant.pid), time.process_time(), busy_cpu_seconds()
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.seconds += time.perf_counter() - start
        result.cpu_seconds += cpu_seconds(variant.pid) - cpu0
        result.client_cpu_seconds += time.process_time() - client0
        result.machine_cpu_seconds += busy_cpu_seconds() - busy0


def run_group(
    variants: list[Variant],
    rounds: int,
    concurrency: int,
    warmup: int,
    budget: float,
    block: int,
) -> None:
    """Run the variants of one layer in turns, block by block, within ``budget`` seconds.

    Each round is the tile list in a fresh (seeded) shuffled order, cut into blocks of
    ``block`` tiles; every variant requests a block before the next block starts, the
    order of the variants alternating from block to block, so that load from outside the
    benchmark and whatever drifts over time fall on all of them alike. A block is started
    only while the blocks so far leave room for one more in the budget (at least one
    always runs), so every variant requests exactly the same tiles.
    """
    order = random.Random(0)  # the same tile order for every variant
    for variant in variants:
        asyncio.run(_warm(variant, warmup, concurrency))
    blocks = []
    for _ in range(rounds):
        shuffled = list(range(len(variants[0].urls)))
        order.shuffle(shuffled)
        blocks += [shuffled[i : i + block] for i in range(0, len(shuffled), block)]
    start = time.perf_counter()
    for index, indexes in enumerate(blocks):
        elapsed = time.perf_counter() - start
        if index and elapsed + elapsed / index > budget:
            for variant in variants:
                variant.result.truncated = True
            break
        for variant in variants if index % 2 == 0 else variants[::-1]:
            asyncio.run(_block(variant, [variant.urls[i] for i in indexes], concurrency))


def probe_titiler_ndvi(base: str, item_json: Path, tile: tuple[int, int, int]) -> list:
    """The first NDVI spelling titiler answers a 200 PNG to."""
    with httpx.Client(trust_env=False, timeout=60.0) as client:
        for candidate in TITILER_NDVI_CANDIDATES:
            params = [("url", str(item_json)), *candidate, *NDVI_RENDER]
            response = client.get(tile_url(base, "/stac", tile, params))
            problem = check_tile(response)
            print(f"  titiler NDVI {dict(candidate)}: {problem or 'OK'}")
            if problem is None:
                return candidate
    raise SystemExit("titiler accepts none of the NDVI spellings; see TITILER_NDVI_CANDIDATES")


# --- report ------------------------------------------------------------------------------


def _fmt(value: float, digits: int = 1) -> str:
    return "n/a" if value != value else f"{value:.{digits}f}"


def render_section(
    args: argparse.Namespace,
    command: str,
    versions: dict[str, dict[str, str]],
    item_id: str,
    tiles: list[tuple[int, int, int]],
    layers: list[Layer],
    results: dict[tuple[str, str], Result],
) -> str:
    """The Markdown body of the "Tiles" section."""
    by_zoom = {z: sum(1 for t in tiles if t[0] == z) for z in sorted({t[0] for t in tiles})}
    tv, pv = versions["titiler"], versions["terratiler"]
    machine_busy = sum(r.machine_cpu_seconds for r in results.values())
    ours = sum(r.cpu_seconds + r.client_cpu_seconds for r in results.values())
    wall = sum(r.seconds for r in results.values())
    lines = [
        f"Written by `bench/tiles.py` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        "",
        f"- Command: `{command}`",
        f"- Machine: {machine_description()}. Client and servers share it; other processes "
        f"used {_fmt((machine_busy - ours) / wall if wall else float('nan'), 2)} cores on "
        "average during the timed blocks (0 = a quiet machine).",
        f"- Versions: terratiler {pv['terratiler']} (titiler.core {pv['titiler.core']}, "
        f"rio-tiler {pv['rio-tiler']}, rasterio {pv['rasterio']}, GDAL {pv['GDAL']}, "
        f"uvicorn {pv['uvicorn']}); titiler.application {tv['titiler.application']} "
        f"(titiler.core {tv['titiler.core']}, rio-tiler {tv['rio-tiler']}, rasterio "
        f"{tv['rasterio']}, GDAL {tv['GDAL']}, uvicorn {tv['uvicorn']}) in `.venv-titiler`.",
        f"- Servers: uvicorn, **{args.workers} workers each**, no access log, the same GDAL "
        "options (`app.gdal_env.gdal_options()`) for both. titiler reads the item by "
        "`/stac/...?url=<item json path>`, terratiler by "
        f"`/collections/{COLLECTION}/items/{{id}}/...` through its catalog. Extra environment: "
        f"titiler {_env_text(args.titiler_env)}, terratiler {_env_text(args.terratiler_env)}.",
        f"- Data: `terratiler demo --size {args.size} --scenes {args.scenes}` (local COGs, "
        f"page-cached), item `{item_id}`.",
        f"- Tiles: {len(tiles)} {TMS} {TILESIZE} px PNG tiles covering the scene "
        f"({', '.join(f'z{z}: {n}' for z, n in by_zoom.items())}), each requested once per "
        f"round in a fixed shuffled order, up to {args.rounds} rounds, {args.concurrency} "
        f"requests in flight (httpx async, keep-alive), after {args.warmup} untimed warm-up "
        f"tiles. Rounds are cut into blocks of {args.block} tiles and the services of a layer "
        "take turns block by block (order alternating), so load from outside falls on all "
        f"alike; at most {args.max_seconds:g} s of blocks per layer, whole blocks only, so "
        "every service gets exactly the same tiles. Every response is checked: "
        f"HTTP 200, image/png, {TILESIZE}x{TILESIZE}.",
        "- Server CPU ms/tile: user+system time of all the service's processes over the "
        "timed blocks, per tile; it is less sensitive than tiles/s to other load.",
        "",
        "| layer | service | query | tiles (rounds) | errors | tiles/s | p50 ms | p95 ms "
        "| server CPU ms/tile | KiB/tile | ratio tiles/s | ratio CPU/tile |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for layer in layers:
        ref = results.get(("titiler", layer.key))
        for label, _, params in layer.variants:
            r = results.get((label, layer.key))
            if r is None:
                continue
            query = "&".join(
                f"{k}=<NDVI evalscript: bench/tiles.py>" if k == "evalscript" else f"{k}={v}"
                for k, v in params
            )
            ratio = cpu_ratio = ""
            if label != "titiler" and ref and ref.tiles_per_second:
                ratio = f"**{r.tiles_per_second / ref.tiles_per_second:.2f}**"
                cpu_ratio = f"{ref.cpu_ms_per_tile / r.cpu_ms_per_tile:.2f}"
            lines.append(
                f"| {layer.title} | {label} | `{query}` | {r.done} ({r.done / len(tiles):.1f}) | {r.errors} "
                f"| {_fmt(r.tiles_per_second)} | {_fmt(1000 * percentile(r.latencies, 50), 0)} "
                f"| {_fmt(1000 * percentile(r.latencies, 95), 0)} | {_fmt(r.cpu_ms_per_tile)} "
                f"| {_fmt(r.kib_per_tile)} | {ratio} | {cpu_ratio} |"
            )
    lines += [
        "",
        "Ratios are terratiler / titiler (tiles/s) and titiler / terratiler (CPU per tile): "
        "above 1 means terratiler is faster. titiler's layers omit `url=<item json>`. "
        "KiB/tile: mean PNG size; the services encode PNG at different zlib levels "
        "(titiler 6, GDAL's default; terratiler 1, its `png_zlevel` default: see "
        "`app/rendering.py`), part of the CPU difference.",
        "",
        "Tiles compared with titiler's (first response of each tile, decoded): "
        + "; ".join(f"{k}: {v}" for k, v in identical_tiles(layers, results).items())
        + ". (terratiler evaluates band math with its own evaluator, titiler with numexpr; "
        "rounding of the float results can move a pixel across a colormap step.)",
    ]
    ndvi_ti = results.get(("titiler", "ndvi"))
    ndvi_te = results.get(("terratiler", "ndvi"))
    if ndvi_ti and ndvi_te and ndvi_ti.tiles_per_second:
        ratio = ndvi_te.tiles_per_second / ndvi_ti.tiles_per_second
        others = [
            (
                layer.title,
                results[("terratiler", layer.key)].tiles_per_second
                / results[("titiler", layer.key)].tiles_per_second,
            )
            for layer in layers
            if layer.key != "ndvi"
            and ("terratiler", layer.key) in results
            and ("titiler", layer.key) in results
        ]
        slower = [f"{t} ({r:.2f}x)" for t, r in others if r < 1.0]
        lines += [
            "",
            "Target (issue 3): terratiler >= 2x titiler's tiles/s on the two-asset NDVI tile: "
            f"**{'met' if ratio >= 2 else 'NOT met'}** ({ratio:.2f}x); never slower on the "
            "others: "
            + ("**met**." if not slower else f"**NOT met**: slower on {', '.join(slower)}."),
        ]
    script = results.get(("terratiler evalscript", "ndvi"))
    if ndvi_ti and ndvi_te and script and ndvi_ti.tiles_per_second and ndvi_te.tiles_per_second:
        vs_titiler = script.tiles_per_second / ndvi_ti.tiles_per_second
        vs_expression = script.tiles_per_second / ndvi_te.tiles_per_second
        lines += [
            "",
            "Target (issue 16): a tile with an evalscript never slower than titiler's tile with "
            f"the equivalent expression: **{'met' if vs_titiler >= 1 else 'NOT met'}** "
            f"({vs_titiler:.2f}x titiler; {vs_expression:.2f}x terratiler's own expression).",
        ]
    return "\n".join(lines)


def _env_text(pairs: list[str]) -> str:
    return ", ".join(f"`{p}`" for p in pairs) if pairs else "none"


def _pixels(content: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(content)) as image:
        return np.asarray(image.convert("RGBA"), dtype=np.int16)


def identical_tiles(layers: list[Layer], results: dict[tuple[str, str], Result]) -> dict:
    """For each non-titiler variant: how its tiles compare with titiler's, pixel by pixel."""
    same: dict[str, str] = {}
    for layer in layers:
        ref = results.get(("titiler", layer.key))
        for label, _, _ in layer.variants:
            r = results.get((label, layer.key))
            if label == "titiler" or ref is None or r is None:
                continue
            common = sorted(set(ref.images) & set(r.images))
            decoded = {t: (_pixels(ref.images[t]), _pixels(r.images[t])) for t in common}
            differing = [t for t in common if not np.array_equal(*decoded[t])]
            text = f"{len(common) - len(differing)}/{len(common)} identical pixel for pixel"
            if differing:
                max_diff, changed, total, alpha_equal = 0, 0, 0, 0
                for t in differing:
                    a, b = decoded[t]
                    diff = np.abs(a - b)
                    max_diff = max(max_diff, int(diff[..., :3].max()))
                    changed += int((diff.max(axis=-1) > 0).sum())
                    total += diff.shape[0] * diff.shape[1]
                    alpha_equal += bool((a[..., 3] == b[..., 3]).all())
                text += (
                    f"; the other {len(differing)}: alpha (mask) identical in {alpha_equal}, "
                    f"{100 * changed / total:.3f} % of pixels differ, by at most {max_diff} "
                    "in a colour channel"
                )
            same[f"{layer.key} ({label})"] = text
    return same


# --- main --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=2048, help="demo scene width in px")
    parser.add_argument("--scenes", type=int, default=2, help="demo scenes (dates)")
    parser.add_argument("--demo", type=Path, help="demo folder (default data/bench/demo-SIZE)")
    parser.add_argument("--item", help="item id (default: the first)")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers per service")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per layer (at most)")
    parser.add_argument("--zooms", default="12,13,14")
    parser.add_argument(
        "--max-tiles-per-zoom",
        type=int,
        default=64,
        help="at most this many tiles per zoom, spread over the scene (0: all)",
    )
    parser.add_argument("--warmup", type=int, default=16, help="untimed tiles per service")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=60.0,
        help="time budget of the timed requests of one layer (all services)",
    )
    parser.add_argument("--block", type=int, default=35, help="tiles per turn of each service")
    parser.add_argument(
        "--layers", default="single,rgb,ndvi", help="comma-separated subset of single,rgb,ndvi"
    )
    parser.add_argument(
        "--titiler-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment of titiler (repeatable)",
    )
    parser.add_argument(
        "--terratiler-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment of terratiler (repeatable), e.g. RIO_TILER_MAX_THREADS=1",
    )
    parser.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    return parser.parse_args(argv)


def _env_pairs(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"expected KEY=VALUE, got {pair!r}")
        env[key] = value
    return env


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = " ".join(["python bench/tiles.py", *(shlex.quote(a) for a in (argv or sys.argv[1:]))])
    demo = ensure_demo(args.demo or BENCH_DATA / f"demo-{args.size}", args.size, args.scenes)
    ensure_titiler(TITILER_VENV, TITILER_VERSION)
    dists = ["titiler.core", "rio-tiler", "rasterio", "uvicorn"]
    versions = {
        "titiler": versions_of(TITILER_VENV / "bin" / "python", ["titiler.application", *dists]),
        "terratiler": versions_of(ROOT / ".venv" / "bin" / "python", ["terratiler", *dists]),
    }
    print(
        f"titiler.application {versions['titiler']['titiler.application']} "
        f"(pinned {TITILER_VERSION}) in {TITILER_VENV}"
    )
    print(f"terratiler {versions['terratiler']['terratiler']} in {ROOT / '.venv'}")

    item_id, item_json = pick_item(demo, args.item)
    zooms = [int(z) for z in args.zooms.split(",")]
    tiles = tile_list(item_json, zooms, args.max_tiles_per_zoom)
    print(f"item {item_id}: {len(tiles)} tiles at zooms {zooms}")

    from app.gdal_env import gdal_options

    gdal_env = gdal_options()
    log_dir = BENCH_DATA / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    base_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("TERRATILER_", "TITILER_"))
    }
    uvicorn_opts = [
        "--host",
        "127.0.0.1",
        "--workers",
        str(args.workers),
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    ti_port, te_port = free_port(), free_port()
    titiler = Server(
        "titiler",
        [
            str(TITILER_VENV / "bin" / "uvicorn"),
            "titiler.application.main:app",
            "--port",
            str(ti_port),
            *uvicorn_opts,
        ],
        ti_port,
        {**base_env, **gdal_env, **_env_pairs(args.titiler_env)},
        log=log_dir / "titiler.log",
    )
    terratiler = Server(
        "terratiler",
        [
            str(ROOT / ".venv" / "bin" / "uvicorn"),
            "app.main:create_app",
            "--factory",
            "--port",
            str(te_port),
            *uvicorn_opts,
        ],
        te_port,
        {
            **base_env,
            **gdal_env,
            "TERRATILER_CATALOG": str(demo.resolve()),
            **_env_pairs(args.terratiler_env),
        },
        log=log_dir / "terratiler.log",
    )
    item_prefix = f"/collections/{COLLECTION}/items/{item_id}"
    results: dict[tuple[str, str], Result] = {}
    with titiler, terratiler:
        print(
            f"starting titiler on {titiler.url} and terratiler on {terratiler.url} "
            f"({args.workers} workers each) ..."
        )
        titiler.start("/healthz")
        terratiler.start("/healthz")
        servers = {"titiler": (titiler, "/stac"), "terratiler": (terratiler, item_prefix)}
        ndvi = probe_titiler_ndvi(titiler.url, item_json, tiles[len(tiles) // 2])
        te_ndvi = [("expression", "(nir-red)/(nir+red)"), *NDVI_RENDER]
        single = [("assets", "red"), *REFLECTANCE_RENDER]
        rgb = [("assets", "red"), ("assets", "green"), ("assets", "blue"), *REFLECTANCE_RENDER]
        all_layers = {
            "single": Layer(
                "single",
                "single band (red)",
                [("titiler", "titiler", single), ("terratiler", "terratiler", single)],
            ),
            "rgb": Layer(
                "rgb",
                "true colour (red, green, blue)",
                [("titiler", "titiler", rgb), ("terratiler", "terratiler", rgb)],
            ),
            "ndvi": Layer(
                "ndvi",
                "NDVI (red, nir)",
                [
                    ("titiler", "titiler", [*ndvi, *NDVI_RENDER]),
                    ("terratiler", "terratiler", te_ndvi),
                    (
                        "terratiler harmonize=false",
                        "terratiler",
                        [*te_ndvi, ("harmonize", "false")],
                    ),
                    (
                        "terratiler evalscript",
                        "terratiler",
                        [("evalscript", NDVI_EVALSCRIPT), *NDVI_RENDER],
                    ),
                ],
            ),
        }
        layers = [all_layers[k] for k in args.layers.split(",")]
        for layer in layers:
            variants = []
            for label, service, params in layer.variants:
                server, prefix = servers[service]
                query = [("url", str(item_json)), *params] if service == "titiler" else params
                urls = [(t, tile_url(server.url, prefix, t, query)) for t in tiles]
                result = Result(label, layer.key, planned=len(tiles) * args.rounds)
                results[(label, layer.key)] = result
                variants.append(Variant(label, layer.key, server.proc.pid, urls, result))
            print(f"{layer.key}: {', '.join(v.service for v in variants)} ...", flush=True)
            run_group(
                variants, args.rounds, args.concurrency, args.warmup, args.max_seconds, args.block
            )
            for v in variants:
                r = v.result
                print(
                    f"  {v.service:27s} {r.done} tiles ({r.done / len(tiles):.1f} rounds), "
                    f"{r.errors} errors, "
                    f"{r.tiles_per_second:.1f} tiles/s, "
                    f"p50 {1000 * percentile(r.latencies, 50):.0f} ms, "
                    f"p95 {1000 * percentile(r.latencies, 95):.0f} ms, "
                    f"server CPU {r.cpu_ms_per_tile:.0f} ms/tile, client CPU "
                    f"{1000 * r.client_cpu_seconds / max(1, r.done):.1f} ms/tile, machine "
                    f"{r.machine_cpu_seconds / r.seconds if r.seconds else 0:.2f} cores busy"
                )
                for sample in r.error_samples:
                    print(f"    {sample}")

    errors = sum(r.errors for r in results.values())
    body = render_section(args, command, versions, item_id, tiles, layers, results)
    print()
    print(body)
    if errors:
        print(
            f"\n{errors} tile(s) failed: results NOT written (a benchmark of errors is worthless)"
        )
        return 1
    if not args.no_write:
        write_section("Tiles", body, BENCHMARKS_MD)
        print(f"\nwritten to {BENCHMARKS_MD} (section Tiles)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
