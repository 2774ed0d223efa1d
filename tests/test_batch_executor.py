"""The batch executor's LocalCluster: its workers' glibc trim threshold (Settings).

Dask's nannies give workers ``MALLOC_TRIM_THRESHOLD_=65536``, which makes tile-sized numpy
work fault its pages in again and again; ``batch_malloc_trim_threshold`` replaces it (None:
unset). Checked in real worker processes (1 worker each).
"""

from __future__ import annotations

import os

import dask

from app.batch.executor import DaskExecutor, worker_environ
from app.settings import Settings

VARIABLE = "MALLOC_TRIM_THRESHOLD_"


def _worker_value(executor: DaskExecutor) -> str | None:
    values = executor.client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_"))
    assert len(values) == 1
    return next(iter(values.values()))


def test_local_cluster_workers_get_the_trim_threshold_setting():
    assert Settings().batch_malloc_trim_threshold is None
    # A LocalCluster started earlier in this process (the nannies run here) leaves Dask's
    # value in os.environ, which Dask lets win over its config: start from a clean one.
    saved = os.environ.pop(VARIABLE, None)
    try:
        unset = DaskExecutor(None, workers=1)
        try:
            assert _worker_value(unset) is None
        finally:
            unset.close()
        os.environ.pop(VARIABLE, None)
        chosen = DaskExecutor(None, workers=1, malloc_trim_threshold=1 << 20)
        try:
            assert _worker_value(chosen) == str(1 << 20)
        finally:
            chosen.close()
    finally:
        os.environ.pop(VARIABLE, None)
        if saved is not None:
            os.environ[VARIABLE] = saved
    # Dask's own default is left as it was for everything else.
    assert dask.config.get("distributed.nanny.pre-spawn-environ")[VARIABLE] == 65536


def test_worker_environ_keeps_dasks_other_variables():
    environ = worker_environ(None)
    assert environ[VARIABLE] is None
    assert environ["OMP_NUM_THREADS"] == 1  # Dask's numpy thread settings stay
    assert worker_environ(4096)[VARIABLE] == 4096


def test_the_service_passes_the_setting_to_its_executor(settings: Settings):
    from app.batch import BatchService
    from app.services import catalog_factory

    chosen = settings.model_copy(update={"batch_malloc_trim_threshold": 262144})
    service = BatchService(chosen, catalog_factory(chosen), check_sources=False, takeover=False)
    try:
        assert service.executor.malloc_trim_threshold == 262144
        assert not service.executor.connected  # no cluster started for this
    finally:
        service.close()
