"""Batch processing jobs survive real kills: a Dask worker, the service, S3, a broken file.

Real parts throughout: a Dask LocalCluster of 2 worker processes (the module's), the
service over HTTP (TestClient, and uvicorn subprocesses killed with SIGKILL), a SQLite job
store shared by those processes, real COGs of a small demo catalog (this module's copy: one
test breaks a file), and moto's S3 server on loopback, stopped and started again.

Tiles are the job's own (a GeoPackage of 3 x 3 tiles over the demo) and each takes a
little longer than it would (``slow_catalog``: the workers' catalog sleeps before each
search), so that a tile is surely running when a test kills something. What every test
checks in the end: the job ends DONE, each tile's outputs exist once, are valid COGs and
hold their pixels, no temporary is left, and tiles finished before the trouble were not
computed again (their markers and COGs keep their modification times).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import rasterio
import shapely
import shapely.geometry
from batch_jobs import scheduler_client, wait_for
from distributed import Client, LocalCluster
from fastapi.testclient import TestClient
from live_server import LiveProcess
from polling import wait_until
from rio_cogeo.cogeo import cog_validate
from slow_catalog import SERVE_SCRIPT, slowed

import app.services
from app.main import create_app
from app.settings import Settings

pytestmark = pytest.mark.timeout(300)

SIZE = 256
TIME = {"from": "2023-04-01T00:00:00Z", "to": "2023-10-01T00:00:00Z"}
FINAL = {"DONE", "PARTIAL", "FAILED"}
# Seconds each tile's scene search sleeps (see slow_catalog): a tile runs for about this long.
TILE_SECONDS = 1.5
# Seconds a test waits for a state.
WAIT = 150.0
# The demo scene cut by the swath edge: it covers some of the tiles only.
CUT_SCENE = "S2A_33TWM_20230611_0_L2A"
OUTPUTS = {
    "ndvi": {"preset": "ndvi", "composite": "median"},
    "red": {"expression": "B04", "dataType": "uint16", "nodata": 0, "composite": "max"},
}


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This module's own demo catalog (a test breaks one of its COGs)."""
    from app.demo import generate_demo

    path = tmp_path_factory.mktemp("resilience-demo")
    generate_demo(path, scenes=6, size=SIZE, seed=1)
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of inputs (the tiles' GeoPackage), inside the allow-list, outside any job."""
    return tmp_path_factory.mktemp("resilience-inputs")


@pytest.fixture(scope="module")
def tiles_file(inputs: Path) -> Path:
    """Own tiles: 3 x 3 squares of 80 x 80 pixels at 10 m over the demo (EPSG:32633)."""
    import pyogrio.raw

    from app.demo import demo_grid

    grid = demo_grid(SIZE)
    boxes, names = [], []
    for row in range(3):
        for column in range(3):
            left = grid.left + 40 + 800 * column
            top = grid.top - 40 - 800 * row
            boxes.append(shapely.box(left, top - 800, left + 800, top))
            names.append(f"r{row}c{column}")
    path = inputs / "tiles.gpkg"
    pyogrio.raw.write(
        str(path),
        geometry=np.array([shapely.to_wkb(b) for b in boxes], dtype=object),
        field_data=[
            np.arange(len(boxes), dtype=np.int64),
            np.array(names, dtype=object),
            np.full(len(boxes), 10.0),
        ],
        fields=["id", "identifier", "resolution"],
        crs="EPSG:32633",
        driver="GPKG",
        layer="tiles",
        geometry_type="Polygon",
    )
    return path


@pytest.fixture(scope="module")
def make_settings(
    demo: Path, inputs: Path, cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., Settings]:
    """Settings on the module's cluster, a fresh data folder per call, a 3 s lease."""

    def build(**options: Any) -> Settings:
        data = tmp_path_factory.mktemp("resilience-data")
        values = {"batch_lease_seconds": 3.0, **options}
        return Settings(
            catalog=str(demo),
            data_dir=data,
            dask_scheduler=cluster.scheduler_address,
            allowed_sources=[str(demo), str(inputs)],
            **values,
        )

    return build


@pytest.fixture(scope="module")
def slow() -> Iterator[None]:
    """Services built meanwhile hand their workers a catalog whose searches sleep."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            app.services, "catalog_factory", slowed(app.services.catalog_factory, TILE_SECONDS)
        )
        yield


@pytest.fixture(scope="module")
def api(slow: None, make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    """The service over HTTP (in this process), its tiles slowed."""
    with TestClient(create_app(make_settings())) as client:
        yield client


@pytest.fixture
def dask(cluster: LocalCluster) -> Iterator[Client]:
    with scheduler_client(cluster.scheduler_address) as client:
        yield client


# ----------------------------------------------------------------------------- helpers


def body(tiles_file: Path, output: dict[str, Any] | None = None) -> dict[str, Any]:
    """A median NDVI and a max red over the demo season, on the 9 own tiles."""
    return {
        "processRequest": {
            "input": {"data": [{"type": "sentinel-2-l2a", "dataFilter": {"timeRange": TIME}}]},
            "outputs": OUTPUTS,
            "mask": "scl-clear",
        },
        "input": {"type": "geopackage", "features": str(tiles_file)},
        "output": output or {"type": "raster"},
    }


def get(client: Any, job_id: str, path: str = "", **params: Any) -> dict[str, Any]:
    response = client.get(f"/batch/process/{job_id}{path}", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def post(client: Any, job_id: str, action: str, status: int = 202) -> dict[str, Any]:
    response = client.post(f"/batch/process/{job_id}/{action}")
    assert response.status_code == status, response.text
    return response.json()


def create(client: Any, request: dict[str, Any]) -> str:
    response = client.post("/batch/process", json=request)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def check_counts(client: Any, job_id: str) -> dict[str, Any]:
    """GET of the job and its /tiles agree (read between two GETs: counts only grow)."""
    before = get(client, job_id)
    if before["analysis"] is None:
        return before  # no tiles before the analysis
    tiles = get(client, job_id, "/tiles")
    after = get(client, job_id)
    states = [f["properties"]["status"] for f in tiles["features"]]
    total = before["progress"]["tiles"]["total"]
    assert len(states) == tiles["numberMatched"] == total == after["progress"]["tiles"]["total"]
    processed, failed = states.count("PROCESSED"), states.count("FAILED")
    assert before["progress"]["tiles"]["done"] <= processed <= after["progress"]["tiles"]["done"]
    assert before["progress"]["tiles"]["failed"] <= failed <= after["progress"]["tiles"]["failed"]
    assert before["progress"]["units"]["done"] <= processed + failed
    assert processed + failed <= after["progress"]["units"]["done"]
    return after


def done_at_least(client: Any, job_id: str, count: int) -> Callable[[], dict | None]:
    def check() -> dict | None:
        view = check_counts(client, job_id)
        if view["status"] in FINAL:
            raise AssertionError(f"the job ended before the test could interrupt it: {view}")
        return view if view["progress"]["units"]["done"] >= count else None

    return check


def markers(root: Path) -> dict[int, int]:
    """Unit number -> its marker's modification time (ns)."""
    return {int(p.stem): p.stat().st_mtime_ns for p in (root / "_batch" / "units").glob("*.json")}


def cog_times(tiles: list[dict]) -> dict[str, int]:
    """Output path -> modification time (ns), of the tiles' COGs that exist."""
    times = {}
    for feature in tiles:
        for path in feature["properties"]["outputs"].values():
            if Path(path).exists():
                times[path] = Path(path).stat().st_mtime_ns
    return times


def running_tiles(dask: Client, job_id: str) -> dict[str, list[int]]:
    """Worker address -> the units of ``job_id`` it is executing now."""

    def executing(dask_worker: Any) -> list[str]:
        return [str(ts.key) for ts in dask_worker.state.executing]

    prefix = f"batch-{job_id}-"
    return {
        worker: [int(key[len(prefix) :].split("-")[0]) for key in keys if key.startswith(prefix)]
        for worker, keys in dask.run(executing).items()
    }


def workers_idle(dask: Client) -> bool:
    running = dask.run(lambda dask_worker: len(dask_worker.state.all_running_tasks))
    return not any(running.values())


def assert_complete(done: dict[str, Any], tiles: list[dict]) -> None:
    """DONE; each tile PROCESSED once, its COGs valid, one marker each, no temporaries."""
    assert done["status"] == "DONE", done
    total = len(tiles)
    assert done["progress"]["tiles"] == {"total": total, "done": total, "failed": 0}
    assert done["progress"]["units"] == {"total": total, "done": total}
    assert done["completionPercentage"] == 100.0
    assert {f["properties"]["status"] for f in tiles} == {"PROCESSED"}
    names = [f["properties"]["name"] for f in tiles]
    assert len(set(names)) == total
    root = Path(done["output"])
    assert sorted(markers(root)) == list(range(total))
    for number in range(total):
        marker = json.loads((root / "_batch" / "units" / f"{number}.json").read_text())
        assert marker["unit"] == number and marker["done"] == 1 and marker["failed"] == []
    for feature in tiles:
        for output_id, path in feature["properties"]["outputs"].items():
            valid, errors, _ = cog_validate(path, quiet=True)
            assert valid, (path, errors)
            with rasterio.open(path) as src:
                assert src.shape == (80, 80) and src.descriptions == (output_id,)
                assert src.read(1, masked=True).count() > 0
    # Every tile's folder holds its outputs only; one Item per tile.
    assert sorted(
        p.name for p in root.iterdir() if p.is_dir() and p.name not in ("_batch", "items")
    ) == sorted(names)
    assert sorted(p.stem for p in (root / "items").glob("*.json")) == sorted(names)
    assert not [p for p in root.rglob("*") if ".tmp-" in p.name]


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


# ------------------------------------------------------------------------------- tests


def test_worker_killed_mid_tile(api: TestClient, tiles_file: Path, dask: Client) -> None:
    job_id = create(api, body(tiles_file))
    post(api, job_id, "start")
    wait_until(done_at_least(api, job_id, 2), "2 tiles done", WAIT, interval=0.1)
    # A tile that starts now: it is in its first (slow) step when its worker is killed.
    seen = {(w, u) for w, units in running_tiles(dask, job_id).items() for u in units}
    worker, unit = wait_until(
        lambda: next(
            (
                (w, u)
                for w, units in running_tiles(dask, job_id).items()
                for u in units
                if (w, u) not in seen
            ),
            None,
        ),
        "a tile to start",
        WAIT,
        interval=0.02,
    )
    root = Path(get(api, job_id)["output"])
    pid = dask.run(os.getpid, workers=[worker])[worker]
    before = markers(root)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: pid_gone(pid), "the worker to die", 30)
    # Killed mid-tile: its marker (written last) is not there.
    assert unit not in markers(root), "the tile finished before the kill"
    tiles_before = get(api, job_id, "/tiles")["features"]
    times_before = cog_times([f for f in tiles_before if f["id"] in before])

    done = wait_for(lambda: check_counts(api, job_id), FINAL, WAIT)
    tiles = get(api, job_id, "/tiles")["features"]
    assert_complete(done, tiles)
    after = markers(Path(done["output"]))
    # The tiles finished before the kill were not computed again.
    assert {n: after[n] for n in before} == before
    assert {p: t for p, t in cog_times(tiles).items() if p in times_before} == times_before


def test_stop_while_tiles_run_then_start(api: TestClient, tiles_file: Path, dask: Client) -> None:
    job_id = create(api, body(tiles_file))
    post(api, job_id, "start")
    wait_until(done_at_least(api, job_id, 2), "2 tiles done", WAIT, interval=0.1)
    wait_until(lambda: any(running_tiles(dask, job_id).values()), "a tile running", WAIT, 0.05)
    stopped = post(api, job_id, "stop", 200)
    assert stopped["status"] == "STOPPED"
    # The driver leaves at its next poll; the tiles that were running finish and write
    # their markers, which nobody records until the job is started again.
    wait_until(
        lambda: not _driver_running(job_id) and workers_idle(dask),
        "the driver to leave and the running tiles to finish",
        WAIT,
    )
    frozen = check_counts(api, job_id)
    assert frozen["status"] == "STOPPED"
    total = frozen["progress"]["tiles"]["total"]
    assert frozen["progress"]["units"]["done"] < total
    root = Path(frozen["output"])
    written = markers(root)
    assert len(written) < total, "every tile finished before the stop"
    finished = [f for f in get(api, job_id, "/tiles")["features"] if f["id"] in written]
    times = cog_times(finished)
    assert len(times) == 2 * len(written)
    assert post(api, job_id, "stop", 409)

    assert post(api, job_id, "start")["status"] == "PROCESSING"
    done = wait_for(lambda: check_counts(api, job_id), FINAL, WAIT)
    tiles = get(api, job_id, "/tiles")["features"]
    assert_complete(done, tiles)
    # Tiles finished before the start (recorded or not at the stop) were not rerun.
    after = markers(root)
    assert {n: after[n] for n in written} == written
    assert {p: t for p, t in cog_times(tiles).items() if p in times} == times


def _driver_running(job_id: str) -> bool:
    """Whether this process runs the job's driver (thread ``batch-<id>``)."""
    return any(thread.name == f"batch-{job_id}" for thread in threading.enumerate())


def test_broken_asset_partial_then_retry_failed(
    api: TestClient, tiles_file: Path, demo: Path
) -> None:
    document = json.loads((demo / "items" / f"{CUT_SCENE}.json").read_text())
    cut = shapely.geometry.shape(document["geometry"])
    red = demo / "cogs" / CUT_SCENE / "B04.tif"
    original = red.read_bytes()
    red.write_bytes(original[:1000])  # truncated: GDAL cannot read it
    try:
        job_id = create(api, body(tiles_file))
        post(api, job_id, "start")
        partial = wait_for(lambda: check_counts(api, job_id), FINAL, WAIT)
    finally:
        red.write_bytes(original)
    assert partial["status"] == "PARTIAL", partial
    tiles = get(api, job_id, "/tiles")["features"]
    touching = {f["id"] for f in tiles if cut.intersects(shapely.geometry.shape(f["geometry"]))}
    assert touching and len(touching) < len(tiles)
    failed = get(api, job_id, "/tiles", status="FAILED")["features"]
    assert {f["id"] for f in failed} == touching
    assert partial["progress"]["tiles"] == {
        "total": len(tiles),
        "done": len(tiles) - len(touching),
        "failed": len(touching),
    }
    assert {t["id"] for t in partial["failedTiles"]} == touching
    for feature in failed:
        error = feature["properties"]["error"]
        # It names the item and the asset, never where this machine keeps them.
        assert CUT_SCENE in error and "red" in error, error
        assert str(demo) not in error and "/tmp" not in error, error
        assert not any(Path(p).exists() for p in feature["properties"]["outputs"].values())
    root = Path(partial["output"])
    before = markers(root)
    assert set(before) == {f["id"] for f in tiles}
    times = cog_times(tiles)

    assert post(api, job_id, "retry-failed")["status"] == "PROCESSING"
    done = wait_for(lambda: check_counts(api, job_id), FINAL, WAIT)
    tiles = get(api, job_id, "/tiles")["features"]
    assert_complete(done, tiles)
    assert done["failedTiles"] == []
    after = markers(root)
    assert {n for n in after if after[n] != before[n]} == touching
    assert cog_times([f for f in tiles if f["id"] not in touching]) == times


@contextmanager
def service_process(env: dict[str, str], timeout: float = 90.0) -> Iterator[LiveProcess]:
    """The service under uvicorn in a subprocess, its tiles slowed (``SERVE_SCRIPT``)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-c", SERVE_SCRIPT, str(port), str(TILE_SECONDS)]
    process = subprocess.Popen(command, env=env)
    server = LiveProcess(f"http://127.0.0.1:{port}", process)
    try:
        deadline = time.monotonic() + timeout
        while not server.alive():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn subprocess on {server.url} did not start")
            time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _marker(root: Path, unit: int) -> dict[str, Any]:
    return json.loads((root / "_batch" / "units" / f"{unit}.json").read_text())


def output_times(root: Path) -> dict[str, int]:
    """Each tile COG under a job folder -> its modification time (ns)."""
    return {str(p): p.stat().st_mtime_ns for p in root.glob("*/*.tif")}


def test_service_killed_mid_job_is_taken_over(
    make_settings: Callable[..., Settings], tiles_file: Path, dask: Client
) -> None:
    settings = make_settings()
    tests = str(Path(__file__).parent)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(tests).parent), tests]),
        "TERRATILER_CATALOG": settings.catalog,
        "TERRATILER_DATA_DIR": str(settings.data_dir),  # the same SQLite file for both
        "TERRATILER_ALLOWED_SOURCES": ",".join(settings.allowed_sources),
        "TERRATILER_DASK_SCHEDULER": str(settings.dask_scheduler),
        "TERRATILER_BATCH_LEASE_SECONDS": "3",
    }
    with service_process(env) as first, httpx.Client(base_url=first.url, timeout=30) as client:
        job_id = create(client, body(tiles_file))
        post(client, job_id, "start")
        wait_until(done_at_least(client, job_id, 2), "2 tiles done", WAIT, interval=0.1)
        wait_until(lambda: any(running_tiles(dask, job_id).values()), "a tile running", WAIT)
        first.process.send_signal(signal.SIGKILL)  # no shutdown: its lease stays held
        first.process.wait()
    # Restarted at once, as a supervisor would: the tiles the dead service had running may
    # still run (their markers come later; the new service may run them again, writing the
    # same files). What was finished at the kill must not be recomputed.
    root = Path(settings.data_dir) / "batch" / job_id
    written = markers(root)
    names = {_marker(root, n)["tile"] for n in written}
    times = {p: t for p, t in output_times(root).items() if Path(p).parent.name in names}
    assert 2 <= len(written) < 9 and len(times) == 2 * len(written)

    with service_process(env) as second, httpx.Client(base_url=second.url, timeout=30) as client:
        resumed = check_counts(client, job_id)
        assert resumed["status"] == "PROCESSING"
        assert resumed["progress"]["units"]["done"] < 9
        done = wait_for(lambda: check_counts(client, job_id), FINAL, WAIT)
        tiles = get(client, job_id, "/tiles")["features"]
    assert done["output"] == str(root)
    assert_complete(done, tiles)
    # The tiles finished before the restart were recorded from their markers, not rerun.
    after = markers(root)
    assert {n: after[n] for n in written} == written
    assert {p: t for p, t in output_times(root).items() if p in times} == times


class S3Server:
    """moto's S3 server on a loopback port that can go away and come back on the same port.

    moto keeps its buckets in the process, not in the server: a server started again on
    the port finds them as they were.
    """

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self._make = ThreadedMotoServer
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        self.host, self.port = self.server.get_host_and_port()
        self.endpoint = f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        """Stop serving and close the socket: connections are refused (an outage)."""
        self.server.stop()
        self.server._server.server_close()  # shutdown() alone leaves it listening

    def start(self) -> None:
        """Serve again on the same port."""
        self.server = self._make(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()


def test_s3_output_server_down_mid_job(
    slow: None, make_settings: Callable[..., Settings], tiles_file: Path, dask: Client, aws_env
) -> None:
    import s3fs

    s3 = S3Server()
    try:
        fs = s3fs.S3FileSystem(
            client_kwargs={"endpoint_url": s3.endpoint}, use_listings_cache=False
        )
        fs.mkdir("resilience")
        # No resubmission of a failed tile (each failed write takes seconds of botocore's
        # retries): the first tile whose write fails is recorded failed at once.
        settings = make_settings(
            s3_endpoint_url=s3.endpoint,
            batch_outputs=["s3://resilience/out"],
            batch_unit_retries=0,
        )
        with TestClient(create_app(settings)) as api:
            request = body(
                tiles_file, {"type": "raster", "delivery": {"s3": {"url": "s3://resilience/out"}}}
            )
            job_id = create(api, request)
            post(api, job_id, "start")
            wait_until(done_at_least(api, job_id, 2), "2 tiles done", WAIT, interval=0.1)
            wait_until(lambda: any(running_tiles(dask, job_id).values()), "a tile running", WAIT)
            s3.stop()
            try:
                # Writes fail: the tiles are recorded failed (or the job fails writing its
                # collection, when the outage lasts till the end).
                down = wait_until(
                    lambda: (
                        (view := check_counts(api, job_id))["progress"]["tiles"]["failed"]
                        or view["status"] in FINAL
                    ),
                    "a tile to fail",
                    WAIT,
                    interval=0.2,
                )
                assert down
            finally:
                s3.start()
            ended = wait_for(lambda: check_counts(api, job_id), FINAL, WAIT)
            assert ended["status"] in ("PARTIAL", "FAILED"), ended
            failed = get(api, job_id, "/tiles", status="FAILED")["features"]
            assert failed, ended
            done_before = {
                f["id"] for f in get(api, job_id, "/tiles", status="PROCESSED")["features"]
            }
            post(api, job_id, "retry-failed")
            done = wait_for(lambda: check_counts(api, job_id), FINAL, WAIT)
            tiles = get(api, job_id, "/tiles")["features"]
        assert done["status"] == "DONE", done
        assert done["progress"]["tiles"] == {"total": 9, "done": 9, "failed": 0}
        assert {f["properties"]["status"] for f in tiles} == {"PROCESSED"}
        assert len(done_before) + len(failed) == 9
        prefix = f"resilience/out/{job_id}"
        keys = [key[len(prefix) + 1 :] for key in fs.find(prefix)]
        assert not [key for key in keys if ".tmp" in key]
        assert sorted(k for k in keys if k.startswith("_batch/units/")) == sorted(
            f"_batch/units/{n}.json" for n in range(9)
        )
        names = sorted(f["properties"]["name"] for f in tiles)
        assert sorted(k for k in keys if k.endswith(".tif")) == sorted(
            f"{name}/{output}.tif" for name in names for output in OUTPUTS
        )
        assert "collection.json" in keys
        local = Path(settings.data_dir) / "downloaded"
        for feature in tiles:
            for output_id, url in feature["properties"]["outputs"].items():
                path = local / feature["properties"]["name"] / f"{output_id}.tif"
                path.parent.mkdir(parents=True, exist_ok=True)
                fs.get(url, str(path))
                assert cog_validate(str(path), quiet=True)[0], url
                with rasterio.open(path) as src:
                    assert src.shape == (80, 80) and src.read(1, masked=True).count() > 0
    finally:
        s3.stop()
