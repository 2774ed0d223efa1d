"""More batch processing jobs at the service level: zones, grid 3, own tiles, delete, sweeps.

A real Dask LocalCluster (1 worker process) and ``BatchService`` over a small cross-zone
demo (2 dates, 256 px, plus the pair of scenes across 18 E). Outputs are compared with
``rasterio.warp.reproject`` of the source COGs (nearest: the same source pixel per output
pixel) and, in a scene's own zone, with the scene's pixels read straight from its file.
"""

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from batch_jobs import WAIT
from demo_reads import href, scale_offset
from distributed import LocalCluster
from rasterio.enums import Resampling
from rasterio.warp import reproject

from app.batch import BatchService
from app.batch.processing.models import BatchProcessRequest
from app.errors import BadRequestError, ConflictError, NotFoundError, TooLargeError
from app.services import catalog_factory

pytestmark = pytest.mark.timeout(300)

TIME = {"from": "2023-04-01T00:00:00Z", "to": "2023-10-01T00:00:00Z"}
RED = {"red": {"expression": "B04", "composite": "max"}}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from app.demo import generate_demo

    path = tmp_path_factory.mktemp("process-more-demo")
    generate_demo(path, scenes=2, size=256, cross_zone=True)
    return path


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(
        n_workers=1, threads_per_worker=2, processes=True, dashboard_address="127.0.0.1:0"
    ) as local:
        yield local


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("process-more-data")


def body(bounds: dict | None, job_input: dict, outputs: dict | None = None, **changes: Any):
    request: dict[str, Any] = {
        "processRequest": {
            "input": {"data": [{"type": "sentinel-2-l2a", "dataFilter": {"timeRange": TIME}}]},
            "outputs": outputs or RED,
        },
        "input": job_input,
    }
    if bounds is not None:
        request["processRequest"]["input"]["bounds"] = bounds
    request.update(changes)
    return request


def run(service: BatchService, request: dict[str, Any]) -> dict[str, Any]:
    job = service.create_process(BatchProcessRequest.model_validate(request))
    service.start(job["id"], kind="process")
    return service.wait(job["id"], timeout=WAIT, poll=0.2)


def _documents(demo: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((demo / "items").glob("*.json"))]


def _red_on(demo: Path, document: dict, crs: str, transform: Affine, shape: tuple) -> np.ndarray:
    """A scene's harmonized red (float32, NaN at DN 0) reprojected (nearest) onto a grid."""
    with rasterio.open(href(demo, document, "red")) as src:
        dn = src.read(1).astype(np.float32)
        dn[dn == 0] = np.nan
        out = np.full(shape, np.nan, dtype=np.float32)
        reproject(
            dn,
            out,
            src_transform=src.transform,
            src_crs=src.crs,
            src_nodata=np.nan,
            dst_transform=transform,
            dst_crs=crs,
            dst_nodata=np.nan,
            resampling=Resampling.nearest,
        )
    scale, offset = scale_offset(document, "red")
    return (out * np.float32(scale) + np.float32(offset)).astype(np.float32)


def _expected_max(demo: Path, crs: str, transform: Affine, shape: tuple) -> np.ndarray:
    stack = np.stack([_red_on(demo, d, crs, transform, shape) for d in _documents(demo)])
    with np.errstate(all="ignore"):
        return np.fmax.reduce(stack, axis=0)


def _read(path: str) -> tuple[np.ndarray, Any]:
    with rasterio.open(path) as src:
        data = src.read(1).astype(np.float32)
        if src.nodata is not None and not np.isnan(src.nodata):
            data[data == src.nodata] = np.nan
        return data, src.profile


def _outputs(service: BatchService, job_id: str) -> dict[str, dict]:
    return {f["properties"]["name"]: f["properties"] for f in service.tiles(job_id)["features"]}


# ------------------------------------------------------------------------------- tests


def test_an_area_across_18e_gives_tiles_in_both_zones(service, demo):
    from rio_cogeo.cogeo import cog_validate

    from app.demo import CENTER_LAT

    bounds = {"bbox": [17.975, CENTER_LAT - 0.004, 18.025, CENTER_LAT + 0.004]}
    done = run(service, body(bounds, {"type": "tiling-grid", "id": 1, "resolution": 10}))
    assert done["status"] == "DONE", done
    assert done["analysis"]["crs"] == ["EPSG:32633", "EPSG:32634"]
    tiles = _outputs(service, done["id"])
    zones = {}
    documents = _documents(demo)
    own_zone_checked = 0
    for name, properties in tiles.items():
        path = properties["outputs"]["red"]
        assert cog_validate(path)[0]
        data, profile = _read(path)
        assert profile["crs"].to_string() == properties["crs"]
        zones.setdefault(properties["crs"], []).append(name)
        expected = _expected_max(demo, properties["crs"], profile["transform"], data.shape)
        np.testing.assert_array_equal(data, expected, err_msg=name)
        # In a scene's own zone: its pixels, read straight from the file (no warp).
        for document in documents:
            with rasterio.open(href(demo, document, "red")) as src:
                if src.crs.to_string() != properties["crs"] or src.res != (10.0, 10.0):
                    continue
                col = (src.transform.c - profile["transform"].c) / 10
                row = (profile["transform"].f - src.transform.f) / 10
                assert col == int(col) and row == int(row)  # on the tile's pixel grid
                col, row = int(col), int(row)
                r0, c0 = max(row, 0), max(col, 0)
                r1 = min(row + src.height, data.shape[0])
                c1 = min(col + src.width, data.shape[1])
                if r0 >= r1 or c0 >= c1:
                    continue
                scale, offset = scale_offset(document, "red")
                dn = src.read(1)[r0 - row : r1 - row, c0 - col : c1 - col]
                own = dn.astype(np.float32) * np.float32(scale) + np.float32(offset)
                others = [
                    _red_on(demo, d, properties["crs"], profile["transform"], data.shape)
                    for d in documents
                    if d is not document
                ]
                with np.errstate(all="ignore"):
                    rest = np.fmax.reduce(np.stack(others), axis=0)[r0:r1, c0:c1]
                want = np.where(dn > 0, np.fmax(own, rest), rest)
                np.testing.assert_array_equal(data[r0:r1, c0:c1], want)
                own_zone_checked += 1
    assert set(zones) == {"EPSG:32633", "EPSG:32634"}
    assert own_zone_checked >= 1
    # Both zones' scenes have data in the job's tiles.
    assert all(np.isfinite(_read(p["outputs"]["red"])[0]).any() for p in tiles.values())


def test_grid_3_output_in_wgs84(service, demo):
    from rio_cogeo.cogeo import cog_validate

    from app.demo import CENTER_LAT, CENTER_LON

    bounds = {"bbox": [CENTER_LON - 0.005, CENTER_LAT - 0.005, CENTER_LON, CENTER_LAT]}
    done = run(service, body(bounds, {"type": "tiling-grid", "id": 3, "resolution": 0.0002}))
    assert done["status"] == "DONE", done
    (properties,) = _outputs(service, done["id"]).values()
    path = properties["outputs"]["red"]
    assert cog_validate(path)[0]
    data, profile = _read(path)
    assert profile["crs"].to_epsg() == 4326 and data.shape == (5000, 5000)
    t = profile["transform"]
    assert (t.a, t.e) == (0.0002, -0.0002) and (t.c, t.f) == (16.0, 47.0)
    expected = _expected_max(demo, "EPSG:4326", t, data.shape)
    np.testing.assert_array_equal(data, expected)
    assert np.isfinite(data).sum() > 10_000  # the 2.56 km demo at ~15 x 22 m


def _write_gpkg(path: Path, polygons: list, fields: dict[str, list], crs: str) -> None:
    import pyogrio.raw
    import shapely

    pyogrio.raw.write(
        str(path),
        geometry=np.array([shapely.to_wkb(p) for p in polygons], dtype=object),
        field_data=[np.asarray(v) for v in fields.values()],
        fields=list(fields),
        crs=crs,
        driver="GPKG",
        layer="tiles",
        geometry_type="Polygon",
    )


def test_own_tiles_from_a_geopackage(service, demo, folder):
    import shapely
    from rio_cogeo.cogeo import cog_validate

    from app.demo import demo_grid

    grid = demo_grid(256)
    left, top = grid.left, grid.top
    # One with width/height (20 m pixels), one with a resolution (10 m pixels).
    sized = shapely.box(left + 200, top - 1700, left + 2200, top - 200)
    by_resolution = shapely.box(left + 500, top - 2400, left + 1700, top - 1600)
    path = folder / "tiles.gpkg"
    _write_gpkg(
        path,
        [sized, by_resolution],
        {
            "id": np.array([7, 9], dtype=np.int64),
            "identifier": np.array(["field/a", "b"], dtype=object),
            "width": np.array([100, np.nan]),
            "height": np.array([75, np.nan]),
            "resolution": np.array([np.nan, 10.0]),
        },
        "EPSG:32633",
    )
    done = run(service, body(None, {"type": "geopackage", "features": str(path)}))
    assert done["status"] == "DONE", done
    assert done["analysis"]["tileCount"] == 2 and done["analysis"]["grid"] == "custom"
    tiles = _outputs(service, done["id"])
    assert set(tiles) == {"field_a", "b"}
    expected_grids = {
        "field_a": (Affine(20.0, 0, left + 200, 0, -20.0, top - 200), (75, 100)),
        "b": (Affine(10.0, 0, left + 500, 0, -10.0, top - 1600), (80, 120)),
    }
    for name, (transform, shape) in expected_grids.items():
        output = tiles[name]["outputs"]["red"]
        assert output.endswith(f"/{name}/red.tif")
        assert cog_validate(output)[0]
        data, profile = _read(output)
        assert profile["crs"].to_epsg() == 32633
        assert profile["transform"] == transform and data.shape == shape
        assert np.isfinite(data).all()
    data, profile = _read(tiles["b"]["outputs"]["red"])
    np.testing.assert_array_equal(
        data, _expected_max(demo, "EPSG:32633", profile["transform"], data.shape)
    )
    # The STAC collection has one Item per tile, on the tile's grid.
    item = json.loads((Path(done["output"]) / "items" / "b.json").read_text())
    assert item["assets"]["red"]["proj:shape"] == [80, 120]
    # The Item's time range is the data's (the job's timeRange), not when the tile ran.
    assert item["properties"]["start_datetime"] == TIME["from"]
    assert item["properties"]["end_datetime"] == TIME["to"]


def test_own_tiles_are_checked_before_any_work(service, folder):
    import shapely

    def refused(polygons, fields, error, *words, crs="EPSG:32633", **changes):
        path = folder / f"bad-{uuid.uuid4().hex}.gpkg"
        _write_gpkg(path, polygons, fields, crs)
        request = body(None, {"type": "geopackage", "features": str(path)}, **changes)
        with pytest.raises(error) as caught:
            service.create_process(BatchProcessRequest.model_validate(request))
        for word in words:
            assert word in caught.value.message, caught.value.message

    box = shapely.box(500_000, 5_000_000, 501_000, 5_001_000)
    other = shapely.box(501_000, 5_000_000, 502_000, 5_001_000)
    ids = {"id": np.array([1, 2], dtype=np.int64)}
    before = service.list(kind="process")["total"]
    refused([box, other], ids, BadRequestError, "input.features", "id=1", "width")
    refused(
        [box, other],
        {"id": np.array([3, 3], dtype=np.int64), "resolution": np.array([10.0, 10.0])},
        BadRequestError,
        "input.features",
        "id=3",
        "duplicate",
    )
    refused(
        [box, other],
        {**ids, "width": np.array([100, 100]), "height": np.array([100, 0])},
        BadRequestError,
        "id=2",
        "height",
    )
    refused(
        [box, other],
        {**ids, "resolution": np.array([10.0, 0.1])},
        TooLargeError,
        "id=2",
        "batch_max_tile_pixels",
    )
    refused(
        [box, other],
        {**ids, "identifier": np.array(["a/b", "a b"], dtype=object), "resolution": [10.0, 10.0]},
        BadRequestError,
        "id=2",
        "a_b",
    )
    refused(
        [box, other],
        {**ids, "identifier": np.array(["_batch", "x"], dtype=object), "resolution": [10.0] * 2},
        BadRequestError,
        "id=1",
        "reserved",
    )
    # Zarr: tiles of different sizes are not one grid.
    refused(
        [box, shapely.box(501_000, 5_000_000, 503_000, 5_001_000)],
        {**ids, "resolution": np.array([10.0, 10.0])},
        BadRequestError,
        "input.features",
        "Zarr",
        output={"type": "zarr"},
    )
    # Not a polygon (a line's GeoPackage written as-is).
    path = folder / "lines.geojson"
    path.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "id": 4,
                        "properties": {"resolution": 10},
                        "geometry": {"type": "LineString", "coordinates": [[16, 46], [16.1, 46]]},
                    }
                ],
            }
        )
    )
    request = body(None, {"type": "geopackage", "features": str(path)})
    with pytest.raises(BadRequestError) as caught:
        service.create_process(BatchProcessRequest.model_validate(request))
    assert "id=4" in caught.value.message and "not a polygon" in caught.value.message
    # Outside the allow-list: never read.
    request = body(None, {"type": "geopackage", "features": "/etc/passwd"})
    with pytest.raises(Exception) as caught:
        service.create_process(BatchProcessRequest.model_validate(request))
    assert "input.features" in caught.value.message
    # A tiling grid needs bounds.
    with pytest.raises(BadRequestError) as caught:
        service.create_process(
            BatchProcessRequest.model_validate(
                body(None, {"type": "tiling-grid", "id": 1, "resolution": 10})
            )
        )
    assert "processRequest.input.bounds" in caught.value.message
    assert service.list(kind="process")["total"] == before


def test_too_many_own_tiles(make_settings, service, folder):
    import shapely

    path = folder / "three.gpkg"
    boxes = [
        shapely.box(500_000 + k * 1000, 5_000_000, 501_000 + k * 1000, 5_001_000) for k in range(3)
    ]
    _write_gpkg(path, boxes, {"resolution": np.array([10.0] * 3)}, "EPSG:32633")
    settings = make_settings(batch_max_tiles=2)
    limited = BatchService(settings, catalog_factory(settings), engine=service.store.engine)
    try:
        with pytest.raises(TooLargeError) as caught:
            limited.create_process(
                BatchProcessRequest.model_validate(
                    body(None, {"type": "geopackage", "features": {"href": str(path)}})
                )
            )
        assert "input.features" in caught.value.message
        assert "batch_max_tiles=2" in caught.value.message
    finally:
        limited.close()


def _small_area() -> dict:
    from app.demo import demo_grid

    grid = demo_grid(256)
    return {
        "bbox": [grid.left + 100, grid.top - 1000, grid.left + 900, grid.top - 100],
        "properties": {"crs": "http://www.opengis.net/def/crs/EPSG/0/32633"},
    }


def test_temporaries_of_killed_writes_are_swept_at_finish(service):
    request = body(_small_area(), {"type": "tiling-grid", "id": 1, "resolution": 10})
    job = service.create_process(BatchProcessRequest.model_validate(request))
    service.analyse(job["id"], kind="process")
    analysed = service.wait(job["id"], timeout=WAIT, poll=0.2)
    assert analysed["status"] == "ANALYSIS_DONE", analysed
    (feature,) = service.tiles(job["id"])["features"]
    cog = Path(feature["properties"]["outputs"]["red"])
    cog.parent.mkdir(parents=True, exist_ok=True)
    # What a COG write killed between its temporary and its rename leaves behind.
    stale = cog.parent / f"{cog.name}.tmp-{uuid.uuid4().hex}"
    stale.write_bytes(b"half a tiff")
    items = Path(job["output"]) / "items"
    items.mkdir(parents=True, exist_ok=True)
    stale_item = items / f"x.json.tmp-{uuid.uuid4().hex}"
    stale_item.write_bytes(b"{")
    service.start(job["id"], kind="process")
    done = service.wait(job["id"], timeout=WAIT, poll=0.2)
    assert done["status"] == "DONE", done
    assert cog.exists() and not stale.exists() and not stale_item.exists()
    assert not list(Path(job["output"]).rglob("*.tmp-*"))


def test_zarr_output_has_a_stac_collection(service, demo):
    import xarray as xr

    request = body(_small_area(), {"type": "tiling-grid", "id": 1, "resolution": 10})
    request["output"] = {"type": "zarr"}
    done = run(service, request)
    assert done["status"] == "DONE", done
    root = Path(done["output"])
    collection = json.loads((root / "collection.json").read_text())
    assert collection["type"] == "Collection" and "item_assets" not in collection
    asset = collection["assets"]["zarr"]
    assert asset["type"] == "application/vnd+zarr" and asset["roles"] == ["data"]
    assert (root / asset["href"]).resolve() == Path(done["results"]["zarr"]).resolve()
    dims = collection["cube:dimensions"]
    assert dims["x"]["reference_system"] == 32633 and dims["x"]["step"] == 10.0
    assert collection["cube:variables"]["red"]["dimensions"] == ["band", "y", "x"]
    group = xr.open_zarr(done["results"]["zarr"])
    assert group["red"].shape == (1, 1000, 1000)
    assert dims["x"]["extent"] == [float(group.x.min()) - 5, float(group.x.max()) + 5]
    # Served back: refused for Zarr, saying why.
    request["createCollection"] = True
    with pytest.raises(BadRequestError) as caught:
        service.create_process(BatchProcessRequest.model_validate(request))
    assert "createCollection" in caught.value.message and "COG" in caught.value.message


def test_delete(service):
    request = body(_small_area(), {"type": "tiling-grid", "id": 1, "resolution": 10})
    done = run(service, request)
    assert done["status"] == "DONE", done
    running = service.create_process(BatchProcessRequest.model_validate(request))
    service.start(running["id"], kind="process")
    with pytest.raises(ConflictError):
        service.delete(running["id"], kind="process")
    with pytest.raises(NotFoundError):
        service.delete(done["id"], kind="statistics")
    service.delete(done["id"], kind="process")
    with pytest.raises(NotFoundError):
        service.get(done["id"], kind="process")
    assert done["id"] not in {j["id"] for j in service.list(kind="process", limit=1000)["data"]}
    assert not (Path(done["output"]) / "_batch").exists()
    assert (Path(done["output"]) / "collection.json").exists()  # outputs stay
    service.wait(running["id"], timeout=WAIT, poll=0.2)
    service.delete(running["id"], kind="process")
    assert service.list(kind="process", limit=1000)["total"] >= 0
