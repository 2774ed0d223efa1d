"""Batch jobs: job store, state machine, feature readers, work units, Dask execution, outputs.

No FastAPI here: the REST router (``app.routers.batch``) and the CLI (``app.cli_batch``)
both call ``BatchService``; Dask workers run ``app.batch.worker.run_unit``.
"""

from app.batch.models import BatchStatisticalRequest
from app.batch.service import RESULT_FORMATS, BatchService
from app.batch.states import Action, JobState

__all__ = ["RESULT_FORMATS", "Action", "BatchService", "BatchStatisticalRequest", "JobState"]
