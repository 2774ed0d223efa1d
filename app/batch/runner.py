"""Drivers: the service-side loops that analyse a job and run its units on Dask.

A driver runs in a thread of the replica holding the job's lease. The processing driver

1. reconciles: a pending unit whose marker exists (written by a task whose result never
   reached a driver: the service died, the job was stopped) is recorded, not rerun;
2. submits the remaining units to Dask, a bounded number at a time, and records each
   finished unit from the marker its task returns; a unit whose task failed (its worker
   died more often than Dask retries, or it raised) is resubmitted, then recorded as an
   error;
3. consolidates (the job kind's ``finish``: batch statistics build ``results.parquet``
   from the units' parts, batch processing writes the STAC collection of its tiles) and
   ends the job DONE, or PARTIAL when features (tiles) failed.

What differs between the kinds (analysis, a unit's task, consolidation) is the job kind's
(``app.batch.kinds``); the loops here are shared.

It stops early, leaving the job for whoever resumes it, when the job is stopped, when its
lease is lost, or when the service shuts down. Nothing is lost or duplicated: files are
per feature and per unit and rewritten whole, the table is built from one part per unit.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from distributed import Future

from app.batch.config import BatchConfig
from app.batch.executor import DaskExecutor
from app.batch.kinds import TaskFactory, kind_of
from app.batch.states import JobState
from app.batch.storage import JobFiles, Storage
from app.batch.store import JobStore, UnitRecord
from app.catalog import Catalog
from app.errors import TerratilerError
from app.settings import Settings

__all__ = ["Driver", "DriverContext"]

logger = logging.getLogger(__name__)

# Seconds between checks of stop / lease / shutdown while units run.
POLL_SECONDS = 0.5
# Passes over the pending units: a unit finished but not recorded is submitted again.
ROUNDS = 3


@dataclass
class DriverContext:
    """What drivers share: the service's store, executor, settings and catalog."""

    store: JobStore
    executor: DaskExecutor
    settings: Settings
    config: BatchConfig
    catalog: Any
    open_catalog: Callable[[], Catalog]
    owner: str


@dataclass
class Driver:
    """One job's driver thread (analysis, then processing when asked).

    Attributes:
        context: The service's shared parts.
        job_id: The job.
        stop: Set to make the driver leave the job (stopped, lease lost, shutdown).

    """

    context: DriverContext
    job_id: str
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self, kind: str, on_exit: Callable[[Driver], None] | None = None) -> None:
        """Run ``analyse`` or ``process`` in a daemon thread."""
        target = self.analyse if kind == "analyse" else self.process

        def run() -> None:
            try:
                target()
            except Exception as error:  # never let a driver die silently
                logger.exception("batch job %s: driver failed", self.job_id)
                self._fail(f"{type(error).__name__}: {error}")
            finally:
                if on_exit is not None:
                    on_exit(self)

        self.thread = threading.Thread(target=run, name=f"batch-{self.job_id}", daemon=True)
        self.thread.start()

    # ------------------------------------------------------------------------ helpers

    @property
    def store(self) -> JobStore:
        """The job store."""
        return self.context.store

    def _storage(self, root: str) -> Storage:
        return Storage.for_url(root, self.context.config.storage_options)

    def _fail(self, message: str) -> None:
        self.store.set_state(
            self.job_id,
            JobState.FAILED,
            expect={JobState.ANALYSING, JobState.PROCESSING},
            held_by=self.context.owner,
            error=message,
            owner=None,
            heartbeat=None,
            finished_at=datetime.now(UTC),
        )

    # ----------------------------------------------------------------------- analysis

    def analyse(self) -> None:
        """Analyse the job; then start processing when the client asked to start."""
        job = self.store.get(self.job_id)
        if job.state != JobState.ANALYSING or job.owner != self.context.owner:
            return
        try:
            result = kind_of(job.kind).analyse(job, self.context, self._parallelism())
        except TerratilerError as error:
            self._fail(error.message)
            return
        if self.stop.is_set():
            return
        self.store.save_units(self.job_id, result.unit_sizes)
        moved = self.store.set_state(
            self.job_id,
            JobState.ANALYSIS_DONE,
            expect={JobState.ANALYSING},
            held_by=self.context.owner,
            analysis=result.summary,
            error=None,
        )
        if not moved:
            return
        if self.store.get(self.job_id).autostart and self._begin_processing():
            self.process()
        else:
            self.store.release(self.job_id, self.context.owner)

    def _parallelism(self) -> int:
        config = self.context.config
        if config.dask_scheduler is None and not self.context.executor.connected:
            return config.batch_workers * config.batch_threads_per_worker
        return self.context.executor.parallelism()

    def _begin_processing(self) -> bool:
        return self.store.set_state(
            self.job_id,
            JobState.PROCESSING,
            expect={JobState.ANALYSIS_DONE},
            held_by=self.context.owner,
            started_at=datetime.now(UTC),
        )

    # --------------------------------------------------------------------- processing

    def process(self) -> None:
        """Run the job's pending units on Dask, then consolidate and finish the job."""
        job = self.store.get(self.job_id)
        if job.state != JobState.PROCESSING or job.owner != self.context.owner:
            return
        storage = self._storage(job.root)
        kind = kind_of(job.kind)
        files = kind.files(job)
        function, make_task = kind.tasks(job, self.context)

        progress = self.store.progress(self.job_id)
        self.store.update(self.job_id, run_started=time.time(), run_base=progress.processed)
        for _ in range(ROUNDS):
            pending = self._reconcile(storage, files, self.store.units(self.job_id, True))
            if not pending:
                break
            if not self._run_units(function, make_task, pending):
                return
        else:
            if self.store.units(self.job_id, pending_only=True):
                # Results that could not be recorded (a unit's generation moved meanwhile).
                raise RuntimeError(f"units still pending after {ROUNDS} rounds")
        kind.finish(job, self.context)
        progress = self.store.progress(self.job_id)
        final = JobState.PARTIAL if progress.failed or progress.invalid else JobState.DONE
        self.store.set_state(
            self.job_id,
            final,
            expect={JobState.PROCESSING},
            held_by=self.context.owner,
            owner=None,
            heartbeat=None,
            finished_at=datetime.now(UTC),
            error=None,
        )
        logger.info("batch job %s: %s (%s)", self.job_id, final, progress)

    def _reconcile(
        self, storage: Storage, files: JobFiles, pending: list[UnitRecord]
    ) -> list[UnitRecord]:
        """Record pending units whose marker is already written; return the others."""
        written = storage.names(files.units)
        remaining = []
        for unit in pending:
            if f"{unit.unit}.json" in written:
                marker = json.loads(storage.read(files.marker(unit.unit)))
                if int(marker.get("generation", -1)) == unit.generation:
                    self.store.record_unit(self.job_id, marker)
                    continue
            remaining.append(unit)
        return remaining

    def _run_units(
        self,
        function: Callable[[Any], dict[str, Any]],
        make_task: TaskFactory,
        pending: list[UnitRecord],
    ) -> bool:
        """Submit and record units until none is left; False when the driver must leave."""
        executor = self.context.executor
        retries = self.context.config.batch_unit_retries
        run = uuid.uuid4().hex[:8]
        # Largest units first: the last ones to finish are small, so workers run out of
        # work at nearly the same moment (longest-processing-time-first scheduling).
        todo = deque(sorted(pending, key=lambda unit: (-unit.features, unit.unit)))
        attempts: dict[int, int] = {}
        running: dict[Future, UnitRecord] = {}
        # Futures report completion through callbacks into this queue: the loop wakes at
        # once for a finished unit and at least every POLL_SECONDS to check for a stop.
        completed: queue.Queue[Future] = queue.Queue()
        try:
            while todo or running:
                if self.stop.is_set():
                    return False
                window = 2 * executor.parallelism()
                while todo and len(running) < window:
                    unit = todo.popleft()
                    attempt = attempts.get(unit.unit, 0)
                    key = f"batch-{self.job_id}-{unit.unit}-g{unit.generation}-a{attempt}-{run}"
                    future = executor.submit(function, make_task(unit), key)
                    running[future] = unit
                    future.add_done_callback(completed.put)
                try:
                    finished = [completed.get(timeout=POLL_SECONDS)]
                except queue.Empty:
                    continue
                while not completed.empty():
                    finished.append(completed.get_nowait())
                for future in finished:
                    unit = running.pop(future)
                    if future.status == "finished":
                        self.store.record_unit(self.job_id, future.result())
                        # Let Dask forget the result now: a result still wanted lives on
                        # its worker, and when that worker dies Dask computes the unit
                        # again (a finished tile recomputed, its files rewritten).
                        future.release()
                        continue
                    error = _error_text(future)
                    future.release()
                    attempts[unit.unit] = attempts.get(unit.unit, 0) + 1
                    if attempts[unit.unit] <= retries:
                        logger.warning(
                            "batch job %s unit %d: %s; resubmitting", self.job_id, unit.unit, error
                        )
                        todo.append(unit)
                    else:
                        self.store.record_unit_error(self.job_id, unit.unit, unit.generation, error)
            return True
        finally:
            executor.cancel(list(running))


def _error_text(future: Future) -> str:
    try:
        exception = future.exception(timeout=5)
    except Exception as error:  # cancelled or lost with its scheduler
        return f"{type(error).__name__}: {error}"
    return f"{type(exception).__name__}: {exception}"
