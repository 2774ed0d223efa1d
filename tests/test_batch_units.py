"""Batch jobs, piece by piece (no Dask): states, store, readers, units, files, results rows."""

import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely
from pydantic import ValidationError

from app.batch.config import BatchConfig
from app.batch.features import detect_format, read_features
from app.batch.models import BatchStatisticalRequest
from app.batch.results import feature_document, merge_part, result_schema, rows_of
from app.batch.states import ACTIONS, Action, JobState
from app.batch.storage import JobFiles, Storage
from app.batch.store import JobStore
from app.batch.units import plan_units, read_unit, stage_features
from app.batch.worker import outcome
from app.db import engine_from_url
from app.errors import BadRequestError, ConflictError, TooLargeError
from app.settings import Settings, default_settings
from app.stats.models import StatisticalRequest
from app.stats.plan import make_plan

REQUEST = {
    "input": {"features": "/x/fields.gpkg", "data": [{"type": "sentinel-2-l2a"}]},
    "aggregation": {
        "timeRange": {"from": "2023-04-01", "to": "2023-05-01"},
        "aggregationInterval": {"of": "P1D"},
        "outputs": {"ndvi": {"expression": "(nir-red)/(nir+red)"}},
    },
    "calculations": {
        "default": {
            "statistics": {"default": {"percentiles": {"k": [50]}}},
            "histograms": {"default": {"nBins": 2, "lowEdge": -1, "highEdge": 1}},
        }
    },
}


# ------------------------------------------------------------------------------ states


def test_actions_table_follows_the_state_machine():
    assert ACTIONS[Action.ANALYSE] == {JobState.CREATED}
    assert ACTIONS[Action.STOP] == {JobState.PROCESSING}
    assert JobState.STOPPED in ACTIONS[Action.START]
    assert ACTIONS[Action.RETRY_FAILED] == {JobState.PARTIAL, JobState.FAILED}
    for final in (JobState.DONE, JobState.PARTIAL, JobState.FAILED):
        assert final not in ACTIONS[Action.START]


# ------------------------------------------------------------------------------ models


def test_request_model_takes_features_and_output_not_bounds():
    model = BatchStatisticalRequest.model_validate(
        {**REQUEST, "output": {"s3": {"url": "s3://bucket/out"}}}
    )
    assert model.input.features.href == "/x/fields.gpkg"
    assert model.output == "s3://bucket/out"
    body = model.statistics_request()
    assert "features" not in body["input"] and "output" not in body
    StatisticalRequest.model_validate(body)

    s3 = dict(REQUEST, input={**REQUEST["input"], "features": {"s3": {"url": "s3://b/f.gpkg"}}})
    assert BatchStatisticalRequest.model_validate(s3).input.features.href == "s3://b/f.gpkg"

    bounded = {**REQUEST, "input": {**REQUEST["input"], "bounds": {"bbox": [0, 0, 1, 1]}}}
    with pytest.raises(ValidationError, match="input.bounds is not used"):
        BatchStatisticalRequest.model_validate(bounded)
    not_fc = {**REQUEST, "input": {**REQUEST["input"], "features": {"type": "Feature"}}}
    with pytest.raises(ValidationError, match="FeatureCollection"):
        BatchStatisticalRequest.model_validate(not_fc)


def test_config_reads_the_environment_then_defaults(monkeypatch):
    monkeypatch.setenv("TERRATILER_BATCH_UNIT_FEATURES", "7")
    monkeypatch.setenv("TERRATILER_BATCH_OUTPUTS", "s3://a/b, /data/out")
    config = BatchConfig.from_settings(Settings(data_dir=Path("/tmp/somewhere")))
    assert config.batch_unit_features == 7
    assert config.output_prefixes == ["s3://a/b", "/data/out"]
    assert config.batch_workers == 2
    # Jobs naming no output write under the first allowed prefix (not in the data folder).
    assert config.default_output == "s3://a/b"
    assert (
        BatchConfig.from_settings(Settings(data_dir=Path("/x"), batch_outputs=[])).default_output
        == "/x/batch"
    )
    assert BatchConfig.from_settings(Settings(batch_unit_features=3)).batch_unit_features == 3


# ---------------------------------------------------------------------------- features


def test_read_features_of_every_format(demo_dir, tmp_path):
    geojson = read_features(str(demo_dir / "fields.geojson"))
    gpkg = read_features(str(demo_dir / "fields.gpkg"))
    assert len(geojson) == len(gpkg) > 10
    assert geojson.crs == "EPSG:4326" and gpkg.crs == "EPSG:32633"
    assert list(geojson.ids[:3]) == [0, 1, 2] and list(gpkg.ids[:3]) == [1, 2, 3]
    assert geojson.identifiers[0] == gpkg.identifiers[0] == "field-0001"

    uploaded = read_features((demo_dir / "fields.gpkg").read_bytes(), name="upload")
    assert uploaded.crs == "EPSG:32633" and len(uploaded) == len(gpkg)

    # GeoParquet (WKB, CRS as PROJJSON in the "geo" metadata), no identifier column.
    from pyproj import CRS

    geo = {
        "version": "1.0.0",
        "primary_column": "geometry",
        "columns": {"geometry": {"encoding": "WKB", "crs": CRS.from_epsg(32633).to_json_dict()}},
    }
    table = pa.table({"geometry": pa.array(gpkg.wkb, pa.binary())}).replace_schema_metadata(
        {b"geo": json.dumps(geo).encode()}
    )
    pq.write_table(table, tmp_path / "f.parquet")
    parquet = read_features(str(tmp_path / "f.parquet"))
    assert parquet.crs == "EPSG:32633" and parquet.identifiers is None
    assert parquet.wkb == gpkg.wkb

    with pytest.raises(TooLargeError, match="batch_max_features=3"):
        read_features(str(demo_dir / "fields.gpkg"), max_features=3)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(BadRequestError, match="not a GeoPackage"):
        read_features(str(tmp_path / "notes.txt"))
    with pytest.raises(BadRequestError, match="does not exist"):
        read_features(str(tmp_path / "missing.gpkg"))
    assert detect_format(None, b"SQLite format 3\x00...") == "gpkg"
    assert detect_format(None, b"PAR1") == "parquet"
    assert detect_format("x?download=1", b'  {"type"') == "geojson"


# ------------------------------------------------------------------------------- units


def test_units_are_compact_and_invalid_features_go_last(demo_dir, tmp_path):
    features = read_features(str(demo_dir / "fields.geojson"))
    count = len(features)
    features.wkb[3] = None
    features.wkb[5] = shapely.to_wkb(shapely.Point(16.1, 46.65))
    features.wkb[7] = shapely.to_wkb(shapely.Polygon())
    plan = plan_units(features, max_unit=10, min_units=4, max_vertices=None)
    assert sorted(plan.order.tolist()) == list(range(count))
    assert set(plan.order[-3:].tolist()) == {3, 5, 7}
    assert "no geometry" in plan.invalid[3] and "Point" in plan.invalid[5]
    assert "empty" in plan.invalid[7]
    assert plan.unit_size == 10 and sum(plan.sizes()) == count
    assert plan.bbox is not None and 16.0 < plan.bbox[0] < plan.bbox[2] < 16.2

    # Consecutive units cover small areas: far less than the whole layer.
    valid = read_features(str(demo_dir / "fields.geojson"))
    shapes = shapely.from_wkb(valid.wkb)
    first = plan.order[plan.starts[0] : plan.starts[1]]
    unit_area = shapely.box(*shapely.total_bounds(shapes[first])).area
    assert unit_area < 0.5 * shapely.box(*shapely.total_bounds(shapes)).area

    storage = Storage.for_url(str(tmp_path))
    url = str(tmp_path / "features.parquet")
    stage_features(storage, url, features, plan)
    unit = read_unit(storage, url, 1)
    assert unit.ids == [int(features.ids[p]) for p in plan.order[10:20]]
    assert unit.crs == "EPSG:4326"
    assert pq.ParquetFile(url).num_row_groups == plan.count


def test_coordinates_that_cannot_be_placed_are_invalid_features(demo_dir):
    lonlat = read_features(str(demo_dir / "fields.geojson"))
    lonlat.wkb[1] = shapely.to_wkb(shapely.Polygon([(200, 0), (0, 100), (1, 1)]))
    lonlat.wkb[2] = shapely.to_wkb(shapely.Polygon([(np.inf, 0), (0, 1), (1, 1)]))
    plan = plan_units(lonlat, max_unit=10, min_units=4, max_vertices=None)
    assert set(plan.invalid) == {1, 2}
    assert "coordinates outside the range of EPSG:4326" in plan.invalid[1]
    assert "coordinates must be finite numbers" in plan.invalid[2]
    assert plan.bbox is not None and 16.0 < plan.bbox[0] < plan.bbox[2] < 16.2

    utm = read_features(str(demo_dir / "fields.gpkg"))
    assert utm.crs == "EPSG:32633"
    utm.wkb[4] = shapely.to_wkb(shapely.box(1e9, 1e9, 2e9, 2e9))
    plan = plan_units(utm, max_unit=10, min_units=4, max_vertices=None)
    assert list(plan.invalid) == [4]
    assert "reaches outside the area EPSG:32633 covers" in plan.invalid[4]
    assert plan.bbox is not None and 16.0 < plan.bbox[0] < plan.bbox[2] < 16.2
    assert sorted(plan.order.tolist()) == list(range(len(utm)))


def test_each_unit_is_one_chunk_of_the_engine():
    from app.batch.features import FeatureTable
    from app.stats.chunking import CHUNK_CELL_DEGREES

    # 20 x 20 small squares over 0.2 x 0.2 degrees: 16 of the engine's chunk cells.
    xs, ys = np.meshgrid(16.0 + np.arange(20) * 0.01, 46.0 + np.arange(20) * 0.01)
    x, y = xs.ravel(), ys.ravel()
    squares = list(shapely.box(x, y, x + 0.004, y + 0.004))
    table = FeatureTable(
        ids=np.arange(400), identifiers=None, wkb=shapely.to_wkb(squares).tolist(), crs="EPSG:4326"
    )
    plan = plan_units(table, max_unit=20, min_units=1, max_vertices=None)
    assert max(plan.sizes()) <= 20 and sum(plan.sizes()) == 400
    centres = shapely.get_coordinates(shapely.centroid(np.array(squares)))
    for a, b in zip(plan.starts[:-1], plan.starts[1:], strict=True):
        cells = {tuple(np.floor(c / CHUNK_CELL_DEGREES)) for c in centres[plan.order[a:b]]}
        assert len(cells) == 1


# ------------------------------------------------------------------------------- files


def test_atomic_writes_leave_nothing_half_written(tmp_path):
    storage = Storage.for_url(str(tmp_path))
    files = JobFiles(str(tmp_path / "job"))
    storage.write_many({files.feature(1): b"one", files.feature(2): b"two"})
    assert storage.read(files.feature(2)) == b"two"
    with pytest.raises(RuntimeError), storage.open_atomic(files.results) as file:
        file.write(b"partial")
        raise RuntimeError("killed")
    assert not storage.exists(files.results)
    with storage.open_atomic(files.feature(1)) as file:
        file.write(b"ONE")
    assert storage.read(files.feature(1)) == b"ONE"
    assert sorted(p.name for p in (tmp_path / "job").iterdir()) == ["1.json", "2.json"]
    assert storage.names(files.units) == set()


# ----------------------------------------------------------------------------- results


def test_rows_and_documents_of_responses():
    plan = make_plan(StatisticalRequest.model_validate(REQUEST), default_settings())
    schema = result_schema(plan)
    assert "percentiles_50.0" in schema.names and "histogram_bins" in schema.names
    interval = {"from": "2023-04-02T00:00:00Z", "to": "2023-04-03T00:00:00Z"}
    ok = {
        "data": [
            {
                "interval": interval,
                "outputs": {
                    "ndvi": {
                        "bands": {
                            "B0": {
                                "stats": {
                                    "min": "NaN",
                                    "max": "NaN",
                                    "mean": "NaN",
                                    "stDev": "NaN",
                                    "sampleCount": 4,
                                    "noDataCount": 4,
                                    "percentiles": {"50.0": "NaN"},
                                },
                                "histogram": {
                                    "bins": [{"lowEdge": -1.0, "highEdge": 0.0, "count": 0}],
                                    "overflowCount": 0,
                                    "underflowCount": 0,
                                },
                            }
                        }
                    }
                },
            },
            {"interval": interval, "error": {"type": "EXECUTION_ERROR", "message": "gone"}},
        ],
        "status": "PARTIAL",
    }
    rows = rows_of(7, "f7", ok)
    table = pa.Table.from_pylist(rows, schema=schema)
    assert table.num_rows == 2
    assert np.isnan(table["mean"][0].as_py()) and table["sampleCount"][0].as_py() == 4
    assert table["error"].to_pylist() == [None, "gone"]
    assert outcome(ok) == "failed"
    assert feature_document(7, "f7", ok) == {"id": 7, "identifier": "f7", "response": ok}

    invalid = {"data": [], "status": "FAILED", "error": {"type": "BAD_REQUEST", "message": "x"}}
    assert outcome(invalid) == "invalid"
    assert feature_document(8, None, invalid) == {
        "id": 8,
        "identifier": None,
        "error": invalid["error"],
    }
    assert outcome({"data": [], "status": "OK"}) == "done"

    merged = merge_part(table, rows_of(8, None, invalid), [7], schema)
    assert merged["id"].to_pylist() == [8]
    merged = merge_part(table, rows_of(8, None, invalid), [8], schema)
    assert merged["id"].to_pylist() == [7, 7, 8]


# ------------------------------------------------------------------------------- store


def test_store_transitions_leases_and_units(tmp_path):
    store = JobStore(engine_from_url(f"sqlite:///{tmp_path / 'jobs.db'}"))
    store.create("j1", "statistics", {"a": 1}, {"href": "x"}, "/out/j1")
    with pytest.raises(ConflictError, match="its state is CREATED"):
        store.act("j1", Action.STOP, JobState.STOPPED)
    job = store.act("j1", Action.ANALYSE, JobState.ANALYSING, owner="me", heartbeat=time.time())
    assert job.state == JobState.ANALYSING and job.owner == "me"

    # Leases: a fresh one is not taken, a stale or dead one is.
    assert not store.claim("j1", "other", {JobState.ANALYSING}, stale_before=0)
    assert store.claim("j1", "other", {JobState.ANALYSING}, stale_before=0, dead_owners=["me"])
    assert not store.renew("j1", "me", {JobState.ANALYSING})
    assert store.renew("j1", "other", {JobState.ANALYSING})
    store.release("j1", "other")
    assert store.claim("j1", "me", {JobState.ANALYSING}, stale_before=0)

    store.save_units("j1", [3, 3, 1])
    assert [u.unit for u in store.units("j1", pending_only=True)] == [0, 1, 2]
    marker = {
        "unit": 1,
        "generation": 0,
        "done": 2,
        "failed": [{"id": 5, "identifier": None, "error": "boom"}],
        "invalid": [],
    }
    assert store.record_unit("j1", marker)
    assert not store.record_unit("j1", marker)  # recorded once, whoever reports it again
    store.record_unit_error("j1", 2, 0, "KilledWorker")
    progress = store.progress("j1")
    assert (progress.units, progress.units_done, progress.features) == (3, 2, 7)
    assert (progress.done, progress.failed, progress.invalid) == (2, 2, 0)
    failures = store.failures("j1")
    assert failures["failed"][0]["id"] == 5 and failures["units"][0]["unit"] == 2

    assert store.retry_units("j1") == 2
    units = {u.unit: u for u in store.units("j1", pending_only=True)}
    assert set(units) == {0, 1, 2}
    assert units[1].generation == 1 and units[1].retry_ids() == (5,)
    assert units[2].retry_ids() is None and units[0].retry_ids() is None
    assert not store.record_unit("j1", marker)  # a marker of an older generation
    jobs, total = store.list("statistics")
    assert total == 1 and jobs[0].id == "j1"
