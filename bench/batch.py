"""Batch statistics on Dask: throughput with 1 and 2 workers, against looping POST /statistics.

The workload: NDVI statistics (mean, min, max, stDev, counts; SCL-masked, ``exact``) of
every demo field parcel on every date (P1D intervals over the season: intervals with a
scene count), as a batch job with its outputs (one JSON per feature and results.parquet).

- batch jobs on a Dask cluster of 1, then 2 worker processes (1 thread each), the whole
  layer; ``--repeat`` rounds, each running every setup once, so that the ratios compare
  runs minutes apart at most (the median ratio is reported). Timed from ``start`` to DONE
  (processing and the consolidated table), after the analysis, on warm workers. The
  cluster is a ``dask scheduler`` and ``dask worker`` processes (the service's
  ``TERRATILER_DASK_SCHEDULER`` path), each started in its own session: on a Linux host
  shared with other jobs (CFS autogroups), one session's processes share one CPU slice,
  so workers in the benchmark's own session could never use two cores at once;
- the same with 2 workers on a compact tenth of the layer (the fields in a corner square
  of a tenth of the area: same density), for the per-feature cost as the layer grows 10x;
- a client looping ``POST /statistics`` over a subset of the fields, one request per
  field (a real uvicorn service), as users do without batch jobs;
- a control: a pure-Python CPU-bound Dask job on the same clusters, to show how much
  two workers can gain on the machine at that moment.

Besides wall times, each worker's CPU time is measured: the busiest worker's CPU time is
the run time the job would take with a core per worker (the load balance of the units),
whatever else runs on the machine.

Run by hand (about 5 minutes on 2 cores; the demo is shared with bench/zonal.py and
generated once, about 2 minutes):

    .venv/bin/python bench/batch.py           # print the table
    .venv/bin/python bench/batch.py --write   # and update BENCHMARKS.md

``--netns`` measures the same job between hosts instead (root, Linux): network namespaces
on this machine (tests/netns_hosts.py, the setup of tests/test_deploy_netns.py): the
service and PostgreSQL on one host, the scheduler on another, 1 then 2 worker hosts, moto's
S3 server holding the demo (``TERRATILER_CATALOG=s3://...``) and the outputs; jobs through
the service's HTTP API. Its demo is smaller by default (``--size 1024 --scenes 6``: every
COG is uploaded to moto, which holds them in memory). The 1- and 2-worker deployments run
side by side and the jobs alternate between them (``--repeat`` rounds, 3 by default; the
medians are reported), with the load and the CPU other processes used during each run:

    .venv/bin/python bench/batch.py --netns [--size 512 --scenes 4] [--write]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import shapely

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    BENCH_DATA,
    Server,
    free_port,
    machine_description,
    system_busy_seconds,
    write_section,
)

SECTION = "Batch statistics on Dask"
SEASON = {"from": "2023-04-01T00:00:00Z", "to": "2023-10-01T00:00:00Z"}
REQUEST = {
    "input": {"data": [{"type": "sentinel-2-l2a"}]},
    "aggregation": {
        "timeRange": SEASON,
        "aggregationInterval": {"of": "P1D"},
        "outputs": {"ndvi": {"expression": "(nir-red)/(nir+red)"}},
        "mask": "scl-clear",
        "pixelRule": "exact",
    },
}

SERVER = """
import sys, uvicorn
from app.main import create_app
from app.routers import statistics
app = create_app()
if "/statistics" not in {getattr(r, "path", None) for r in app.routes}:
    app.include_router(statistics.router)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


@dataclass
class Run:
    """One measured run."""

    label: str
    features: int
    feature_dates: int
    wall: float
    cpu: list[float] | None = None
    other_cpu: float = 0.0

    @property
    def rate(self) -> float:
        """Feature-dates per wall second."""
        return self.feature_dates / self.wall

    @property
    def ms_per_feature(self) -> float:
        """Wall milliseconds per feature."""
        return 1000 * self.wall / self.features

    @property
    def busiest(self) -> float:
        """CPU seconds of the busiest worker: the run time with a core per worker."""
        return max(self.cpu or [math.nan])


class DaskProcesses:
    """A ``dask scheduler`` and ``workers`` ``dask worker`` processes, each in its own session."""

    def __init__(self, workers: int):
        self.workers = workers
        self.port = free_port()
        self.procs: list[subprocess.Popen] = []

    @property
    def address(self) -> str:
        """The scheduler's address."""
        return f"tcp://127.0.0.1:{self.port}"

    def _spawn(self, *args: str) -> None:
        dask = str(Path(sys.executable).with_name("dask"))
        self.procs.append(
            subprocess.Popen(
                [dask, *args],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )

    def __enter__(self) -> DaskProcesses:
        from distributed import Client

        self._spawn("scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard")
        for _ in range(self.workers):
            self._spawn(
                "worker", self.address, "--nworkers", "1", "--nthreads", "1",
                "--host", "127.0.0.1", "--no-dashboard", "--memory-limit", "0",
            )  # fmt: skip
        deadline = time.monotonic() + 120
        while True:
            try:
                self.client = Client(self.address, timeout=5, set_as_default=False)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        self.client.wait_for_workers(self.workers, timeout=120)
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def burn(n: int) -> float:
    """CPU-bound pure Python; returns the CPU seconds it took."""
    started, total = time.process_time(), 0
    for i in range(n):
        total += i * i
    return time.process_time() - started


def control(client: Any, tasks: int = 8, size: int = 2 * 10**7) -> float:
    """Wall seconds of ``tasks`` CPU-bound tasks on the cluster."""
    started = time.perf_counter()
    client.gather(client.map(burn, [size] * tasks, pure=False))
    return time.perf_counter() - started


def ensure_demo(path: Path, size: int, scenes: int, seed: int) -> None:
    if (path / "collection.json").exists():
        return
    from app.demo import generate_demo

    print(f"generating the demo in {path} (size {size}, {scenes} scenes) ...", flush=True)
    generate_demo(path, scenes=scenes, size=size, seed=seed)


def compact_subset(source: Path, target: Path, fraction: float) -> int:
    """Write the fields whose centroid lies in a corner square of ``fraction`` of the area."""
    collection = json.loads(source.read_text())
    shapes = [shapely.geometry.shape(f["geometry"]) for f in collection["features"]]
    xy = shapely.get_coordinates(shapely.centroid(np.array(shapes)))
    low, high = xy.min(axis=0), xy.max(axis=0)
    corner = low + (high - low) * np.sqrt(fraction)
    keep = np.flatnonzero(np.all(xy <= corner, axis=1))
    subset = {
        "type": "FeatureCollection",
        "features": [collection["features"][i] for i in keep],
    }
    target.write_text(json.dumps(subset))
    return len(keep)


def worker_cpu(client: Any) -> dict[str, float]:
    """CPU seconds used so far by each worker process."""
    return client.run(time.process_time)


def process_cpu(pid: int) -> float:
    """CPU seconds used so far by a process (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def batch_run(label: str, demo: Path, features: Path, cluster: DaskProcesses, work: Path) -> Run:
    """One job, timed from start to DONE; CPU of the workers and of everything else."""
    from app.batch import BatchService, BatchStatisticalRequest
    from app.services import catalog_factory
    from app.settings import Settings

    settings = Settings(catalog=str(demo), data_dir=work, dask_scheduler=cluster.address)
    client = cluster.client
    service = BatchService(settings, catalog_factory(settings), check_sources=False, takeover=False)
    try:
        body = {**REQUEST, "input": {**REQUEST["input"], "features": str(features)}}
        body["output"] = str(work / "out")
        job = service.create(BatchStatisticalRequest.model_validate(body))
        service.analyse(job["id"])
        analysed = service.wait(job["id"], timeout=600)
        assert analysed["status"] == "ANALYSIS_DONE", analysed
        analysis = analysed["analysis"]
        # Flush what earlier runs wrote (thousands of JSON files), so that the kernel's
        # write-back does not take CPU from this run.
        os.sync()
        time.sleep(1.0)
        before = worker_cpu(client)
        # The service (this process: driver, Dask client), the scheduler and the nannies.
        others = [process_cpu(p.pid) for p in cluster.procs] + [time.process_time()]
        started = time.perf_counter()
        service.start(job["id"])
        # Poll the job's state alone: a full view per poll would take CPU from the workers.
        while service.store.get(job["id"]).state == "PROCESSING":
            time.sleep(0.05)
        wall = time.perf_counter() - started
        others_after = [process_cpu(p.pid) for p in cluster.procs] + [time.process_time()]
        after = worker_cpu(client)
        done = service.get(job["id"])
        cpu = [after[worker] - before.get(worker, 0.0) for worker in after]
        assert done["status"] == "DONE", done
        shutil.rmtree(Path(done["output"]), ignore_errors=True)
    finally:
        service.close()
    count = analysis["validFeatureCount"]
    other = sum(others_after) - sum(others)
    return Run(label, count, count * analysis["intervalsWithScenes"], wall, cpu, other)


def loop_run(demo: Path, features: Path, count: int, dates: int) -> Run:
    """One client posting one field at a time to a running service."""
    collection = json.loads(features.read_text())["features"][:count]
    env = {**os.environ, "TERRATILER_CATALOG": str(demo), "TERRATILER_DATA_DIR": str(demo)}
    port = free_port()
    (BENCH_DATA / "logs").mkdir(parents=True, exist_ok=True)
    server = Server(
        "terratiler",
        [sys.executable, "-c", SERVER, str(port)],
        port,
        env,
        log=BENCH_DATA / "logs" / "batch-loop.log",
    )
    with server, httpx.Client(base_url=server.url, timeout=120, trust_env=False) as http:
        server.start("/healthz")
        first = {**REQUEST, "input": {**REQUEST["input"]}}
        first["input"]["bounds"] = {"geometry": collection[0]["geometry"]}
        http.post("/statistics", json=first).raise_for_status()  # warm up
        started = time.perf_counter()
        for feature in collection:
            body = {**REQUEST, "input": {**REQUEST["input"]}}
            body["input"]["bounds"] = {"geometry": feature["geometry"]}
            http.post("/statistics", json=body).raise_for_status()
        wall = time.perf_counter() - started
    return Run("looping `POST /statistics`, one field per request", count, count * dates, wall)


NETNS_SECTION = "Batch statistics across hosts (network namespaces)"


def netns_job(http: Any, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """One job through the service's API: analysed, then timed from start to its end."""
    job = http.post("/batch/statistics", json=body)
    job.raise_for_status()
    url = f"/batch/statistics/{job.json()['id']}"
    http.post(f"{url}/analyse").raise_for_status()
    while (view := http.get(url).json())["status"] in ("CREATED", "ANALYSING"):
        time.sleep(0.1)
    assert view["status"] == "ANALYSIS_DONE", view
    started = time.perf_counter()
    http.post(f"{url}/start").raise_for_status()
    while (view := http.get(url).json())["status"] in ("ANALYSIS_DONE", "PROCESSING"):
        time.sleep(0.1)
    wall = time.perf_counter() - started
    assert view["status"] == "DONE", view
    return wall, view


def host_cpu_seconds(host: Any) -> float:
    """CPU seconds used so far by the processes running on a host (namespace)."""
    import psutil

    total = 0.0
    for pid in host.pids():
        try:
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def own_cpu_seconds(deployments: list[Any]) -> float:
    """CPU seconds used so far by this process and every process on the deployments' hosts."""
    total = sum(os.times()[:4])
    for deployment in deployments:
        total += sum(host_cpu_seconds(host) for host in deployment.network.hosts.values())
    return total


def netns_main(args: argparse.Namespace) -> None:
    """Batch statistics on 1 and 2 worker hosts (network namespaces), jobs over HTTP.

    Both deployments run side by side (idle hosts cost next to nothing), and the runs
    alternate between them, so that the machine's other load falls on both alike.
    """
    from contextlib import ExitStack

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from netns_hosts import deployed, netns_unavailable

    reason = netns_unavailable()
    if reason:
        sys.exit(f"--netns: {reason}")
    ensure_demo(args.demo, args.size, args.scenes, args.seed)
    features = json.loads((args.demo / "fields.geojson").read_text())
    body = {**REQUEST, "input": {**REQUEST["input"], "features": features}}
    work = Path(tempfile.mkdtemp(prefix="bench-netns-"))
    load_start = os.getloadavg()
    runs: dict[int, list[Run]] = {1: [], 2: []}
    ratios: list[float] = []
    s3_cpu: dict[int, list[float]] = {1: [], 2: []}  # moto's CPU seconds in each run
    cpu_ratios: list[float] = []  # 1 worker's CPU time over the busiest of 2 workers'
    others: list[float] = []  # cores used by other processes during each timed run
    loads: list[float] = []
    try:
        with ExitStack() as stack:
            started = time.perf_counter()
            deployments = {
                n: stack.enter_context(deployed(work / f"hosts-{n}", args.demo, workers=n))
                for n in (1, 2)
            }
            setup = time.perf_counter() - started
            clients = {n: stack.enter_context(d.http(timeout=600)) for n, d in deployments.items()}
            print(f"deployed both in {setup:.0f} s", flush=True)
            for n in (1, 2):
                netns_job(clients[n], body)  # warm every worker: imports, catalog, GDAL
            for repeat in range(args.repeat):
                # 1, 2 then 2, 1: the order alternates round by round.
                order = (1, 2) if repeat % 2 == 0 else (2, 1)
                this_round: dict[int, Run] = {}
                for n in order:
                    busy, own = system_busy_seconds(), own_cpu_seconds(list(deployments.values()))
                    hosts = [deployments[n].network[name] for name in deployments[n].workers]
                    before = [host_cpu_seconds(host) for host in hosts]
                    s3_before = host_cpu_seconds(deployments[n].network["s3"])
                    wall, view = netns_job(clients[n], body)
                    cpu = [host_cpu_seconds(h) - b for h, b in zip(hosts, before, strict=True)]
                    s3_cpu[n].append(host_cpu_seconds(deployments[n].network["s3"]) - s3_before)
                    other = system_busy_seconds() - busy
                    other -= own_cpu_seconds(list(deployments.values())) - own
                    others.append(max(other, 0.0) / wall)
                    loads.append(os.getloadavg()[0])
                    analysis = view["analysis"]
                    count = analysis["validFeatureCount"]
                    label = f"{n} worker host{'s' if n > 1 else ''}"
                    run = Run(label, count, count * analysis["intervalsWithScenes"], wall, cpu)
                    runs[n].append(run)
                    this_round[n] = run
                    print(
                        f"[{repeat + 1}/{args.repeat}] {label}: {wall:.1f} s, "
                        f"{run.rate:,.0f} feature-dates/s, worker CPU "
                        f"{' + '.join(f'{c:.1f}' for c in cpu)} s, other processes "
                        f"{others[-1]:.2f} cores, load {loads[-1]:.1f}",
                        flush=True,
                    )
                ratios.append(this_round[1].wall / this_round[2].wall)
                cpu_ratios.append(this_round[1].busiest / this_round[2].busiest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_end = os.getloadavg()
    median = {n: statistics.median(run.wall for run in r) for n, r in runs.items()}
    rows = []
    for n, r in runs.items():
        first = r[0]
        walls = ", ".join(f"{run.wall:.1f}" for run in r)
        rate = first.feature_dates / median[n]
        middle = sorted(r, key=lambda run: run.wall)[len(r) // 2]
        worker_cpu = " + ".join(f"{c:.1f}" for c in middle.cpu or [])
        rows.append(
            f"| {first.label} | {first.features:,} | {first.feature_dates:,} | "
            f"{median[n]:.1f} ({walls}) | {rate:,.0f} | {worker_cpu} | "
            f"{statistics.median(s3_cpu[n]):.1f} |"
        )
    command = "bench/batch.py --netns" + "".join(
        f" --{name} {value}"
        for name, value, default in (
            ("size", args.size, 1024),
            ("scenes", args.scenes, 6),
            ("repeat", args.repeat, 3),
        )
        if value != default
    )
    body_text = f"""
Command: `.venv/bin/python {command} --write` (demo: `generate_demo(path,
scenes={args.scenes}, size={args.size}, seed={args.seed})`). Machine: {machine_description()}.
A shared machine: load average {" ".join(f"{v:.1f}" for v in load_start)} at the start,
{" ".join(f"{v:.1f}" for v in load_end)} at the end (1-minute load {min(loads):.1f} to
{max(loads):.1f} after the runs); processes other than the benchmark's used
{min(others):.2f} to {max(others):.2f} cores (median {statistics.median(others):.2f}) during
the timed runs, of the 2.

Hosts are network namespaces on this machine joined by a bridge (tests/netns_hosts.py): the
service and PostgreSQL, the Dask scheduler, one `dask worker` (1 thread) per worker host, and
moto's S3 server holding the demo catalog and COGs (`TERRATILER_CATALOG=s3://data/demo`) and
the outputs (`s3://results/jobs`). Every read and write crosses the bridge over TCP; the
hosts share only the CPUs. The job (the same NDVI statistics as above) is created, analysed
and started through the service's HTTP API, timed from `start` to DONE. The 1- and
2-worker deployments run side by side (each its own hosts, S3 and PostgreSQL) and the jobs
alternate between them ({args.repeat} rounds, the order swapped every round, after a
warm-up job on each), so that other load falls on both alike.

Worker CPU: CPU seconds of each worker host's processes (nanny and worker) in the median
run; S3 CPU: moto's, median of the runs.

| run | features | feature-dates | wall s, median (each run) | feature-dates / s (median) | worker CPU s | S3 CPU s |
| --- | ---: | ---: | ---: | ---: | ---: | ---: |
{chr(10).join(rows)}

- 2 worker hosts vs 1: **{statistics.median(ratios):.2f}x** the throughput, the median of
  the rounds' ratios ({", ".join(f"{r:.2f}" for r in ratios)}). The S3 server (moto, one
  Python process) serves every COG read of both workers: it used
  {statistics.median(s3_cpu[1]):.1f} and {statistics.median(s3_cpu[2]):.1f} CPU s per job
  (1 and 2 workers), work that a second worker does not share, on the cores other jobs
  left free.
- With a core per worker (1 worker's CPU time over the busiest of the 2 workers' CPU time,
  which other load changes little): **{statistics.median(cpu_ratios):.2f}x**
  ({", ".join(f"{r:.2f}" for r in cpu_ratios)}).
"""
    print(body_text)
    if args.write:
        write_section(NETNS_SECTION, body_text)
        print("BENCHMARKS.md updated")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo", type=Path, default=None)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--scenes", type=int, default=None)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--repeat", type=int, default=None, help="runs of each batch setup (2; --netns: 3)"
    )
    parser.add_argument("--loop-fields", type=int, default=300)
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    parser.add_argument(
        "--netns", action="store_true", help="between hosts (network namespaces; root)"
    )
    args = parser.parse_args()
    if args.netns:
        args.size, args.scenes = args.size or 1024, args.scenes or 6
        # One folder per size: a demo of another size is never reused by mistake.
        args.demo = args.demo or BENCH_DATA / f"netns-demo-{args.size}-{args.scenes}"
        args.repeat = args.repeat or 3
        netns_main(args)
        return
    args.demo = args.demo or BENCH_DATA / "zonal-demo"
    args.size, args.scenes = args.size or 2048, args.scenes or 12
    args.repeat = args.repeat or 2

    ensure_demo(args.demo, args.size, args.scenes, args.seed)
    load = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    fields = args.demo / "fields.geojson"
    tenth = work / "fields-tenth.geojson"
    compact_subset(fields, tenth, 0.1)

    best: dict[str, Run] = {}
    rounds: list[dict[Any, Any]] = []
    with DaskProcesses(1) as one_worker, DaskProcesses(2) as two_workers:
        clusters = {1: one_worker, 2: two_workers}
        for cluster in clusters.values():  # warm every worker: imports, catalog, GDAL
            batch_run("warm-up", args.demo, tenth, cluster, work)
        plan = [(1, fields, "full"), (2, fields, "full"), (2, tenth, "tenth")]
        for repeat in range(args.repeat):
            this_round: dict[Any, Any] = {n: control(clusters[n].client) for n in (1, 2)}
            rounds.append(this_round)
            for n, features, which in plan:
                label = f"batch job, {n} Dask worker{'s' if n > 1 else ''}, {which} layer"
                cluster = clusters[n]
                run = batch_run(label, args.demo, features, cluster, work)
                print(
                    f"[{repeat + 1}/{args.repeat}] {label}: {run.wall:.1f} s, "
                    f"{run.rate:,.0f} feature-dates/s, worker CPU "
                    f"{' + '.join(f'{c:.1f}' for c in run.cpu or [])} s, others {run.other_cpu:.1f} s",
                    flush=True,
                )
                this_round[label] = run
                if label not in best or run.wall < best[label].wall:
                    best[label] = run

    full_1 = "batch job, 1 Dask worker, full layer"
    full_2 = "batch job, 2 Dask workers, full layer"
    one, two = best[full_1], best[full_2]
    small = best["batch job, 2 Dask workers, tenth layer"]
    # Ratios within a round (its runs follow each other), then their median.
    wall_ratios = [r[full_1].wall / r[full_2].wall for r in rounds]
    cpu_ratios = [r[full_1].busiest / r[full_2].busiest for r in rounds]
    control_ratios = [r[1] / r[2] for r in rounds]
    dates = two.feature_dates // two.features
    loop = loop_run(args.demo, fields, args.loop_fields, dates)
    print(f"{loop.label}: {loop.wall:.1f} s, {loop.rate:,.0f} feature-dates/s", flush=True)
    shutil.rmtree(work, ignore_errors=True)

    def cpu_text(run: Run) -> str:
        return "" if run.cpu is None else " + ".join(f"{c:.1f}" for c in run.cpu)

    rows = [
        f"| {r.label} | {r.features:,} | {r.feature_dates:,} | {r.wall:.1f} | {cpu_text(r)} | "
        f"{r.rate:,.0f} | {r.ms_per_feature:.2f} |"
        for r in (one, two, small, loop)
    ]
    speedup = statistics.median(wall_ratios)
    balanced = statistics.median(cpu_ratios)
    growth = two.ms_per_feature / small.ms_per_feature
    cpu_growth = (sum(two.cpu or []) / two.features) / (sum(small.cpu or []) / small.features)
    body = f"""
Command: `.venv/bin/python bench/batch.py --write` (demo: `generate_demo(path,
scenes={args.scenes}, size={args.size}, seed={args.seed})`, shared with bench/zonal.py).
Machine: {machine_description()}; load average {load:.1f} when the run started (other
jobs share the 2 cores: the table shows each setup's best of {args.repeat} rounds).

Workload: NDVI mean, min, max, stDev and counts of every field on every date with a scene
(P1D over the season), SCL-masked, `exact` weights, written as a batch job's outputs (one
JSON per feature, `results.parquet`). Batch rows: a `dask scheduler` and `dask worker`
processes (1 thread each; each process in its own session, see bench/batch.py), default
units (each one chunk of the engine: at most 1024 features, at least 8 units), timed from
`start` to DONE after the analysis, on warm workers. The loop: one client, one
`POST /statistics` per field to a uvicorn service, {args.loop_fields} fields.

| run | features | feature-dates | wall s | CPU s per worker | feature-dates / s | ms / feature |
| --- | ---: | ---: | ---: | ---: | ---: | ---: |
{chr(10).join(rows)}

- 2 workers vs 1, wall: **{speedup:.2f}x** the throughput, median of the rounds'
  ratios ({", ".join(f"{r:.2f}" for r in wall_ratios)}); target of issue 6: >= 1.8x.
  A CPU-bound control job (8 pure-Python tasks) ran
  {", ".join(f"{r:.2f}" for r in control_ratios)}x faster on 2 workers than on 1 in the
  same rounds: that is what the machine's other load left to gain.
- 2 workers vs 1 with a core per worker (1 worker's CPU time over the busiest of 2
  workers' CPU time: the units' load balance, independent of other load):
  **{balanced:.2f}x** ({", ".join(f"{r:.2f}" for r in cpu_ratios)}).
- Everything but the workers (the service's driver and Dask client, the scheduler, the
  nannies) used {two.other_cpu:.1f} CPU s during the 2-worker run: with 2 workers on 2
  cores that time comes out of the workers' (1 worker leaves it a core of its own).
- 2 workers vs looping `POST /statistics`: **{two.rate / loop.rate:.0f}x**.
- Per-feature cost as the layer grows 10x ({small.features:,} -> {two.features:,}
  features): {growth:.2f}x the wall time per feature, {cpu_growth:.2f}x the worker CPU
  per feature (flat is 1.0).
"""
    print(body)
    if args.write:
        write_section(SECTION, body)
        print("BENCHMARKS.md updated")


if __name__ == "__main__":
    main()
