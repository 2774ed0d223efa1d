"""Batch statistics results: per-feature JSON, result rows, the consolidated table, exports.

Per feature, Sentinel Hub's shape: ``{"id", "identifier", "response": {"data", "status"}}``
or, for a feature that could not be processed at all, ``{"id", "identifier", "error"}``.

The table (``results.parquet``, and each unit's part of it) has one row per feature x
interval x output x band: ``id, identifier, interval_from, interval_to, output, band``,
the statistics ``min, max, mean, stDev, sampleCount, noDataCount``, one
``percentiles_<k>`` column per requested percentile, the histogram (``histogram_bins`` as
a list of ``{lowEdge, highEdge, count}``, ``histogram_overflowCount``,
``histogram_underflowCount``) when one is requested, and ``error``: an interval whose reads
failed is one row with its error and no output; a feature that could not be processed is
one row with its error and no interval. Statistics of intervals without valid pixels are
NaN. Rows are grouped by feature, features in the job's processing order.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import shapely
import shapely.geometry

from app.batch.storage import JobFiles, Storage
from app.crs_input import EPSG_4326
from app.stats.geometry import reproject
from app.stats.plan import Plan

__all__ = [
    "csv_chunks",
    "feature_document",
    "geojson_chunks",
    "merge_part",
    "parquet_chunks",
    "result_schema",
    "rows_of",
    "write_results",
]

STATS = ("min", "max", "mean", "stDev")
COUNTS = ("sampleCount", "noDataCount")
_BIN = pa.struct([("lowEdge", pa.float64()), ("highEdge", pa.float64()), ("count", pa.int64())])
CHUNK_BYTES = 1 << 20


def _percentile_keys(plan: Plan) -> list[str]:
    keys: dict[str, None] = {}
    for output in plan.outputs:
        for band in output.bands:
            for k in band.percentiles or ():
                keys[str(float(k))] = None
    return list(keys)


def _has_histogram(plan: Plan) -> bool:
    return any(band.histogram is not None for output in plan.outputs for band in output.bands)


def result_schema(plan: Plan) -> pa.Schema:
    """The columns of the result table of a request (see the module docstring)."""
    timestamp = pa.timestamp("us", tz="UTC")
    fields = [
        ("id", pa.int64()),
        ("identifier", pa.string()),
        ("interval_from", timestamp),
        ("interval_to", timestamp),
        ("output", pa.string()),
        ("band", pa.string()),
        *[(name, pa.float64()) for name in STATS],
        *[(name, pa.int64()) for name in COUNTS],
        *[(f"percentiles_{k}", pa.float64()) for k in _percentile_keys(plan)],
    ]
    if _has_histogram(plan):
        fields += [
            ("histogram_bins", pa.list_(_BIN)),
            ("histogram_overflowCount", pa.int64()),
            ("histogram_underflowCount", pa.int64()),
        ]
    fields.append(("error", pa.string()))
    return pa.schema(fields)


def feature_document(
    feature_id: int, identifier: str | None, response: dict[str, Any]
) -> dict[str, Any]:
    """The per-feature JSON: the response, or the feature's error when it has no data."""
    if response.get("error") is not None and not response.get("data"):
        return {"id": feature_id, "identifier": identifier, "error": response["error"]}
    return {
        "id": feature_id,
        "identifier": identifier,
        "response": {"data": response.get("data", []), "status": response.get("status", "OK")},
    }


def _number(value: Any) -> float:
    return math.nan if value is None or value == "NaN" else float(value)


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def rows_of(feature_id: int, identifier: str | None, response: dict[str, Any]) -> list[dict]:
    """The table rows of one feature's response."""
    base = {"id": feature_id, "identifier": identifier}
    if response.get("error") is not None and not response.get("data"):
        return [{**base, "error": response["error"].get("message", str(response["error"]))}]
    rows = []
    for entry in response.get("data", []):
        interval = entry["interval"]
        when = {"interval_from": _time(interval["from"]), "interval_to": _time(interval["to"])}
        if entry.get("error") is not None:
            rows.append({**base, **when, "error": entry["error"].get("message", "")})
            continue
        for output, result in (entry.get("outputs") or {}).items():
            for band, values in result.get("bands", {}).items():
                stats = values.get("stats", {})
                row = {**base, **when, "output": output, "band": band}
                row.update({name: _number(stats.get(name)) for name in STATS})
                row.update({name: stats.get(name) for name in COUNTS})
                for k, value in (stats.get("percentiles") or {}).items():
                    row[f"percentiles_{k}"] = _number(value)
                histogram = values.get("histogram")
                if histogram is not None:
                    row["histogram_bins"] = histogram.get("bins", [])
                    row["histogram_overflowCount"] = histogram.get("overflowCount")
                    row["histogram_underflowCount"] = histogram.get("underflowCount")
                rows.append(row)
    return rows


def merge_part(
    previous: pa.Table | None, rows: Sequence[dict], replaced: Iterable[int], schema: pa.Schema
) -> pa.Table:
    """A unit's table: ``rows`` replacing the rows of features ``replaced`` in ``previous``."""
    fresh = pa.Table.from_pylist(list(rows), schema=schema)
    if previous is None:
        return fresh
    keep = pc.invert(pc.is_in(previous["id"], pa.array(list(replaced), pa.int64())))
    return pa.concat_tables([previous.filter(keep).cast(schema), fresh])


def write_results(
    storage: Storage, files: JobFiles, units: Sequence[int], schema: pa.Schema
) -> int:
    """Concatenate the units' parts into ``results.parquet`` (atomically); return its rows."""
    total = 0
    with storage.open_atomic(files.results) as file, pq.ParquetWriter(file, schema) as writer:
        for unit in units:
            url = files.part(unit)
            if not storage.exists(url):
                continue
            with storage.open(url) as part:
                table = pq.read_table(part).cast(schema)
            if table.num_rows:
                writer.write_table(table)
                total += table.num_rows
    return total


# -------------------------------------------------------------------------------- exports


def parquet_chunks(storage: Storage, url: str) -> Iterator[bytes]:
    """The bytes of a file, in chunks (for a streamed download)."""
    with storage.open(url) as file:
        while chunk := file.read(CHUNK_BYTES):
            yield chunk


def _batches(storage: Storage, url: str) -> Iterator[pa.RecordBatch]:
    with storage.open(url) as file:
        yield from pq.ParquetFile(file).iter_batches(batch_size=65_536)


def _flat(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Nested columns (histogram bins) as JSON text, for CSV."""
    if "histogram_bins" not in batch.schema.names:
        return batch
    index = batch.schema.get_field_index("histogram_bins")
    text = pa.array(
        [None if v is None else json.dumps(v) for v in batch.column(index).to_pylist()],
        pa.string(),
    )
    return batch.set_column(index, "histogram_bins", text)


def csv_chunks(storage: Storage, url: str) -> Iterator[bytes]:
    """The result table as CSV (header once), batch by batch."""
    header = True
    for batch in _batches(storage, url):
        buffer = io.BytesIO()
        pacsv.write_csv(
            pa.Table.from_batches([_flat(batch)]),
            buffer,
            pacsv.WriteOptions(include_header=header),
        )
        header = False
        yield buffer.getvalue()


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return value


def geojson_chunks(storage: Storage, files: JobFiles) -> Iterator[bytes]:
    """The result table as a GeoJSON FeatureCollection (WGS84), one Feature per row.

    Each row carries its feature's geometry; NaN statistics are ``null`` (JSON has no NaN).
    """
    with storage.open(files.features) as file:
        staged = pq.read_table(file)
    crs = (staged.schema.metadata or {}).get(b"terratiler:crs", EPSG_4326.encode()).decode()
    wkb = dict(zip(staged["id"].to_pylist(), staged["geometry"].to_pylist(), strict=True))
    geometries: dict[int, Any] = {}
    yield b'{"type": "FeatureCollection", "features": ['
    first = True
    for batch in _batches(storage, files.results):
        parts = []
        for row in batch.to_pylist():
            feature_id = row["id"]
            if feature_id not in geometries:
                raw = wkb.get(feature_id)
                shape = shapely.from_wkb(raw) if raw is not None else None
                geometries[feature_id] = (
                    shapely.geometry.mapping(reproject([shape], crs, EPSG_4326)[0])
                    if shape is not None and not shape.is_empty
                    else None
                )
            properties = {key: _json_value(value) for key, value in row.items()}
            feature = {"type": "Feature", "geometry": geometries[feature_id]}
            feature["properties"] = properties
            parts.append(("" if first else ",") + json.dumps(feature, allow_nan=False))
            first = False
        yield "".join(parts).encode()
    yield b"]}"
