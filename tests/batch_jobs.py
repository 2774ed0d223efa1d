"""Batch statistics job requests for tests, and waiting for a job's state."""

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from distributed import Client
from polling import wait_until

# Seconds a test waits for a job to reach a state.
WAIT = 120.0

REQUEST = {
    "input": {"data": [{"type": "sentinel-2-l2a"}]},
    "aggregation": {
        "timeRange": {"from": "2023-04-01T00:00:00Z", "to": "2023-10-01T00:00:00Z"},
        "aggregationInterval": {"of": "P1D"},
        "outputs": {
            "ndvi": {"expression": "(nir-red)/(nir+red)"},
            "vis": {"expression": "red;green", "bands": ["red", "green"]},
        },
    },
    "calculations": {
        "ndvi": {
            "statistics": {"default": {"percentiles": {"k": [10, 50, 90]}}},
            "histograms": {"default": {"nBins": 4, "lowEdge": -1, "highEdge": 1}},
        }
    },
}


def job_body(features: Any, output: str | None = None) -> dict[str, Any]:
    """A job request over the demo's six months: NDVI (statistics, histogram) and red;green."""
    body = json.loads(json.dumps(REQUEST))
    body["input"]["features"] = features
    if output is not None:
        body["output"] = output
    return body


def wait_for(fetch: Callable[[], dict], states: set[str], timeout: float = WAIT) -> dict:
    """Poll a job view (``fetch``) until its status is one of ``states``; return the view."""
    last: dict = {}

    def reached() -> dict | None:
        nonlocal last
        last = fetch()
        return last if last["status"] in states else None

    try:
        return wait_until(reached, f"a status in {sorted(states)}", timeout, interval=0.1)
    except AssertionError:
        raise AssertionError(f"still {last['status']} after {timeout} s: {last}") from None


@contextmanager
def scheduler_client(address: str, attempts: int = 3) -> Iterator[Client]:
    """A Dask client of a test's cluster, its handshake tried again if it fails.

    distributed's ``Client.start`` asserts that the scheduler's first reply is one message;
    on a loaded machine that handshake failed once in CI (``AssertionError``) while the
    cluster itself was fine, so a test that only inspects the cluster tries again.
    """
    for attempt in range(attempts):
        try:
            client = Client(address, set_as_default=False)
            break
        except (AssertionError, OSError):
            if attempt == attempts - 1:
                raise
            time.sleep(1.0)
    with client:
        yield client
