"""Batch processing over HTTP and from the command line, on real parts.

The REST API under ``/batch/process`` through TestClient (a real Dask LocalCluster of worker
processes, real COGs of a small demo catalog), the ``terratiler batch process`` command's
request building (a pure function of its arguments), the command run here (its own
LocalCluster) and against the service under a real uvicorn, and ``batch monitor``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import rasterio
from batch_jobs import wait_for
from distributed import LocalCluster
from fastapi.testclient import TestClient
from live_server import live_server
from pyproj import Transformer
from rio_cogeo.cogeo import cog_validate

from app.cli import build_parser
from app.cli_batch import build_process_request
from app.main import create_app
from app.settings import Settings

pytestmark = pytest.mark.timeout(300)

TIME = "2023-06-01/2023-08-31"
SEASON = {"from": "2023-04-01T00:00:00Z", "to": "2023-10-01T00:00:00Z"}
FINAL = {"DONE", "PARTIAL", "FAILED"}


def _process_args(*extra: str, aoi: str = "16.08,46.62,16.14,46.66") -> Any:
    return build_parser().parse_args(
        ["batch", "process", aoi, "--grid", "1", "--resolution", "10", "--time", TIME, *extra]
    )


# ------------------------------------------------------------------- CLI: the request


def test_cli_request_from_the_issue_example(tmp_path: Path) -> None:
    args = _process_args("--output", "ndvi=ndvi", "--composite", "median", "--out", "out")
    assert build_process_request(args) == {
        "processRequest": {
            "input": {
                "bounds": {"bbox": [16.08, 46.62, 16.14, 46.66]},
                "data": [
                    {
                        "type": "sentinel-2-l2a",
                        "dataFilter": {"timeRange": {"from": "2023-06-01", "to": "2023-08-31"}},
                    }
                ],
            },
            "outputs": {"ndvi": {"preset": "ndvi"}},
            "composite": "median",
        },
        "input": {"type": "tiling-grid", "id": 1, "resolution": 10},
        "output": {"type": "raster", "delivery": {"path": str(Path("out").resolve())}},
    }


def test_cli_request_every_option(tmp_path: Path) -> None:
    aoi = tmp_path / "aoi.geojson"
    squares = [
        [[[16.0, 46.6], [16.1, 46.6], [16.1, 46.7], [16.0, 46.7], [16.0, 46.6]]],
        [[[16.1, 46.6], [16.2, 46.6], [16.2, 46.7], [16.1, 46.7], [16.1, 46.6]]],
    ]
    aoi.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}},
                "features": [
                    {
                        "type": "Feature",
                        "properties": {},
                        "geometry": {"type": "Polygon", "coordinates": c},
                    }
                    for c in squares
                ],
            }
        )
    )
    args = build_parser().parse_args(
        [
            "batch",
            "process",
            str(aoi),
            "--grid",
            "3",
            "--resolution",
            "0.0001",
            "--time",
            "2023-06-01T00:00:00Z/2023-08-31T23:59:59Z",
            "-o",
            "ndvi",
            "-o",
            "nir_red=nir/red",
            "-o",
            "(B08-B04)",
            "--mask",
            "scl-clear",
            "--max-cloud",
            "40",
            "--order",
            "leastCC",
            "--data-type",
            "float32",
            "--format",
            "zarr",
            "--create-collection",
            "--out",
            "s3://bucket/prefix",
            "--description",
            "summer",
        ]
    )
    body = build_process_request(args)
    process = body["processRequest"]
    bounds = process["input"]["bounds"]
    # The two squares are merged into one rectangle.
    import shapely.geometry

    merged = shapely.geometry.shape(bounds["geometry"])
    assert merged.area == pytest.approx(0.2 * 0.1) and merged.bounds == (16.0, 46.6, 16.2, 46.7)
    assert bounds["properties"] == {"crs": "urn:ogc:def:crs:OGC:1.3:CRS84"}
    assert process["input"]["data"][0]["dataFilter"] == {
        "timeRange": {"from": "2023-06-01T00:00:00Z", "to": "2023-08-31T23:59:59Z"},
        "maxCloudCoverage": 40.0,
        "mosaickingOrder": "leastCC",
    }
    assert process["outputs"] == {
        "ndvi": {"preset": "ndvi", "dataType": "float32"},
        "nir_red": {"expression": "nir/red", "dataType": "float32"},
        "value2": {"expression": "(B08-B04)", "dataType": "float32"},
    }
    assert process["mask"] == "scl-clear" and "composite" not in process
    assert body["input"] == {"type": "tiling-grid", "id": 3, "resolution": 0.0001}
    assert body["output"] == {"type": "zarr", "delivery": {"s3": {"url": "s3://bucket/prefix"}}}
    assert body["createCollection"] is True and body["description"] == "summer"


def test_cli_request_refuses_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="--time"):
        build_process_request(build_parser().parse_args(
            ["batch", "process", "1,2,3,4", "--grid", "1", "--resolution", "10",
             "--time", "2023-06-01", "-o", "ndvi"]
        ))  # fmt: skip
    with pytest.raises(SystemExit, match="given twice"):
        build_process_request(_process_args("-o", "a=ndvi", "-o", "a=ndwi"))
    with pytest.raises(SystemExit, match="aoi: cannot read"):
        build_process_request(_process_args("-o", "ndvi", aoi=str(tmp_path / "missing.json")))
    empty = tmp_path / "empty.geojson"
    empty.write_text('{"type": "FeatureCollection", "features": []}')
    with pytest.raises(SystemExit, match="no geometry"):
        build_process_request(_process_args("-o", "ndvi", aoi=str(empty)))
    with pytest.raises(SystemExit):  # argparse: a composite it does not know
        _process_args("-o", "ndvi", "--composite", "mode")


# ------------------------------------------------------------------------ the service


@pytest.fixture(scope="module")
def process_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small demo catalog of this module (4 dates, 256 px = 2.56 km)."""
    from app.demo import generate_demo

    path = tmp_path_factory.mktemp("process-demo")
    generate_demo(path, scenes=4, size=256, seed=1)
    return path


@pytest.fixture(scope="module")
def aoi(process_demo: Path) -> list[float]:
    """A WGS84 bbox inside the demo's scenes (the middle half of their extent)."""
    from app.demo.grid import demo_grid

    minx, miny, maxx, maxy = demo_grid(256).extent
    dx, dy = (maxx - minx) / 4, (maxy - miny) / 4
    to_lonlat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    west, south = to_lonlat.transform(minx + dx, miny + dy)
    east, north = to_lonlat.transform(maxx - dx, maxy - dy)
    return [round(v, 6) for v in (west, south, east, north)]


@pytest.fixture(scope="module")
def process_settings(
    process_demo: Path, cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    data = tmp_path_factory.mktemp("process-data")
    return Settings(
        catalog=str(process_demo),
        data_dir=data,
        dask_scheduler=cluster.scheduler_address,
        allowed_sources=[str(process_demo), str(data)],
        batch_lease_seconds=3.0,
    )


@pytest.fixture(scope="module")
def api(process_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(process_settings)) as client:
        yield client


def process_body(bbox: list[float], **changes: Any) -> dict[str, Any]:
    """A median NDVI (scl-clear) and a `first` red over the demo season, grid 1 at 20 m."""
    body: dict[str, Any] = {
        "processRequest": {
            "input": {
                "bounds": {"bbox": bbox},
                "data": [{"type": "sentinel-2-l2a", "dataFilter": {"timeRange": SEASON}}],
            },
            "outputs": {
                "ndvi": {"preset": "ndvi", "composite": "median"},
                "red": {"expression": "B04", "dataType": "uint16", "nodata": 0, "rescale": [0, 1]},
            },
            "mask": "scl-clear",
        },
        "input": {"type": "tiling-grid", "id": 1, "resolution": 20},
        "output": {"type": "raster"},
    }
    for key, value in changes.items():
        body[key] = value
    return body


def statistics_body(bbox: list[float]) -> dict[str, Any]:
    """A batch statistics job over the bbox as one inline feature (a job of the other kind)."""
    west, south, east, north = bbox
    ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
    feature = {
        "type": "Feature",
        "properties": {},
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    }
    return {
        "input": {
            "features": {"type": "FeatureCollection", "features": [feature]},
            "data": [{"type": "sentinel-2-l2a"}],
        },
        "aggregation": {
            "timeRange": SEASON,
            "aggregationInterval": {"of": "P30D"},
            "outputs": {"ndvi": {"expression": "(nir-red)/(nir+red)"}},
        },
    }


def _job(client: TestClient, job_id: str) -> dict[str, Any]:
    response = client.get(f"/batch/process/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()


def _tiles(client: TestClient, job_id: str, **params: Any) -> dict[str, Any]:
    response = client.get(f"/batch/process/{job_id}/tiles", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/geo+json")
    return response.json()


def test_create_analyse_start_done_and_tiles(api: TestClient, aoi: list[float]) -> None:
    created = api.post("/batch/process", json=process_body(aoi))
    assert created.status_code == 201, created.text
    job = created.json()
    assert job["status"] == "CREATED" and job["kind"] == "process"
    url = f"/batch/process/{job['id']}"

    assert api.post(f"{url}/analyse").status_code == 202
    analysed = wait_for(lambda: _job(api, job["id"]), {"ANALYSIS_DONE", "FAILED"})
    assert analysed["status"] == "ANALYSIS_DONE", analysed
    pending = _tiles(api, job["id"])
    names = [feature["properties"]["name"] for feature in pending["features"]]
    assert names and names == sorted(names) and len(set(names)) == len(names)
    assert analysed["progress"]["tiles"]["total"] == len(names)
    assert {f["properties"]["status"] for f in pending["features"]} == {"PENDING"}
    for feature in pending["features"]:
        assert feature["geometry"]["type"] == "Polygon"

    assert api.post(f"{url}/start").status_code == 202
    done = wait_for(lambda: _job(api, job["id"]), FINAL)
    assert done["status"] == "DONE", done
    assert done["completionPercentage"] == 100.0
    assert done["progress"]["tiles"] == {"total": len(names), "done": len(names), "failed": 0}

    tiles = _tiles(api, job["id"])
    assert [f["properties"]["name"] for f in tiles["features"]] == names
    root = Path(done["output"])
    for feature in tiles["features"]:
        properties = feature["properties"]
        assert properties["status"] == "PROCESSED" and properties["error"] is None
        assert set(properties["outputs"]) == {"ndvi", "red"}
        ndvi = root / properties["name"] / "ndvi.tif"
        valid, errors, _ = cog_validate(str(ndvi), quiet=True)
        assert valid, errors
        assert properties["outputs"]["ndvi"].endswith(f"{properties['name']}/ndvi.tif")
        with rasterio.open(ndvi) as src:
            assert src.crs.to_epsg() == 32633 and src.shape == (500, 500)
            assert src.dtypes[0] == "float32" and src.res == (20.0, 20.0)
            data = src.read(1, masked=True)
        with rasterio.open(root / properties["name"] / "red.tif") as src:
            assert src.dtypes[0] == "uint16" and src.nodata == 0
        # The tile holds the demo's scenes somewhere: NDVI of farmland, within [-1, 1].
        assert data.count() > 0 and -1 <= float(data.min()) <= float(data.max()) <= 1
    # Paging and the status filter.
    page = _tiles(api, job["id"], limit=1, offset=len(names) - 1)
    assert [f["properties"]["name"] for f in page["features"]] == names[-1:]
    assert _tiles(api, job["id"], status="FAILED")["features"] == []
    assert len(_tiles(api, job["id"], status="PROCESSED")["features"]) == len(names)

    listed = api.get("/batch/process", params={"status": "DONE"}).json()
    assert job["id"] in [entry["id"] for entry in listed["data"]]
    assert api.get("/batch/process", params={"status": "NOPE"}).status_code == 400
    for action in ("analyse", "start", "stop", "retry-failed"):
        response = api.post(f"{url}/{action}")
        assert response.status_code == 409, action
        assert "its state is DONE" in response.json()["detail"]


def test_kinds_stay_apart_and_unknown_ids_are_404(api: TestClient, aoi: list[float]) -> None:
    statistics = api.post("/batch/statistics", json=statistics_body(aoi))
    assert statistics.status_code == 201, statistics.text
    process = api.post("/batch/process", json=process_body(aoi))
    assert process.status_code == 201
    stats_id, process_id = statistics.json()["id"], process.json()["id"]

    for job_id in (stats_id, "nope"):
        url = f"/batch/process/{job_id}"
        assert api.get(url).status_code == 404
        assert api.get(f"{url}/tiles").status_code == 404
        for action in ("analyse", "start", "stop", "retry-failed"):
            assert api.post(f"{url}/{action}").status_code == 404, (job_id, action)
        assert api.delete(url).status_code == 404
    assert api.get(f"/batch/statistics/{process_id}").status_code == 404
    assert api.post(f"/batch/statistics/{process_id}/start").status_code == 404
    process_ids = [job["id"] for job in api.get("/batch/process").json()["data"]]
    stats_ids = [job["id"] for job in api.get("/batch/statistics").json()["data"]]
    assert process_id in process_ids and stats_id not in process_ids
    assert stats_id in stats_ids and process_id not in stats_ids

    # Actions in the wrong state name it; a CREATED job has no tiles yet.
    for action in ("stop", "retry-failed"):
        response = api.post(f"/batch/process/{process_id}/{action}")
        assert response.status_code == 409 and "CREATED" in response.json()["detail"]
    response = api.get(f"/batch/process/{process_id}/tiles")
    assert response.status_code == 409 and "CREATED" in response.json()["detail"]
    # Deleted: gone from every route.
    assert api.delete(f"/batch/process/{process_id}").status_code == 204
    assert api.get(f"/batch/process/{process_id}").status_code == 404


def test_stop_then_start_finishes_every_tile_once(api: TestClient, aoi: list[float]) -> None:
    job = api.post("/batch/process", json=process_body(aoi)).json()
    url = f"/batch/process/{job['id']}"
    api.post(f"{url}/analyse")
    wait_for(lambda: _job(api, job["id"]), {"ANALYSIS_DONE"})
    started = api.post(f"{url}/start")
    assert started.status_code == 202 and started.json()["status"] == "PROCESSING"
    stopped = api.post(f"{url}/stop")
    assert stopped.status_code == 200 and stopped.json()["status"] == "STOPPED", stopped.text
    restarted = api.post(f"{url}/start")
    assert restarted.status_code == 202, restarted.text
    done = wait_for(lambda: _job(api, job["id"]), FINAL)
    assert done["status"] == "DONE"
    tiles = _tiles(api, job["id"])["features"]
    assert {f["properties"]["status"] for f in tiles} == {"PROCESSED"}
    assert done["progress"]["tiles"]["done"] == len(tiles)


def test_bad_input_is_a_4xx_naming_the_parameter_and_creates_nothing(
    api: TestClient, aoi: list[float]
) -> None:
    before = api.get("/batch/process").json()["total"]
    grid = {"type": "tiling-grid", "id": 1, "resolution": 20}
    bad_expression = process_body(aoi)
    bad_expression["processRequest"]["outputs"]["ndvi"] = {"expression": "(nir-red"}
    unknown_preset = process_body(aoi)
    unknown_preset["processRequest"]["outputs"]["ndvi"] = {"preset": "nope"}
    empty = process_body(aoi)
    empty["processRequest"]["input"]["bounds"] = {
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[16.1, 46.6], [16.1, 46.6], [16.1, 46.6], [16.1, 46.6]]],
        }
    }
    cases = [
        (bad_expression, 400, "processRequest.outputs.ndvi.expression"),
        (unknown_preset, 400, "processRequest.outputs.ndvi.preset"),
        (empty, 400, "processRequest.input.bounds"),
        (process_body(aoi, input={**grid, "id": 9}), 400, "input.id"),
        (process_body(aoi, input={**grid, "resolution": 15}), 400, "input.resolution"),
        (process_body([-150.0, -50.0, 150.0, 70.0]), 413, "batch_max_tiles"),
    ]
    for body, status, parameter in cases:
        response = api.post("/batch/process", json=body)
        assert response.status_code == status, (parameter, response.text)
        assert parameter in response.json()["detail"], (parameter, response.text)
    assert api.post("/batch/process", content=b"{nope").status_code == 400
    assert api.post("/batch/process", json={"input": grid}).status_code == 422
    assert api.get("/batch/process").json()["total"] == before


def test_tiling_grids(api: TestClient) -> None:
    grids = api.get("/batch/process/tiling-grids")
    assert grids.status_code == 200
    data = grids.json()["data"]
    assert [grid["id"] for grid in data] == [0, 1, 2, 3]
    assert data[1]["name"] == "UTM 10km grid" and data[1]["properties"]["unit"] == "METRE"
    one = api.get("/batch/process/tiling-grids/1").json()
    assert one == data[1]
    assert one["properties"]["tileWidth"] == one["properties"]["tileHeight"] == 10000
    assert one["properties"]["resolutions"] == [10, 20]
    assert data[0]["properties"]["tileWidth"] == 20040
    assert data[2]["properties"]["resolutions"] == [60, 120, 240, 360]
    assert data[3]["properties"]["resolutions"] == [0.0001, 0.0002]
    response = api.get("/batch/process/tiling-grids/7")
    assert response.status_code == 404 and "7" in response.json()["detail"]


def test_openapi_documents_the_process_routes(api: TestClient) -> None:
    paths = api.get("/openapi.json").json()["paths"]
    create = paths["/batch/process"]["post"]
    assert create["summary"] and "201" in create["responses"] and "401" in create["responses"]
    body = create["requestBody"]["content"]["application/json"]
    assert "processRequest" in body["schema"]["properties"]
    example = api.post("/batch/process", json=body["example"])  # the documented example works
    assert example.status_code == 201, example.text
    assert api.delete(f"/batch/process/{example.json()['id']}").status_code == 204
    for path, method in [
        ("/batch/process/{job_id}/start", "post"),
        ("/batch/process/{job_id}/retry-failed", "post"),
        ("/batch/process/{job_id}", "delete"),
    ]:
        assert "409" in paths[path][method]["responses"], path
    tiles = paths["/batch/process/{job_id}/tiles"]["get"]
    assert "application/geo+json" in tiles["responses"]["200"]["content"]
    assert {p["name"] for p in tiles["parameters"]} >= {"limit", "offset", "status"}
    assert "/batch/process/tiling-grids/{grid_id}" in paths


def test_api_keys_guard_the_process_endpoints(process_settings: Settings) -> None:
    settings = process_settings.model_copy(update={"api_keys": ["k-123"]})
    with TestClient(create_app(settings)) as client:
        for path in ("/batch/process", "/batch/process/tiling-grids", "/batch/process/x"):
            missing = client.get(path)
            assert missing.status_code == 401 and "API key" in missing.json()["detail"]
            assert client.get(path, headers={"X-API-Key": "nope"}).status_code == 403
        assert client.post("/batch/process", json={}).status_code == 401
        assert client.post("/batch/process/x/start").status_code == 401
        assert client.delete("/batch/process/x").status_code == 401
        key = {"X-API-Key": "k-123"}
        assert client.get("/batch/process", headers=key).status_code == 200
        bearer = {"Authorization": "Bearer k-123"}
        assert client.get("/batch/process/tiling-grids", headers=bearer).status_code == 200
        assert client.get("/batch/process/x", headers=key).status_code == 404


# --------------------------------------------------------------------- the command line

CLI = [sys.executable, "-m", "app.cli"]


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *args], env=env, capture_output=True, text=True, timeout=240, cwd=Path.cwd()
    )


def _env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TERRATILER_")}
    # This worktree's `app` first (the venv has another checkout installed).
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1]), env.get("PYTHONPATH", "")])
    return env | {f"TERRATILER_{key.upper()}": value for key, value in settings.items()}


def _job_id(stdout: str) -> str:
    return stdout.split()[1].rstrip(":")


def test_cli_runs_here_and_writes_cogs(
    process_demo: Path, aoi: list[float], tmp_path: Path
) -> None:
    env = _env(catalog=str(process_demo), data_dir=str(tmp_path / "data"), batch_workers="1")
    geojson = tmp_path / "aoi.geojson"
    west, south, east, north = aoi
    ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
    geojson.write_text(json.dumps({"type": "Polygon", "coordinates": [ring]}))
    out = tmp_path / "out"
    run = _cli(
        ["batch", "process", str(geojson), "--grid", "1", "--resolution", "20",
         "--time", "2023-04-01/2023-10-01", "--output", "ndvi=ndvi", "--composite", "median",
         "--mask", "scl-clear", "--out", str(out)],
        env,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "DONE" in run.stdout and " tiles" in run.stdout
    assert "tile/s" in run.stderr or "tile]" in run.stderr  # the progress bar counts tiles
    job_id = _job_id(run.stdout)
    cogs = sorted((out / job_id).glob("*/ndvi.tif"))
    assert cogs, list((out / job_id).rglob("*"))
    for cog in cogs:
        with rasterio.open(cog) as src:
            assert src.shape == (500, 500) and src.crs.to_epsg() == 32633
            assert np.isfinite(src.read(1, masked=True).compressed()).all()

    monitor = _cli(["batch", "monitor", job_id, "--no-progress"], env)
    assert monitor.returncode == 0 and "DONE" in monitor.stdout, monitor.stderr
    bad = _cli(
        ["batch", "process", str(geojson), "--grid", "1", "--resolution", "15",
         "--time", "2023-04-01/2023-10-01", "--output", "ndvi"],
        env,
    )  # fmt: skip
    assert bad.returncode == 1 and "input.resolution" in bad.stderr


def test_cli_submits_to_the_service_and_monitors(
    process_settings: Settings, aoi: list[float]
) -> None:
    settings = process_settings.model_copy(update={"api_keys": ["secret"]})
    bbox = ",".join(str(v) for v in aoi)
    with live_server(create_app(settings)) as url:
        env = _env(api_key="secret")
        run = _cli(
            ["batch", "process", bbox, "--grid", "1", "--resolution", "20",
             "--time", "2023-04-01/2023-10-01", "-o", "ndvi", "--composite", "first",
             "--order", "leastCC", "--service", url, "--no-progress"],
            env,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        job_id = _job_id(run.stdout)
        headers = {"X-API-Key": "secret"}
        view = httpx.get(f"{url}/batch/process/{job_id}", headers=headers).json()
        assert view["status"] == "DONE"
        assert view["request"]["processRequest"]["outputs"] == {"ndvi": {"preset": "ndvi"}} or (
            "ndvi" in view["request"]["processRequest"]["outputs"]
        )
        monitor = _cli(["batch", "monitor", job_id, "--service", url, "--no-progress"], env)
        assert monitor.returncode == 0 and "DONE" in monitor.stdout, monitor.stderr
        assert "tiles" in monitor.stdout

        # monitor follows a statistics job too (this one waits for its start: CREATED).
        statistics = httpx.post(
            f"{url}/batch/statistics", headers=headers, json=statistics_body(aoi)
        )
        assert statistics.status_code == 201, statistics.text
        stats_id = statistics.json()["id"]
        monitor = _cli(["batch", "monitor", stats_id, "--service", url, "--no-progress"], env)
        assert "CREATED" in monitor.stdout and "features" in monitor.stdout, monitor.stderr
        unknown = _cli(["batch", "monitor", "nope", "--service", url], env)
        assert unknown.returncode == 1 and "not found" in unknown.stderr
        refused = _cli(["batch", "monitor", job_id, "--service", url], _env())
        assert refused.returncode != 0 and "401" in refused.stderr


def test_created_collection_is_mapped_and_measured_by_the_same_service(
    api: TestClient, aoi: list[float]
) -> None:
    """Process, then map the composite and compute field statistics on it: one service."""
    import morecantile
    import shapely.geometry

    body = process_body(aoi, createCollection="ndvi-median-e2e")
    created = api.post("/batch/process", json=body)
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    assert api.post(f"/batch/process/{job_id}/start").status_code == 202
    done = wait_for(lambda: _job(api, job_id), FINAL)
    assert done["status"] == "DONE", done
    assert done["results"]["collectionId"] == "ndvi-median-e2e"

    # The collection is served at once by this replica, one item per processed tile.
    collection = api.get("/catalog/collections/ndvi-median-e2e")
    assert collection.status_code == 200, collection.text
    names = sorted(f["properties"]["name"] for f in _tiles(api, job_id)["features"])
    items = api.get("/catalog/collections/ndvi-median-e2e/items", params={"limit": 100}).json()
    assert sorted(item["id"] for item in items["features"]) == names

    name = names[0]
    cog = Path(done["output"]) / name / "ndvi.tif"
    with rasterio.open(cog) as src:
        ndvi = src.read(1)
        transform = src.transform
    rows, cols = np.nonzero(np.isfinite(ndvi))
    row, col = int(rows[len(rows) // 2]), int(cols[len(cols) // 2])
    x, y = transform * (col + 0.5, row + 0.5)
    to_lonlat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    lon, lat = to_lonlat.transform(x, y)
    item_url = f"/collections/ndvi-median-e2e/items/{name}"

    # The tiler: a point value equals the COG's pixel; a web-mercator tile renders.
    point = api.get(f"{item_url}/point/{lon},{lat}", params={"assets": "ndvi"})
    assert point.status_code == 200, point.text
    assert point.json()["values"][0] == pytest.approx(float(ndvi[row, col]), abs=1e-6)
    tile = morecantile.tms.get("WebMercatorQuad").tile(lon, lat, 14)
    png = api.get(
        f"{item_url}/tiles/WebMercatorQuad/14/{tile.x}/{tile.y}.png",
        params={"assets": "ndvi", "rescale": "-1,1"},
    )
    assert png.status_code == 200, png.text
    assert png.headers["content-type"] == "image/png"

    # A mosaic of the results (a registered search): the same pixel, and a tile.
    registered = api.post("/searches/register", json={"collections": ["ndvi-median-e2e"]})
    assert registered.status_code == 200, registered.text
    search_url = f"/searches/{registered.json()['id']}"
    mosaic_point = api.get(f"{search_url}/point/{lon},{lat}", params={"assets": "ndvi"})
    assert mosaic_point.status_code == 200, mosaic_point.text
    assert mosaic_point.json()["values"][0] == pytest.approx(float(ndvi[row, col]), abs=1e-6)
    assert [entry["id"] for entry in mosaic_point.json()["series"]] == [name]
    mosaic_png = api.get(
        f"{search_url}/tiles/WebMercatorQuad/14/{tile.x}/{tile.y}.png",
        params={"assets": "ndvi", "rescale": "-1,1"},
    )
    assert mosaic_png.status_code == 200, mosaic_png.text

    # Statistics: a 10 x 10 pixel field on the composite's own grid, vs numpy.
    r0, c0 = max(row - 5, 0), max(col - 5, 0)
    west, north = transform * (c0, r0)
    east, south = transform * (c0 + 10, r0 + 10)
    field = shapely.geometry.mapping(shapely.geometry.box(west, south, east, north))
    statistics = api.post(
        "/statistics",
        json={
            "input": {
                "bounds": {
                    "geometry": field,
                    "properties": {"crs": "http://www.opengis.net/def/crs/EPSG/0/32633"},
                },
                "data": [{"type": "ndvi-median-e2e"}],
            },
            "aggregation": {
                "timeRange": SEASON,
                "aggregationInterval": {"of": "P1D"},
                "outputs": {"ndvi": {"expression": "ndvi"}},
            },
        },
    )
    assert statistics.status_code == 200, statistics.text
    entries = [e for e in statistics.json()["data"] if e.get("outputs")]
    assert len(entries) == 1, statistics.json()
    stats = entries[0]["outputs"]["ndvi"]["bands"]["B0"]["stats"]
    window = ndvi[r0 : r0 + 10, c0 : c0 + 10]
    valid = window[np.isfinite(window)]
    assert stats["sampleCount"] == 100 and stats["noDataCount"] == 100 - valid.size, stats
    assert stats["mean"] == pytest.approx(float(valid.mean()), abs=1e-5)
    assert stats["min"] == pytest.approx(float(valid.min()), abs=1e-6)
    assert stats["max"] == pytest.approx(float(valid.max()), abs=1e-6)

    # A batch statistics job on the composite (hundreds of thousands of fields go this
    # way): for a field in lon/lat, the same figures as /statistics gives for it.
    ring = [to_lonlat.transform(*corner) for corner in field["coordinates"][0]]
    lonlat_field = {"type": "Polygon", "coordinates": [[list(p) for p in ring]]}
    aggregation = {
        "timeRange": SEASON,
        "aggregationInterval": {"of": "P1D"},
        "outputs": {"ndvi": {"expression": "ndvi"}},
    }
    direct = api.post(
        "/statistics",
        json={
            "input": {"bounds": {"geometry": lonlat_field}, "data": [{"type": "ndvi-median-e2e"}]},
            "aggregation": aggregation,
        },
    )
    assert direct.status_code == 200, direct.text
    (expected,) = [e for e in direct.json()["data"] if e.get("outputs")]
    feature = {"type": "Feature", "properties": {}, "geometry": lonlat_field}
    job = api.post(
        "/batch/statistics",
        json={
            "input": {
                "features": {"type": "FeatureCollection", "features": [feature]},
                "data": [{"type": "ndvi-median-e2e"}],
            },
            "aggregation": aggregation,
        },
    )
    assert job.status_code == 201, job.text
    stats_url = f"/batch/statistics/{job.json()['id']}"
    assert api.post(f"{stats_url}/start").status_code == 202
    finished = wait_for(lambda: api.get(stats_url).json(), FINAL)
    assert finished["status"] == "DONE", finished["failedFeatures"]
    table = api.get(f"{stats_url}/results", params={"format": "geojson"})
    assert table.status_code == 200, table.text
    (row,) = table.json()["features"]
    figures = expected["outputs"]["ndvi"]["bands"]["B0"]["stats"]
    properties = row["properties"]
    assert properties["error"] is None
    for name in ("min", "max", "mean", "stDev", "sampleCount", "noDataCount"):
        assert properties[name] == pytest.approx(figures[name], rel=1e-6), name
