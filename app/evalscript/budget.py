"""One V8 time budget per request: ``evalscript_timeout_seconds`` over all its V8 calls.

A request that evaluates a script many times (the Statistical API, one call per interval)
runs inside ``request_budget``: each V8 call gets the time left, not a fresh timeout, so one
request cannot run intervals x timeout seconds of V8.
"""

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar

_DEADLINE: ContextVar[float | None] = ContextVar("evalscript_v8_deadline", default=None)


@contextlib.contextmanager
def request_budget(seconds: float) -> Iterator[None]:
    """Run the block's V8 calls within ``seconds`` together (an outer budget is kept).

    Args:
        seconds: The V8 wall time of the whole block (``evalscript_timeout_seconds``).

    """
    if _DEADLINE.get() is not None:
        yield
        return
    token = _DEADLINE.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def seconds_left() -> float | None:
    """The V8 time left of the current request's budget, or None outside a budget."""
    deadline = _DEADLINE.get()
    return None if deadline is None else deadline - time.monotonic()
