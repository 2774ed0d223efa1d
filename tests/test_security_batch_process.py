"""Issue 14, attacked: every new input of batch processing, and what it may reach.

A processing job takes a path template, own tiles (a file of polygons whose identifiers name
files), band-math outputs whose ids name files, nodata and rescale values, COG parameters and
a collection id. Each attack here must end in a 4xx naming the parameter (and the limit), or
a tile recorded FAILED with its reason; never a 500, never a file written outside the job's
folder under ``batch_outputs``, into another job's folder or into the catalog's folder.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pyproj import Transformer

from app.batch import BatchService
from app.batch.processing.models import BatchProcessRequest
from app.batch.processing.paths import escaping_target, template_of
from app.errors import BadRequestError
from app.main import create_app
from app.services import catalog_factory
from app.settings import Settings

pytestmark = pytest.mark.timeout(120)

SEASON = {"from": "2023-04-01T00:00:00Z", "to": "2023-10-01T00:00:00Z"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from app.demo import generate_demo

    path = tmp_path_factory.mktemp("attack-demo")
    generate_demo(path, scenes=2, size=256, seed=1)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("attack-data")


@pytest.fixture(scope="module")
def settings(demo: Path, data: Path) -> Settings:
    # No dask_scheduler: creation and analysis run in this process; no tile is processed.
    return Settings(catalog=str(demo), data_dir=data, allowed_sources=[str(demo), str(data)])


@pytest.fixture(scope="module")
def api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
def service(settings: Settings) -> Iterator[BatchService]:
    batch = BatchService(settings, catalog_factory(settings))
    yield batch
    batch.close()


@pytest.fixture(scope="module")
def bbox() -> list[float]:
    """A WGS84 bbox inside the demo's scenes."""
    from app.demo.grid import demo_grid

    minx, miny, maxx, maxy = demo_grid(256).extent
    to_lonlat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    west, south = to_lonlat.transform(minx + 500, miny + 500)
    east, north = to_lonlat.transform(maxx - 500, maxy - 500)
    return [west, south, east, north]


def body(bbox: list[float], **changes: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "processRequest": {
            "input": {
                "bounds": {"bbox": bbox},
                "data": [{"type": "sentinel-2-l2a", "dataFilter": {"timeRange": SEASON}}],
            },
            "outputs": {"ndvi": {"preset": "ndvi"}},
        },
        "input": {"type": "tiling-grid", "id": 1, "resolution": 20},
        "output": {"type": "raster"},
    }
    request.update(changes)
    return request


def post(api: TestClient, request: dict[str, Any] | str) -> Any:
    # json.dumps, not httpx's: NaN and Infinity must reach the service as they are.
    text = request if isinstance(request, str) else json.dumps(request)
    return api.post("/batch/process", content=text, headers={"content-type": "application/json"})


def files_under(folder: Path) -> set[Path]:
    """Every file in ``folder`` but the service database's."""
    return {p for p in folder.rglob("*") if p.is_file() and ".db" not in p.name}


# ---------------------------------------------------------------------- path templates


@pytest.mark.parametrize(
    ("template", "status", "message"),
    [
        ("{out}/<requestId>/../../../../evil/<tileName>/<outputId>.tif", 400, "'..' segments"),
        ("{out}/x/<tileName>/../../../../../evil/<outputId>.tif", 400, "'..' segments"),
        ("{out}/<tileName>/<outputId>/../../../../../../evil.tif", 400, "'..' segments"),
        ("{out}/./<tileName>/<outputId>.tif", 400, "'..' segments"),
        ("relative/../../../../tmp", 400, "'..' segments"),
        ("{out}/<a/b>/<tileName>/<outputId>.tif", 400, "only in placeholders"),
        ("{out}/x>y/<tileName>/<outputId>.tif", 400, "only in placeholders"),
        ("{out}/a\x00b/<tileName>/<outputId>.tif", 400, "control characters"),
        ("{out}/a\\..\\b/<tileName>/<outputId>.tif", 400, "backslashes"),
        ("{out}/" + "a" * 300 + "/<tileName>/<outputId>.tif", 400, "at most 255"),
        ("{out}/" + "a/" * 600, 400, "at most 1024"),
        ("{out}/<tileName>/<bogus>.tif", 400, "unknown placeholder"),
        ("/etc/<tileName>/<outputId>.tif", 403, "batch_outputs"),
        ("file://{out}", 403, "file://"),
        ("/vsimem/out", 403, "/vsi"),
        ("/vsicurl/http://127.0.0.1/x", 403, "/vsi"),
        ("http://example.com/out", 400, "output"),
        ("s3://not-allowed/out", 403, "batch_outputs"),
        ("{demo}", 403, "batch_outputs"),
    ],
)
def test_templates_cannot_name_files_outside_their_folder(
    api: TestClient, bbox: list[float], data: Path, demo: Path, template: str, status: int,
    message: str,
) -> None:  # fmt: skip
    before = files_under(data)
    url = template.format(out=data / "batch", demo=demo)
    answer = post(api, body(bbox, output={"type": "raster", "delivery": {"path": url}}))
    assert answer.status_code == status, answer.text
    assert message in answer.json()["detail"]
    assert "output" in answer.json()["detail"]
    assert files_under(data) == before  # nothing created (the job database aside)


def test_templates_are_checked_as_text_too() -> None:
    # The engine function itself, without the service: the same refusals.
    for bad in ("s3://b/out/<tileName>/../<outputId>.tif", "/o/<tileName>/.<outputId>/x/../y"):
        with pytest.raises(BadRequestError, match=r"output\.delivery"):
            template_of(bad, "raster")
    assert template_of("/o/x..y/<tileName>/<outputId>.tif", "raster")  # '..' inside a name


def test_no_template_reaches_into_another_jobs_folder(
    api: TestClient, bbox: list[float], data: Path
) -> None:
    victim = post(api, body(bbox))
    assert victim.status_code == 201, victim.text
    victim_id = victim.json()["id"]
    out = data / "batch"
    # The folder (the template's prefix) inside the other job's folder: 403.
    for url in (f"{out}/{victim_id}", f"{out}/{victim_id}/<tileName>/<outputId>.tif"):
        answer = post(api, body(bbox, output={"delivery": {"path": url}, "overwrite": True}))
        assert answer.status_code == 403, answer.text
        assert "another batch job's folder" in answer.json()["detail"]
    # A job id after a placeholder: 400.
    url = f"{out}/<tileName>/{victim_id}/<outputId>.tif"
    answer = post(api, body(bbox, output={"delivery": {"path": url}}))
    assert answer.status_code == 400, answer.text
    assert "another job's folder" in answer.json()["detail"]


def _gpkg(path: Path, identifiers: list[str], transform_crs: str = "EPSG:32633") -> Path:
    import pyogrio.raw
    import shapely

    from app.demo.grid import demo_grid

    minx, miny, _, _ = demo_grid(256).extent
    polygons = [
        shapely.box(minx + 640 * i, miny, minx + 640 * (i + 1), miny + 640)
        for i in range(len(identifiers))
    ]
    pyogrio.raw.write(
        str(path),
        geometry=np.array([shapely.to_wkb(p) for p in polygons], dtype=object),
        field_data=[np.arange(1, len(identifiers) + 1), np.asarray(identifiers, dtype=object),
                    np.full(len(identifiers), 20.0)],
        fields=["id", "identifier", "resolution"],
        crs=transform_crs,
        driver="GPKG",
        layer="tiles",
        geometry_type="Polygon",
    )  # fmt: skip
    return path


def test_own_tiles_named_like_a_job_id_cannot_enter_its_folder(
    api: TestClient, bbox: list[float], data: Path
) -> None:
    victim_id = post(api, body(bbox)).json()["id"]
    source = _gpkg(data / "tiles-attack.gpkg", ["fine", victim_id])
    template = f"{data / 'batch'}/<tileName>/x/<outputId>.tif"
    request = body(
        bbox,
        input={"type": "geopackage", "features": str(source)},
        output={"delivery": {"path": template}, "overwrite": True},
    )
    answer = post(api, request)
    assert answer.status_code == 400, answer.text
    detail = answer.json()["detail"]
    assert "output.delivery" in detail and victim_id in detail and "another job's folder" in detail


def test_own_tiles_with_hostile_identifiers_get_safe_names(
    service: BatchService, bbox: list[float], data: Path
) -> None:
    from app.batch.processing.own_tiles import read_own_tiles

    hostile = ["../../etc", "/abs/path", "a\x00b", "é" * 300, "..", "_batch", "CON"]
    source = _gpkg(data / "tiles-hostile.gpkg", hostile[:5] + ["ok", "CON"])
    tiles = read_own_tiles(str(source), None, service.settings)
    for tile in tiles:
        assert "/" not in tile.name and "\x00" not in tile.name
        assert not tile.name.startswith(".") and 0 < len(tile.name) <= 100
    reserved = _gpkg(data / "tiles-reserved.gpkg", ["_batch"])
    with pytest.raises(BadRequestError, match="reserved"):
        read_own_tiles(str(reserved), None, service.settings)


# ----------------------------------------------------------------------------- outputs


@pytest.mark.parametrize(
    ("outputs", "status", "message"),
    [
        ({"a" * 65: {"expression": "B04"}}, 400, "at most 64"),
        ({"a\x00b": {"expression": "B04"}}, 400, "an output id names files"),
        ({"a\nb": {"expression": "B04"}}, 400, "an output id names files"),
        ({"..": {"expression": "B04"}}, 400, "an output id names files"),
        ({"a/b": {"expression": "B04"}}, 400, "an output id names files"),
        ({"a\\b": {"expression": "B04"}}, 400, "an output id names files"),
        ({"-rf": {"expression": "B04"}}, 400, "an output id names files"),
        ({str(uuid.uuid4()): {"expression": "B04"}}, 400, "job id"),
        ({f"o{i}": {"expression": "B04"} for i in range(33)}, 413, "batch_max_outputs=32"),
        ({"a": {"expression": "B04.__class__"}}, 400, "unsupported syntax"),
        ({"a": {"expression": "__import__('os')"}}, 400, "unknown function"),
        ({"a": {"expression": "(" * 3000 + "B04" + ")" * 3000}}, 400, "too long"),
        ({"a": {"expression": "B04", "dataType": "int64"}}, 400, "dataType"),
        ({"a": {"expression": "B04", "rescale": [0, float("inf")]}}, 400, "rescale"),
        ({"a": {"expression": "B04", "rescale": [float("nan"), 1]}}, 400, "rescale"),
        ({"a": {"expression": "B04", "rescale": [1, 1]}}, 400, "rescale"),
        ({"a": {"expression": "B04", "rescale": [0, 1, 2]}}, 400, "rescale"),
        ({"a": {"expression": "B04", "dataType": "uint8", "nodata": -1}}, 400, "uint8 value"),
        ({"a": {"expression": "B04", "dataType": "uint8", "nodata": 256}}, 400, "0 to 255"),
        ({"a": {"expression": "B04", "dataType": "uint8", "nodata": 1.5}}, 400, "whole number"),
        ({"a": {"expression": "B04", "dataType": "uint16", "nodata": 1e10}}, 400, "0 to 65535"),
        ({"a": {"expression": "B04", "dataType": "uint16", "nodata": float("nan")}}, 400,
         "finite"),
        ({"a": {"expression": "B04", "nodata": float("inf")}}, 400, "finite"),
        ({"a": {"expression": "B04", "nodata": 1e300}}, 400, "float32 range"),
    ],
)  # fmt: skip
def test_bad_outputs_are_4xx_naming_the_output(
    api: TestClient, bbox: list[float], outputs: dict, status: int, message: str
) -> None:
    request = body(bbox)
    request["processRequest"]["outputs"] = outputs
    answer = post(api, request)
    assert answer.status_code == status, answer.text
    detail = answer.json()["detail"]
    assert message in detail and "processRequest.outputs" in detail


def test_good_nodata_values_are_kept(service: BatchService, bbox: list[float]) -> None:
    request = body(bbox)
    request["processRequest"]["outputs"] = {
        "u8": {"expression": "B04", "dataType": "uint8", "nodata": 255, "rescale": [0, 0.3]},
        "u16": {"expression": "B04", "dataType": "uint16", "nodata": 65535.0},
        "f32": {"expression": "B04", "nodata": -3.4e38},
    }
    recipe = BatchProcessRequest.model_validate(request).recipe()
    assert [spec.nodata for spec in recipe.outputs] == [255, 65535, -3.4e38]


def test_huge_values_of_band_math_are_clipped_not_crashing() -> None:
    from app.batch.processing.engine import finish
    from app.batch.processing.spec import OutputSpec

    values = np.array([[[np.inf, -np.inf, np.nan, 1e30]]], dtype=np.float32)
    spec = OutputSpec(
        id="a", expression="B04", data_type="uint8", nodata=None, rescale=None,
        composite="first", mask=None,
    )  # fmt: skip
    with np.errstate(all="raise"):
        data, nodata = finish(values, spec)
    assert nodata == 0 and data.tolist() == [[[255, 1, 0, 255]]]


# ------------------------------------------------------------------ symlinks, catalog


def test_escaping_target_follows_symlinks(tmp_path: Path) -> None:
    out = tmp_path / "out"
    elsewhere = tmp_path / "elsewhere"
    catalog = out / "catalog"
    for folder in (out, elsewhere, catalog):
        folder.mkdir(parents=True, exist_ok=True)
    (out / "link").symlink_to(elsewhere)
    fine = [str(out / "job" / "tile" / "a.tif")]
    assert escaping_target(fine, str(out), [str(catalog)]) is None
    linked = str(out / "link" / "tile" / "a.tif")
    assert escaping_target([*fine, linked], str(out)) == linked
    inside = str(out / "catalog" / "item" / "B04.tif")
    assert escaping_target([inside], str(out), [str(catalog)]) == inside
    assert escaping_target(["s3://bucket/out/a.tif"], "s3://bucket/out") is None


def _tile_task(service: BatchService, bbox: list[float], template: str, folder: str) -> Any:
    from app.batch.processing.analysis import check_request
    from app.batch.processing.grids import tiles_for
    from app.batch.processing.paths import output_url
    from app.batch.processing.worker import TileTask

    request = BatchProcessRequest.model_validate(body(bbox))
    plan = check_request(request, service.settings)
    tile = tiles_for(plan.area, "1", 20.0)[0]
    return TileTask(
        job_id="j",
        unit=0,
        generation=0,
        root=f"{folder}/j",
        tile=tile,
        recipe=plan.recipe,
        settings=service.settings,
        open_catalog=catalog_factory(service.settings),
        collection=plan.collection,
        time_range=(datetime(2023, 4, 1, tzinfo=UTC), datetime(2023, 10, 1, tzinfo=UTC)),
        outputs={"ndvi": output_url(template, "j", tile.name, "ndvi")},
        output_folder=folder,
    )


def test_a_symlink_in_the_output_folder_fails_the_tile_not_the_disk(
    service: BatchService, bbox: list[float], tmp_path: Path
) -> None:
    from app.batch.processing.worker import run_tile

    out = tmp_path / "out"
    elsewhere = tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "shared").symlink_to(elsewhere)  # planted in the output folder after creation
    template = f"{out}/shared/<tileName>/<outputId>.tif"
    marker = run_tile(_tile_task(service, bbox, template, str(out)))
    assert marker["done"] == 0 and "leads out of the output folder" in marker["failed"][0]["error"]
    assert not any(elsewhere.rglob("*"))
    # The same tile without the symlink is written.
    marker = run_tile(_tile_task(service, bbox, f"{out}/real/<tileName>/<outputId>.tif", str(out)))
    assert marker["done"] == 1 and list((out / "real").rglob("ndvi.tif"))


def test_no_delivery_into_the_catalogs_folder(
    demo: Path, data: Path, bbox: list[float], tmp_path: Path
) -> None:
    # An operator allowed outputs under a folder that holds the catalog too.
    settings = Settings(
        catalog=str(demo),
        data_dir=data,
        allowed_sources=[str(demo), str(data)],
        batch_outputs=[str(demo.parent)],
        database_url=f"sqlite:///{tmp_path / 'jobs.db'}",
    )
    service = BatchService(settings, catalog_factory(settings))
    try:
        before = {p: p.stat().st_mtime_ns for p in demo.rglob("*.tif")}
        for url in (str(demo), f"{demo}/<tileName>/<outputId>.tif"):
            request = BatchProcessRequest.model_validate(
                body(bbox, output={"delivery": {"path": url}, "overwrite": True})
            )
            with pytest.raises(Exception, match="catalog's folder") as error:
                service.create_process(request)
            assert getattr(error.value, "status_code", None) == 403
        assert {p: p.stat().st_mtime_ns for p in demo.rglob("*.tif")} == before
    finally:
        service.close()


# ---------------------------------------------------------------------------------- CLI


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"type": "FeatureCollection", "features": [{"geometry": {"type": "Polygon"}}, '
         '{"geometry": {"type": "Polygon", "coordinates": "x"}}]}', "feature 0 has no valid"),
        ('{"type": "FeatureCollection", "features": [{"geometry": "x"}, {"geometry": "y"}]}',
         "feature 0 has no valid"),
        ('{"type": "FeatureCollection", "features": [{"geometry": {"type": "Point", '
         '"coordinates": [0, 0]}}, {"geometry": {"type": "Point", "coordinates": [1]}}]}',
         "feature 1 has no valid"),
        ("[" * 100_000 + "]" * 100_000, "max_json_depth"),
        (b"\xff\xfe\x00garbage", "is not GeoJSON"),
        ('{"type": "FeatureCollection", "features": "abc"}', "holds no geometry"),
    ],
)  # fmt: skip
def test_cli_malformed_aoi_files_are_one_line_errors(
    tmp_path: Path, content: str | bytes, message: str
) -> None:
    from app.cli_batch import read_aoi

    path = tmp_path / "aoi.geojson"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(SystemExit, match=message):
        read_aoi(str(path))


def test_cli_aoi_crs_member_of_any_shape(tmp_path: Path) -> None:
    from app.cli_batch import read_aoi

    ring = [[0, 0], [1, 0], [1, 1], [0, 0]]
    for crs in ("EPSG:4326", {"properties": "x"}, {"properties": {"name": 4326}}, None):
        path = tmp_path / "aoi.geojson"
        path.write_text(json.dumps({"type": "Polygon", "coordinates": [ring], "crs": crs}))
        assert "properties" not in read_aoi(str(path))
    path.write_text(
        json.dumps(
            {"type": "Polygon", "coordinates": [ring], "crs": {"properties": {"name": "EPSG:3857"}}}
        )
    )
    assert read_aoi(str(path))["properties"] == {"crs": "EPSG:3857"}


def test_cli_out_into_the_catalog_is_refused_without_allow_lists(
    demo: Path, data: Path, bbox: list[float], tmp_path: Path
) -> None:
    # `terratiler batch process ... --out <catalog>` runs with check_sources=False.
    settings = Settings(
        catalog=str(demo), data_dir=data, database_url=f"sqlite:///{tmp_path / 'jobs.db'}"
    )
    service = BatchService(settings, catalog_factory(settings), check_sources=False)
    try:
        request = BatchProcessRequest.model_validate(
            body(bbox, output={"delivery": {"path": str(demo / "sub")}})
        )
        with pytest.raises(Exception, match="catalog's folder"):
            service.create_process(request)
    finally:
        service.close()


# ---------------------------------------------------------------------- createCollection


@pytest.mark.parametrize(
    ("collection", "message"),
    [
        ("../x", "letters, digits"),
        ("a/b", "letters, digits"),
        ("a" * 10_000, "letters, digits"),
        ("é", "letters, digits"),
        ("", "letters, digits"),
        ("sentinel-2-l2a", "a collection of the service's catalog"),
    ],
)
def test_create_collection_ids_are_checked(
    api: TestClient, bbox: list[float], collection: str, message: str
) -> None:
    answer = post(api, body(bbox, createCollection=collection))
    assert answer.status_code == 400, answer.text
    assert "createCollection" in answer.json()["detail"] and message in answer.json()["detail"]


def test_a_collection_id_is_never_taken_over(
    api: TestClient, service: BatchService, bbox: list[float], tmp_path: Path
) -> None:
    from app.catalog.layered import register_collection, registered_collections
    from app.db import engine_from_url
    from app.errors import ConflictError

    name = f"mine-{uuid.uuid4().hex[:8]}"
    first = post(api, body(bbox, createCollection=name))
    assert first.status_code == 201, first.text
    # A second job asking for the id while the first has not registered it yet.
    second = post(api, body(bbox, createCollection=name))
    assert second.status_code == 400, second.text
    assert first.json()["id"] in second.json()["detail"]
    # Both passed the creation checks (a race): the second to finish does not take it over.
    engine = engine_from_url(f"sqlite:///{tmp_path / 'registry.db'}")
    register_collection(engine, "results", str(tmp_path / "a"))
    register_collection(engine, "results", str(tmp_path / "a"))  # the same folder again: fine
    with pytest.raises(ConflictError, match="createCollection: 'results' already holds"):
        register_collection(engine, "results", str(tmp_path / "b"))
    assert [(r.id, r.href) for r in registered_collections(engine)] == [
        ("results", str(tmp_path / "a"))
    ]
    engine.dispose()


# --------------------------------------------------------------------------------- API


def test_every_process_route_needs_the_api_key(settings: Settings) -> None:
    keyed = settings.model_copy(update={"api_keys": ["k-1"]})
    with TestClient(create_app(keyed), raise_server_exceptions=False) as client:
        paths = client.app.openapi()["paths"]
        routes = [
            (method, path)
            for path, operations in paths.items()
            if path.startswith("/batch/process")
            for method in operations
        ]
        assert len(routes) >= 11  # create, list, get, analyse, start, stop, retry, tiles ...
        job = str(uuid.uuid4())
        for method, path in routes:
            url = path.replace("{job_id}", job).replace("{grid_id}", "1")
            answer = client.request(method.upper(), url)
            assert answer.status_code == 401, (method, path, answer.status_code)


def test_paging_and_ids_of_the_api(api: TestClient, bbox: list[float]) -> None:
    for url in (
        "/batch/process?limit=0",
        "/batch/process?limit=100000",
        "/batch/process?offset=-1",
        "/batch/process/x/tiles?limit=-1",
        "/batch/process/x/tiles?limit=1000000000000",
    ):
        assert api.get(url).status_code == 422, url
    assert api.get("/batch/process?status=../x").status_code == 400
    for job in ("..%2F..%2Fetc", "%00", "a" * 5000, "not-a-uuid"):
        for method in ("GET", "DELETE"):
            assert api.request(method, f"/batch/process/{job}").status_code == 404
        assert api.post(f"/batch/process/{job}/start").status_code == 404
    job = post(api, body(bbox)).json()["id"]
    assert api.get(f"/batch/process/{job}/tiles").status_code == 409  # not analysed
    assert api.post(f"/batch/process/{job}/retry-failed").status_code == 409
    assert api.post(f"/batch/process/{job}/stop").status_code == 409
    assert api.get(f"/batch/statistics/{job}").status_code == 404  # the other kind's routes
    assert api.delete(f"/batch/process/{job}").status_code == 204
    assert api.get(f"/batch/process/{job}").status_code == 404
    assert api.delete(f"/batch/process/{job}").status_code == 404


def test_a_features_path_too_long_is_403_not_500(api: TestClient, bbox: list[float]) -> None:
    from app.security import check_source

    long = "/tmp/" + "a" * 5000
    with pytest.raises(Exception, match="cannot be opened") as error:
        check_source(long, ["/tmp"])
    assert getattr(error.value, "status_code", None) == 403
    answer = post(api, body(bbox, input={"type": "geopackage", "features": long}))
    assert answer.status_code == 403 and "input.features" in answer.json()["detail"]


def test_a_tile_too_big_for_a_worker_is_refused_at_analysis(
    demo: Path, data: Path, bbox: list[float], tmp_path: Path
) -> None:
    import time

    from app.batch.processing.analysis import tile_memory_bytes
    from app.batch.processing.grids import tile_at

    # A median keeps every scene, a stack every date: memory grows with the time range.
    request = body(bbox)
    request["processRequest"]["outputs"] = {
        "med": {"expression": "B04", "composite": "median"},
        "st": {"expression": "B04", "composite": "stack"},
    }
    recipe = BatchProcessRequest.model_validate(request).recipe()
    tile = tile_at("1", 20.0, bbox[0], bbox[1])
    assert tile_memory_bytes(tile, recipe, 100, 50) > 10 * tile_memory_bytes(tile, recipe, 2, 2)
    settings = Settings(
        catalog=str(demo),
        data_dir=data,
        allowed_sources=[str(demo), str(data)],
        database_url=f"sqlite:///{tmp_path / 'jobs.db'}",
        batch_max_tile_memory_mb=1,
    )
    service = BatchService(settings, catalog_factory(settings))
    try:
        job = service.create_process(BatchProcessRequest.model_validate(request))
        service.analyse(job["id"], kind="process")
        for _ in range(200):
            view = service.get(job["id"], kind="process")
            if view["status"] in ("FAILED", "ANALYSIS_DONE"):
                break
            time.sleep(0.1)
        assert view["status"] == "FAILED"
        assert "batch_max_tile_memory_mb=1" in view["error"] and "timeRange" in view["error"]
    finally:
        service.close()


def test_an_unknown_job_id_is_echoed_short() -> None:
    from app.batch.store import JobStore
    from app.db import engine_from_settings
    from app.errors import NotFoundError
    from app.settings import Settings

    store = JobStore(engine_from_settings(Settings(database_url="sqlite://")))
    with pytest.raises(NotFoundError) as error:
        store.get("x" * 10_000)
    assert len(error.value.message) < 120 and "x" * 64 + "..." in error.value.message
