"""Waiting for a condition in tests: poll it until a deadline, never sleep a fixed time.

A fixed sleep is either too short on a loaded machine (a flaky test) or too long on a quiet
one (a slow suite); a poll returns as soon as the condition holds and fails naming it.
"""

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T], what: str, timeout: float = 20.0, interval: float = 0.02
) -> T:
    """Poll ``condition`` until it returns something truthy, and return that.

    Raises:
        AssertionError: still falsy after ``timeout`` seconds (the message names ``what``).
    """
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
    return result
