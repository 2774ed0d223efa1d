"""Batch processing jobs end to end at the service level, on real parts.

A real Dask LocalCluster of 2 worker processes, ``BatchService`` over a demo catalog of its
own (one test moves a COG), real COG outputs checked with rio-cogeo and against rasterio +
numpy from the source COGs, Zarr read back with xarray, an s3:// output on moto's server.
"""

import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import shapely
import shapely.geometry
from batch_jobs import WAIT, scheduler_client
from demo_reads import read, scale_offset
from polling import wait_until

from app.batch import BatchService
from app.batch.processing.models import BatchProcessRequest
from app.errors import BadRequestError, NotFoundError, TooLargeError
from app.services import catalog_factory

pytestmark = pytest.mark.timeout(300)

SIZE = 768  # the demo's 10 m grid: 7.68 km, across two tiles of grid 1 (10 km)
SCL_MASKED = [0, 1, 3, 8, 9, 10, 11]  # written out here, not taken from app.sentinel2
TIME = {"from": "2023-04-01T00:00:00Z", "to": "2023-10-01T00:00:00Z"}
OUTPUTS = {
    "first": {"expression": "(B08-B04)/(B08+B04)", "composite": "first"},
    "median": {"preset": "ndvi", "composite": "median"},
    "stack": {"expression": "(nir-red)/(nir+red)", "composite": "stack"},
}


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This module's own demo catalog (a test moves one of its COGs)."""
    from app.demo import generate_demo

    path = tmp_path_factory.mktemp("process-demo")
    generate_demo(path, scenes=6, size=SIZE, seed=1)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("process-data")


def body(outputs: dict | None = None, **changes: Any) -> dict[str, Any]:
    """A request over the demo's extent (given in EPSG:32633), grid 1 at 10 m, scl-clear."""
    from app.demo import demo_grid

    request = {
        "processRequest": {
            "input": {
                "bounds": {
                    "bbox": list(demo_grid(SIZE).extent),
                    "properties": {"crs": "http://www.opengis.net/def/crs/EPSG/0/32633"},
                },
                "data": [{"type": "sentinel-2-l2a", "dataFilter": {"timeRange": TIME}}],
            },
            "outputs": outputs or OUTPUTS,
            "mask": "scl-clear",
        },
        "input": {"type": "tiling-grid", "id": 1, "resolution": 10},
    }
    request.update(changes)
    return request


def run(service: BatchService, request: dict[str, Any]) -> dict[str, Any]:
    job = service.create_process(BatchProcessRequest.model_validate(request))
    service.start(job["id"], kind="process")
    return service.wait(job["id"], timeout=WAIT, poll=0.2)


# ---------------------------------------------------------------------- independent reads


def _items(demo: Path) -> list[dict]:
    documents = [json.loads(p.read_text()) for p in (demo / "items").glob("*.json")]
    return sorted(documents, key=lambda d: d["properties"]["datetime"], reverse=True)


def _ndvi(demo: Path, document: dict) -> np.ndarray:
    """NDVI on the demo grid (float32 reflectance, float64 arithmetic, float32), NaN masked."""
    bands = {}
    for asset in ("red", "nir"):
        scale, offset = scale_offset(document, asset)
        dn = read(demo, document, asset)
        values = dn.astype(np.float32) * np.float32(scale) + np.float32(offset)
        bands[asset] = np.where(dn == 0, np.nan, values).astype(np.float32).astype(np.float64)
    with np.errstate(all="ignore"):
        ndvi = ((bands["nir"] - bands["red"]) / (bands["nir"] + bands["red"])).astype(np.float32)
    scl = read(demo, document, "scl")
    scl10 = np.repeat(np.repeat(scl, 2, axis=0), 2, axis=1)[: ndvi.shape[0], : ndvi.shape[1]]
    ndvi[np.isin(scl10, SCL_MASKED) | ~np.isfinite(ndvi)] = np.nan
    return ndvi


def _on_tile(full: np.ndarray, bounds: tuple, shape: tuple[int, int]) -> np.ndarray:
    """A demo-grid array placed on a tile of the same 10 m grid (NaN outside the demo)."""
    from app.demo import demo_grid

    grid = demo_grid(SIZE)
    col = round((grid.left - bounds[0]) / 10)
    row = round((bounds[3] - grid.top) / 10)
    out = np.full(shape, np.nan, dtype=np.float32)
    r0, c0 = max(row, 0), max(col, 0)
    r1, c1 = min(row + full.shape[0], shape[0]), min(col + full.shape[1], shape[1])
    out[r0:r1, c0:c1] = full[r0 - row : r1 - row, c0 - col : c1 - col]
    return out


def _read_output(path: str) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as src:
        data = src.read().astype(np.float32)
        if src.nodata is not None and not np.isnan(src.nodata):
            data[data == src.nodata] = np.nan
        return data, {
            "bounds": tuple(src.bounds),
            "crs": src.crs.to_string(),
            "descriptions": list(src.descriptions),
        }


# ------------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def raster_job(service: BatchService) -> dict[str, Any]:
    done = run(service, body(createCollection="demo-ndvi", description="NDVI summer"))
    assert done["status"] == "DONE", done
    return done


def test_tiles_equal_rasterio_and_numpy(raster_job, service, demo):
    from rio_cogeo.cogeo import cog_validate

    done = raster_job
    analysis = done["analysis"]
    assert analysis["tileCount"] == 2 and analysis["crs"] == ["EPSG:32633"]
    assert analysis["sceneCount"] == 6 and len(analysis["stackDates"]) == 6
    assert analysis["estimatedBytes"] > 0 and analysis["estimatedSeconds"] > 0
    assert done["progress"]["tiles"] == {"total": 2, "done": 2, "failed": 0}
    assert done["completionPercentage"] == 100.0 and done["failedTiles"] == []
    assert done["kind"] == "process"

    documents = _items(demo)
    ndvis = [_ndvi(demo, d) for d in documents]  # newest first (mostRecent)
    dates = [d["properties"]["datetime"][:10] for d in documents]
    tiles = service.tiles(done["id"])
    assert tiles["numberMatched"] == 2 and len(tiles["features"]) == 2
    for feature in tiles["features"]:
        properties = feature["properties"]
        assert properties["status"] == "PROCESSED" and properties["error"] is None
        assert set(properties["outputs"]) == {"first", "median", "stack"}
        assert shapely.geometry.shape(feature["geometry"]).is_valid
        for output_id, path in properties["outputs"].items():
            assert path == f"{done['output']}/{properties['name']}/{output_id}.tif"
            valid, errors, _ = cog_validate(path)
            assert valid, errors
        first, meta = _read_output(properties["outputs"]["first"])
        shape = first.shape[1:]
        assert meta["crs"] == "EPSG:32633" and shape == (1000, 1000)
        placed = np.stack([_on_tile(n, meta["bounds"], shape) for n in ndvis])
        expected_first = np.full(shape, np.nan, dtype=np.float32)
        for layer in placed:
            take = np.isnan(expected_first) & ~np.isnan(layer)
            expected_first[take] = layer[take]
        np.testing.assert_array_equal(first[0], expected_first)
        assert np.isfinite(first[0]).sum() > 0

        median, _ = _read_output(properties["outputs"]["median"])
        with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
            expected_median = np.nanmedian(placed, axis=0).astype(np.float32)
        np.testing.assert_array_equal(median[0], expected_median)

        stack, meta = _read_output(properties["outputs"]["stack"])
        assert meta["descriptions"] == analysis["stackDates"] == sorted(dates)
        for band, date in enumerate(analysis["stackDates"]):
            np.testing.assert_array_equal(stack[band], placed[dates.index(date)])

    # The STAC collection beside the tiles, registered in the service's catalog.
    root = Path(done["output"])
    collection = json.loads((root / "collection.json").read_text())
    assert collection["id"] == "demo-ndvi"
    assert done["results"]["collectionId"] == "demo-ndvi"
    assert len(list((root / "items").glob("*.json"))) == 2
    for path in (root / "items").glob("*.json"):
        item = json.loads(path.read_text())
        # The data's time range (not when the tile ran); a stack's bands named by date.
        assert item["properties"]["start_datetime"] == TIME["from"]
        bands = item["assets"]["stack"]["raster:bands"]
        assert [band["name"] for band in bands] == analysis["stackDates"]
    from app.catalog.layered import registered_collections

    assert [c.id for c in registered_collections(service.store.engine)] == ["demo-ndvi"]


def test_zarr_output_equals_the_cogs(raster_job, service):
    import rioxarray  # noqa: F401 (the .rio accessor)
    import xarray as xr

    outputs = {"first": OUTPUTS["first"], "median": OUTPUTS["median"]}
    request = body(outputs, output={"type": "zarr"})
    done = run(service, request)
    assert done["status"] == "DONE", done
    url = done["results"]["zarr"]
    cogs = {
        f["properties"]["name"]: f["properties"]["outputs"]
        for f in service.tiles(raster_job["id"])["features"]
    }
    group = xr.open_zarr(url)  # one CRS: the group is the dataset
    assert group.rio.crs.to_epsg() == 32633
    for name, paths in cogs.items():
        for output_id in ("first", "median"):
            cog, meta = _read_output(paths[output_id])
            minx, miny, maxx, maxy = meta["bounds"]
            values = group[output_id].sel(x=slice(minx, maxx), y=slice(maxy, miny)).values
            values = np.asarray(values, dtype=np.float32).reshape(cog.shape)
            np.testing.assert_array_equal(values, cog, err_msg=f"{name} {output_id}")


def test_s3_output_on_a_local_s3_server(make_settings, aws_env):
    import s3fs
    from moto.server import ThreadedMotoServer
    from rio_cogeo.cogeo import cog_validate

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, use_listings_cache=False)
        fs.mkdir("process-jobs")
        settings = make_settings(s3_endpoint_url=endpoint, batch_outputs=["s3://process-jobs/out"])
        s3_service = BatchService(settings, catalog_factory(settings))
        try:
            request = body(
                {"ndvi": {"preset": "ndvi", "dataType": "uint8", "rescale": [-1, 1]}},
                output={
                    "delivery": {
                        "s3": {
                            "url": "s3://process-jobs/out/<requestId>/<tileName>-<outputId>.<format>"
                        }
                    }
                },
            )
            done = run(s3_service, request)
            assert done["status"] == "DONE", done
            tiles = s3_service.tiles(done["id"])["features"]
        finally:
            s3_service.close()
        names = {p.rsplit("/", 1)[1] for p in fs.ls(f"process-jobs/out/{done['id']}")}
        expected = {f"{f['properties']['name']}-ndvi.tif" for f in tiles}
        assert expected <= names and "collection.json" in names
        assert not [n for n in names if ".tmp" in n]
        for name in expected:
            local = Path(settings.data_dir) / name
            local.parent.mkdir(parents=True, exist_ok=True)
            fs.get(f"process-jobs/out/{done['id']}/{name}", str(local))
            assert cog_validate(str(local))[0]
            with rasterio.open(local) as src:
                assert src.dtypes[0] == "uint8" and src.nodata == 0
    finally:
        server.stop()


def test_broken_asset_gives_partial_then_retry_failed_redoes_exactly_those(service, demo):
    documents = _items(demo)
    # The scene cut by the swath edge: its footprint misses part of the demo.
    broken = next(d for d in documents if (read(demo, d, "red") == 0).any())
    footprint = shapely.geometry.shape(broken["geometry"])
    red = demo / "cogs" / broken["id"] / "B04.tif"
    moved = red.with_suffix(".moved")
    request = body({"first": OUTPUTS["first"]})
    shutil.move(red, moved)
    try:
        partial = run(service, request)
    finally:
        shutil.move(moved, red)
    assert partial["status"] == "PARTIAL", partial
    tiles = service.tiles(partial["id"])["features"]
    touching = {
        f["properties"]["name"]
        for f in tiles
        if footprint.intersects(shapely.geometry.shape(f["geometry"]))
    }
    failed = service.tiles(partial["id"], status="failed")["features"]
    assert {f["properties"]["name"] for f in failed} == touching and touching
    assert all(broken["id"] in f["properties"]["error"] for f in failed)
    assert {t["name"] for t in partial["failedTiles"]} == touching
    assert partial["progress"]["tiles"]["failed"] == len(touching)
    root = Path(partial["output"])
    before = {p.name: p.stat().st_mtime_ns for p in (root / "_batch" / "units").glob("*.json")}

    service.retry_failed(partial["id"], kind="process")
    done = service.wait(partial["id"], timeout=WAIT, poll=0.2)
    assert done["status"] == "DONE", done
    assert done["failedTiles"] == [] and done["progress"]["tiles"]["done"] == len(tiles)
    after = {p.name: p.stat().st_mtime_ns for p in (root / "_batch" / "units").glob("*.json")}
    redone = {name for name in after if after[name] != before.get(name)}
    numbers = {f["id"] for f in tiles if f["properties"]["name"] in touching}
    assert redone == {f"{n}.json" for n in numbers}
    for feature in service.tiles(partial["id"])["features"]:
        assert Path(feature["properties"]["outputs"]["first"]).exists()


def test_killed_worker_and_restarted_service_lose_and_duplicate_nothing(
    make_settings, cluster, folder
):
    settings = make_settings()
    first = BatchService(settings, catalog_factory(settings))
    try:
        job = first.create_process(BatchProcessRequest.model_validate(body()))
        first.start(job["id"], kind="process")
        wait_until(
            lambda: first.get(job["id"])["status"] == "PROCESSING",
            "the tiles to run",
            WAIT,
            interval=0.05,
        )
        # Kill a worker while the tiles run: its tile is submitted again.
        with scheduler_client(cluster.scheduler_address) as client:
            pids = client.run(os.getpid)
            os.kill(next(iter(pids.values())), signal.SIGKILL)
    finally:
        first.close()  # the service goes: its job stays PROCESSING for the next one
    assert first.store.get(job["id"]).state in ("PROCESSING", "DONE")

    second = BatchService(settings, catalog_factory(settings))
    try:
        second.start_supervisor()  # as the app does at start-up: resumes orphans
        done = second.wait(job["id"], timeout=WAIT, poll=0.2)
    finally:
        second.close()
    assert done["status"] == "DONE", done
    assert done["progress"]["tiles"] == {"total": 2, "done": 2, "failed": 0}
    assert done["progress"]["units"] == {"total": 2, "done": 2}
    root = Path(done["output"])
    assert len(list((root / "_batch" / "units").glob("*.json"))) == 2
    assert len(list((root / "items").glob("*.json"))) == 2
    assert not list(root.rglob("*.tmp-*"))


def test_bad_requests_are_refused_before_any_work(service, make_settings):
    def refused(request: dict, error: type, *words: str) -> None:
        with pytest.raises(error) as caught:
            service.create_process(BatchProcessRequest.model_validate(request))
        for word in words:
            assert word in caught.value.message, caught.value.message

    before = service.list(kind="process")["total"]
    empty = body()
    empty["processRequest"]["input"]["bounds"]["bbox"] = [581580, 5164300, 581580, 5169420]
    refused(empty, BadRequestError, "processRequest.input.bounds.bbox", "empty")
    refused(
        body(input={"type": "tiling-grid", "id": 9, "resolution": 10}), BadRequestError, "input.id"
    )
    refused(
        body(input={"type": "tiling-grid", "id": 1, "resolution": 60}),
        BadRequestError,
        "input.resolution",
    )
    bad = body({"x": {"expression": "(nir-"}})
    refused(bad, BadRequestError, "processRequest.outputs.x.expression")
    refused(
        body({"x": {"expression": "(nir-foo)"}}), BadRequestError, "outputs.x.expression", "foo"
    )
    refused(body({"x": {"preset": "nope"}}), BadRequestError, "processRequest.outputs.x.preset")
    refused(
        body({"x": {"preset": "ndvi", "dataType": "int8"}}), BadRequestError, "outputs.x.dataType"
    )
    refused(
        body({"x": {"preset": "ndvi", "composite": "mode"}}), BadRequestError, "outputs.x.composite"
    )
    refused(body({"x": {"preset": "ndvi", "mask": "clouds"}}), BadRequestError, "outputs.x.mask")
    refused(
        body(
            output={"type": "zarr"},
            input={"type": "tiling-grid", "id": 1, "resolution": 10, "bufferX": 2},
        ),
        BadRequestError,
        "bufferX",
    )
    refused(body(output={"cogParameters": {"blockxsize": 7}}), BadRequestError, "blockxsize")
    refused(body(output={"delivery": {"path": "/etc"}}), Exception, "output")
    refused(body(createCollection="sentinel-2-l2a"), BadRequestError, "createCollection")
    refused(
        body(processRequest={**body()["processRequest"], "evalscript": "//VERSION=3"}),
        BadRequestError,
        "evalscript",
    )

    limited = BatchService(
        make_settings(batch_max_tiles=1, batch_max_tile_pixels=10**6 - 1),
        catalog_factory(make_settings()),
        engine=service.store.engine,
    )
    try:
        with pytest.raises(TooLargeError) as caught:
            limited.create_process(BatchProcessRequest.model_validate(body()))
        assert "batch_max_tiles=1" in caught.value.message
        small = body()
        small["processRequest"]["input"]["bounds"]["bbox"] = [582000, 5165000, 583000, 5166000]
        with pytest.raises(TooLargeError) as caught:
            limited.create_process(BatchProcessRequest.model_validate(small))
        assert "batch_max_tile_pixels" in caught.value.message
    finally:
        limited.close()
    assert service.list(kind="process")["total"] == before  # nothing was created


def test_each_kind_sees_only_its_jobs(service, raster_job):
    job_id = raster_job["id"]
    with pytest.raises(NotFoundError):
        service.get(job_id, kind="statistics")
    with pytest.raises(NotFoundError):
        service.start(job_id, kind="statistics")
    assert service.get(job_id, kind="process")["id"] == job_id
    assert job_id not in {j["id"] for j in service.list()["data"]}
    assert job_id in {j["id"] for j in service.list(kind="process")["data"]}
