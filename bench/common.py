"""Small helpers shared by the benchmarks: free ports, server processes, timings, BENCHMARKS.md.

Run by hand; nothing here is imported by the service or the tests.
"""

from __future__ import annotations

import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
BENCH_DATA = ROOT / "data" / "bench"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """A web server in its own process group, logging to a file."""

    name: str
    argv: Sequence[str]
    port: int
    env: dict[str, str]
    cwd: Path = ROOT
    log: Path | None = None
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_path: str, timeout: float = 90.0) -> None:
        """Start the process and wait until ``ready_path`` answers 200."""
        log = open(self.log or os.devnull, "wb")  # noqa: SIM115 (kept open by the child)
        self.proc = subprocess.Popen(
            list(self.argv),
            cwd=self.cwd,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        with httpx.Client(trust_env=False, timeout=5.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited during startup; see {self.log}")
                try:
                    if client.get(self.url + ready_path).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer {ready_path} within {timeout}s")

    def stop(self) -> None:
        """Stop the process group this server started (uvicorn master and its workers)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def cpu_seconds(pid: int) -> float:
    """user+system CPU seconds of a process and all its descendants."""
    total = 0.0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def system_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy so far (all cores; not idle, not I/O wait).

    Its difference over a run, less the benchmark's own CPU seconds, is what other
    processes used: the load a shared machine put on the run.
    """
    times = psutil.cpu_times()
    # user includes guest time; steal is the hypervisor's, not this machine's processes'.
    return (
        times.user
        + times.nice
        + times.system
        + getattr(times, "irq", 0.0)
        + getattr(times, "softirq", 0.0)
    )


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def machine_description() -> str:
    """CPU model, core count, memory and OS, in one line."""
    cpu = platform.processor() or platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text()
        match = re.search(r"model name\s*:\s*(.+)", text)
        if match:
            cpu = match.group(1).strip()
    except OSError:
        pass
    memory = ""
    try:
        match = re.search(r"MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text())
        if match:
            memory = f", {int(match.group(1)) / 1024**2:.0f} GiB RAM"
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores ({cpu}){memory}, {platform.system()} {platform.release()}, "
        f"Python {sys.version.split()[0]}"
    )


def write_section(title: str, body: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace (or append) the ``## title`` section of BENCHMARKS.md, leaving others alone."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    section = f"## {title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text)
