"""Batch jobs across hosts, for real: network namespaces on one machine (tests/netns_hosts.py).

Five hosts and a client, joined by a bridge, share no loopback; every process has its own
folders: moto's S3 server holds the inputs (the demo catalog and COGs, the tiles file) and
the outputs, PostgreSQL (on the api host) the jobs. A batch statistics job and a batch
processing job run on the service (uvicorn) with a Dask scheduler and two workers on hosts of
their own; in each job one worker host's processes are killed (SIGKILL) mid-job. The results
must equal, row for row and pixel for pixel, those of a single-host run of the same jobs (a
LocalCluster on this machine reading the demo from its folder): nothing lost, nothing twice.
"""

import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
from batch_jobs import WAIT, job_body
from netns_hosts import OUTPUTS, RESULTS_BUCKET, deployed, job_view, netns_unavailable
from polling import wait_until

from app.batch import BatchService, BatchStatisticalRequest
from app.batch.processing.models import BatchProcessRequest

pytestmark = pytest.mark.timeout(300)

UNAVAILABLE = netns_unavailable()
if UNAVAILABLE:
    pytest.skip(f"no network namespaces here: {UNAVAILABLE}", allow_module_level=True)

SIZE = 384  # 3.84 km of demo: 123 fields, 6 x 6 tiles of 640 m
TILE = 640.0
TIME = {"from": "2023-04-01T00:00:00Z", "to": "2023-10-01T00:00:00Z"}
# Small units, many of them: the job is still running when a worker host dies.
SETTINGS = {"batch_unit_features": 4, "batch_min_units": 8}
FINAL = {"DONE", "PARTIAL", "FAILED", "STOPPED"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo catalog, with the processing job's tiles (a GeoPackage) beside it."""
    import pyogrio.raw
    import shapely

    from app.demo import demo_grid, generate_demo

    path = tmp_path_factory.mktemp("netns-demo")
    generate_demo(path, scenes=6, size=SIZE, seed=1)
    grid = demo_grid(SIZE)
    count = int(SIZE * 10 // TILE)
    boxes, names = [], []
    for row in range(count):
        for col in range(count):
            left, top = grid.left + col * TILE, grid.top - row * TILE
            boxes.append(shapely.box(left, top - TILE, left + TILE, top))
            names.append(f"r{row}c{col}")
    pyogrio.raw.write(
        str(path / "tiles.gpkg"),
        geometry=np.array([shapely.to_wkb(b) for b in boxes], dtype=object),
        field_data=[
            np.arange(1, len(boxes) + 1, dtype=np.int64),
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
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("netns-data")


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory, demo: Path):
    """terratiler deployed on five hosts (and a client), torn down whatever happens."""
    settings = {f"TERRATILER_{k.upper()}": str(v) for k, v in SETTINGS.items()}
    with deployed(tmp_path_factory.mktemp("hosts"), demo, workers=2, settings=settings) as d:
        yield d


@pytest.fixture(scope="module")
def local(make_settings, demo: Path):
    """The same jobs on one host: a LocalCluster reading the demo from its folder."""
    settings = make_settings(**SETTINGS)
    from app.services import catalog_factory

    service = BatchService(settings, catalog_factory(settings))
    yield service
    service.close()


def _features(demo: Path) -> dict[str, Any]:
    return json.loads((demo / "fields.geojson").read_text())


def _process_body(features: str) -> dict[str, Any]:
    return {
        "processRequest": {
            "input": {"data": [{"type": "sentinel-2-l2a", "dataFilter": {"timeRange": TIME}}]},
            "outputs": {
                "ndvi": {"expression": "(nir-red)/(nir+red)", "composite": "median"},
                "red": {"expression": "red", "composite": "first"},
            },
            "mask": "scl-clear",
        },
        "input": {"type": "geopackage", "features": features},
    }


def _run_killing(remote, path: str, body: dict[str, Any], victim: str) -> dict[str, Any]:
    """Create and start a job over HTTP; kill host ``victim`` once a unit is done; wait."""
    with remote.http() as http:
        created = http.post(path, json=body)
        assert created.status_code == 201, created.text
        url = f"{path}/{created.json()['id']}"
        assert http.post(f"{url}/start").status_code == 202

        def some_done() -> dict | None:
            view = job_view(http, url)
            return view if view["progress"]["units"]["done"] >= 1 else None

        at_kill = wait_until(some_done, "a unit done", WAIT, interval=0.05)
        killed = remote.network[victim].kill_processes()
        # Killed mid-job: the job was running, units were left, the host had processes.
        assert at_kill["status"] == "PROCESSING", at_kill
        units = at_kill["progress"]["units"]
        assert units["done"] < units["total"], at_kill
        assert killed, f"{victim} had no processes"
        done = wait_until(
            lambda: (v := job_view(http, url))["status"] in FINAL and v, "the job's end", WAIT
        )
        assert done["status"] == "DONE", done
        return done


def _rows(table) -> Counter:
    """The table's rows (as canonical JSON) with how often each appears."""
    return Counter(json.dumps(row, sort_keys=True, default=str) for row in table.to_pylist())


def test_batch_statistics_across_hosts_survives_a_dead_worker(remote, local, demo, folder):
    # Nothing reaches another host through a loopback: every address is on the bridge.
    assert not [v for v in remote.service_env().values() if "127.0.0.1" in v or "localhost" in v]
    features = _features(demo)
    done = _run_killing(remote, "/batch/statistics", job_body(features), victim="worker2")
    job_id = done["id"]
    assert done["output"] == f"{OUTPUTS}/{job_id}"
    count = len(features["features"])
    assert done["analysis"]["featureCount"] == count
    with remote.http() as http:
        response = http.get(f"/batch/statistics/{job_id}/results", params={"format": "parquet"})
        assert response.status_code == 200, response.text
    table = pq.read_table(io.BytesIO(response.content))
    # One JSON per feature on S3, once each; no temporary files left behind.
    keys = remote.s3_keys(RESULTS_BUCKET, f"jobs/{job_id}/")
    names = {key.rsplit("/", 1)[1] for key in keys}
    # (GeoJSON features are numbered from 0, in their order.)
    assert {f"{i}.json" for i in range(count)} <= names
    assert not [k for k in keys if ".tmp" in k]
    # The single-host run, for comparison.
    single = local.create(BatchStatisticalRequest.model_validate(job_body(features)))
    local.start(single["id"])
    single = local.wait(single["id"], timeout=WAIT, poll=0.2)
    assert single["status"] == "DONE", single
    expected = pq.read_table(Path(single["output"]) / "results.parquet")
    assert table.num_rows == expected.num_rows > count
    assert sorted(set(table["id"].to_pylist())) == list(range(count))
    rows = _rows(table)
    assert max(rows.values()) == 1  # no row twice
    assert rows == _rows(expected)


def _tifs(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*.tif"))}


def test_batch_processing_across_hosts_survives_a_dead_worker(remote, local, demo, folder):
    # The host killed by the statistics test comes back (a new worker joins the cluster).
    remote.start_worker("worker2")
    remote.wait_for_workers(2)
    done = _run_killing(
        remote, "/batch/process", _process_body("s3://data/demo/tiles.gpkg"), victim="worker1"
    )
    job_id = done["id"]
    tiles = done["analysis"]["tileCount"]
    assert tiles == 36
    got = folder / "remote"
    keys = remote.s3_keys(RESULTS_BUCKET, f"jobs/{job_id}/", download_to=got)
    assert not [k for k in keys if ".tmp" in k]
    remote_tifs = _tifs(got / "jobs" / job_id)
    # Two outputs per tile, each written once.
    assert len(remote_tifs) == 2 * tiles
    single = local.create_process(
        BatchProcessRequest.model_validate(_process_body(str(demo / "tiles.gpkg")))
    )
    local.start(single["id"], kind="process")
    single = local.wait(single["id"], timeout=WAIT, poll=0.2)
    assert single["status"] == "DONE", single
    local_tifs = _tifs(Path(single["output"]))
    assert set(remote_tifs) == set(local_tifs)
    for name, path in remote_tifs.items():
        with rasterio.open(path) as a, rasterio.open(local_tifs[name]) as b:
            assert a.transform == b.transform and a.crs == b.crs, name
            np.testing.assert_array_equal(a.read(), b.read(), err_msg=name)
