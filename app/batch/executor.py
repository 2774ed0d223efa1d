"""Where work units run: Dask distributed.

``dask_scheduler`` unset: an in-process ``LocalCluster`` of worker *processes* (the
statistics engine is numpy + GDAL, and processes keep one unit's GIL-bound Python work
from slowing another's), started on first use. Set: the ``tcp://`` scheduler it names (a
Kubernetes or VM fleet running ``dask worker`` with this package installed). One client
per service process, shared by every job it drives.

The LocalCluster's workers get ``malloc_trim_threshold`` (``batch_malloc_trim_threshold``)
as glibc's ``MALLOC_TRIM_THRESHOLD_`` instead of Dask's 65536, which costs tile-sized
numpy work about a third more CPU in page faults (unset by default).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import dask
from distributed import Client, Future, LocalCluster

__all__ = ["DaskExecutor", "worker_environ"]

# Where Dask keeps the variables its nannies set before spawning a worker process.
_PRE_SPAWN = "distributed.nanny.pre-spawn-environ"
_MALLOC_TRIM = "MALLOC_TRIM_THRESHOLD_"


def worker_environ(malloc_trim_threshold: int | None) -> dict[str, Any]:
    """Dask's pre-spawn environment of workers, with glibc's trim threshold replaced.

    Args:
        malloc_trim_threshold: Bytes, or None to leave ``MALLOC_TRIM_THRESHOLD_`` unset
            (Dask drops a variable whose value is None).

    Returns:
        The ``distributed.nanny.pre-spawn-environ`` mapping to configure.

    """
    environ = dict(dask.config.get(_PRE_SPAWN, default={}) or {})
    environ[_MALLOC_TRIM] = None if malloc_trim_threshold is None else int(malloc_trim_threshold)
    return environ


logger = logging.getLogger(__name__)


class DaskExecutor:
    """A lazily connected Dask client (and its LocalCluster, when it owns one).

    Args:
        scheduler: A scheduler address (``tcp://host:8786``), or None for a LocalCluster.
        workers: Worker processes of the LocalCluster.
        threads_per_worker: Threads of each of its workers.
        malloc_trim_threshold: glibc's ``MALLOC_TRIM_THRESHOLD_`` of its workers (None:
            unset, not Dask's 65536).

    """

    def __init__(
        self,
        scheduler: str | None,
        workers: int = 2,
        threads_per_worker: int = 1,
        malloc_trim_threshold: int | None = None,
    ):
        self.scheduler = scheduler
        self.malloc_trim_threshold = malloc_trim_threshold
        self.workers = max(int(workers), 1)
        self.threads_per_worker = max(int(threads_per_worker), 1)
        self._client: Client | None = None
        self._cluster: LocalCluster | None = None
        self._lock = threading.Lock()
        self._threads: tuple[float, int] = (0.0, 0)

    @property
    def connected(self) -> bool:
        """Whether the client exists (a LocalCluster is only started on first use)."""
        return self._client is not None

    @property
    def client(self) -> Client:
        """The connected client (connecting, or starting the LocalCluster, on first use)."""
        with self._lock:
            if self._client is None:
                if self.scheduler:
                    self._client = Client(self.scheduler, timeout="30s", set_as_default=False)
                else:
                    logger.info("starting a Dask LocalCluster of %d worker processes", self.workers)
                    # The nannies read their environment when created (and reuse it
                    # when a worker restarts): the override is needed for the start only.
                    environ = worker_environ(self.malloc_trim_threshold)
                    with dask.config.set({_PRE_SPAWN: environ}):
                        self._cluster = LocalCluster(
                            n_workers=self.workers,
                            threads_per_worker=self.threads_per_worker,
                            processes=True,
                            dashboard_address="127.0.0.1:0",  # loopback only, any free port
                            silence_logs=logging.ERROR,
                        )
                    self._client = Client(self._cluster, set_as_default=False)
            return self._client

    def parallelism(self) -> int:
        """Worker threads of the cluster now (re-asked every few seconds: clusters scale)."""
        checked, threads = self._threads
        if time.monotonic() - checked > 5.0 or not threads:
            try:
                threads = sum(self.client.nthreads().values())
            except Exception:  # a scheduler that is momentarily away: keep the last figure
                threads = threads or self.workers * self.threads_per_worker
            self._threads = (time.monotonic(), threads)
        return max(threads, 1)

    def submit(self, function: Callable[..., Any], argument: Any, key: str) -> Future:
        """Run ``function(argument)`` on a worker (not cached by key: ``pure=False``)."""
        return self.client.submit(function, argument, key=key, pure=False)

    def cancel(self, futures: list[Future]) -> None:
        """Forget futures; tasks already running finish on their worker and are ignored."""
        if futures and self._client is not None:
            try:
                self._client.cancel(futures)
            except Exception as error:  # the scheduler may already be gone
                logger.debug("cancelling futures: %s", error)

    def close(self) -> None:
        """Close the client and the LocalCluster it started."""
        with self._lock:
            client, cluster = self._client, self._cluster
            self._client = self._cluster = None
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
