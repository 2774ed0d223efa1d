"""One V8 time budget per request: ``evalscript_timeout_seconds`` over all its V8 calls.

A request that evaluates a script many times (the Statistical API, one call per interval;
a search tile, one per item) runs inside ``request_budget``: each V8 call gets the V8 time
the request has left, not a fresh timeout, so one request cannot run calls x timeout
seconds of V8. Only time in V8 counts (reading the data does not). The budget is a context
variable: threads that run a request's reads take it with ``contextvars.copy_context``.
"""

import contextlib
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar


class _Budget:
    """V8 seconds left of one request, shared by the threads of its reads."""

    def __init__(self, seconds: float):
        self.left = seconds
        self.lock = threading.Lock()

    def spend(self, seconds: float) -> None:
        with self.lock:
            self.left -= seconds


_BUDGET: ContextVar[_Budget | None] = ContextVar("evalscript_v8_budget", default=None)


@contextlib.contextmanager
def request_budget(seconds: float) -> Iterator[None]:
    """Run the block's V8 calls within ``seconds`` of V8 time together (an outer one is kept).

    Args:
        seconds: The V8 time of the whole block (``evalscript_timeout_seconds``).

    """
    if _BUDGET.get() is not None:
        yield
        return
    token = _BUDGET.set(_Budget(seconds))
    try:
        yield
    finally:
        _BUDGET.reset(token)


def seconds_left() -> float | None:
    """The V8 time left of the current request's budget, or None outside a budget."""
    budget = _BUDGET.get()
    return None if budget is None else budget.left


@contextlib.contextmanager
def spending() -> Iterator[None]:
    """Count the block's wall time against the current request's budget (if any)."""
    budget = _BUDGET.get()
    started = time.monotonic()
    try:
        yield
    finally:
        if budget is not None:
            budget.spend(time.monotonic() - started)
