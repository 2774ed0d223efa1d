"""Open GeoTIFF datasets kept for reuse, and the process's asset-reading threads.

Opening a COG costs a GDAL open, a header (IFD) parse and, remotely, a range request; a map
tile reads a few blocks. ``DatasetPool`` lends already-open datasets, to the tile readers
(``app.readers.gtiff``) and the statistics engine (``app.stats.reading``) alike: one cache
of open datasets per process. A dataset is used by one thread at a time (GDAL datasets are
not thread-safe), goes back to the pool after a clean read and is closed after a failed
one. A local file is reopened when its stat (inode, size, mtime) changes, so a replaced or
moved file is never read through a stale handle; a remote dataset is reopened after
``remote_ttl`` seconds.

``shared_executor`` gives long-lived thread pools for the reads of a request's assets and
a mosaic's items: a thread pool made per request (what rio-tiler does) pays thread
start-up and a new PROJ context for every tile.

Both are per process (uvicorn and Dask workers are processes); ``configure`` sets their
sizes from the settings.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import rasterio
from rasterio.io import DatasetReader

from app.security import SOURCE_DRIVER
from app.settings import default_settings

# Until ``configure`` is called (a process that never runs create_app, such as a Dask
# worker), the pool and threads have the settings' defaults.
_DEFAULTS = default_settings()

Stamp = tuple[int, int, int] | float


@dataclass
class _Idle:
    dataset: DatasetReader
    stamp: Stamp


def is_remote(source: str) -> bool:
    """Whether ``source`` is a URL (read over the network) rather than a local path."""
    return "://" in source


def _local_stamp(source: str) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(source)
    except OSError:
        return None
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


class DatasetPool:
    """Open datasets lent to one thread at a time, keyed by their checked source.

    Args:
        max_idle: Datasets kept open while nobody uses them (least recently used closed
            first); 0 disables reuse.
        remote_ttl: Seconds a remote (URL) dataset is reused before it is reopened.

    """

    def __init__(
        self,
        max_idle: int = _DEFAULTS.dataset_pool_size,
        remote_ttl: float = _DEFAULTS.dataset_pool_remote_ttl,
    ):
        self.max_idle = max_idle
        self.remote_ttl = remote_ttl
        self._idle: OrderedDict[int, tuple[str, _Idle]] = OrderedDict()
        self._by_source: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        self._pid = os.getpid()

    @contextmanager
    def open(self, source: str) -> Iterator[DatasetReader]:
        """Lend an open dataset of ``source`` (a path or URL already allow-listed).

        Opened with the GeoTIFF driver only (``app.security.SOURCE_DRIVER``).
        """
        stamp = self._stamp(source)
        dataset = self._take(source, stamp)
        if dataset is None:
            dataset = rasterio.open(source, driver=SOURCE_DRIVER)
        try:
            yield dataset
        except BaseException:
            dataset.close()
            raise
        self._give_back(source, _Idle(dataset, stamp))

    def clear(self) -> None:
        """Close every idle dataset."""
        with self._lock:
            idle = [entry.dataset for _, entry in self._idle.values()]
            self._idle.clear()
            self._by_source.clear()
        for dataset in idle:
            dataset.close()

    def __len__(self) -> int:
        """Idle datasets held."""
        return len(self._idle)

    def _stamp(self, source: str) -> Stamp | None:
        if is_remote(source):
            return time.monotonic()
        return _local_stamp(source)

    def _fresh(self, source: str, held: Stamp, now: Stamp | None) -> bool:
        if now is None:
            return False
        if is_remote(source):
            return now - held < self.remote_ttl
        return held == now

    def _take(self, source: str, stamp: Stamp | None) -> DatasetReader | None:
        stale: list[DatasetReader] = []
        found: DatasetReader | None = None
        with self._lock:
            self._after_fork()
            keys = self._by_source.get(source, [])
            while keys and found is None:
                _, entry = self._idle.pop(keys.pop())
                if self._fresh(source, entry.stamp, stamp):
                    found = entry.dataset
                else:
                    stale.append(entry.dataset)
            if not keys:
                self._by_source.pop(source, None)
        for dataset in stale:
            dataset.close()
        return found

    def _give_back(self, source: str, entry: _Idle) -> None:
        if self.max_idle <= 0 or entry.dataset.closed or entry.stamp is None:
            entry.dataset.close()
            return
        evicted: list[DatasetReader] = []
        with self._lock:
            self._after_fork()
            key = id(entry.dataset)
            # Remote datasets keep the time they were opened, not the time of this read.
            self._idle[key] = (source, entry)
            self._by_source.setdefault(source, []).append(key)
            while len(self._idle) > self.max_idle:
                old_key, (old_source, old) = self._idle.popitem(last=False)
                self._by_source[old_source].remove(old_key)
                if not self._by_source[old_source]:
                    del self._by_source[old_source]
                evicted.append(old.dataset)
        for dataset in evicted:
            dataset.close()

    def _after_fork(self) -> None:
        # A forked child must not share the parent's GDAL handles: forget them.
        if os.getpid() != self._pid:
            self._pid = os.getpid()
            self._idle.clear()
            self._by_source.clear()


_pool = DatasetPool()
_executors: dict[str, tuple[int, ThreadPoolExecutor]] = {}
_executor_threads = _DEFAULTS.reader_threads
_executor_lock = threading.Lock()


def dataset_pool() -> DatasetPool:
    """The process's dataset pool."""
    return _pool


def shared_executor(name: str) -> ThreadPoolExecutor:
    """The process's long-lived thread pool ``name`` (created on first use).

    One pool per kind of task, so that a task never waits on a task queued behind it in
    its own pool: ``asset-read`` runs single asset reads (leaves), ``mosaic-read`` runs
    item reads, which wait on asset reads.
    """
    with _executor_lock:
        entry = _executors.get(name)
        # Threads do not survive a fork: a child makes its own pools.
        if entry is None or entry[0] != os.getpid():
            entry = _executors[name] = (
                os.getpid(),
                ThreadPoolExecutor(max_workers=max(1, _executor_threads), thread_name_prefix=name),
            )
        return entry[1]


def reader_executor() -> ThreadPoolExecutor:
    """The process's thread pool for single asset reads."""
    return shared_executor("asset-read")


def configure(max_idle: int, remote_ttl: float, reader_threads: int) -> None:
    """Size the process's dataset pool and reading threads (from the settings).

    Args:
        max_idle: Idle open datasets kept (``dataset_pool_size``).
        remote_ttl: Seconds a remote dataset is reused (``dataset_pool_remote_ttl``).
        reader_threads: Threads of each shared pool (``reader_threads``).

    """
    global _executor_threads
    _pool.max_idle = max_idle
    _pool.remote_ttl = remote_ttl
    with _executor_lock:
        if reader_threads != _executor_threads:
            for _, executor in _executors.values():
                executor.shutdown(wait=False)
            _executors.clear()
        _executor_threads = reader_threads
