"""Issue 12, items 1 and 10: batch features files are data, never indirections.

An uploaded "GeoJSON" that was really an OGR VRT (``<SrcDataSource>CSV:/etc/passwd``) made
GDAL read the server's files (the lines came back as ``invalidFeatures[].identifier``) and,
through ``/vsicurl/``, fetch loopback URLs. Features are now read in Python (json +
shapely, sqlite3, pyarrow): every indirection below must end in a 4xx / a FAILED job that
names the problem, with no byte of the target file in any answer and no request reaching
the recording server. Item 10: temporaries a killed consolidation left are gone after the
job resumes.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import uuid
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyogrio.raw
import pytest
import shapely
from batch_jobs import job_body, wait_for
from distributed import LocalCluster
from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from fastapi.testclient import TestClient
from live_server import live_server

import app.batch.features as features_module
from app.batch.features import read_features
from app.batch.states import JobState
from app.batch.storage import JobFiles
from app.errors import (
    BadRequestError,
    TerratilerError,
    TooLargeError,
    UpstreamError,
    UpstreamTimeoutError,
)
from app.main import create_app
from app.settings import Settings

pytestmark = pytest.mark.timeout(300)

SECRET = "TOPSECRET-4f1c9e"  # a line of the file attacks try to read


# ---------------------------------------------------------------------------- fixtures


class Recorder:
    """A loopback HTTP server that records every path asked of it."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.lock = threading.Lock()
        self.url = ""
        self.geojson = b""

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/healthz")
        def healthz() -> dict:
            return {"status": "ok"}

        @app.get("/public/redirect.geojson")
        def redirect(request: Request) -> RedirectResponse:
            self.record(request)
            return RedirectResponse(f"{self.url}/secret/fields.geojson", status_code=302)

        @app.get("/public/fields.geojson")
        def fields(request: Request) -> Response:
            self.record(request)
            return Response(self.geojson, media_type="application/geo+json")

        @app.get("/public/drip.geojson")
        def drip(request: Request) -> StreamingResponse:
            self.record(request)

            async def chunks() -> AsyncIterator[bytes]:
                for _ in range(40):  # 8 s of whitespace, each read well within a 1 s timeout
                    yield b" "
                    await asyncio.sleep(0.2)
                yield self.geojson

            return StreamingResponse(chunks(), media_type="application/geo+json")

        @app.get("/{path:path}")
        def anything(request: Request, path: str) -> Response:
            self.record(request)
            return Response(f"id,identifier\n1,{SECRET}\n", media_type="text/csv")

        return app

    def record(self, request: Request) -> None:
        # A ranged request is the service's redirect check (app.redirects), not a download.
        ranged = " (range)" if "range" in request.headers else ""
        with self.lock:
            self.paths.append(request.url.path + ranged)

    def take(self) -> list[str]:
        with self.lock:
            paths, self.paths = self.paths, []
        return paths


@pytest.fixture(scope="module")
def recorder(demo_dir: Path) -> Iterator[Recorder]:
    server = Recorder()
    server.geojson = (demo_dir / "fields.geojson").read_bytes()
    with live_server(server.app()) as url:
        server.url = url
        yield server


@pytest.fixture
def quiet(recorder: Recorder) -> Iterator[Recorder]:
    """The recorder, asserted untouched by the test."""
    recorder.take()
    yield recorder
    assert recorder.take() == []


@pytest.fixture(scope="module")
def secret_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CSV outside every allowed folder, as /etc/passwd is."""
    path = tmp_path_factory.mktemp("secret") / "secret.csv"
    path.write_text(f"id,identifier\n1,{SECRET}\n2,{SECRET}-2\n")
    return path


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0"
    ) as local:
        yield local


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An allowed folder for features given by path."""
    return tmp_path_factory.mktemp("inputs")


@pytest.fixture(scope="module")
def client(
    demo_dir: Path,
    inputs: Path,
    recorder: Recorder,
    cluster: LocalCluster,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[TestClient]:
    data = tmp_path_factory.mktemp("data")
    settings = Settings(
        catalog=str(demo_dir),
        data_dir=data,
        dask_scheduler=cluster.scheduler_address,
        allowed_sources=[str(demo_dir), str(inputs), str(data), f"{recorder.url}/public/"],
        # The recorder is on loopback: let URLs reach it, so only the fix can stop them.
        allow_private_sources=True,
    ).model_copy(update={"batch_lease_seconds": 3.0})
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def analysed(client: TestClient, body: dict, upload: tuple[str, bytes] | None = None) -> dict:
    """Create a job (multipart when uploading) and analyse it; the final view."""
    if upload is None:
        created = client.post("/batch/statistics", json=body)
    else:
        del body["input"]["features"]
        created = client.post(
            "/batch/statistics",
            data={"request": json.dumps(body)},
            files={"features": (upload[0], upload[1], "application/octet-stream")},
        )
    assert created.status_code == 201, created.text
    url = f"/batch/statistics/{created.json()['id']}"
    assert client.post(f"{url}/analyse").status_code == 202
    return wait_for(lambda: client.get(url).json(), {"ANALYSIS_DONE", "FAILED"})


# ------------------------------------------------------------------ indirections, payloads


def vrt(source: str) -> bytes:
    """An OGR VRT over ``source``; its layer is the source's (the CSV driver's: the stem).

    Points made of the ``id`` column: each row becomes an (invalid, non-polygon) feature
    whose ``identifier`` the job used to list in ``invalidFeatures``.
    """
    layer = Path(source.split(":")[-1]).stem
    return (
        f'<OGRVRTDataSource><OGRVRTLayer name="{layer}"><SrcDataSource>{source}'
        "</SrcDataSource><GeometryType>wkbPoint</GeometryType><GeometryField "
        'encoding="PointFromColumns" x="id" y="id"/></OGRVRTLayer></OGRVRTDataSource>'
    ).encode()


def payloads(secret: Path, recorder: Recorder) -> dict[str, bytes]:
    remote = f"{recorder.url}/leak.tif"  # .tif passes CPL_VSIL_CURL_ALLOWED_EXTENSIONS
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("a.vrt", vrt(f"CSV:{secret}").decode())
    return {
        "vrt-csv": vrt(f"CSV:{secret}"),
        "vrt-vsicurl": vrt(f"CSV:/vsicurl/{remote}"),
        "vrt-bare-path": vrt(str(secret)),
        "vrt-with-xml-prologue": b'<?xml version="1.0"?>\n' + vrt(f"CSV:{secret}"),
        "connection-string-csv": f"CSV:{secret}".encode(),
        "connection-string-vsicurl": f"/vsicurl/{remote}".encode(),
        "connection-string-geojson-url": remote.encode(),
        "vsizip-path": f"/vsizip/{secret.parent}/a.zip/a.vrt".encode(),
        "zip-archive": archive.getvalue(),
        "sqlite-vrt-text": b"SQLite format 3\x00" + vrt(f"CSV:{secret}"),
        "parquet-magic-vrt": b"PAR1" + vrt(f"CSV:{secret}"),
    }


NAMES = ["fields.geojson", "fields.json", "fields.gpkg", "fields.parquet", None]


def assert_refused_without_leak(action: Any) -> str:
    with pytest.raises(TerratilerError) as raised:
        action()
    assert 400 <= raised.value.status_code < 500, raised.value
    assert SECRET not in raised.value.message
    return raised.value.message


@pytest.mark.parametrize("name", NAMES)
def test_indirections_in_uploaded_bytes_are_refused(name, secret_file, quiet, tmp_path) -> None:
    for kind, payload in payloads(secret_file, quiet).items():
        message = assert_refused_without_leak(lambda p=payload: read_features(p, name=name))
        assert message.startswith("input.features: "), (kind, message)


@pytest.mark.parametrize("name", [n for n in NAMES if n])
def test_indirections_in_files_given_by_path_are_refused(name, secret_file, quiet, tmp_path):
    for kind, payload in payloads(secret_file, quiet).items():
        path = tmp_path / kind / name
        path.parent.mkdir()
        path.write_bytes(payload)
        assert_refused_without_leak(lambda p=path: read_features(str(p)))


def test_refusals_name_the_problem(secret_file, quiet) -> None:
    attack = vrt(f"CSV:{secret_file}")
    for name, expected in [
        ("a.geojson", "input.features: not GeoJSON (not valid JSON)"),
        ("a.json", "input.features: not GeoJSON (not valid JSON)"),
        ("a.gpkg", "input.features: not a valid GeoPackage (SQLite error)"),
        ("a.parquet", "input.features: not a GeoParquet file"),
        (
            None,
            "input.features: not a GeoPackage (.gpkg), GeoJSON (.geojson) or GeoParquet (.parquet)",
        ),
    ]:
        with pytest.raises(BadRequestError) as raised:
            read_features(attack, name=name)
        assert raised.value.message == expected


def test_the_reported_attack_fails_the_job_and_echoes_nothing(client, secret_file, quiet):
    for source in (f"CSV:{secret_file}", "CSV:/etc/passwd", f"CSV:/vsicurl/{quiet.url}/leak.tif"):
        view = analysed(client, job_body(None), upload=("fields.geojson", vrt(source)))
        assert view["status"] == "FAILED", view
        assert view["error"] == "input.features: not GeoJSON (not valid JSON)"
        text = json.dumps(view)
        assert SECRET not in text and "root:" not in text
        assert "invalidFeatures" not in view or view["invalidFeatures"] == []


# ----------------------------------------------------------------------- GeoJSON references


def collection(**extra: Any) -> dict:
    square = {"type": "Polygon", "coordinates": [[[16, 46], [16.01, 46], [16.01, 46.01], [16, 46]]]}
    features = [{"type": "Feature", "properties": {"identifier": "a"}, "geometry": square}]
    return {"type": "FeatureCollection", "features": features, **extra}


def test_geojson_references_are_never_followed(quiet) -> None:
    link = {"type": "link", "properties": {"href": f"{quiet.url}/crs.wkt", "type": "ogcwkt"}}
    with pytest.raises(BadRequestError) as raised:
        read_features(json.dumps(collection(crs=link)).encode(), name="a.geojson")
    assert raised.value.message == (
        "input.features: a GeoJSON 'crs' must be of type 'name' with an EPSG code "
        "(linked CRSs are not followed); or leave it out for WGS84"
    )
    for name in (f"/vsicurl/{quiet.url}/crs.wkt", "+init=epsg:4326", f"{quiet.url}/crs"):
        crs = {"type": "name", "properties": {"name": name}}
        with pytest.raises(BadRequestError, match="name must be an EPSG code"):
            read_features(json.dumps(collection(crs=crs)).encode(), name="a.geojson")

    # A "$ref" anywhere is only data: the geometry it stands for is missing.
    document = collection(**{"$ref": f"{quiet.url}/all.geojson"})
    document["features"].append(
        {"type": "Feature", "properties": {}, "geometry": {"$ref": f"{quiet.url}/g.json"}}
    )
    table = read_features(json.dumps(document).encode(), name="a.geojson")
    assert len(table) == 2 and table.wkb[1] is None and table.crs == "EPSG:4326"
    assert shapely.from_wkb(table.wkb[0]).bounds == (16.0, 46.0, 16.01, 46.01)

    crs84 = {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC::CRS84"}}
    assert read_features(json.dumps(collection(crs=crs84)).encode(), name="a.json").crs == (
        "EPSG:4326"
    )
    named = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32633"}}
    assert read_features(json.dumps(collection(crs=named)).encode(), name="a.json").crs == (
        "EPSG:32633"
    )


def test_deeply_nested_geojson_is_a_400(quiet) -> None:
    with pytest.raises(BadRequestError, match="not GeoJSON"):
        read_features(b"[" * 100_000 + b"]" * 100_000, name="a.geojson")


def test_geojson_reads_as_gdal_did(demo_dir: Path) -> None:
    table = read_features(str(demo_dir / "fields.geojson"))
    meta, fids, wkbs, columns = pyogrio.raw.read(
        demo_dir / "fields.geojson", columns=["identifier"], return_fids=True
    )
    assert table.crs == meta["crs"] == "EPSG:4326"
    assert table.ids.tolist() == fids.tolist()
    assert table.identifiers == columns[0].tolist()
    assert shapely.equals_exact(shapely.from_wkb(table.wkb), shapely.from_wkb(wkbs)).all()
    # Integer feature ids are the ids (GDAL's rule), else row numbers.
    document = json.loads((demo_dir / "fields.geojson").read_text())
    for n, feature in enumerate(document["features"]):
        feature["id"] = 100 + n
    assert read_features(json.dumps(document).encode(), name="x.geojson").ids[:2].tolist() == [
        100,
        101,
    ]


# ------------------------------------------------------------------------------ GeoPackage


def gpkg_copy(demo_dir: Path, folder: Path, sql: list[str], writable: bool = False) -> Path:
    path = folder / f"{uuid.uuid4().hex[:8]}.gpkg"
    shutil.copy(demo_dir / "fields.gpkg", path)
    with sqlite3.connect(path) as connection:
        if writable:
            connection.execute("PRAGMA writable_schema = ON")
        for statement in sql:
            connection.execute(statement)
    connection.close()
    return path


def register(layer: str) -> list[str]:
    return [
        f"INSERT INTO gpkg_contents (table_name, data_type, identifier, srs_id) "
        f"VALUES ('{layer}', 'features', '{layer}', 32633)",
        f"INSERT INTO gpkg_geometry_columns VALUES ('{layer}', 'geom', 'POLYGON', 32633, 0, 0)",
    ]


def test_geopackage_reads_as_gdal_did(demo_dir: Path) -> None:
    table = read_features(str(demo_dir / "fields.gpkg"))
    meta, fids, wkbs, columns = pyogrio.raw.read(
        demo_dir / "fields.gpkg", columns=["identifier"], return_fids=True
    )
    assert table.crs == meta["crs"] == "EPSG:32633"
    assert table.ids.tolist() == fids.tolist()
    assert table.identifiers == columns[0].tolist()
    assert table.wkb == [bytes(w) for w in wkbs]
    uploaded = read_features((demo_dir / "fields.gpkg").read_bytes(), name="upload.gpkg")
    assert uploaded.wkb == table.wkb and uploaded.ids.tolist() == table.ids.tolist()


def test_geopackage_views_virtual_tables_and_crs_files_are_refused(
    demo_dir: Path, secret_file: Path, tmp_path: Path, quiet
) -> None:
    # A view may call what SQLite or GDAL registers (gdal_get_pixel_value opens a dataset).
    view = gpkg_copy(
        demo_dir,
        tmp_path,
        ["CREATE VIEW v AS SELECT fid, geom, 'x' AS identifier FROM fields", *register("v")],
    )
    with pytest.raises(BadRequestError) as raised:
        read_features(str(view), layer="v")
    assert raised.value.message == (
        "input.features: the GeoPackage layer is not a table (views are not read)"
    )
    # A VirtualOGR table opens whatever file its declaration names.
    virtual = gpkg_copy(
        demo_dir,
        tmp_path,
        [
            "INSERT INTO sqlite_master (type, name, tbl_name, rootpage, sql) VALUES ('table', "
            f"'evil', 'evil', 0, 'CREATE VIRTUAL TABLE evil USING VirtualOGR(''{secret_file}'')')",
            *register("evil"),
        ],
        writable=True,
    )
    message = assert_refused_without_leak(lambda: read_features(str(virtual), layer="evil"))
    assert message == (
        "input.features: the GeoPackage layer is a virtual table (not read: it could "
        "reference other files)"
    )
    assert read_features(str(virtual)).identifiers[0] == "field-0001"  # the first layer
    # A CRS definition that names files (grids, init files) is refused, not resolved.
    grids = gpkg_copy(
        demo_dir,
        tmp_path,
        [
            "INSERT INTO gpkg_spatial_ref_sys VALUES ('x', 999, 'LOCAL', 1, "
            f"'+proj=longlat +nadgrids={secret_file}', NULL)",
            "UPDATE gpkg_geometry_columns SET srs_id = 999",
        ],
    )
    with pytest.raises(BadRequestError, match="without grid or init files"):
        read_features(str(grids))
    # Layer names are compared, never spliced into SQL.
    with pytest.raises(BadRequestError, match="has no features layer"):
        read_features(str(demo_dir / "fields.gpkg"), layer='fields" UNION SELECT 1, 2, 3 --')
    # An SQLite database that is not a GeoPackage (the job store, say) is not read.
    plain = tmp_path / "jobs.gpkg"
    with sqlite3.connect(plain) as connection:
        connection.execute("CREATE TABLE jobs (identifier TEXT)")
        connection.execute(f"INSERT INTO jobs VALUES ('{SECRET}')")
    connection.close()
    message = assert_refused_without_leak(lambda: read_features(str(plain)))
    assert message == "input.features: not a GeoPackage (no gpkg_contents / gpkg_geometry_columns)"


# -------------------------------------------------------------------------------- Parquet


def test_parquet_indirections_and_bad_columns_are_400(tmp_path: Path, secret_file, quiet) -> None:
    geo = {"primary_column": "geometry", "columns": {"geometry": {"encoding": "WKB"}}}

    def write(table: pa.Table, meta: dict) -> Path:
        path = tmp_path / f"{uuid.uuid4().hex[:8]}.parquet"
        pq.write_table(table.replace_schema_metadata({b"geo": json.dumps(meta).encode()}), path)
        return path

    # An integer "geometry" was bytes(n): n zero bytes, a MemoryError (500) for a large n.
    huge = write(pa.table({"geometry": pa.array([10**15], pa.int64())}), geo)
    with pytest.raises(BadRequestError) as raised:
        read_features(str(huge))
    assert raised.value.message == (
        "input.features: the GeoParquet geometry column is not binary WKB"
    )

    point = shapely.to_wkb(shapely.Point(16, 46))
    for crs in ("+init=epsg:4326", f"+proj=longlat +nadgrids={secret_file}", f"{quiet.url}/crs"):
        meta = {**geo, "columns": {"geometry": {"encoding": "WKB", "crs": crs}}}
        path = write(pa.table({"geometry": pa.array([point], pa.binary())}), meta)
        with pytest.raises(BadRequestError, match="without grid or init files"):
            read_features(str(path))

    # Column chunks "stored" in another file (Parquet's file_path) are refused.
    good = write(pa.table({"geometry": pa.array([point], pa.binary())}), geo)
    metadata = pq.read_metadata(good)
    metadata.set_file_path(str(secret_file))
    external = tmp_path / "external.parquet"
    metadata.write_metadata_file(str(external))
    assert pq.read_metadata(external).row_group(0).column(0).file_path == str(secret_file)
    message = assert_refused_without_leak(lambda: read_features(str(external)))
    assert message == "input.features: the Parquet file references column chunks in other files"


# ------------------------------------------------------------------------ the service, hrefs


def test_an_uploaded_file_cannot_be_reused_by_path(client, demo_dir) -> None:
    upload = ("fields.geojson", (demo_dir / "fields.geojson").read_bytes())
    body = job_body(None)
    del body["input"]["features"]
    created = client.post(
        "/batch/statistics",
        data={"request": json.dumps(body)},
        files={"features": upload},
    )
    assert created.status_code == 201, created.text
    stored = created.json()["request"]["input"]["features"]["href"]
    job_id = created.json()["id"]
    assert stored.endswith(f"/_batch/{job_id}/input.geojson") and Path(stored).is_file()
    results = Path(stored).parent.parent.parent / job_id / "results.parquet"
    for href in (stored, str(results)):
        response = client.post("/batch/statistics", json=job_body(href))
        assert response.status_code == 403, response.text
        assert response.json()["detail"] == (
            "input.features: files of batch jobs (uploads, staged features, results under "
            "batch_outputs) are not accepted as inputs; upload the file instead"
        )


def test_vsi_and_connection_string_hrefs_are_403(client, inputs, quiet) -> None:
    for href in (
        f"/vsizip/{inputs}/a.zip/a.geojson",
        f"/vsicurl/{quiet.url}/public/fields.geojson",
        f"CSV:{inputs}/a.csv",
        f"GeoJSON:{quiet.url}/public/fields.geojson",
        f"file://{inputs}/a.geojson",
    ):
        response = client.post("/batch/statistics", json=job_body(href))
        assert response.status_code == 403, (href, response.text)
        assert response.json()["detail"].startswith("input.features: "), href


def test_http_features_are_fetched_once_without_redirects(client, recorder) -> None:
    recorder.take()
    good = analysed(client, job_body(f"{recorder.url}/public/fields.geojson"))
    assert good["status"] == "ANALYSIS_DONE", good
    assert good["analysis"]["featureCount"] == len(json.loads(recorder.geojson)["features"])
    # The redirect check at creation asks for one byte; the file is downloaded once.
    assert recorder.take() == ["/public/fields.geojson (range)", "/public/fields.geojson"]

    # A redirect out of the allowed prefix is refused when the job is created.
    response = client.post(
        "/batch/statistics", json=job_body(f"{recorder.url}/public/redirect.geojson")
    )
    assert response.status_code == 403, response.text
    assert response.json()["detail"].startswith(
        f"input.features: {recorder.url}/public/redirect.geojson redirects to"
    )
    assert recorder.take() == ["/public/redirect.geojson (range)"]  # never /secret/...
    # A redirect met when the file is read (after the check) is not followed either.
    with pytest.raises(UpstreamError) as raised:
        read_features(f"{recorder.url}/public/redirect.geojson")
    assert raised.value.message == (
        f"input.features: '{recorder.url}/public/redirect.geojson' answered with a redirect "
        "(HTTP 302); redirects are not followed: give the final URL"
    )
    assert recorder.take() == ["/public/redirect.geojson"]


@pytest.fixture(scope="module")
def small_client(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A service whose uploads and GeoJSON may be 1 MB (no job runs: no Dask needed)."""
    settings = Settings(
        catalog=str(demo_dir),
        data_dir=tmp_path_factory.mktemp("small"),
        batch_max_upload_mb=1,
        batch_max_geojson_mb=1,
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_bodies_over_the_upload_limit_are_refused_before_they_are_read(small_client) -> None:
    big = b"x" * (3 * 1024 * 1024)
    # Refused on its Content-Length: not even parsed (the form lacks `request`).
    response = small_client.post("/batch/statistics", files={"features": ("f.geojson", big)})
    assert response.status_code == 413
    declared = int(response.request.headers["content-length"])
    assert response.json()["detail"] == (
        f"body: {declared} bytes, over the limit batch_max_upload_mb=1"
    )
    # A JSON body (inline features) has the GeoJSON bound, 1 MB here as well.
    response = small_client.post(
        "/batch/statistics", content=big, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["detail"] == (
        f"body: {len(big)} bytes, over the limit batch_max_geojson_mb=1"
    )
    # A file just over the limit: the body carrying it is over it too.
    body = job_body(None)
    del body["input"]["features"]
    file = b"x" * (1024 * 1024 + 1)
    response = small_client.post(
        "/batch/statistics",
        data={"request": json.dumps(body)},
        files={"features": ("f.geojson", file)},
    )
    assert response.status_code == 413
    declared = int(response.request.headers["content-length"])
    assert response.json()["detail"] == (
        f"body: {declared} bytes, over the limit batch_max_upload_mb=1"
    )


def test_http_features_are_bounded_in_bytes_and_total_time(recorder) -> None:
    recorder.take()
    with pytest.raises(TooLargeError) as raised:
        read_features(f"{recorder.url}/public/fields.geojson", max_bytes=1000)
    assert raised.value.message == (
        "input.features: over 1000 bytes, the limit batch_max_upload_mb"
    )
    # Every read answers within the timeout, the whole transfer does not.
    with pytest.raises(UpstreamTimeoutError) as timed_out:
        read_features(f"{recorder.url}/public/drip.geojson", timeout=1.0)
    assert timed_out.value.message == (
        f"input.features: '{recorder.url}/public/drip.geojson' did not send the file within "
        "batch_features_timeout=1 s"
    )
    assert recorder.take() == ["/public/fields.geojson", "/public/drip.geojson"]


def test_feature_ids_beyond_int64_fall_back_to_row_numbers() -> None:
    document = collection()
    document["features"] = [dict(document["features"][0], id=10**30 + n) for n in range(2)]
    table = read_features(json.dumps(document).encode(), name="a.geojson")
    assert table.ids.tolist() == [0, 1]


def test_gdal_skips_ogr_indirection_drivers(tmp_path: Path, secret_file: Path) -> None:
    # Defence in depth: even a library call on GDAL (pyogrio) can no longer follow an OGR
    # VRT or read a text file as CSV once the service has configured GDAL.
    document = tmp_path / "fields.geojson"
    document.write_bytes(vrt(f"CSV:{secret_file}"))
    script = (
        "import json, sys\n"
        "from app.main import create_app\n"
        "from app.settings import Settings\n"
        "create_app(Settings(catalog=sys.argv[1], data_dir=sys.argv[2]))\n"
        "import pyogrio\n"
        "results = {}\n"
        "for path in sys.argv[3:]:\n"
        "    try:\n"
        "        pyogrio.read_info(path); results[path] = 'read'\n"
        "    except Exception as error:\n"
        "        results[path] = type(error).__name__\n"
        "print(json.dumps(results))\n"
    )
    # A fresh process without this one's GDAL options: creating the app must set them.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GDAL_", "CPL_", "VSI_"))}
    service = [str(tmp_path), str(tmp_path / "data")]
    completed = subprocess.run(
        [sys.executable, "-c", script, *service, str(document), str(secret_file)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=Path(__file__).parent.parent,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    results = json.loads(completed.stdout.strip().splitlines()[-1])
    assert results == {str(document): "DataSourceError", str(secret_file): "DataSourceError"}


# ------------------------------------------------------------- item 10: stale temporaries


def test_resume_removes_temporaries_a_killed_consolidation_left(client, demo_dir) -> None:
    document = json.loads((demo_dir / "fields.geojson").read_text())
    document["features"] = document["features"][:3]
    created = client.post("/batch/statistics", json=job_body(document))
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    url = f"/batch/statistics/{job_id}"
    client.post(f"{url}/start")
    done = wait_for(lambda: client.get(url).json(), {"DONE", "PARTIAL", "FAILED"})
    assert done["status"] == "DONE", done
    root = Path(done["output"])
    expected = pq.read_table(root / "results.parquet")
    assert expected.num_rows > 0

    # What a kill -9 during consolidation leaves: the table half-written under its
    # temporary name and no results.parquet; also a feature's and a unit's temporaries.
    (root / "results.parquet").unlink()
    stale = [
        root / f"results.parquet.tmp-{uuid.uuid4().hex}",
        root / f"0.json.tmp-{uuid.uuid4().hex}",
        Path(JobFiles.beside(str(root)).parts) / f"0.parquet.tmp-{uuid.uuid4().hex}",
        Path(JobFiles.beside(str(root)).units) / f"0.json.tmp-{uuid.uuid4().hex}",
    ]
    for path in stale:
        path.write_bytes(b"PAR1 half written")
    kept = root / "notes.tmp-mine"  # not a name Storage writes: left alone
    kept.write_text("x")
    service = client.app.state.services.batch
    # The job as the killed replica left it: PROCESSING, its lease silent.
    assert service.store.set_state(
        job_id,
        JobState.PROCESSING,
        expect={JobState.DONE},
        owner="elsewhere/1/dead",
        heartbeat=0.0,
        finished_at=None,
    )
    resumed = wait_for(
        lambda: (
            client.get(url).json() if (root / "results.parquet").exists() else {"status": "WAITING"}
        ),
        {"DONE", "PARTIAL", "FAILED"},
    )
    assert resumed["status"] == "DONE", resumed
    assert [p for p in stale if p.exists()] == []
    work = Path(JobFiles.beside(str(root)).work)
    left = [*root.rglob("*.tmp-*"), *work.rglob("*.tmp-*")]
    assert sorted(p.name for p in left) == ["notes.tmp-mine"]
    table = pq.read_table(root / "results.parquet")
    assert table.equals(expected)
    assert np.asarray(table["id"]).tolist() == np.asarray(expected["id"]).tolist()


@pytest.fixture(scope="module")
def geojson_client(
    demo_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    """A service taking 8 MB uploads but only 1 MB of GeoJSON (no job runs)."""
    settings = Settings(
        catalog=str(demo_dir),
        data_dir=tmp_path_factory.mktemp("geojson"),
        batch_max_upload_mb=8,
        batch_max_geojson_mb=1,
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _big_collection(demo_dir: Path, size: int) -> dict:
    """The demo's fields, repeated until their GeoJSON is over ``size`` bytes."""
    fields = json.loads((demo_dir / "fields.geojson").read_text())
    one = len(json.dumps(fields["features"][0]))
    fields["features"] = (fields["features"] * (size // one + 1))[: size // one + 1]
    return fields


def test_geojson_is_bounded_apart_from_uploads(geojson_client, demo_dir) -> None:
    # GeoJSON is parsed whole (~15x its size in memory): 2 MB of it inline in a JSON body
    # is refused although uploads may be 8 MB (a multipart form field is at most 1 MB).
    body = job_body(_big_collection(demo_dir, 2 * 1024 * 1024))
    response = geojson_client.post("/batch/statistics", json=body)
    assert response.status_code == 413, response.text
    declared = int(response.request.headers["content-length"])
    assert response.json()["detail"] == (
        f"body: {declared} bytes, over the limit batch_max_geojson_mb=1"
    )
    # Sent chunked (no Content-Length): refused as it streams, the same bound.
    chunks = iter([json.dumps(body).encode()[i : i + 65536] for i in range(0, declared, 65536)])
    response = geojson_client.post(
        "/batch/statistics", content=chunks, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413, response.text
    assert response.json()["detail"] == (
        f"body: more than {1024 * 1024} bytes, over the limit batch_max_geojson_mb=1"
    )
    response = geojson_client.post(
        "/batch/statistics",
        data={"request": json.dumps(body)},
        files={"features": ("f.gpkg", (demo_dir / "fields.gpkg").read_bytes())},
    )
    assert response.status_code == 400, response.text
    assert response.json()["detail"] == "Part exceeded maximum size of 1024KB."
    # Within the limit, the same request is taken.
    small = job_body(json.loads((demo_dir / "fields.geojson").read_text()))
    assert geojson_client.post("/batch/statistics", json=small).status_code == 201


def test_geojson_files_are_bounded_before_they_are_parsed(demo_dir, monkeypatch) -> None:
    data = json.dumps(_big_collection(demo_dir, 2 * 1024 * 1024)).encode()
    parsed: list[int] = []
    monkeypatch.setattr(features_module, "_read_geojson", lambda *a, **k: parsed.append(1) or None)
    with pytest.raises(TooLargeError) as raised:
        read_features(data, name="f.geojson", max_geojson_bytes=1024 * 1024)
    assert raised.value.message.startswith(f"input.features: {len(data)} bytes of GeoJSON")
    assert "batch_max_geojson_mb=1" in raised.value.message
    assert parsed == []
    # GeoPackage and GeoParquet are not parsed whole: the GeoJSON bound does not apply.
    gpkg = (demo_dir / "fields.gpkg").read_bytes()
    table = read_features(gpkg, name="f.gpkg", max_geojson_bytes=16)
    assert len(table) > 0
