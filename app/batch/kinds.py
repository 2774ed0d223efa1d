"""Job kinds: what differs between batch statistics and batch processing jobs.

The job store, the states, the leases, the drivers' loops (submit units to Dask, record
their markers, reconcile by marker after a restart) and the service's actions are shared;
a ``JobKind`` supplies the rest: the analysis (which units a job has), the Dask task of
one unit and the function that runs it, the consolidation when every unit is recorded,
and the kind's parts of the job view.

``statistics`` (``StatisticsKind``, below) is batch statistics' code as it was;
``process`` (``app.batch.processing.kind.ProcessKind``) runs one grid tile per unit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from app.batch.analysis import Analysis, analyse, validate_request
from app.batch.models import BatchStatisticalRequest
from app.batch.results import result_schema, write_results
from app.batch.states import JobState
from app.batch.storage import JobFiles, Storage
from app.batch.store import JobRecord, JobStore, Progress, UnitRecord
from app.batch.worker import UnitTask, run_unit

if TYPE_CHECKING:
    from app.batch.runner import DriverContext

__all__ = ["KINDS", "JobKind", "StatisticsKind", "kind_of"]

logger = logging.getLogger(__name__)

#: Makes the Dask task of one pending unit.
TaskFactory = Callable[[UnitRecord], Any]


class JobKind(Protocol):
    """One kind of batch job (``batch_jobs.kind``)."""

    name: str
    #: The field of the analysis summary that counts the job's items (features, tiles).
    total_key: str

    def files(self, job: JobRecord) -> JobFiles:
        """Where the job's files are (its bookkeeping in or beside its folder)."""
        ...

    def analyse(self, job: JobRecord, context: DriverContext, parallelism: int) -> Analysis:
        """Analyse a job: its summary and unit sizes (raises ``TerratilerError``)."""
        ...

    def tasks(
        self, job: JobRecord, context: DriverContext
    ) -> tuple[Callable[[Any], dict[str, Any]], TaskFactory]:
        """Before units run: the function Dask runs and the factory of each unit's task."""
        ...

    def finish(self, job: JobRecord, context: DriverContext) -> None:
        """Consolidate once every unit is recorded (the driver holds the lease)."""
        ...

    def progress_view(self, progress: Progress, total: int) -> dict[str, Any]:
        """The kind's counts under ``progress`` (beside ``units``)."""
        ...

    def results_view(self, job: JobRecord) -> dict[str, Any] | None:
        """Where a finished job's results are."""
        ...

    def details_view(self, store: JobStore, job: JobRecord) -> dict[str, Any]:
        """The failures listed by ``GET`` of one job."""
        ...


def _storage(context: DriverContext, root: str) -> Storage:
    return Storage.for_url(root, context.config.storage_options)


class StatisticsKind:
    """Batch statistics: units are chunks of features; results per feature and a table."""

    name = "statistics"
    total_key = "featureCount"

    def files(self, job: JobRecord) -> JobFiles:
        """The delivered folder holds results only: bookkeeping lies beside it."""
        return JobFiles.beside(job.root)

    def analyse(self, job: JobRecord, context: DriverContext, parallelism: int) -> Analysis:
        """Validate, read and stage the features, count scenes and intervals."""
        request = BatchStatisticalRequest.model_validate(job.request)
        return analyse(
            request,
            job.source,
            self.files(job),
            _storage(context, job.root),
            context.catalog,
            context.settings,
            context.config,
            parallelism,
        )

    def tasks(
        self, job: JobRecord, context: DriverContext
    ) -> tuple[Callable[[Any], dict[str, Any]], TaskFactory]:
        """``run_unit`` and the ``UnitTask`` of each unit."""
        batch_request = BatchStatisticalRequest.model_validate(job.request)
        request = batch_request.statistics_request()
        config = context.config
        root = job.root

        def task(unit: UnitRecord) -> UnitTask:
            return UnitTask(
                job_id=job.id,
                unit=unit.unit,
                generation=unit.generation,
                root=root,
                request=request,
                settings=context.settings,
                open_catalog=context.open_catalog,
                storage_options=config.storage_options if root.startswith("s3://") else {},
                only=unit.retry_ids(),
                chunk_size=config.batch_unit_features,
                naming=batch_request.naming,
            )

        return run_unit, task

    def finish(self, job: JobRecord, context: DriverContext) -> None:
        """Build ``results.parquet`` from the units' parts."""
        storage = _storage(context, job.root)
        files = self.files(job)
        request = BatchStatisticalRequest.model_validate(job.request)
        schema = result_schema(validate_request(request, context.settings, context.catalog))
        units = [u.unit for u in context.store.units(job.id)]
        # Every unit is recorded and this driver holds the lease: no writer is left, so a
        # temporary here is one a killed process left (a kill -9 during consolidation
        # leaves results.parquet.tmp-<uuid>): a resumed job ends without any.
        removed = storage.remove_temporaries(files.folders)
        if removed:
            logger.info("batch job %s: removed %d stale temporaries", job.id, len(removed))
        write_results(storage, files, units, schema)

    def progress_view(self, progress: Progress, total: int) -> dict[str, Any]:
        """``features``: total, done, failed, invalid."""
        return {
            "features": {
                "total": total,
                "done": progress.done,
                "failed": progress.failed,
                "invalid": progress.invalid,
            }
        }

    def results_view(self, job: JobRecord) -> dict[str, Any] | None:
        """The job folder and its table."""
        if job.state not in (JobState.DONE, JobState.PARTIAL):
            return None
        return {"folder": job.root, "table": self.files(job).results}

    def details_view(self, store: JobStore, job: JobRecord) -> dict[str, Any]:
        """Failed and invalid features, failed units."""
        failures = store.failures(job.id)
        return {
            "failedFeatures": failures["failed"],
            "invalidFeatures": failures["invalid"],
            "failedUnits": failures["units"],
        }


KINDS: dict[str, JobKind] = {}


def kind_of(name: str) -> JobKind:
    """The kind named ``name`` (``statistics`` or ``process``)."""
    if not KINDS:
        from app.batch.processing.kind import ProcessKind

        KINDS.update({"statistics": StatisticsKind(), "process": ProcessKind()})
    return KINDS[name]
