"""Batch processing: median composites along tiling grid 1, terratiler against two peers.

Run by hand from the repository root (about 10 minutes on 2 cores)::

    .venv/bin/python bench/process.py --write
    .venv/bin/python bench/process.py --workers 2 --big-size 0     # quick, no 10x area

The workload: the median NDVI ``(nir-red)/(nir+red)`` of the demo season (12 scenes,
April-September 2023), SCL-clear pixels only, over the demo area, on tiling grid 1 (UTM
10 km tiles in EPSG:32633, edges on multiples of 10,000 m) at 10 m: one 1000 x 1000 float32
COG per tile (NaN nodata). Three ways, same tiles (CRS, bounds, resolution), same catalog:

- terratiler: a batch process job (``BatchService``: analysis, one Dask task per tile,
  ``engine.process_tile`` + ``cog.write_cog``) on a LocalCluster of 1 or 2 worker
  processes (bench/process_ours.py; ``--ours engine`` drives ``process_tile`` per tile on
  the LocalCluster directly, without the job machinery);
- stackstac: Element 84's recipe, pystac-client -> stackstac -> dask median ->
  rioxarray ``to_raster`` per tile, on a LocalCluster of as many workers, in its own venv
  ``.venv-stackstac`` (created when missing; bench/process_stackstac.py);
- crop loop: what a user of the service does without batch processing: per tile, the
  scenes from ``/catalog/search``, each scene's NDVI crop of the tile from
  ``/collections/{c}/items/{id}/bbox/....tif`` (``mask=scl-clear``), ``numpy.nanmedian``
  in the client, written as a COG; the service under uvicorn with as many workers, as
  many tiles in flight (bench/process_crops.py).

The peers read the same catalog through the service's own STAC API (``/catalog``, under
uvicorn on loopback). CPU seconds are user+system of every process involved: the peer's
process and its cluster (psutil over its process tree, measured by the peer script
around the work, after the cluster is up and the workers' imports are done) plus the
service's processes (psutil over the uvicorn tree, measured here around the run). The
three results are compared pixel by pixel (NaN pattern, largest difference). A second,
10x larger demo area (``--big-size``) shows the cost per tile as the area grows.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.warp import transform_bounds
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
    write_section,
)

SECTION = "Batch processing: median composites on tiling grid 1"
COLLECTION = "sentinel-2-l2a"
SEASON = "2023-04-01T00:00:00Z/2023-10-01T00:00:00Z"
GRID = "1"
STACKSTAC_VENV = ROOT / ".venv-stackstac"
# The peer's packages, pinned (what `pip install stackstac rioxarray pystac-client dask`
# gave when this benchmark was written), so reruns compare the same peer.
STACKSTAC_PACKAGES = [
    "stackstac==0.5.1",
    "rioxarray==0.19.0",
    "pystac-client==0.9.1",
    "dask==2026.8.0",
    "distributed==2026.8.0",
]
HERE = Path(__file__).resolve().parent


# --- data and tiles ----------------------------------------------------------------------


def ensure_demo(path: Path, size: int, scenes: int, seed: int = 0) -> Path:
    """The demo catalog at ``path``: reused when its items exist, generated otherwise."""
    if (path / "collection.json").exists() and len(list((path / "items").glob("*.json"))) >= scenes:
        return path
    from app.demo import generate_demo

    print(f"writing demo catalog {path} (size {size}, {scenes} scenes) ...", flush=True)
    generate_demo(path, scenes=scenes, size=size, seed=seed)
    return path


def demo_area(demo: Path) -> tuple[dict, str, tuple[float, float, float, float]]:
    """The demo area: (GeoJSON footprint in EPSG:4326, CRS, extent in that CRS).

    The extent of the first item's 10 m red band (every demo scene covers the same square).
    """
    item_path = sorted((demo / "items").glob("*.json"))[0]
    item = json.loads(item_path.read_text())
    href = (item_path.parent / item["assets"]["red"]["href"]).resolve()
    with rasterio.open(href) as src:
        crs, extent = src.crs.to_string(), tuple(src.bounds)
    return item["geometry"], crs, extent


def grid1_tiles(demo: Path, resolution: float = 10.0) -> list[dict]:
    """Tiles of grid 1 (``grids.tiles_for``) over the demo area, as the peer scripts take them.

    Each: ``name``, ``epsg``, ``bounds`` (in that CRS), ``bbox4326`` (the scenes' search
    box), ``resolution``, ``width``, ``height`` and ``covered`` (pixels inside the demo's
    square: the rest of the tile is nodata for every way).
    """
    from app.batch.processing.grids import tiles_for

    footprint, crs, extent = demo_area(demo)
    tiles = []
    for t in tiles_for(shape(footprint), GRID, resolution):
        epsg = int(t.crs.split(":")[1])
        covered = box(*t.bounds).intersection(box(*extent)) if t.crs == crs else None
        tiles.append(
            {
                "name": t.name,
                "grid": GRID,
                "epsg": epsg,
                "bounds": list(t.bounds),
                "bbox4326": list(transform_bounds(t.crs, "EPSG:4326", *t.bounds, densify_pts=21)),
                "resolution": resolution,
                "width": t.width,
                "height": t.height,
                "covered": round(covered.area / resolution**2) if covered else 0,
            }
        )
    return tiles


# --- peers -------------------------------------------------------------------------------


def ensure_stackstac(venv: Path = STACKSTAC_VENV) -> dict[str, str]:
    """The stackstac peer's venv (created when missing); its packages' versions."""
    python = venv / "bin" / "python"
    code = (
        "import importlib.metadata as m, json, rasterio\n"
        "names = ['stackstac', 'rioxarray', 'pystac-client', 'dask', 'distributed', 'xarray', "
        "'numpy', 'rasterio']\n"
        "v = {n: m.version(n) for n in names}\n"
        "v['GDAL'] = rasterio.__gdal_version__\n"
        "print(json.dumps(v))"
    )
    wanted = dict(p.split("==") for p in STACKSTAC_PACKAGES)
    if python.exists():
        out = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
        if out.returncode == 0:
            versions = json.loads(out.stdout)
            if all(versions.get(k) == v for k, v in wanted.items()):
                return versions
    print(f"installing {' '.join(STACKSTAC_PACKAGES)} into {venv} ...", flush=True)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *STACKSTAC_PACKAGES], check=True
    )
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@dataclass
class Run:
    """One measured run of one way on one area."""

    way: str
    area: str
    workers: int
    tiles: int
    pixels: int
    covered: int
    wall: float
    own_cpu: float
    service_cpu: float
    out: Path
    paths: dict[str, str] = field(default_factory=dict)

    @property
    def cpu(self) -> float:
        """CPU seconds of every process involved."""
        return self.own_cpu + self.service_cpu

    @property
    def mpx_per_cpu_s(self) -> float:
        """Output megapixels per CPU second."""
        return self.pixels / 1e6 / self.cpu

    @property
    def cpu_per_covered_mpx(self) -> float:
        """CPU seconds per megapixel of the tiles inside the demo area (the data)."""
        return self.cpu / (self.covered / 1e6)

    @property
    def cpu_per_tile(self) -> float:
        """CPU seconds per tile."""
        return self.cpu / self.tiles


def run_child(argv: list[str], job: dict, service: Server | None, env: dict) -> dict:
    """Run one peer script on ``job``; its JSON line plus the service's CPU meanwhile."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(job, handle)
    before = cpu_seconds(service.proc.pid) if service else 0.0
    started = time.perf_counter()
    proc = subprocess.run([*argv, handle.name], capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - started
    after = cpu_seconds(service.proc.pid) if service else 0.0
    os.unlink(handle.name)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[-1]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["service_cpu"] = after - before
    if "task_cpu" in result:
        print(f"    (CPU in the tasks themselves: {result['task_cpu']:.1f} s)")
    result["process_wall"] = elapsed
    return result


# --- comparison --------------------------------------------------------------------------


def read_tile(path: Path) -> tuple[np.ndarray, Any, Any]:
    """A tile's band 1 as float64 with NaN for nodata; its transform and CRS."""
    with rasterio.open(path) as src:
        data = src.read(1, masked=True).astype(np.float64).filled(np.nan)
        return data, src.transform, src.crs


def compare(reference: Run, other: Run) -> dict:
    """Pixel-by-pixel comparison of two runs' tiles."""
    max_diff, nodata_diff, valid, grids_same, total = 0.0, 0, 0, True, 0
    for name in reference.paths:
        a, ta, ca = read_tile(Path(reference.paths[name]))
        b, tb, cb = read_tile(Path(other.paths[name]))
        if a.shape != b.shape or not ta.almost_equals(tb) or ca != cb:
            grids_same = False
            continue
        na, nb = np.isnan(a), np.isnan(b)
        nodata_diff += int((na != nb).sum())
        both = ~na & ~nb
        valid += int(both.sum())
        total += a.size
        if both.any():
            max_diff = max(max_diff, float(np.abs(a[both] - b[both]).max()))
    return {
        "grids_same": grids_same,
        "nodata_diff": nodata_diff,
        "valid": valid,
        "pixels": total,
        "max_diff": max_diff,
    }


def compare_text(label: str, result: dict) -> str:
    """One line of the comparison."""
    if not result["grids_same"]:
        return f"{label}: **tile grids differ** (shape, transform or CRS)"
    return (
        f"{label}: same grids; NaN (nodata) pattern "
        + (
            "**identical**"
            if result["nodata_diff"] == 0
            else f"differs in {result['nodata_diff']:,} pixels"
        )
        + f"; {result['valid']:,} valid pixels of {result['pixels']:,}, largest difference "
        f"{result['max_diff']:.2g}"
    )


# --- main --------------------------------------------------------------------------------


def service_for(demo: Path, workers: int, log: Path) -> Server:
    """terratiler under uvicorn with ``workers`` workers on the demo catalog."""
    from app.gdal_env import gdal_options

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TERRATILER_")}
    env.update(gdal_options())
    env.update(TERRATILER_CATALOG=str(demo.resolve()), PYTHONPATH=str(ROOT))
    argv = [
        sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
        "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    return Server(f"terratiler-{workers}", argv, port, env, log=log)


def measure(
    way: str,
    area: str,
    demo: Path,
    tiles: list[dict],
    workers: int,
    service: Server,
    work: Path,
    ours_mode: str,
    round_index: int = 0,
) -> Run:
    """One run of ``way`` over ``tiles``; its outputs under ``work`` (a folder per round)."""
    out = work / f"{area}-{way}-{workers}-{round_index}"
    shutil.rmtree(out, ignore_errors=True)
    job = {
        "stac": f"{service.url}/catalog",
        "service": service.url,
        "item_prefix": f"/collections/{COLLECTION}/items",
        "collection": COLLECTION,
        "datetime": SEASON,
        "workers": workers,
        "out": str(out),
        "tiles": tiles,
        "catalog": str(demo.resolve()),
        "mode": ours_mode,
        "data_dir": str(work / f"jobs-{area}-{workers}-{round_index}"),
        "aoi": demo_area(demo)[0],
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("TERRATILER_")}
    env["PYTHONPATH"] = str(ROOT)
    if way == "terratiler":
        from app.gdal_env import gdal_options

        env.pop("MALLOC_TRIM_THRESHOLD_", None)  # its workers get the Settings' choice
        env.update(gdal_options())
        argv = [sys.executable, str(HERE / "process_ours.py")]
        result = run_child(argv, job, None, env)
    elif way in ("stackstac", "stackstac-dask"):
        # "stackstac": workers as terratiler's (MALLOC_TRIM_THRESHOLD_ unset, its default
        # batch_malloc_trim_threshold); "stackstac-dask": Dask's default 65536.
        env.pop("MALLOC_TRIM_THRESHOLD_", None)
        job["malloc_trim_threshold"] = "dask" if way == "stackstac-dask" else None
        argv = [str(STACKSTAC_VENV / "bin" / "python"), str(HERE / "process_stackstac.py")]
        result = run_child(argv, job, service, env)
    else:
        argv = [sys.executable, str(HERE / "process_crops.py")]
        result = run_child(argv, job, service, env)
    paths = result.get("paths") or {t["name"]: str(out / f"{t['name']}.tif") for t in tiles}
    pixels = sum(t["width"] * t["height"] for t in tiles)
    covered = sum(t["covered"] for t in tiles)
    run = Run(way, area, workers, len(tiles), pixels, covered, result["wall"], result["cpu"],
              result["service_cpu"], out, paths)  # fmt: skip
    print(
        f"  {area:5s} {way:10s} {workers} worker(s): {run.tiles} tiles, wall {run.wall:.1f} s, "
        f"CPU {run.own_cpu:.1f} + service {run.service_cpu:.1f} s, "
        f"{run.mpx_per_cpu_s:.3f} Mpx/CPU s, {run.cpu_per_tile:.2f} CPU s/tile",
        flush=True,
    )
    return run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1280, help="demo width in 10 m px")
    parser.add_argument("--big-size", type=int, default=4096, help="10x area demo (0: skip)")
    parser.add_argument("--scenes", type=int, default=12)
    parser.add_argument("--workers", default="1,2", help="Dask worker counts")
    parser.add_argument("--big-workers", default="2", help="worker counts on the big area")
    parser.add_argument(
        "--big-peers", default="stackstac,crops", help="peers also run on the big area ('' none)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="runs of each setup (best kept)")
    parser.add_argument(
        "--ours", choices=["job", "engine"], default="job", help="BatchService job or process_tile"
    )
    parser.add_argument(
        "--ways",
        default="terratiler,stackstac,stackstac-dask,crops",
        help="stackstac: workers without MALLOC_TRIM_THRESHOLD_ (as terratiler's);"
        " stackstac-dask: with Dask's 65536",
    )
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    parser.add_argument("--keep", action="store_true", help="keep the output tiles")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="profile a tile and measure the engine suggestions (bench/process_profile.py)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = " ".join(
        ["python bench/process.py", *(shlex.quote(a) for a in (argv or sys.argv[1:]))]
    )
    load = os.getloadavg()
    ways = args.ways.split(",")
    demos = {"small": ensure_demo(BENCH_DATA / f"process-{args.size}", args.size, args.scenes)}
    if args.big_size:
        demos["big"] = ensure_demo(
            BENCH_DATA / f"process-{args.big_size}", args.big_size, args.scenes
        )
    versions = ensure_stackstac() if any(w.startswith("stackstac") for w in ways) else {}
    tiles = {area: grid1_tiles(demo) for area, demo in demos.items()}
    for area, area_tiles in tiles.items():
        print(f"{area}: {demos[area]}, {len(area_tiles)} tiles of grid {GRID} at 10 m")
    plan: list[tuple[str, int, list[str]]] = [
        ("small", int(n), ways) for n in args.workers.split(",") if n
    ]
    if args.big_size:
        big_ways = [w for w in ways if w == "terratiler" or w in args.big_peers.split(",")]
        plan += [("big", int(n), big_ways) for n in args.big_workers.split(",") if n]
    work = BENCH_DATA / "process-out"
    work.mkdir(parents=True, exist_ok=True)
    (BENCH_DATA / "logs").mkdir(parents=True, exist_ok=True)
    best: dict[tuple[str, str, int], Run] = {}
    for area, workers, area_ways in plan:
        log = BENCH_DATA / "logs" / f"process-service-{area}-{workers}.log"
        with service_for(demos[area], workers, log) as service:
            service.start("/healthz")
            for index in range(args.rounds):
                order = area_ways if index % 2 == 0 else area_ways[::-1]
                for way in order:
                    run = measure(
                        way,
                        area,
                        demos[area],
                        tiles[area],
                        workers,
                        service,
                        work,
                        args.ours,
                        index,
                    )
                    key = (area, way, workers)
                    if key not in best or run.cpu < best[key].cpu:
                        best[key] = run

    comparisons = {}
    for (area, way, workers), run in best.items():
        ref = best.get((area, "terratiler", workers))
        if way != "terratiler" and ref is not None:
            comparisons[(area, way, workers)] = compare(ref, run)
            print(
                f"  {area} {way} {workers}: {compare_text('vs terratiler', comparisons[(area, way, workers)])}"
            )
    body = render(args, command, load, versions, demos, tiles, best, comparisons)
    if args.profile:
        body += "\n\n" + profile_section(demos["small"], best)
    print()
    print(body)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    if args.write:
        write_section(SECTION, body, BENCHMARKS_MD)
        print(f"\nwritten to {BENCHMARKS_MD}")
    return 0


def run_profile(demo: Path, trim: bool) -> dict:
    """bench/process_profile.py on ``demo``; with ``trim``, under Dask's malloc setting."""
    from app.gdal_env import gdal_options

    env = {k: v for k, v in os.environ.items() if not k.startswith("TERRATILER_")}
    env.update(gdal_options(), PYTHONPATH=str(ROOT))
    env.pop("MALLOC_TRIM_THRESHOLD_", None)
    if trim:
        env["MALLOC_TRIM_THRESHOLD_"] = "65536"  # what Dask's nannies give their workers
    argv = [sys.executable, str(HERE / "process_profile.py"), str(demo)]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def profile_section(demo: Path, best: dict[tuple[str, str, int], Run]) -> str:
    """Where terratiler's tile time goes, and what the engine's fast paths saved."""
    plain, trimmed = run_profile(demo, False), run_profile(demo, True)
    print(plain["profile"])
    lines = [
        "### Where terratiler's time goes (profile)",
        "",
        f"`bench/process_profile.py`: pyinstrument over one tile (`{plain['tile']}`, the "
        "fullest of the small area; warm datasets), in one process (seconds of wall time "
        "on a machine others share):",
        "",
        "```",
        plain["profile"],
        "```",
        "",
        f"The {plain['tiles']} tiles of the small area in turn, CPU seconds (best of 2), in "
        "one process: the engine as it is, and with its previous median and placement "
        "patched back in by the profile script (`np.nanmedian` of the stack: over a short "
        "axis numpy's `_nanmedian_small`, `numpy.ma.median` then one `warnings.warn` per "
        "all-NaN pixel in a Python loop; aligned assets placed by `block[np.ix_(rows, cols)]`"
        "). The engine now: `nan_median` (the covered pixels only, one sort of (pixels, "
        "scenes) rows, numpy's float32 arithmetic, bit for bit) and a slice / `np.take` per "
        "axis:",
        "",
        "| process | previous engine | engine now | saved |",
        "| --- | ---: | ---: | ---: |",
        f"| plain (as terratiler's workers now) | {plain['previous']:.2f} "
        f"| {plain['current']:.2f} | {1 - plain['current'] / plain['previous']:.0%} |",
        f"| `MALLOC_TRIM_THRESHOLD_=65536` (Dask's default) | {trimmed['previous']:.2f} "
        f"| {trimmed['current']:.2f} | {1 - trimmed['current'] / trimmed['previous']:.0%} |",
        "",
        "Same outputs both ways: NaN pattern "
        + ("identical" if plain["same_nodata"] and trimmed["same_nodata"] else "**differs**")
        + f", largest difference {max(plain['max_diff'], trimmed['max_diff']):.2g}.",
    ]
    return "\n".join(lines)


def render(
    args: argparse.Namespace,
    command: str,
    load: tuple[float, float, float],
    versions: dict[str, str],
    demos: dict[str, Path],
    tiles: dict[str, list[dict]],
    best: dict[tuple[str, str, int], Run],
    comparisons: dict[tuple[str, str, int], dict],
) -> str:
    """The BENCHMARKS.md section."""
    labels = {
        "terratiler": f"terratiler batch process ({'BatchService job' if args.ours == 'job' else '`process_tile` per tile'})",
        "stackstac": "stackstac -> dask median -> rioxarray",
        "stackstac-dask": "stackstac -> dask median -> rioxarray, workers with Dask's `MALLOC_TRIM_THRESHOLD_=65536`",
        "crops": "crop loop (`/bbox/...tif` per scene + nanmedian)",
    }
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    terratiler_version = importlib.metadata.version("terratiler")
    lines = [
        f"Written by `bench/process.py` on {when}.",
        "",
        f"- Command: `{command}`",
        f"- Machine: {machine_description()}; load average {load[0]:.1f} {load[1]:.1f} "
        f"{load[2]:.1f} when the run started (other jobs share the cores; CPU seconds, not "
        "wall, are the measure).",
        f"- Versions: terratiler {terratiler_version}; the stackstac peer in `.venv-stackstac`: "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + ".",
        "- Workload: median NDVI `(nir-red)/(nir+red)` over the demo season "
        f"({args.scenes} scenes, {SEASON.replace('T00:00:00Z', '')}), SCL-clear pixels only "
        "(classes 0, 1, 3, 8, 9, 10, 11 masked), reflectance harmonized (Earth-Search "
        "`boa_offset_applied`), on tiling grid 1 (10 km UTM tiles, EPSG:32633) at 10 m: one "
        "1000 x 1000 float32 COG per tile (NaN nodata, DEFLATE). Areas: "
        + "; ".join(
            f"{area} = `terratiler demo --size {demo.name.split('-')[-1]} --scenes {args.scenes}` "
            f"({int(demo.name.split('-')[-1]) / 100:.1f} km square, {len(tiles[area])} tiles)"
            for area, demo in demos.items()
        )
        + ".",
        "- Ways: " + "; ".join(f"**{labels[w]}**" for w in labels) + ". Each on N Dask "
        "worker processes (LocalCluster, 1 thread each); the crop loop on a uvicorn service "
        "with N workers, N tiles in flight. The peers search the service's own STAC API "
        "(`/catalog`, uvicorn on loopback).",
        "- CPU s: user+system of every process involved, over the work (clusters started and "
        "workers' imports done before): the way's process and its cluster, plus the "
        "service's processes (the peers' searches; the crop loop's crops). terratiler's job "
        "reads the catalog folder itself: no service. Each setup ran "
        f"{args.rounds} time(s), the ways in alternating order; the run with the least CPU "
        "is shown.",
        "- Worker memory: terratiler's LocalCluster workers run without glibc's "
        "`MALLOC_TRIM_THRESHOLD_` (Settings `batch_malloc_trim_threshold`, default unset); "
        "Dask's nannies otherwise set 65536 (`distributed.nanny.pre-spawn-environ`). The "
        "stackstac peer runs both ways: like terratiler (the headline ratio) and with Dask's "
        "default.",
        "",
        "| area | way | Dask workers | tiles | output Mpx (in the area) | wall s "
        "| CPU s (way + service) | CPU s / tile | CPU s / Mpx in the area | output Mpx / CPU s "
        "| terratiler is |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]

    def order(kv: tuple) -> tuple:
        (area, way, workers), _ = kv
        return (area != "small", workers, way != "terratiler", way)

    for (area, way, workers), run in sorted(best.items(), key=order):
        ref = best.get((area, "terratiler", workers))
        ratio = ""
        if ref is not None and way != "terratiler":
            ratio = f"**{ref.mpx_per_cpu_s / run.mpx_per_cpu_s:.2f}x**"
        lines.append(
            f"| {area} | {labels[way]} | {workers} | {run.tiles} "
            f"| {run.pixels / 1e6:.0f} ({run.covered / 1e6:.1f}) | {run.wall:.1f} "
            f"| {run.own_cpu:.1f} + {run.service_cpu:.1f} | {run.cpu_per_tile:.2f} "
            f"| {run.cpu_per_covered_mpx:.2f} | {run.mpx_per_cpu_s:.3f} | {ratio} |"
        )
    lines.append("")
    for (area, way, workers), result in sorted(comparisons.items()):
        lines.append(
            "- "
            + compare_text(
                f"{area}, {labels[way]}, {workers} worker(s), against terratiler", result
            )
            + "."
        )
    small = {k[2]: v for k, v in best.items() if k[0] == "small" and k[1] == "terratiler"}
    big = {k[2]: v for k, v in best.items() if k[0] == "big" and k[1] == "terratiler"}
    for workers in sorted(set(small) & set(big)):
        s, b = small[workers], big[workers]
        lines.append(
            f"- Cost as the area grows {b.covered / s.covered:.1f}x ({s.tiles} -> {b.tiles} "
            f"tiles, {workers} worker(s)): terratiler {s.cpu_per_tile:.2f} -> "
            f"{b.cpu_per_tile:.2f} CPU s per tile (**{b.cpu_per_tile / s.cpu_per_tile:.2f}x**), "
            f"{s.cpu_per_covered_mpx:.2f} -> {b.cpu_per_covered_mpx:.2f} CPU s per Mpx of "
            f"data (**{b.cpu_per_covered_mpx / s.cpu_per_covered_mpx:.2f}x**); flat is 1.0. "
            "(The small area's tiles are mostly its edges: 10 km tiles over a 12.8 km square.)"
        )
    targets = [
        (workers, best[("small", "terratiler", workers)].mpx_per_cpu_s / run.mpx_per_cpu_s)
        for (area, way, workers), run in best.items()
        if area == "small" and way == "stackstac" and ("small", "terratiler", workers) in best
    ]
    if targets:
        met = all(r >= 3 for _, r in targets)
        lines.append(
            "- Target (issue 14): >= 3x stackstac's output megapixels per CPU second (both "
            "without `MALLOC_TRIM_THRESHOLD_`): "
            f"**{'met' if met else 'NOT met'}** ("
            + ", ".join(f"{r:.2f}x with {w} worker(s)" for w, r in sorted(targets))
            + ")."
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
