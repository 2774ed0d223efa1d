"""One work unit, as a Dask worker runs it: read the unit's features, compute, write.

``run_unit`` is idempotent: it (re)writes the same files for the same unit, each
atomically, and writes the unit's marker last, so a unit interrupted anywhere (worker
killed, service restarted, job stopped) is simply run again, and a unit whose marker
exists is finished. Only plain data crosses the wire: the task and the returned marker.

Importing this module changes nothing in the process: a worker sets GDAL's environment
from the task's settings when it runs its first unit, before it opens any dataset.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow.parquet as pq

from app.batch.naming import feature_name
from app.batch.results import feature_document, merge_part, result_schema, rows_of
from app.batch.storage import JobFiles, Storage
from app.batch.units import UnitFeatures, read_unit, validate_geometry
from app.catalog import Catalog
from app.errors import BadRequestError
from app.gdal_env import configure_gdal
from app.settings import Settings
from app.stats import compute_many
from app.stats.models import StatisticalRequest
from app.stats.plan import band_math_assets, make_plan
from app.stats.results import BAD_REQUEST, EXECUTION_ERROR, failed

__all__ = ["UnitTask", "configure_worker", "outcome", "run_unit", "worker_catalog"]

_lock = threading.Lock()
_catalogs: dict[tuple[str, str], tuple[float, Any]] = {}
_configured = False


@dataclass(frozen=True)
class UnitTask:
    """What a worker needs to run one unit.

    Attributes:
        job_id: The job.
        unit: The unit number (its row group in the staged features).
        generation: 0 for the first run, +1 per retry-failed; written into the marker.
        root: The job's output folder (``<output>/<job_id>``).
        request: The statistics request (without features and output), as JSON.
        settings: The service settings (catalog, allow-list, limits, GDAL options).
        open_catalog: Builds the catalog (picklable: ``app.services.catalog_factory``).
        storage_options: fsspec options of ``root``.
        only: Retry exactly these feature ids of the unit (None: every feature).
        chunk_size: Most geometries the engine reads together.
        naming: How per-feature files are named (``app.batch.naming``).

    """

    job_id: str
    unit: int
    generation: int
    root: str
    request: dict[str, Any]
    settings: Settings
    open_catalog: Callable[[], Catalog]
    storage_options: dict[str, Any] = field(default_factory=dict)
    only: tuple[int, ...] | None = None
    chunk_size: int = 1024
    naming: str = "id"


def configure_worker(settings: Settings) -> None:
    """Per worker process, once, before its first dataset: GDAL's environment.

    A LocalCluster's workers inherit the service's environment; a remote ``dask worker``
    has only what this sets (``GDAL_SKIP`` included: no dataset is open yet).
    """
    global _configured
    with _lock:
        if not _configured:
            configure_gdal(settings)
            _configured = True


def worker_catalog(settings: Settings, open_catalog: Callable[[], Catalog]) -> Catalog:
    """The worker's catalog for these settings (built by ``open_catalog``, cached a while)."""
    key = (settings.catalog, settings.collection)
    ttl = settings.item_cache_ttl
    with _lock:
        cached = _catalogs.get(key)
        if cached is None or time.monotonic() - cached[0] > ttl:
            cached = (time.monotonic(), open_catalog())
            _catalogs[key] = cached
        return cached[1]


def outcome(response: dict[str, Any]) -> str:
    """``done``, ``failed`` (reads failed: retry may help) or ``invalid`` (it cannot)."""
    error = response.get("error")
    if error is not None and not response.get("data"):
        return "invalid" if error.get("type") == BAD_REQUEST else "failed"
    return "done" if response.get("status") == "OK" else "failed"


def _error_message(response: dict[str, Any]) -> str:
    if response.get("error") is not None:
        return str(response["error"].get("message", ""))
    errors = [
        f"{entry['interval']['from']}/{entry['interval']['to']}: {entry['error']['message']}"
        for entry in response.get("data", [])
        if entry.get("error") is not None
    ]
    return "; ".join(errors)


def _compute(task: UnitTask, geometries: list[Any], crs: str) -> list[dict[str, Any]]:
    """The engine's responses; a unit-wide failure becomes every feature's error."""
    if not geometries:
        return []
    try:
        catalog = worker_catalog(task.settings, task.open_catalog)
        return compute_many(
            geometries, task.request, catalog, task.settings, crs=crs, chunk_size=task.chunk_size
        )
    except BadRequestError as error:  # the request, not a read: retrying cannot help
        return [failed(error.message, BAD_REQUEST)] * len(geometries)
    except Exception as error:  # anything the engine did not expect: keep it per feature
        return [failed(f"{type(error).__name__}: {error}", EXECUTION_ERROR)] * len(geometries)


def _responses(task: UnitTask, features: UnitFeatures, positions: list[int]) -> list[dict]:
    """Each wanted feature's response: the engine's, or why its geometry cannot be used."""
    max_vertices = task.settings.max_geometry_vertices
    responses: dict[int, dict[str, Any]] = {}
    valid: list[int] = []
    geometries = []
    for position in positions:
        checked = validate_geometry(
            features.wkb[position], features.ids[position], max_vertices, features.crs
        )
        if isinstance(checked, BadRequestError):
            responses[position] = failed(checked.message, BAD_REQUEST)
        else:
            valid.append(position)
            geometries.append(checked)
    for position, response in zip(valid, _compute(task, geometries, features.crs), strict=True):
        responses[position] = response
    return [responses[position] for position in positions]


def _previous(storage: Storage, files: JobFiles, unit: int) -> tuple[Any, dict | None]:
    """The unit's table and marker as an earlier run wrote them (for a retry to merge)."""
    table = marker = None
    if storage.exists(files.part(unit)):
        with storage.open(files.part(unit)) as file:
            table = pq.read_table(file)
    if storage.exists(files.marker(unit)):
        marker = json.loads(storage.read(files.marker(unit)))
    return table, marker


def run_unit(task: UnitTask) -> dict[str, Any]:
    """Compute one unit and write its outputs; return its marker.

    Writes each feature's JSON, then the unit's table, then its marker (last: the unit is
    finished once the marker exists).

    Returns:
        The marker: ``{"unit", "generation", "features", "done", "failed", "invalid",
        "seconds"}`` where ``failed`` and ``invalid`` list ``{"id", "identifier",
        "error"}`` and ``done`` counts the features with complete statistics. On a retry
        the marker covers the whole unit: earlier entries of other features are kept.

    """
    started = time.perf_counter()
    configure_worker(task.settings)
    storage = Storage.for_url(task.root, task.storage_options)
    files = JobFiles.beside(task.root)
    features = read_unit(storage, files.features, task.unit)
    wanted = set(task.only) if task.only is not None else None
    positions = [i for i, fid in enumerate(features.ids) if wanted is None or fid in wanted]
    ids = [features.ids[p] for p in positions]

    documents: dict[str, bytes] = {}
    rows: list[dict] = []
    marker: dict[str, Any] = {"failed": [], "invalid": []}
    for position, response in zip(positions, _responses(task, features, positions), strict=True):
        fid, identifier = features.ids[position], features.identifiers[position]
        documents[files.feature(feature_name(fid, identifier, task.naming))] = json.dumps(
            feature_document(fid, identifier, response)
        ).encode()
        rows.extend(rows_of(fid, identifier, response))
        kind = outcome(response)
        if kind != "done":
            entry = {"id": fid, "identifier": identifier, "error": _error_message(response)}
            marker[kind].append(entry)
    storage.write_many(documents)

    # A retry replaces only its features' rows and entries in the unit's files, merged by
    # id, so running the same retry twice gives the same files.
    previous_part, previous_marker = (
        _previous(storage, files, task.unit) if wanted is not None else (None, None)
    )
    model = StatisticalRequest.model_validate(task.request)
    collection = model.input.data[0].collection_id if model.input.data else ""
    assets = band_math_assets(
        worker_catalog(task.settings, task.open_catalog), collection, task.settings
    )
    plan = make_plan(model, task.settings, assets)
    part = merge_part(previous_part, rows, ids, result_schema(plan))
    buffer = io.BytesIO()
    pq.write_table(part, buffer)
    storage.write(files.part(task.unit), buffer.getvalue())

    if previous_marker is not None:
        retried = set(ids)
        for kind in ("failed", "invalid"):
            kept = [f for f in previous_marker.get(kind, []) if f["id"] not in retried]
            marker[kind] = kept + marker[kind]
    marker.update(
        unit=task.unit,
        generation=task.generation,
        features=len(features.ids),
        done=len(features.ids) - len(marker["failed"]) - len(marker["invalid"]),
        seconds=round(time.perf_counter() - started, 4),
    )
    storage.write(files.marker(task.unit), json.dumps(marker).encode())
    return marker
