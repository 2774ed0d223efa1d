"""Evalscripts the translator refuses, run in an embedded V8 (mini-racer), sandboxed.

``run_v8`` has the contract of ``Evalscript.evaluate``; ``run_setup`` returns what a
non-literal ``setup()`` returns. Each request gets a fresh V8 context (no state from one
request or user to the next) with ``evalscript_timeout_seconds`` of wall time over all its
calls (408) and ``evalscript_memory_mb`` of heap (413). Pixels go to V8 in blocks of
``evalscript_block_pixels`` as typed arrays; the per-pixel loop runs inside V8.

V8 runs in worker processes (``v8_worker.py``), not in this one: a single large allocation
in a script is a fatal V8 abort that no limit catches (measured: ``new
Array(1e9).fill(0)`` kills the process with SIGTRAP), and a context that reached its heap
limit can hang when freed. A worker that dies answers 413 (a V8 out-of-memory abort) or 400,
one that overruns is killed (408); the calling process never crashes. Idle workers are kept
for the next request (a fresh context each time, the process reused).
"""

import contextlib
import dataclasses
import mmap
import os
import pickle
import select
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from app.errors import BadRequestError, BusyError, ScriptTimeoutError, TooLargeError
from app.evalscript.budget import seconds_left, spending
from app.evalscript.limits import EvalscriptLimits
from app.evalscript.v8_worker import shared_size, shared_views

_WORKER = Path(__file__).with_name("v8_worker.py")
# Idle worker processes kept (about 60 MB each); more run at once when requests do. Set
# from the settings by ``configure_v8`` (evalscript_v8_idle_workers).
_MAX_IDLE = 4
# V8 runs at most this many scripts at once in this process (CPU-bound: more would only
# share the cores, and every script's time limit would run out together); the others wait
# for a turn, up to _QUEUE_SECONDS, then get a 503 (evalscript_v8_concurrency,
# evalscript_v8_queue_seconds).
_MAX_RUNNING = max(2, os.cpu_count() or 2)
_QUEUE_SECONDS = 30.0
# Slack over the script's own time limit before the parent kills a worker that does not
# answer: process start and V8 stopping the script.
_GRACE_SECONDS = 5.0
_SHM_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108 (RAM, not disk)
# A shared file up to this size stays mapped by the worker and this process between requests
# (no page faults on the next one); a larger one is deleted after its request.
_KEEP_SHARED_BYTES = 64 << 20
_MEMORY_ABORT = ("out of memory", "allocation failed", "heap limit", "invalid table size")


class _WorkerDied(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class _Worker:
    """One V8 worker process and the pipes to it."""

    def __init__(self) -> None:
        self.stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [sys.executable, str(_WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
        )
        self.shm: Any = None  # the file in /dev/shm the pixels cross through
        self.shm_map: mmap.mmap | None = None
        self.shm_size = 0

    def shared(self, size: int) -> tuple[str, mmap.mmap]:
        """The worker's shared file, at least ``size`` bytes (grown in whole MiB)."""
        if self.shm is None or size > self.shm_size:
            self.drop_shared()
            self.shm_size = max(1 << 20, -(-size // (1 << 20)) * (1 << 20))
            self.shm = _allocated_file(self.shm_size)
            self.shm_map = mmap.mmap(self.shm.fileno(), self.shm_size)
        assert self.shm_map is not None
        return self.shm.name, self.shm_map

    def keeps_shared(self) -> bool:
        """Whether the shared file stays mapped for the next request (small ones only)."""
        return self.shm_size <= _KEEP_SHARED_BYTES

    def drop_shared(self) -> None:
        """Unmap and delete the shared file."""
        if self.shm_map is not None:
            self.shm_map.close()
        if self.shm is not None:
            self.shm.close()
        self.shm, self.shm_map, self.shm_size = None, None, 0

    def ask(self, request: dict[str, Any], wait_seconds: float) -> tuple[Any, ...]:
        """Send one request; its answer, or _WorkerDied / TimeoutError."""
        process = self.process
        assert process.stdin is not None and process.stdout is not None
        deadline = time.monotonic() + wait_seconds
        try:
            pickle.dump(request, process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            process.stdin.flush()
        except (BrokenPipeError, OSError):
            raise _WorkerDied(self._crash()) from None
        ready, _, _ = select.select([process.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            self.kill()
            raise TimeoutError
        try:
            return pickle.load(process.stdout)
        except (EOFError, pickle.UnpicklingError, OSError):
            raise _WorkerDied(self._crash()) from None

    def _crash(self) -> str:
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.process.returncode
        self.stderr.seek(0)
        tail = self.stderr.read()[-20_000:].decode("utf-8", "replace")
        self.close()
        return f"exit code {code}\n{tail}"

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.process.poll() is None

    def kill(self) -> None:
        """Stop the process at once."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.close()

    def close(self) -> None:
        """Release the pipes (the process has ended or ends on stdin's EOF)."""
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None and not pipe.closed:
                try:
                    pipe.close()
                except OSError:
                    pass
        self.stderr.close()
        self.drop_shared()


def _allocated_file(size: int) -> Any:
    """A temporary file of ``size`` bytes, its space reserved: in /dev/shm when it has room.

    Reserved up front (``posix_fallocate``): writing through a map into a full tmpfs would be
    a SIGBUS that kills this process (Docker gives /dev/shm 64 MB by default). Without room
    there, a file in the temporary directory (the page cache serves it all the same).
    """
    if _SHM_DIR is not None:
        try:
            file = tempfile.NamedTemporaryFile(dir=_SHM_DIR, prefix="terratiler-v8-")
            try:
                os.posix_fallocate(file.fileno(), 0, size)
                return file
            except OSError:
                file.close()
        except OSError:
            pass
    file = tempfile.NamedTemporaryFile(prefix="terratiler-v8-")
    try:
        os.posix_fallocate(file.fileno(), 0, size)
    except OSError:
        file.close()
        raise
    return file


class _Pool:
    """Idle workers of this process (rebuilt after a fork)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.idle: list[_Worker] = []
        self.pid = os.getpid()

    def take(self) -> _Worker:
        with self.lock:
            if self.pid != os.getpid():  # forked: those processes are the parent's
                self.idle, self.pid = [], os.getpid()
            while self.idle:
                worker = self.idle.pop()
                if worker.alive():
                    return worker
                worker.close()
        return _Worker()

    def give_back(self, worker: _Worker) -> None:
        with self.lock:
            if self.pid == os.getpid() and len(self.idle) < _MAX_IDLE and worker.alive():
                self.idle.append(worker)
                return
        worker.process.stdin.close()  # type: ignore[union-attr]  # ends on EOF
        worker.process.wait()
        worker.close()


_POOL = _Pool()
_RUNNING = threading.BoundedSemaphore(_MAX_RUNNING)
# Requests waiting for a turn now, and how many may (configure_v8; None: no bound).
_WAITING = 0
_WAITING_LOCK = threading.Lock()
_MAX_WAITING: int | None = None


def configure_v8(
    idle_workers: int, concurrency: int, queue_seconds: float, max_waiting: int | None = None
) -> None:
    """Set this process's V8 workers from the settings (``configure_process`` calls it).

    Args:
        idle_workers: Idle worker processes kept (``evalscript_v8_idle_workers``).
        concurrency: Scripts run at once; 0: the cores, at least 2
            (``evalscript_v8_concurrency``).
        queue_seconds: How long a script waits for a turn before a 503
            (``evalscript_v8_queue_seconds``).
        max_waiting: Scripts waiting for a turn at once, more are a 503 at once
            (``evalscript_v8_max_waiting``); None: no bound.

    """
    global _MAX_IDLE, _MAX_RUNNING, _QUEUE_SECONDS, _RUNNING, _MAX_WAITING
    _MAX_WAITING = max_waiting
    _MAX_IDLE = max(0, idle_workers)
    running = concurrency if concurrency > 0 else max(2, os.cpu_count() or 2)
    if running != _MAX_RUNNING:
        _MAX_RUNNING, _RUNNING = running, threading.BoundedSemaphore(running)
    _QUEUE_SECONDS = queue_seconds


@contextlib.contextmanager
def _turn() -> Iterator[None]:
    """One of the _MAX_RUNNING turns at V8 (503s: ``_wait_for``).

    A 503 after _QUEUE_SECONDS of waiting, or at once when _MAX_WAITING requests wait
    already (each holds a request thread while it waits).
    """
    running = _RUNNING
    if not running.acquire(blocking=False) and not _wait_for(running):
        raise BusyError(
            f"evalscript: the {_MAX_RUNNING} V8 workers (evalscript_v8_concurrency) were busy "
            f"for {_QUEUE_SECONDS:g} s (evalscript_v8_queue_seconds); try again"
        )
    try:
        yield
    finally:
        running.release()


def _wait_for(running: threading.BoundedSemaphore) -> bool:
    """Wait up to _QUEUE_SECONDS for a turn, as one of at most _MAX_WAITING waiting."""
    global _WAITING
    with _WAITING_LOCK:
        if _MAX_WAITING is not None and _WAITING >= _MAX_WAITING:
            raise BusyError(
                f"evalscript: the {_MAX_RUNNING} V8 workers (evalscript_v8_concurrency) are "
                f"busy and {_WAITING} requests wait for them (evalscript_v8_max_waiting); "
                "try again"
            )
        _WAITING += 1
    try:
        return running.acquire(timeout=_QUEUE_SECONDS)
    finally:
        with _WAITING_LOCK:
            _WAITING -= 1


def _ask(request: dict[str, Any], limits: EvalscriptLimits, worker: _Worker | None = None) -> Any:
    """One request to a worker (``worker``: the caller gives it back after an answer)."""
    release = worker is None
    worker = worker or _POOL.take()
    wait = limits.timeout_seconds + _GRACE_SECONDS
    try:
        answer = worker.ask(request, wait)
    except TimeoutError:
        raise _timeout(limits) from None
    except _WorkerDied as died:
        if any(sign in died.message.lower() for sign in _MEMORY_ABORT):
            raise _memory(limits) from None
        raise BadRequestError(
            f"evalscript: V8 stopped running the script ({died.message.splitlines()[0]})"
        ) from None
    if answer[0] == "ok":
        if release:
            _POOL.give_back(worker)
        return answer[1]
    _, kind, message = answer
    if kind == "bad_request":
        if release:
            _POOL.give_back(worker)
        raise BadRequestError(message)
    worker.kill()  # it exits after a limit anyway
    if kind == "timeout":
        raise ScriptTimeoutError(message)
    if kind == "memory":
        raise TooLargeError(message)
    raise RuntimeError(f"evalscript V8 worker: {message}")


def start_workers(count: int = 1) -> None:
    """Start V8 worker processes ahead of the first script (each takes ~0.3 s to start).

    Optional: without it the first V8 request starts one. Keeps at most _MAX_IDLE.

    Args:
        count: How many to have idle.

    """
    for _ in range(max(0, min(count, _MAX_IDLE) - len(_POOL.idle))):
        _POOL.give_back(_Worker())


def _timeout(limits: EvalscriptLimits) -> ScriptTimeoutError:
    return ScriptTimeoutError(
        f"evalscript: ran longer than {limits.timeout_seconds:g} s (evalscript_timeout_seconds)"
    )


def _memory(limits: EvalscriptLimits) -> TooLargeError:
    return TooLargeError(
        f"evalscript: used more than {limits.memory_mb} MB of V8 heap (evalscript_memory_mb)"
    )


def run_setup(script: str, limits: EvalscriptLimits) -> dict[str, Any]:
    """Run a script's ``setup()`` in V8 (when it is not a plain object literal).

    Args:
        script: The evalscript.
        limits: Its limits (time and heap apply).

    Returns:
        What setup() returns, JSON-decoded.

    Raises:
        BadRequestError: A script error (line:column and message), no setup().
        ScriptTimeoutError: Over ``evalscript_timeout_seconds``.
        TooLargeError: Over ``evalscript_memory_mb``.

    """
    request = {
        "op": "setup",
        "script": script,
        "timeout": limits.timeout_seconds,
        "memory_mb": limits.memory_mb,
    }
    with _turn():
        value = _ask(request, limits)
    if not isinstance(value, dict):
        raise BadRequestError("evalscript: setup() must return an object {input, output}")
    return value


def run_v8(
    script: str,
    setup: Mapping[str, Any],
    bands: Mapping[str, np.ndarray],
    valid: np.ndarray,
    limits: EvalscriptLimits,
) -> dict[str, np.ndarray]:
    """Run evaluatePixel over every pixel in V8.

    Args:
        script: The evalscript.
        setup: What its setup() returns (``input``, ``output``).
        bands: Input band name -> float32 (h, w) array (dataMask excluded).
        valid: bool (h, w); the script's ``sample.dataMask`` is it as 0/1.
        limits: Time, heap and block size.

    Returns:
        Output id -> float32 (bands, h, w), the values evaluatePixel returned.

    Raises:
        BadRequestError: A script error (line:column and message), a returned value of
            the wrong type or length (naming the output and the pixel), a missing band.
        ScriptTimeoutError: Over ``evalscript_timeout_seconds`` (all blocks together).
        TooLargeError: Over ``evalscript_memory_mb``.
        BusyError: No turn at V8 within _QUEUE_SECONDS (503).

    """
    from app.evalscript.parse import normalize_setup  # noqa: PLC0415 (esprima's module)

    normalized = normalize_setup(dict(setup))
    names = [band for band in normalized.inputs if band != "dataMask"]
    missing = [band for band in names if band not in bands]
    if missing:
        raise BadRequestError(f"evalscript: no data for input band '{missing[0]}'")
    valid = np.asarray(valid, dtype=bool)
    shape = valid.shape
    for name in names:
        if np.shape(bands[name]) != shape:
            raise BadRequestError(
                f"evalscript: band '{name}' is {np.shape(bands[name])}, the mask {shape}"
            )
    n = valid.size
    outputs = [(output_id, count) for output_id, count, _ in normalized.outputs]
    size = shared_size(len(names), n, outputs)
    with _turn():
        left = seconds_left()  # the request's budget (app.evalscript.budget), if it has one
        if left is not None and left <= 0:
            raise _timeout(limits)
        run_limits = limits
        if left is not None and left < limits.timeout_seconds:
            run_limits = dataclasses.replace(limits, timeout_seconds=left)
        try:
            with spending():
                return _run_in_worker(
                    script, names, bands, valid, shape, n, outputs, size, run_limits
                )
        except ScriptTimeoutError:
            raise _timeout(limits) from None  # naming the setting, not the time that was left


def _run_in_worker(
    script: str,
    names: list[str],
    bands: Mapping[str, np.ndarray],
    valid: np.ndarray,
    shape: tuple[int, ...],
    n: int,
    outputs: list[tuple[str, int]],
    size: int,
    limits: EvalscriptLimits,
) -> dict[str, np.ndarray]:
    # Pixels cross to the worker through a file in memory (/dev/shm) both map, not the pipe.
    worker = _POOL.take()
    try:
        path, shared = worker.shared(size)
    except BaseException:
        worker.kill()
        raise
    data, valid_view, views = shared_views(shared, len(names), n, outputs)
    keep = worker.keeps_shared()
    try:
        for i, name in enumerate(names):
            data[i] = np.asarray(bands[name], dtype=np.float32).reshape(-1)
        valid_view[:] = valid.reshape(-1)
        request = {
            "op": "run",
            "script": script,
            "names": names,
            "pixels": n,
            "shm": path,
            "shm_size": worker.shm_size,
            "keep_shm": worker.keeps_shared(),
            "width": shape[-1] if shape else 1,
            "outputs": outputs,
            "block": limits.block_pixels,
            "timeout": limits.timeout_seconds,
            "memory_mb": limits.memory_mb,
        }
        _ask(request, limits, worker)
        # Copied out before the worker (and its shared file) serves another request.
        return {
            output_id: np.array(views[output_id]).reshape((count, *shape))
            for output_id, count in outputs
        }
    finally:
        del data, valid_view, views
        if worker.alive():
            if not keep:
                worker.drop_shared()
            _POOL.give_back(worker)
