"""Batch statistics job requests for tests, and waiting for a job's state."""

import json
from collections.abc import Callable
from typing import Any

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
