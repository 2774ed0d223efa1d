"""The batch service: what the REST routers and the CLI call, for both job kinds.

``BatchService`` creates jobs (batch statistics: ``create``; batch processing:
``create_process``), applies the client actions (analyse, start, stop,
retry-failed) as state transitions in the job store, runs the drivers of the jobs this
replica holds, serves job views and results. A supervisor thread renews the leases of
the jobs this replica drives and takes over jobs whose replica is gone: a job PROCESSING
(or ANALYSING) when a service starts, whose owner is dead or silent, is resumed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from app.batch.analysis import validate_request
from app.batch.config import BatchConfig
from app.batch.executor import DaskExecutor
from app.batch.features import FORMATS, detect_format
from app.batch.kinds import kind_of
from app.batch.models import BatchStatisticalRequest, FeatureSource
from app.batch.processing.models import BatchProcessRequest, GeopackageInput
from app.batch.results import csv_chunks, geojson_chunks, parquet_chunks
from app.batch.runner import Driver, DriverContext
from app.batch.states import FINAL, RUNNING, Action, JobState, conflict
from app.batch.storage import JobFiles, Storage, join
from app.batch.store import JobRecord, JobStore
from app.catalog import Catalog
from app.errors import (
    BadRequestError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    TooLargeError,
    UpstreamError,
)
from app.redirects import resolve_redirects
from app.security import check_source
from app.settings import Settings

__all__ = ["RESULT_FORMATS", "BatchService"]

logger = logging.getLogger(__name__)

KIND = "statistics"

#: Download format -> media type and file extension.
RESULT_FORMATS = {
    "parquet": ("application/vnd.apache.parquet", "parquet"),
    "csv": ("text/csv", "csv"),
    "geojson": ("application/geo+json", "geojson"),
}

# A job's folder under an output prefix is named by its id (uuid4).
_JOB_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)

# Processing jobs whose staged tiles ``tiles`` keeps in memory (the most recently paged).
STAGED_CACHE_JOBS = 8

#: Statuses of a processing job's tiles (``tiles(status=...)``).
TILE_STATES = ("PENDING", "PROCESSED", "FAILED")

# States in which a driver holds a job's lease.
LEASED = RUNNING | {JobState.ANALYSIS_DONE}

# Owners (lease holders) of the live services of this process: a lease held by another
# service of this process that is no longer here is dead.
_LIVE_OWNERS: set[str] = set()


def _owner_dead(owner: str | None) -> bool:
    """Whether a lease holder certainly no longer runs (same host, process gone)."""
    if not owner:
        return False
    host, _, rest = owner.partition("/")
    pid_text, _, _ = rest.partition("/")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False  # another machine: only its silence (a stale lease) tells
    pid = int(pid_text)
    if pid == os.getpid():
        return owner not in _LIVE_OWNERS
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _alive(driver: Driver) -> bool:
    return driver.thread is not None and driver.thread.is_alive()


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


class BatchService:
    """Batch statistics jobs of one service replica.

    Args:
        settings: The service settings.
        open_catalog: Builds the catalog (``app.services.catalog_factory``): picklable,
            every Dask worker calls it to build its own.
        catalog: The catalog this process counts scenes in (default: ``open_catalog()``,
            on first use); the app passes the one its endpoints share.
        engine: The database engine (default: ``app.db.engine_from_settings``).
        executor: Where units run (default: from ``dask_scheduler`` and the batch options).
        check_sources: Check feature paths/URLs and outputs against the allow-lists (the
            local CLI turns this off: its user is the operator).
        takeover: Take over jobs of replicas that are gone (the service; not the CLI,
            which runs only its own job).

    """

    def __init__(
        self,
        settings: Settings,
        open_catalog: Callable[[], Catalog],
        *,
        catalog: Catalog | None = None,
        engine: Engine | None = None,
        executor: DaskExecutor | None = None,
        check_sources: bool = True,
        takeover: bool = True,
    ):
        from app.db import engine_from_settings

        self.settings = settings
        self.config = BatchConfig.from_settings(settings)
        self.open_catalog = open_catalog
        self._catalog = catalog
        self.store = JobStore(engine or engine_from_settings(settings))
        self.executor = executor or DaskExecutor(
            self.config.dask_scheduler,
            self.config.batch_workers,
            self.config.batch_threads_per_worker,
            malloc_trim_threshold=self.config.batch_malloc_trim_threshold,
        )
        self.check_sources = check_sources
        self.takeover = takeover
        self.owner = f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:12]}"
        _LIVE_OWNERS.add(self.owner)
        self._drivers: dict[str, Driver] = {}
        # Job id -> its staged tiles (``tiles``), the most recently used last.
        self._staged: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._supervisor: threading.Thread | None = None

    @property
    def catalog(self) -> Catalog:
        """The catalog scenes are counted in (workers build their own: ``open_catalog``)."""
        if self._catalog is None:
            self._catalog = self.open_catalog()
        return self._catalog

    # ------------------------------------------------------------------------ create

    def create(
        self,
        request: BatchStatisticalRequest,
        upload: bytes | None = None,
        upload_name: str | None = None,
    ) -> dict[str, Any]:
        """Create a job (state CREATED) from a validated request and, maybe, an upload.

        Raises:
            BadRequestError: An invalid statistics request, or no features given.
            ForbiddenError: Features or output outside the allow-lists.
            TooLargeError: An upload over ``batch_max_upload_mb``.

        """
        validate_request(request, self.settings, self.catalog)
        output = self._output(request.output)
        job_id = str(uuid.uuid4())
        root = join(output, job_id)
        storage = Storage.for_url(root, self.config.storage_options)
        source = self._source(request, upload, upload_name, storage, JobFiles.beside(root))
        body = request.model_dump(by_alias=True, exclude_none=True)
        body["input"]["features"] = {
            key: source[key] for key in ("href", "layer") if source.get(key) is not None
        }
        body["output"] = output
        return self.view(self.store.create(job_id, KIND, body, source, root))

    def create_process(self, request: BatchProcessRequest) -> dict[str, Any]:
        """Create a batch processing job (state CREATED), every parameter checked first.

        Raises:
            BadRequestError: A bad parameter (named): area, grid, resolution, outputs ...
            TooLargeError: Over ``batch_max_tiles`` or ``batch_max_tile_pixels``.
            ForbiddenError: An output outside ``batch_outputs``; ``createCollection`` with
                an output the service may not read (``allowed_sources``).

        """
        from app.batch.processing.analysis import check_request
        from app.batch.processing.paths import (
            check_output_urls,
            job_root,
            template_of,
            template_prefix,
            zarr_url,
        )

        source: dict[str, Any] = {"kind": "process"}
        tiles = None
        if isinstance(request.input, GeopackageInput):
            from app.batch.processing.own_tiles import features_source, read_own_tiles

            href, layer = features_source(request.input.features)
            href = self._checked_href(href)
            # Read now: every tile is checked before the job exists (read again by the
            # analysis, which stages the tiles).
            tiles = read_own_tiles(href, layer, self.settings, self.config.storage_options)
            source["features"] = {"href": href, "layer": layer}
        check_request(request, self.settings, self.catalog, tiles)
        target = request.output
        template = template_of(target.url or self.config.default_output, target.type)
        prefix = template_prefix(template)
        folder = self._output(prefix)
        self._not_in_a_job_folder(folder)
        self._not_in_the_catalog(folder)
        template = folder + template[len(prefix.rstrip("/")) :]
        job_id = str(uuid.uuid4())
        root = job_root(template, job_id)
        if tiles is not None and target.type == "raster":
            check_output_urls(
                template,
                job_id,
                [tile.name for tile in tiles],
                list(request.processRequest.outputs),
            )
        if request.createCollection is not False:
            from app.catalog.layered import check_collection_id, check_readable_output

            check_readable_output(folder, self.settings)
            if isinstance(request.createCollection, str):
                check_collection_id(self.catalog, request.createCollection, self.store.engine, root)
                self._collection_not_reserved(request.createCollection)
        body = request.model_dump(by_alias=True, exclude_none=True)
        source["template"] = template
        if target.type == "zarr":
            source["zarr"] = zarr_url(root)
        return self.view(self.store.create(job_id, "process", body, source, root))

    def _output(self, output: str | None) -> str:
        text = (output or self.config.default_output).strip()
        if text.startswith(("http://", "https://")):
            raise BadRequestError("output: give a folder or an s3:// prefix")
        if "://" not in text:
            path = Path(text)
            if not path.is_absolute():
                path = self.config.data_dir / path
            try:
                text = str(path.resolve())
            except (OSError, ValueError) as error:  # a NUL byte, a name too long, a loop
                raise BadRequestError(f"output: not a usable folder ({error})") from None
        if self.check_sources:
            try:
                text = check_source(text, self.config.output_prefixes, allow_private=True)
            except ForbiddenError as error:
                raise ForbiddenError(
                    "output: " + error.message.removeprefix("url: ") + " (batch_outputs)"
                ) from None
        return text.rstrip("/")

    def _collection_not_reserved(self, collection_id: str) -> None:
        """Refuse a ``createCollection`` id another job will register (not FAILED, unfinished).

        ``check_collection_id`` sees registered ids only; two jobs asking for one id would
        both pass it (the second to finish is refused then: ``register_collection``).

        Raises:
            BadRequestError: Naming ``createCollection`` and the other job.

        """
        from app.batch.processing.kind import collection_id as job_collection

        jobs, _ = self.store.list("process", limit=1_000_000)
        for job in jobs:
            if job.state in (JobState.FAILED, JobState.DONE, JobState.PARTIAL):
                continue  # finished ones are in the registry (checked), failed ones never
            if job_collection(job) == collection_id:
                raise BadRequestError(
                    f"createCollection: '{collection_id}' is the collection of job {job.id} "
                    "(not finished yet); choose another id"
                )

    def _not_in_the_catalog(self, folder: str) -> None:
        """Refuse an output folder in the local catalog's folder (its source COGs).

        Raises:
            ForbiddenError: Naming ``output.delivery``.

        """
        from app.batch.processing.paths import catalog_folder

        catalog = catalog_folder(self.settings.catalog)
        if catalog is not None and (folder == catalog or folder.startswith(catalog + "/")):
            raise ForbiddenError(
                "output.delivery: the folder is in the catalog's folder (the source data); "
                "give another folder under batch_outputs"
            )

    def _not_in_a_job_folder(self, folder: str) -> None:
        """Refuse an output folder inside another job's folder (a job id below batch_outputs).

        A job writes ``<folder>/<its id>/...``; a folder that is itself in a job's folder
        (``<batch_outputs>/<other id>/...``) would mix this job's files with that job's,
        or replace them (``overwrite``).

        Raises:
            ForbiddenError: Naming ``output.delivery``.

        """
        from app.batch.processing.paths import job_id_segments

        for prefix in self.config.output_prefixes:
            base = prefix.rstrip("/")
            if "://" not in base:
                base = str(Path(base).resolve())
            if folder == base or folder.startswith(base + "/"):
                if job_id_segments(folder[len(base) :]):
                    raise ForbiddenError(
                        "output.delivery: the folder is inside another batch job's folder "
                        "(a job id below batch_outputs); give a folder of your own"
                    )
                return

    def _source(
        self,
        request: BatchStatisticalRequest,
        upload: bytes | None,
        upload_name: str | None,
        storage: Storage,
        files: JobFiles,
    ) -> dict[str, Any]:
        features = request.input.features
        if upload is not None:
            limit = self.config.batch_max_upload_mb * 1024 * 1024
            if len(upload) > limit:
                raise TooLargeError(
                    f"features: {len(upload)} bytes, over the limit batch_max_upload_mb="
                    f"{self.config.batch_max_upload_mb}"
                )
            kind = detect_format(upload_name, upload[:16])
            url = files.upload(FORMATS[kind])
            storage.write(url, upload)
            layer = features.layer if isinstance(features, FeatureSource) else None
            return {"kind": "upload", "href": url, "name": upload_name, "layer": layer}
        if isinstance(features, dict):
            url = files.upload(".geojson")
            storage.write(url, json.dumps(features).encode())
            return {"kind": "inline", "href": url}
        if isinstance(features, FeatureSource):
            href = self._checked_href(features.href.strip())
            return {"kind": "href", "href": href, "layer": features.layer}
        raise BadRequestError(
            "input.features: give a path or URL, a GeoJSON FeatureCollection, or upload the file"
        )

    def _checked_href(self, href: str) -> str:
        """A features path or URL checked against the allow-list (``input.features``).

        Raises:
            ForbiddenError: Outside ``allowed_sources``, or inside a batch job's folder.

        """
        if self.check_sources:
            allowed = self.settings.allowed_prefixes
            private = self.settings.allow_private_sources
            try:
                href = check_source(href, allowed, allow_private=private)
                href = resolve_redirects(href, allowed, allow_private=private)
            except ForbiddenError as error:
                raise ForbiddenError(
                    "input.features: " + error.message.removeprefix("url: ")
                ) from None
        elif "://" not in href:
            href = str(Path(href).resolve())
        if self.check_sources and self._in_a_job_folder(href):
            raise ForbiddenError(
                "input.features: files of batch jobs (uploads, staged features, results "
                "under batch_outputs) are not accepted as inputs; upload the file instead"
            )
        return href

    def _in_a_job_folder(self, href: str) -> bool:
        """Whether ``href`` (checked, normalized) lies in a job's files under an output prefix.

        Another job's upload is stored where the allow-list may reach (``<data_dir>/batch``
        is under ``data_dir``): reading it back by path would hand one client another's
        files, and make a stored upload an input no check saw.
        """
        for prefix in self.config.output_prefixes:
            base = prefix.rstrip("/")
            if "://" not in base:
                base = str(Path(base).resolve())
            if not href.startswith(base + "/"):
                continue
            # Any depth: a job's folder is <output>/<id>, its bookkeeping <output>/_batch/<id>,
            # and an output may be a folder below the prefix.
            if any(_JOB_ID.match(segment) for segment in href[len(base) + 1 :].split("/")):
                return True
        return False

    # ----------------------------------------------------------------------- actions

    def _job(self, job_id: str, kind: str | None) -> JobRecord:
        """The job; ``NotFoundError`` when unknown or of another kind than ``kind``."""
        job = self.store.get(job_id)
        if kind is not None and job.kind != kind:
            # Each kind's routes see only their jobs.
            raise NotFoundError(f"batch job '{job_id}' not found")
        return job

    def analyse(self, job_id: str, kind: str | None = None) -> dict[str, Any]:
        """CREATED -> ANALYSING; the analysis runs in the background."""
        self._job(job_id, kind)
        self.store.act(
            job_id,
            Action.ANALYSE,
            JobState.ANALYSING,
            owner=self.owner,
            heartbeat=time.time(),
            autostart=False,
            error=None,
        )
        self._launch(job_id, "analyse")
        return self.get(job_id)

    def start(self, job_id: str, kind: str | None = None) -> dict[str, Any]:
        """Start processing: after the analysis (run first when needed), or resume STOPPED."""
        self._job(job_id, kind)
        for _ in range(3):  # the state may move under us (an analysis finishing)
            now = time.time()
            lease = {"owner": self.owner, "heartbeat": now, "error": None, "finished_at": None}
            if self.store.set_state(
                job_id,
                JobState.PROCESSING,
                expect={JobState.ANALYSIS_DONE},
                started_at=datetime.now(UTC),
                **lease,
            ) or self.store.set_state(
                job_id, JobState.PROCESSING, expect={JobState.STOPPED}, **lease
            ):
                self._launch(job_id, "process")
                return self.get(job_id)
            if self.store.set_state(
                job_id, JobState.ANALYSING, expect={JobState.CREATED}, autostart=True, **lease
            ):
                self._launch(job_id, "analyse")
                return self.get(job_id)
            job = self.store.get(job_id)
            if job.state == JobState.ANALYSING:
                self.store.update(job_id, autostart=True)
                if self.store.get(job_id).state == JobState.ANALYSING:
                    return self.get(job_id)
            elif job.state not in {JobState.ANALYSIS_DONE, JobState.STOPPED, JobState.CREATED}:
                raise conflict(job_id, Action.START, job.state)
        raise conflict(job_id, Action.START, self.store.get(job_id).state)

    def stop(self, job_id: str, kind: str | None = None) -> dict[str, Any]:
        """PROCESSING -> STOPPED; units already running finish, nothing new starts."""
        self._job(job_id, kind)
        self.store.act(job_id, Action.STOP, JobState.STOPPED, owner=None, heartbeat=None)
        driver = self._drivers.get(job_id)
        if driver is not None:
            driver.stop.set()
        return self.get(job_id)

    def retry_failed(self, job_id: str, kind: str | None = None) -> dict[str, Any]:
        """PARTIAL | FAILED -> PROCESSING: recompute exactly the failed features (tiles).

        Features that failed (reads, a unit whose task kept failing) are recomputed; the
        invalid ones (unusable geometries) are not. A job that failed in its analysis is
        analysed again, then processed.
        """
        job = self._job(job_id, kind)
        lease = {"owner": self.owner, "heartbeat": time.time(), "error": None, "finished_at": None}
        if job.analysis is None:
            self.store.act(job_id, Action.RETRY_FAILED, JobState.ANALYSING, autostart=True, **lease)
            self._launch(job_id, "analyse")
        else:
            self.store.act(job_id, Action.RETRY_FAILED, JobState.PROCESSING, **lease)
            self.store.retry_units(job_id)
            self._launch(job_id, "process")
        return self.get(job_id)

    def delete(self, job_id: str, kind: str | None = None) -> None:
        """Forget a job that no replica works on (its outputs stay where they were written).

        Its bookkeeping files (staged features or tiles, markers: ``<output>/_batch/<id>``
        for statistics, ``<root>/_batch`` for processing) go.

        Raises:
            NotFoundError: Unknown job (or of another kind).
            ConflictError: The job is analysed or processed now (stop it first).

        """
        job = self._job(job_id, kind)
        if job.state in RUNNING:
            raise ConflictError(
                f"cannot delete job '{job_id}': its state is {job.state} (stop it first)"
            )
        driver = self._drivers.get(job_id)
        if driver is not None:
            driver.stop.set()
        if not self.store.delete(job_id, {job.state}):
            raise conflict(job_id, "delete", self.store.get(job_id).state)
        with self._lock:
            self._staged.pop(job_id, None)
        storage = Storage.for_url(job.root, self.config.storage_options)
        try:
            storage.remove_tree(kind_of(job.kind).files(job).work)
        except Exception as error:  # the job is gone; a leftover folder is only space
            logger.warning("batch job %s: cannot remove its files: %s", job_id, error)

    # ------------------------------------------------------------------------- views

    def get(self, job_id: str, kind: str | None = None) -> dict[str, Any]:
        """The job as the API shows it, with its failures."""
        return self.view(self._job(job_id, kind), details=True)

    def list(
        self,
        limit: int = 100,
        offset: int = 0,
        state: str | None = None,
        kind: str = KIND,
    ) -> dict[str, Any]:
        """A page of jobs of one kind, newest first."""
        if state is not None and state not in set(JobState):
            raise BadRequestError(f"status: unknown state '{state}'")
        jobs, total = self.store.list(kind, limit=limit, offset=offset, state=state)
        return {"data": [self.view(job) for job in jobs], "total": total}

    def view(self, job: JobRecord, details: bool = False) -> dict[str, Any]:
        """A job's JSON: state, progress, completion percentage, ETA, failures."""
        kind = kind_of(job.kind)
        progress = self.store.progress(job.id)
        analysis = job.analysis or {}
        total = progress.features or int(analysis.get(kind.total_key) or 0)
        processed = progress.processed
        percentage = 100.0 * processed / total if total else 0.0
        remaining = None
        if job.state == JobState.PROCESSING:
            remaining = self._remaining(job, processed, total)
        elif job.state in FINAL and job.analysis is not None:
            remaining = 0.0
        view: dict[str, Any] = {
            "id": job.id,
            "status": job.state.value,
            "request": job.request,
            "output": job.root,
            "created": _iso(job.created_at),
            "lastUpdated": _iso(job.updated_at),
            "started": _iso(job.started_at),
            "finished": _iso(job.finished_at),
            "error": job.error,
            "analysis": job.analysis,
            "completionPercentage": round(percentage, 2),
            "progress": {
                "units": {"total": progress.units, "done": progress.units_done},
                **kind.progress_view(progress, total),
            },
            "estimatedSecondsRemaining": remaining,
            "eta": _iso(datetime.fromtimestamp(time.time() + remaining, UTC))
            if remaining is not None
            else None,
            "results": kind.results_view(job),
        }
        if job.kind != KIND:
            view["kind"] = job.kind
        if details:
            view.update(kind.details_view(self.store, job))
        return view

    def _remaining(self, job: JobRecord, processed: int, total: int) -> float | None:
        """Seconds left, from this run's pace (the analysis' estimate before any unit)."""
        left = max(total - processed, 0)
        done_now = processed - (job.run_base or 0)
        if job.run_started and done_now > 0:
            pace = (time.time() - job.run_started) / done_now
            return round(pace * left, 1)
        estimate = (job.analysis or {}).get("estimatedSeconds")
        if estimate is None or not total:
            return None
        return round(float(estimate) * left / total, 1)

    def tiles(
        self, job_id: str, limit: int = 100, offset: int = 0, status: str | None = None
    ) -> dict[str, Any]:
        """A processing job's tiles as a GeoJSON FeatureCollection (footprints in WGS84).

        Each feature: ``id`` (the tile number), properties ``name``, ``status``
        (``PENDING``, ``PROCESSED``, ``FAILED``), ``error``, ``scenes``, ``crs``,
        ``outputs`` (output id -> URL; raster output). ``numberMatched`` counts the
        tiles of ``status``.

        Raises:
            NotFoundError: Unknown job, or not a processing job.
            ConflictError: The tiles are not listed yet (before the analysis).
            BadRequestError: An unknown ``status``.
            UpstreamError: The job's output storage cannot be read now (first page only:
                the staged tiles are kept once read).

        """
        from app.batch.processing.kind import tile_outputs

        job = self._job(job_id, "process")
        if job.analysis is None:
            raise ConflictError(
                f"the tiles of job '{job_id}' are listed by its analysis: its state is {job.state}"
            )
        wanted = None if status is None else status.upper()
        if wanted is not None and wanted not in TILE_STATES:
            raise BadRequestError(f"status: '{status}' is not one of {', '.join(TILE_STATES)}")
        request = BatchProcessRequest.model_validate(job.request)
        staged = self._staged_tiles(job)
        units = {unit.unit: unit for unit in self.store.units(job_id)}
        features = []
        for number, entry in enumerate(staged["tiles"]):
            unit = units.get(number)
            failed = unit is not None and (
                unit.state == "error" or bool((unit.failures or {}).get("failed"))
            )
            if unit is None or unit.state == "pending":
                state, error = "PENDING", None
            elif failed:
                state = "FAILED"
                failures = unit.failures or {}
                error = failures.get("error") or "; ".join(
                    str(f.get("error")) for f in failures.get("failed", [])
                )
            else:
                state, error = "PROCESSED", None
            if wanted is not None and state != wanted:
                continue
            features.append((number, entry, state, error))
        page = features[offset : offset + limit]
        return {
            "type": "FeatureCollection",
            "numberMatched": len(features),
            "numberReturned": len(page),
            "features": [
                {
                    "type": "Feature",
                    "id": number,
                    "geometry": entry["footprint"],
                    "properties": {
                        "name": entry["name"],
                        "status": state,
                        "error": error,
                        "scenes": entry.get("scenes"),
                        "crs": entry["crs"],
                        "width": entry["width"],
                        "height": entry["height"],
                        "outputs": tile_outputs(job, request, entry["name"]),
                    },
                }
                for number, entry, state, error in page
            ],
        }

    def _staged_tiles(self, job: JobRecord) -> dict[str, Any]:
        """A processing job's staged tiles, read once from its folder and then kept.

        The analysis stages them once and they never change after (a job keeps its
        analysis: retry-failed and start reuse it), so pages of ``tiles`` need not read
        the job's storage again: they keep answering while an object store is away.

        Raises:
            UpstreamError: The job's output storage cannot be read now (502, retry later).

        """
        from app.batch.processing.analysis import load_tiles

        with self._lock:
            staged = self._staged.get(job.id)
            if staged is not None:
                self._staged.move_to_end(job.id)
                return staged
        try:
            staged = load_tiles(Storage.for_url(job.root, self.config.storage_options), job.root)
        except Exception as error:
            # Not the storage's URL or message: they name this service's buckets or folders.
            logger.warning("batch job %s: cannot read its staged tiles: %s", job.id, error)
            raise UpstreamError(
                f"the tiles of job '{job.id}' cannot be read from its output storage now "
                f"({type(error).__name__}); try again later"
            ) from None
        with self._lock:
            self._staged[job.id] = staged
            while len(self._staged) > STAGED_CACHE_JOBS:
                self._staged.popitem(last=False)
        return staged

    # ----------------------------------------------------------------------- results

    def results(self, job_id: str, fmt: str = "parquet") -> tuple[Iterator[bytes], str, str]:
        """The consolidated results as (chunks, media type, file name).

        Raises:
            BadRequestError: An unknown format.
            ConflictError: The job has no results yet (409, naming its state).

        """
        if fmt not in RESULT_FORMATS:
            raise BadRequestError(f"format: '{fmt}' is not one of {', '.join(RESULT_FORMATS)}")
        job = self._job(job_id, KIND)
        if job.state not in (JobState.DONE, JobState.PARTIAL):
            raise ConflictError(
                f"the results of job '{job_id}' are not ready: its state is {job.state}"
            )
        storage = Storage.for_url(job.root, self.config.storage_options)
        files = JobFiles.beside(job.root)
        media_type, extension = RESULT_FORMATS[fmt]
        if fmt == "parquet":
            chunks = parquet_chunks(storage, files.results)
        elif fmt == "csv":
            chunks = csv_chunks(storage, files.results)
        else:
            chunks = geojson_chunks(storage, files)
        return chunks, media_type, f"{job_id}.{extension}"

    def wait(
        self,
        job_id: str,
        timeout: float | None = None,
        poll: float = 0.5,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        kind: str | None = None,
    ) -> dict[str, Any]:
        """Poll a job until no replica works on it (final, stopped or waiting for start)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            view = self.get(job_id, kind)
            if on_progress is not None:
                on_progress(view)
            job_state = JobState(view["status"])
            busy = job_state in RUNNING or (
                job_state == JobState.ANALYSIS_DONE and self.store.get(job_id).autostart
            )
            if not busy:
                return view
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"batch job {job_id} still {job_state} after {timeout} s")
            time.sleep(poll)

    # ---------------------------------------------------------------------- drivers

    def _context(self) -> DriverContext:
        return DriverContext(
            store=self.store,
            executor=self.executor,
            settings=self.settings,
            config=self.config,
            catalog=self.catalog,
            open_catalog=self.open_catalog,
            owner=self.owner,
        )

    def _launch(self, job_id: str, kind: str) -> None:
        """Start a driver for a job this replica holds (one at a time per job)."""
        with self._lock:
            previous = self._drivers.get(job_id)
            if previous is not None and _alive(previous) and not previous.stop.is_set():
                return
        if previous is not None and previous.thread is not None:
            # A driver told to leave (stop, then start again at once) exits within a poll.
            previous.thread.join(timeout=30)
        with self._lock:
            if self._closed.is_set():
                return
            current = self._drivers.get(job_id)
            if current is not None and current is not previous and _alive(current):
                return
            driver = Driver(self._context(), job_id)
            self._drivers[job_id] = driver
            driver.start(kind, on_exit=self._forget)
        self.start_supervisor(resume=False)

    def _forget(self, driver: Driver) -> None:
        with self._lock:
            if self._drivers.get(driver.job_id) is driver:
                del self._drivers[driver.job_id]

    def resume_orphans(self) -> list[str]:
        """Take over jobs left ANALYSING / PROCESSING by a replica that is gone.

        Returns:
            The ids of the jobs resumed here.

        """
        now = time.time()
        stale_before = now - self.config.batch_lease_seconds
        resumed = []
        for job in self.store.running(RUNNING):
            if job.id in self._drivers:
                continue
            if job.owner == self.owner and (job.heartbeat or 0) > now - self._renew_every:
                continue  # ours, its driver starting: an action just took the lease
            dead = [job.owner] if job.owner and _owner_dead(job.owner) else []
            if self.store.claim(job.id, self.owner, {job.state}, stale_before, dead):
                logger.info("batch job %s: resuming (%s, was %s)", job.id, job.state, job.owner)
                self._launch(job.id, "analyse" if job.state == JobState.ANALYSING else "process")
                resumed.append(job.id)
        return resumed

    def start_supervisor(self, resume: bool = True) -> None:
        """Start the lease keeper (renew ours, take over orphans) if not running."""
        with self._lock:
            if self._supervisor is not None or self._closed.is_set():
                return
            self._supervisor = threading.Thread(
                target=self._supervise, args=(resume,), name="batch-supervisor", daemon=True
            )
            self._supervisor.start()

    @property
    def _renew_every(self) -> float:
        return max(self.config.batch_lease_seconds / 3.0, 0.2)

    def _supervise(self, resume_now: bool) -> None:
        first = True
        while first or not self._closed.wait(self._renew_every):
            try:
                if self.takeover and (resume_now or not first):
                    self.resume_orphans()
                for job_id, driver in list(self._drivers.items()):
                    # ANALYSIS_DONE too: the moment between an analysis and its processing.
                    if not self.store.renew(job_id, self.owner, LEASED):
                        driver.stop.set()
            except Exception as error:  # a database hiccup: try again next round
                logger.warning("batch supervisor: %s", error)
            first = False

    def close(self, timeout: float = 30.0) -> None:
        """Shut down: leave our jobs, stop the supervisor and the Dask client / cluster.

        Jobs this replica drives stay ANALYSING / PROCESSING with their lease released, so
        another replica (or the next start of this one) resumes them at once.
        """
        self._closed.set()
        with self._lock:
            drivers = list(self._drivers.values())
        for driver in drivers:
            driver.stop.set()
        for driver in drivers:
            if driver.thread is not None:
                driver.thread.join(timeout)
        for driver in drivers:
            try:
                self.store.release(driver.job_id, self.owner)
            except Exception as error:
                logger.warning("batch job %s: cannot release lease: %s", driver.job_id, error)
        if self._supervisor is not None:
            self._supervisor.join(timeout)
        _LIVE_OWNERS.discard(self.owner)
        self.executor.close()
