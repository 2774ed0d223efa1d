"""Batch statistics jobs end to end, on real parts.

A real Dask LocalCluster of worker processes (one per module), the service over REST
(TestClient, and real uvicorn processes for the restart), real COG files of a demo catalog
(its own copy: one test moves a file), SQLite and PostgreSQL job stores, and an s3://
output on moto's S3 server on loopback.
"""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
import shapely
import shapely.geometry
from batch_jobs import REQUEST, WAIT, job_body, scheduler_client, wait_for
from distributed import Client, LocalCluster
from fastapi.testclient import TestClient
from live_server import live_server, live_server_process
from polling import wait_until

from app.batch import BatchService, BatchStatisticalRequest
from app.batch.results import rows_of
from app.batch.storage import JobFiles
from app.main import create_app
from app.services import catalog_factory
from app.settings import Settings

pytestmark = pytest.mark.timeout(300)

PARTIAL_SCENE = "S2A_33TWM_20230611_0_L2A"  # the demo date cut by the swath edge


# ----------------------------------------------------------------------------- helpers


def statistics_body(geometry: dict, crs: str | None = None) -> dict[str, Any]:
    body = json.loads(json.dumps(REQUEST))
    body["input"]["bounds"] = {"geometry": geometry}
    if crs:
        body["input"]["bounds"]["properties"] = {"crs": crs}
    return body


def approx_equal(a: Any, b: Any, path: str = "") -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), path
        for key in a:
            approx_equal(a[key], b[key], f"{path}/{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            approx_equal(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), (path, a, b)
    else:
        assert a == b, (path, a, b)


def assert_exactly_once(root: Path, ids: set[int]) -> None:
    """Every feature has one JSON, and its rows appear once in results.parquet."""
    assert {int(p.stem) for p in root.glob("*.json")} == ids
    table = pq.read_table(root / "results.parquet")
    counts = Counter(table["id"].to_pylist())
    assert set(counts) == ids
    for feature_id in ids:
        document = json.loads((root / f"{feature_id}.json").read_text())
        expected = rows_of(feature_id, document["identifier"], document.get("response") or document)
        assert counts[feature_id] == len(expected), feature_id


def replicated_fields(demo: Path, folder: Path, copies: int) -> tuple[Path, int]:
    """The demo fields ``copies`` times over, as a GeoJSON (ids are row numbers)."""
    collection = json.loads((demo / "fields.geojson").read_text())
    features = []
    for copy in range(copies):
        for feature in collection["features"]:
            properties = dict(feature["properties"])
            properties["identifier"] = f"{properties['identifier']}-{copy}"
            features.append(
                {"type": "Feature", "properties": properties, "geometry": feature["geometry"]}
            )
    path = folder / f"fields-x{copies}.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path, len(features)


def marker_times(root: Path) -> dict[str, int]:
    units = Path(JobFiles.beside(str(root)).units)
    return {p.name: p.stat().st_mtime_ns for p in units.glob("*.json")}


def workers_idle(dask: Client) -> bool:
    """Whether no worker runs a task, cancelled ones included: a unit that was running when
    its job was stopped or its service died has finished and written its marker."""
    running = dask.run(lambda dask_worker: len(dask_worker.state.all_running_tasks))
    return not any(running.values())


def driver_running(job_id: str) -> bool:
    """Whether this process still runs the job's driver (thread ``batch-<id>``,
    ``app.batch.runner``): it may record a unit until it leaves."""
    return any(thread.name == f"batch-{job_id}" for thread in threading.enumerate())


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def batch_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This module's own demo catalog (a test moves one of its COGs)."""
    from app.demo import generate_demo

    path = tmp_path_factory.mktemp("batch-demo")
    generate_demo(path, scenes=6, size=256, seed=1)
    return path


@pytest.fixture
def make_settings(
    batch_demo: Path, cluster: LocalCluster, tmp_path: Path
) -> Callable[..., Settings]:
    """Settings of a service on the test cluster, a fresh data folder and batch options."""

    def build(database_url: str | None = None, **batch: Any) -> Settings:
        # A short lease, so that a job whose driver died is taken over within the test.
        options = {"batch_lease_seconds": 3.0, **batch}
        return Settings(
            catalog=str(batch_demo),
            data_dir=tmp_path / "data",
            dask_scheduler=cluster.scheduler_address,
            allowed_sources=[str(batch_demo), str(tmp_path)],
            database_url=database_url,
            **options,
        )

    return build


# ------------------------------------------------------------------------------- tests


def test_job_over_the_demo_fields_equals_post_statistics(make_settings, batch_demo, tmp_path):
    settings = make_settings()
    out = tmp_path / "data" / "batch"
    collection = json.loads((batch_demo / "fields.geojson").read_text())
    with TestClient(create_app(settings)) as client:
        created = client.post(
            "/batch/statistics", json=job_body(str(batch_demo / "fields.geojson"))
        )
        assert created.status_code == 201, created.text
        job = created.json()
        assert job["status"] == "CREATED" and job["output"] == str(out / job["id"])
        url = f"/batch/statistics/{job['id']}"

        assert client.post(f"{url}/analyse").status_code == 202
        analysed = wait_for(lambda: client.get(url).json(), {"ANALYSIS_DONE"})
        analysis = analysed["analysis"]
        count = len(collection["features"])
        assert analysis["featureCount"] == analysis["validFeatureCount"] == count
        assert analysis["sceneCount"] == 6 and analysis["intervalsWithScenes"] == 6
        assert analysis["intervalCount"] == 183 and analysis["crs"] == "EPSG:4326"
        assert analysis["unitCount"] >= 2 and analysis["estimatedSeconds"] > 0
        assert analysis["hasIdentifier"] is True

        assert client.post(f"{url}/start").status_code == 202
        done = wait_for(lambda: client.get(url).json(), {"DONE", "PARTIAL", "FAILED"})
        assert done["status"] == "DONE", done
        assert done["completionPercentage"] == 100.0
        assert done["progress"]["features"] == {
            "total": count,
            "done": count,
            "failed": 0,
            "invalid": 0,
        }
        assert done["failedFeatures"] == [] and done["estimatedSecondsRemaining"] == 0.0

        # Each feature's output is POST /statistics for that feature.
        root = out / job["id"]
        for feature_id, feature in enumerate(collection["features"]):
            document = json.loads((root / f"{feature_id}.json").read_text())
            assert document["id"] == feature_id
            assert document["identifier"] == feature["properties"]["identifier"]
            expected = client.post("/statistics", json=statistics_body(feature["geometry"]))
            assert expected.status_code == 200
            approx_equal(document["response"], expected.json())
        assert_exactly_once(root, set(range(count)))

        # The table, and its downloads.
        table = pq.read_table(root / "results.parquet")
        assert {"percentiles_50.0", "histogram_bins", "stDev", "error"} <= set(table.column_names)
        assert set(table["output"].to_pylist()) == {"ndvi", "vis"}
        assert set(table["band"].to_pylist()) == {"B0", "red", "green"}
        parquet = client.get(f"{url}/results")
        assert parquet.status_code == 200 and parquet.content[:4] == b"PAR1"
        csv = client.get(f"{url}/results", params={"format": "csv"})
        assert csv.headers["content-type"].startswith("text/csv")
        assert csv.text.count("\n") == table.num_rows + 1
        geojson = client.get(f"{url}/results", params={"format": "geojson"}).json()
        assert len(geojson["features"]) == table.num_rows
        first = geojson["features"][0]
        assert first["geometry"]["type"] == "Polygon"
        assert first["properties"]["identifier"].startswith("field-")

        listed = client.get("/batch/statistics").json()
        assert listed["total"] == 1 and listed["data"][0]["id"] == job["id"]


def test_illegal_actions_answer_409_with_the_state(make_settings, batch_demo):
    with TestClient(create_app(make_settings())) as client:
        job = client.post(
            "/batch/statistics", json=job_body(str(batch_demo / "fields.geojson"))
        ).json()
        url = f"/batch/statistics/{job['id']}"
        for action in ("stop", "retry-failed"):
            response = client.post(f"{url}/{action}")
            assert response.status_code == 409
            assert "CREATED" in response.json()["detail"]
        response = client.get(f"{url}/results")
        assert response.status_code == 409 and "CREATED" in response.json()["detail"]
        assert client.get("/batch/statistics/nope").status_code == 404
        assert client.post("/batch/statistics/nope/start").status_code == 404

        client.post(f"{url}/start")
        wait_for(lambda: client.get(url).json(), {"DONE"})
        for action in ("analyse", "start", "stop", "retry-failed"):
            response = client.post(f"{url}/{action}")
            assert response.status_code == 409, action
            assert "its state is DONE" in response.json()["detail"]
        assert client.get(f"{url}/results", params={"format": "xml"}).status_code == 422

        # Bad requests are refused at creation.
        bad = job_body(str(batch_demo / "fields.geojson"))
        bad["aggregation"]["outputs"]["ndvi"]["expression"] = "(nir-foo)"
        response = client.post("/batch/statistics", json=bad)
        assert response.status_code == 400 and "foo" in response.json()["detail"]
        response = client.post("/batch/statistics", json=job_body("/etc/passwd"))
        assert response.status_code == 403
        response = client.post(
            "/batch/statistics", json=job_body(str(batch_demo / "fields.geojson"), "/etc")
        )
        assert response.status_code == 403 and "output" in response.json()["detail"]
        unbounded = job_body(str(batch_demo / "fields.geojson"))
        unbounded["input"]["bounds"] = {"bbox": [0, 0, 1, 1]}
        assert client.post("/batch/statistics", json=unbounded).status_code == 422


def test_killed_worker_loses_and_duplicates_nothing(make_settings, batch_demo, cluster, tmp_path):
    features, count = replicated_fields(batch_demo, tmp_path, 2)
    settings = make_settings(batch_unit_features=4)
    service = BatchService(settings, catalog_factory(settings))
    try:
        job = service.create(BatchStatisticalRequest.model_validate(job_body(str(features))))
        service.start(job["id"])
        wait_for(lambda: _units_done(service, job["id"], 3), {"PROCESSING"})
        with scheduler_client(cluster.scheduler_address) as client:
            pids = client.run(os.getpid)
            assert len(pids) == 2
            os.kill(next(iter(pids.values())), signal.SIGKILL)
        view = service.get(job["id"])
        assert view["progress"]["units"]["done"] < view["progress"]["units"]["total"]
        done = service.wait(job["id"], timeout=WAIT)
    finally:
        service.close()
    assert done["status"] == "DONE", done
    assert done["progress"]["features"]["done"] == count
    assert_exactly_once(Path(done["output"]), set(range(count)))


def _units_done(service: BatchService, job_id: str, at_least: int) -> dict:
    view = service.get(job_id)
    if view["status"] == "PROCESSING" and view["progress"]["units"]["done"] < at_least:
        return {**view, "status": "WAITING"}
    return view


def test_restarted_service_resumes_the_job(batch_demo, cluster, tmp_path):
    features, count = replicated_fields(batch_demo, tmp_path, 2)
    env = {
        **os.environ,
        "TERRATILER_CATALOG": str(batch_demo),
        "TERRATILER_DATA_DIR": str(tmp_path / "data"),
        "TERRATILER_ALLOWED_SOURCES": f"{batch_demo},{tmp_path}",
        "TERRATILER_DASK_SCHEDULER": cluster.scheduler_address,
        "TERRATILER_BATCH_UNIT_FEATURES": "4",
        "TERRATILER_BATCH_LEASE_SECONDS": "3",
    }
    with live_server_process(env) as first:
        base = f"{first.url}/batch/statistics"
        job = httpx.post(base, json=job_body(str(features)), timeout=30).json()
        httpx.post(f"{base}/{job['id']}/start", timeout=30)

        def fetch() -> dict:
            view = httpx.get(f"{base}/{job['id']}", timeout=30).json()
            if view["status"] == "PROCESSING" and view["progress"]["units"]["done"] < 4:
                return {**view, "status": "WAITING"}
            return view

        at_kill = wait_for(fetch, {"PROCESSING"})
        first.process.send_signal(signal.SIGKILL)  # no shutdown: its lease is left held
        first.process.wait()
    assert at_kill["progress"]["units"]["done"] < at_kill["progress"]["units"]["total"]
    root = Path(at_kill["output"])
    with scheduler_client(cluster.scheduler_address) as dask:
        wait_until(lambda: workers_idle(dask), "the units left running to finish", WAIT)
    written = marker_times(root)

    with live_server_process(env) as second:
        url = f"{second.url}/batch/statistics/{job['id']}"
        done = wait_for(lambda: httpx.get(url, timeout=30).json(), {"DONE", "PARTIAL", "FAILED"})
    assert done["status"] == "DONE", done
    assert done["progress"]["features"]["done"] == count
    assert_exactly_once(root, set(range(count)))
    # Units finished before the restart were recorded from their markers, not rerun.
    after = marker_times(root)
    assert all(after[name] == mtime for name, mtime in written.items())


def test_stop_then_start_resumes_without_redoing(make_settings, batch_demo, cluster, tmp_path):
    features, count = replicated_fields(batch_demo, tmp_path, 2)
    with TestClient(create_app(make_settings(batch_unit_features=4))) as client:
        job = client.post("/batch/statistics", json=job_body(str(features))).json()
        url = f"/batch/statistics/{job['id']}"
        client.post(f"{url}/start")

        def fetch() -> dict:
            view = client.get(url).json()
            if view["status"] == "PROCESSING" and view["progress"]["units"]["done"] < 3:
                return {**view, "status": "WAITING"}
            return view

        wait_for(fetch, {"PROCESSING"})
        stopped = client.post(f"{url}/stop")
        assert stopped.status_code == 200 and stopped.json()["status"] == "STOPPED"
        # The driver leaves at its next poll (recording what finished meanwhile); the units
        # that were running finish and write their markers.
        with scheduler_client(cluster.scheduler_address) as dask:
            wait_until(
                lambda: not driver_running(job["id"]) and workers_idle(dask),
                "the driver to leave and the running units to finish",
                WAIT,
            )
        frozen = client.get(url).json()
        assert frozen["status"] == "STOPPED"
        assert frozen["progress"]["units"]["done"] < frozen["progress"]["units"]["total"]
        root = Path(frozen["output"])
        written = marker_times(root)
        # What is tested: a second later nothing moved. A fixed wait, as nothing signals
        # "nothing happened".
        time.sleep(1.0)
        assert client.get(url).json()["progress"] == frozen["progress"]
        assert client.post(f"{url}/stop").status_code == 409

        assert client.post(f"{url}/start").status_code == 202
        done = wait_for(lambda: client.get(url).json(), {"DONE", "PARTIAL", "FAILED"})
    assert done["status"] == "DONE", done
    assert_exactly_once(root, set(range(count)))
    after = marker_times(root)
    assert all(after[name] == mtime for name, mtime in written.items())


def test_a_request_error_found_reading_is_invalid_not_retried(make_settings, batch_demo):
    """binWidth is checked against the data's range once it is read: too many bins is the
    request's fault, so the features are invalid (not failed, not retried)."""
    body = job_body(str(batch_demo / "fields.geojson"))
    body["calculations"] = {"ndvi": {"histograms": {"default": {"binWidth": 1e-6}}}}
    count = len(json.loads((batch_demo / "fields.geojson").read_text())["features"])
    with TestClient(create_app(make_settings())) as client:
        created = client.post("/batch/statistics", json=body)
        assert created.status_code == 201, created.text
        url = f"/batch/statistics/{created.json()['id']}"
        client.post(f"{url}/start")
        ended = wait_for(lambda: client.get(url).json(), {"DONE", "PARTIAL", "FAILED"})
        assert ended["status"] == "PARTIAL", ended
        assert ended["progress"]["features"] == {
            "total": count,
            "done": 0,
            "failed": 0,
            "invalid": count,
        }
        assert ended["failedFeatures"] == []
        errors = [f["error"] for f in ended["invalidFeatures"]]
        assert len(errors) == count
        assert all("bins of 1e-06 over [" in e for e in errors)
        assert all("over the limit max_histogram_bins=1000" in e for e in errors)
        document = json.loads((Path(ended["output"]) / "0.json").read_text())
        assert document["error"]["type"] == "BAD_REQUEST"


def test_broken_asset_gives_partial_then_retry_failed_gives_done(
    make_settings, batch_demo, tmp_path
):
    collection = json.loads((batch_demo / "fields.geojson").read_text())
    item = json.loads((batch_demo / "items" / f"{PARTIAL_SCENE}.json").read_text())
    footprint = shapely.geometry.shape(item["geometry"])
    touching = {
        i
        for i, f in enumerate(collection["features"])
        if footprint.intersects(shapely.geometry.shape(f["geometry"]))
    }
    assert 0 < len(touching) < len(collection["features"])
    red = batch_demo / "cogs" / PARTIAL_SCENE / "B04.tif"
    moved = red.with_suffix(".moved")
    with TestClient(create_app(make_settings())) as client:
        job = client.post(
            "/batch/statistics", json=job_body(str(batch_demo / "fields.geojson"))
        ).json()
        url = f"/batch/statistics/{job['id']}"
        shutil.move(red, moved)
        try:
            client.post(f"{url}/start")
            partial = wait_for(lambda: client.get(url).json(), {"DONE", "PARTIAL", "FAILED"})
        finally:
            shutil.move(moved, red)
        assert partial["status"] == "PARTIAL", partial
        assert {f["id"] for f in partial["failedFeatures"]} == touching
        assert all(PARTIAL_SCENE in f["error"] for f in partial["failedFeatures"])
        features = partial["progress"]["features"]
        assert features["failed"] == len(touching)
        assert features["done"] == len(collection["features"]) - len(touching)
        root = Path(partial["output"])
        failed_doc = json.loads((root / f"{min(touching)}.json").read_text())
        assert failed_doc["response"]["status"] == "PARTIAL"
        assert any("error" in entry for entry in failed_doc["response"]["data"])
        table = pq.read_table(root / "results.parquet")
        assert {
            i for i, e in zip(table["id"].to_pylist(), table["error"].to_pylist(), strict=True) if e
        } == touching
        before = {p.name: p.stat().st_mtime_ns for p in root.glob("*.json")}

        retried = client.post(f"{url}/retry-failed")
        assert retried.status_code == 202
        done = wait_for(lambda: client.get(url).json(), {"DONE", "PARTIAL", "FAILED"})
    assert done["status"] == "DONE", done
    assert done["failedFeatures"] == []
    after = {p.name: p.stat().st_mtime_ns for p in root.glob("*.json")}
    rewritten = {int(name.split(".")[0]) for name in after if after[name] != before[name]}
    assert rewritten == touching  # exactly the failed features were recomputed
    assert_exactly_once(root, set(range(len(collection["features"]))))
    assert not any(pq.read_table(root / "results.parquet")["error"].to_pylist())


def test_postgresql_job_store(make_settings, postgres_url, batch_demo):
    from sqlalchemy import create_engine, text

    settings = make_settings(database_url=postgres_url)
    service = BatchService(settings, catalog_factory(settings))
    try:
        body = job_body(str(batch_demo / "fields.gpkg"))
        job = service.create(BatchStatisticalRequest.model_validate(body))
        service.start(job["id"])
        done = service.wait(job["id"], timeout=WAIT)
    finally:
        service.close()
    assert done["status"] == "DONE", done
    engine = create_engine(postgres_url)
    with engine.connect() as conn:
        state = conn.execute(text("SELECT state FROM batch_jobs")).scalar_one()
        units = conn.execute(text("SELECT count(*) FROM batch_units WHERE state = 'done'"))
        assert state == "DONE" and units.scalar_one() == done["progress"]["units"]["total"]
    engine.dispose()
    # GeoPackage in UTM: the ids are its FIDs, from 1.
    assert_exactly_once(Path(done["output"]), set(range(1, 1 + done["analysis"]["featureCount"])))


def test_s3_input_and_output_on_a_local_s3_server(make_settings, batch_demo, aws_env):
    import s3fs
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, use_listings_cache=False)
        fs.mkdir("fields")
        fs.put(str(batch_demo / "fields.gpkg"), "fields/in/fields.gpkg")
        settings = make_settings(s3_endpoint_url=endpoint, batch_outputs=["s3://fields/out"])
        settings = settings.model_copy(
            update={"allowed_sources": [*settings.allowed_sources, "s3://fields/in/"]}
        )
        with TestClient(create_app(settings)) as client:
            body = job_body({"s3": {"url": "s3://fields/in/fields.gpkg"}}, "s3://fields/out")
            created = client.post("/batch/statistics", json=body)
            assert created.status_code == 201, created.text
            job = created.json()
            assert job["output"] == f"s3://fields/out/{job['id']}"
            url = f"/batch/statistics/{job['id']}"
            client.post(f"{url}/start")
            done = wait_for(lambda: client.get(url).json(), {"DONE", "PARTIAL", "FAILED"})
            assert done["status"] == "DONE", done
            csv = client.get(f"{url}/results", params={"format": "csv"})
            assert csv.status_code == 200
            refused = client.post(
                "/batch/statistics", json=job_body(body["input"]["features"], "s3://other/out")
            )
            assert refused.status_code == 403
        count = done["analysis"]["featureCount"]
        names = {p.rsplit("/", 1)[1] for p in fs.ls(f"fields/out/{job['id']}")}
        assert {f"{i}.json" for i in range(1, count + 1)} <= names
        assert "results.parquet" in names
        assert not [n for n in names if ".tmp" in n]
        with fs.open(f"fields/out/{job['id']}/results.parquet") as file:
            table = pq.read_table(file)
        assert set(table["id"].to_pylist()) == set(range(1, count + 1))
        assert csv.text.count("\n") == table.num_rows + 1
        document = json.loads(fs.cat(f"fields/out/{job['id']}/1.json"))
        assert document["identifier"] == "field-0001" and document["response"]["status"] == "OK"
    finally:
        server.stop()


def test_uploads_any_crs_and_invalid_geometries(make_settings, batch_demo):
    collection = json.loads((batch_demo / "fields.geojson").read_text())
    with TestClient(create_app(make_settings())) as client:
        # A GeoPackage in UTM, uploaded (multipart); ids are its FIDs.
        request = job_body(None)
        del request["input"]["features"]
        with open(batch_demo / "fields.gpkg", "rb") as file:
            created = client.post(
                "/batch/statistics",
                data={"request": json.dumps(request)},
                files={"features": ("parcels.gpkg", file, "application/geopackage+sqlite3")},
            )
        assert created.status_code == 201, created.text
        url = f"/batch/statistics/{created.json()['id']}"
        client.post(f"{url}/start")
        done = wait_for(lambda: client.get(url).json(), {"DONE", "PARTIAL", "FAILED"})
        assert done["status"] == "DONE" and done["analysis"]["crs"] == "EPSG:32633"
        root = Path(done["output"])
        import pyogrio.raw

        _, fids, wkbs, _ = pyogrio.raw.read(batch_demo / "fields.gpkg", return_fids=True)
        for fid, wkb in list(zip(fids, wkbs, strict=True))[:5]:
            geometry = shapely.geometry.mapping(shapely.from_wkb(wkb))
            expected = client.post("/statistics", json=statistics_body(geometry, "EPSG:32633"))
            document = json.loads((root / f"{fid}.json").read_text())
            approx_equal(document["response"], expected.json())

        # Inline features: one good, one without geometry, one point, one empty polygon.
        inline = {
            "type": "FeatureCollection",
            "features": [
                {
                    "type": "Feature",
                    "properties": {"identifier": "good"},
                    "geometry": collection["features"][0]["geometry"],
                },
                {"type": "Feature", "properties": {"identifier": "none"}, "geometry": None},
                {
                    "type": "Feature",
                    "properties": {"identifier": "point"},
                    "geometry": {"type": "Point", "coordinates": [16.1, 46.65]},
                },
                {
                    "type": "Feature",
                    "properties": {"identifier": "empty"},
                    "geometry": {"type": "Polygon", "coordinates": []},
                },
                {
                    "type": "Feature",
                    "properties": {"identifier": "off-earth"},
                    "geometry": {
                        "type": "Polygon",
                        "coordinates": [[[200, 0], [0, 100], [1, 1], [200, 0]]],
                    },
                },
            ],
        }
        created = client.post("/batch/statistics", json=job_body(inline))
        assert created.status_code == 201, created.text
        url = f"/batch/statistics/{created.json()['id']}"
        client.post(f"{url}/analyse")
        analysed = wait_for(lambda: client.get(url).json(), {"ANALYSIS_DONE", "FAILED"})
        assert analysed["analysis"]["invalidFeatureCount"] == 4, analysed
        client.post(f"{url}/start")
        partial = wait_for(lambda: client.get(url).json(), {"DONE", "PARTIAL", "FAILED"})
        assert partial["status"] == "PARTIAL"
        assert partial["progress"]["features"] == {"total": 5, "done": 1, "failed": 0, "invalid": 4}
        invalid = {f["identifier"]: f["error"] for f in partial["invalidFeatures"]}
        assert set(invalid) == {"none", "point", "empty", "off-earth"}
        assert "no geometry" in invalid["none"] and "Point" in invalid["point"]
        assert "latitude -90 to 90" in invalid["off-earth"]
        root = Path(partial["output"])
        assert json.loads((root / "2.json").read_text())["error"]["type"] == "BAD_REQUEST"
        assert json.loads((root / "0.json").read_text())["response"]["status"] == "OK"


def test_api_keys_guard_the_batch_endpoints(make_settings):
    settings = make_settings().model_copy(update={"api_keys": ["k-123", "k-456"]})
    with TestClient(create_app(settings)) as client:
        missing = client.get("/batch/statistics")
        assert missing.status_code == 401 and "API key" in missing.json()["detail"]
        assert client.get("/batch/statistics", headers={"X-API-Key": "nope"}).status_code == 403
        assert client.get("/batch/statistics", headers={"X-API-Key": "k-456"}).status_code == 200
        bearer = {"Authorization": "Bearer k-123"}
        assert client.get("/batch/statistics", headers=bearer).status_code == 200
        assert client.post("/batch/statistics/x/start").status_code == 401
        assert client.get("/healthz").status_code == 200  # only batch endpoints are guarded


CLI = """
import argparse, sys
from app import cli
parser = cli.build_parser()
commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
if "batch" not in commands.choices:
    from app.cli_batch import add_batch_commands
    add_batch_commands(commands)
args = parser.parse_args(sys.argv[1:])
sys.exit(args.func(args))
"""


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", CLI, *args], env=env, capture_output=True, text=True, timeout=240
    )


def test_cli_runs_here_on_a_local_cluster_and_monitors(batch_demo, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TERRATILER_")} | {
        "TERRATILER_CATALOG": str(batch_demo),
        "TERRATILER_DATA_DIR": str(tmp_path / "data"),
        "TERRATILER_BATCH_WORKERS": "2",
    }
    out = tmp_path / "cli-out"
    run = _cli(
        [
            "batch",
            "stats",
            str(batch_demo / "fields.gpkg"),
            "--expression",
            "ndvi",
            "--expression",
            "ndwi",
            "--time",
            "2023-04-01/2023-10-01",
            "--interval",
            "P1D",
            "--percentiles",
            "50",
            "--out",
            str(out),
        ],
        env,
    )
    assert run.returncode == 0, run.stderr
    assert "DONE" in run.stdout
    job_id = run.stdout.split()[1].rstrip(":")
    root = out / job_id
    table = pq.read_table(root / "results.parquet")
    assert set(table["output"].to_pylist()) == {"ndvi", "ndwi"}
    assert "percentiles_50.0" in table.column_names
    assert len(list(root.glob("*.json"))) == len(set(table["id"].to_pylist()))

    monitor = _cli(["batch", "monitor", job_id, "--no-progress"], env)
    assert monitor.returncode == 0 and "DONE" in monitor.stdout
    unknown = _cli(["batch", "monitor", "nope"], env)
    assert unknown.returncode == 1 and "not found" in unknown.stderr


def test_cli_submits_to_a_running_service(make_settings, batch_demo, tmp_path):
    settings = make_settings().model_copy(update={"api_keys": ["secret"]})
    with live_server(create_app(settings)) as url:
        env = dict(os.environ, TERRATILER_API_KEY="secret")
        run = _cli(
            [
                "batch",
                "stats",
                str(batch_demo / "fields.geojson"),
                "--server",
                url,
                "-e",
                "ndvi=(B08-B04)/(B08+B04)",
                "--time",
                "2023-04-01/2023-10-01",
                "--interval",
                "P1M",
                "--max-cloud",
                "50",
            ],
            env,
        )
        assert run.returncode == 0, run.stderr
        job_id = run.stdout.split()[1].rstrip(":")
        view = httpx.get(f"{url}/batch/statistics/{job_id}", headers={"X-API-Key": "secret"}).json()
        assert view["status"] == "DONE"
        assert view["request"]["input"]["features"]["href"].endswith("input.geojson")  # uploaded
        monitor = _cli(["batch", "monitor", job_id, "--server", url, "--no-progress"], env)
        assert monitor.returncode == 0 and "DONE" in monitor.stdout
        refused = _cli(["batch", "monitor", job_id, "--server", url], dict(os.environ))
        assert refused.returncode != 0 and "401" in refused.stderr
