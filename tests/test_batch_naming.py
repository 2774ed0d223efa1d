"""Batch statistics per-feature file names and the delivered folder (issue 15 item 14).

Sentinel Hub's ``<id>.json`` (ids read independently of the service: the GeoPackage FIDs with
sqlite3), ``<identifier>.json`` on request, refused at analysis when identifiers are missing
or clash; the job folder holds only results, its bookkeeping lies in
``<output>/_batch/<job id>/`` and goes with the job.
"""

import argparse
import json
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely
from batch_jobs import WAIT, job_body, wait_for
from fastapi.testclient import TestClient

from app.batch import BatchService, BatchStatisticalRequest
from app.batch.features import FeatureTable, read_features
from app.batch.naming import NAMINGS, check_naming, feature_name, file_stem
from app.batch.results import rows_of
from app.batch.storage import JobFiles
from app.cli_batch import NAMINGS as CLI_NAMINGS
from app.cli_batch import add_batch_commands, build_request
from app.errors import BadRequestError
from app.main import create_app
from app.services import catalog_factory
from app.settings import Settings

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def demo(demo_dir: Path) -> Path:
    return demo_dir


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("naming")


@pytest.fixture(scope="module")
def batch(make_settings: Callable[..., Settings]) -> Iterator[BatchService]:
    settings = make_settings()
    service = BatchService(settings, catalog_factory(settings))
    yield service
    service.close()


def short_body(features: Any, **extra: Any) -> dict[str, Any]:
    """The tests' job request over one month (fast), with ``extra`` top-level fields."""
    body = job_body(features)
    body["aggregation"]["timeRange"] = {
        "from": "2023-06-01T00:00:00Z",
        "to": "2023-07-01T00:00:00Z",
    }
    body["aggregation"]["aggregationInterval"] = {"of": "P30D"}
    return {**body, **extra}


def run(batch: BatchService, body: dict[str, Any]) -> dict[str, Any]:
    job = batch.create(BatchStatisticalRequest.model_validate(body))
    batch.start(job["id"])
    return batch.wait(job["id"], timeout=WAIT, poll=0.2)


def first_features(demo: Path, count: int) -> dict[str, Any]:
    collection = json.loads((demo / "fields.geojson").read_text())
    return {**collection, "features": collection["features"][:count]}


def gpkg_fids_and_identifiers(path: Path) -> dict[int, str]:
    """The FIDs and identifiers of the demo GeoPackage, read with sqlite3 (not the service)."""
    with sqlite3.connect(path) as connection:
        (table,) = connection.execute(
            "SELECT table_name FROM gpkg_contents WHERE data_type = 'features'"
        ).fetchone()
        info = connection.execute(f"PRAGMA table_info('{table}')").fetchall()
        (key,) = [row[1] for row in info if row[5] == 1]
        rows = connection.execute(f'SELECT "{key}", identifier FROM "{table}"').fetchall()
    return dict(rows)


# ------------------------------------------------------------------------------- jobs


def test_id_naming_is_the_features_id_and_the_folder_holds_only_results(
    batch: BatchService, demo: Path
) -> None:
    expected = gpkg_fids_and_identifiers(demo / "fields.gpkg")
    assert min(expected) >= 1  # FIDs, not row numbers (those start at 0)
    done = run(batch, short_body(str(demo / "fields.gpkg")))
    assert done["status"] == "DONE", done
    root = Path(done["output"])
    names = sorted(p.name for p in root.iterdir())
    assert names == sorted([f"{fid}.json" for fid in expected] + ["results.parquet"])
    for fid, identifier in list(expected.items())[:5]:
        document = json.loads((root / f"{fid}.json").read_text())
        assert document["id"] == fid and document["identifier"] == identifier
    table = pq.read_table(root / "results.parquet")
    rows = Counter(table["id"].to_pylist())
    for fid, identifier in expected.items():
        document = json.loads((root / f"{fid}.json").read_text())
        assert rows[fid] == len(rows_of(fid, identifier, document.get("response") or document))
    assert sum(rows.values()) == table.num_rows > 0
    # The bookkeeping lies beside the folder, and goes with the job.
    work = root.parent / "_batch" / done["id"]
    assert work == Path(JobFiles.beside(str(root)).work)
    assert (work / "features.parquet").is_file() and any((work / "units").iterdir())
    batch.delete(done["id"])
    assert not work.exists() and (root / "results.parquet").is_file()


def test_identifier_naming(batch: BatchService, demo: Path) -> None:
    features = first_features(demo, 5)
    by_id = run(batch, short_body(features))
    by_identifier = run(batch, short_body(features, naming="identifier"))
    assert by_id["status"] == by_identifier["status"] == "DONE", (by_id, by_identifier)
    identifiers = [f["properties"]["identifier"] for f in features["features"]]
    root = Path(by_identifier["output"])
    assert sorted(p.name for p in root.iterdir()) == sorted(
        [f"{name}.json" for name in identifiers] + ["results.parquet"]
    )
    for row, identifier in enumerate(identifiers):
        named = json.loads((root / f"{identifier}.json").read_text())
        numbered = json.loads((Path(by_id["output"]) / f"{row}.json").read_text())
        assert named == numbered and named["identifier"] == identifier
    assert not (root / "_batch").exists()


@pytest.mark.parametrize(
    ("identifiers", "message"),
    [
        (None, "naming: 'identifier' needs an 'identifier' column"),
        (["a", None, "b"], "needs an identifier for every feature; features 1 have none"),
        (["a/b", "a_b", "c"], "features 0 and 1 -> 'a_b.json'"),
        (["Field", "field", "c"], "features 0 and 1 -> 'field.json'"),
    ],
)
def test_identifier_naming_refused_at_analysis(
    batch: BatchService, demo: Path, identifiers: list[str | None] | None, message: str
) -> None:
    features = first_features(demo, 3)
    for position, feature in enumerate(features["features"]):
        if identifiers is None:
            feature["properties"].pop("identifier")
        else:
            feature["properties"]["identifier"] = identifiers[position]
    failed = run(batch, short_body(features, naming="identifier"))
    assert failed["status"] == "FAILED"
    assert message in failed["error"]


def test_an_unknown_naming_is_a_validation_error() -> None:
    with pytest.raises(ValueError, match="naming"):
        BatchStatisticalRequest.model_validate(short_body({"type": "x"}, naming="row"))


# ------------------------------------------------------------------------------- units


def test_file_stem_and_names() -> None:
    assert file_stem("field-0001") == "field-0001"
    assert file_stem("../../etc/passwd") == "_.._etc_passwd"
    assert file_stem("a b/c\x00d") == "a_b_c_d"
    assert file_stem("é" * 300) is None and file_stem("...") is None and file_stem(None) is None
    assert len(file_stem("x" * 300) or "") == 100
    assert feature_name(np.int64(7), "field-7", "id") == "7"
    assert feature_name(7, "field 7", "identifier") == "field_7"


def test_check_naming_accepts_distinct_identifiers() -> None:
    table = FeatureTable(
        ids=np.arange(3), identifiers=["a", "b", "c"], wkb=[None] * 3, crs="EPSG:4326"
    )
    check_naming(table, "identifier")
    check_naming(FeatureTable(np.arange(2), None, [None] * 2, "EPSG:4326"), "id")
    with pytest.raises(BadRequestError):
        check_naming(FeatureTable(np.arange(2), None, [None] * 2, "EPSG:4326"), "identifier")


def test_ids_from_geojson_and_geoparquet_id_columns(tmp_path: Path) -> None:
    point = shapely.Point(16.1, 46.6)
    geojson = {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "properties": {"id": 40 + i}, "geometry": point.__geo_interface__}
            for i in range(3)
        ],
    }
    path = tmp_path / "f.geojson"
    path.write_text(json.dumps(geojson))
    assert read_features(str(path)).ids.tolist() == [40, 41, 42]
    # A Feature id wins over the property (GDAL's FID rule).
    for i, feature in enumerate(geojson["features"]):
        feature["id"] = 7 - i
    path.write_text(json.dumps(geojson))
    assert read_features(str(path)).ids.tolist() == [7, 6, 5]

    def parquet(ids: pa.Array) -> list[int]:
        table = pa.table({"id": ids, "geometry": [shapely.to_wkb(point)] * len(ids)})
        file = tmp_path / f"f{len(list(tmp_path.iterdir()))}.parquet"
        pq.write_table(table, file)
        return read_features(str(file)).ids.tolist()

    assert parquet(pa.array([10, 20, 30])) == [10, 20, 30]
    assert parquet(pa.array([10, 10, 30])) == [0, 1, 2]  # not unique: row numbers
    assert parquet(pa.array(["a", "b", "c"])) == [0, 1, 2]  # not integers
    assert parquet(pa.array([1, None, 3], pa.int64())) == [0, 1, 2]


def test_rest_naming_and_delete(make_settings: Callable[..., Settings], demo: Path) -> None:
    folder = Path(make_settings().data_dir).parent / "rest"
    settings = make_settings().model_copy(
        update={"data_dir": folder / "data", "database_url": f"sqlite:///{folder}/jobs.db"}
    )
    features = first_features(demo, 3)
    with TestClient(create_app(settings)) as client:
        created = client.post("/batch/statistics", json=short_body(features, naming="identifier"))
        assert created.status_code == 201, created.text
        job = created.json()
        assert job["request"]["naming"] == "identifier"
        url = f"/batch/statistics/{job['id']}"
        client.post(f"{url}/start")
        done = wait_for(lambda: client.get(url).json(), {"DONE", "PARTIAL", "FAILED"})
        assert done["status"] == "DONE", done
        root = Path(done["output"])
        work = root.parent / "_batch" / job["id"]
        assert (work / "input.geojson").is_file()  # the inline features, kept beside
        assert (root / "field-0001.json").is_file() and not (root / "_batch").exists()
        assert client.delete(url).status_code == 204
        assert client.get(url).status_code == 404
        assert not work.exists() and (root / "results.parquet").is_file()
        assert client.delete(url).status_code == 404


def test_cli_naming_option() -> None:
    parser = argparse.ArgumentParser()
    add_batch_commands(parser.add_subparsers())
    base = ["batch", "stats", "f.gpkg", "-e", "ndvi", "--time", "2023-06-01/2023-07-01"]
    assert "naming" not in build_request(parser.parse_args(base))
    args = parser.parse_args([*base, "--naming", "identifier"])
    assert build_request(args)["naming"] == "identifier"
    assert CLI_NAMINGS == NAMINGS
