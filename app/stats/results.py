"""Response assembly: statistics into Sentinel Hub's JSON shape, statuses and errors.

Everything returned is plain JSON-ready data; statistics without a value are the string
``"NaN"``, as Sentinel Hub sends them (valid JSON, which a bare NaN is not).
"""

import math
from typing import Any

import numpy as np

from app.stats.layout import Layout
from app.stats.plan import Plan, format_interval
from app.stats.summary import basic_statistics, histogram, percentiles

NAN = "NaN"
#: Sentinel Hub's error types: the request cannot use a geometry; its scenes could not be read.
BAD_REQUEST = "BAD_REQUEST"
EXECUTION_ERROR = "EXECUTION_ERROR"


def number(value: float) -> float | str:
    """A statistic as JSON: a float, or Sentinel Hub's ``"NaN"`` string."""
    value = float(value)
    return value if math.isfinite(value) else NAN


def layout_statistics(
    plan: Plan, layout: Layout, bands: list[list[tuple[np.ndarray, np.ndarray]]]
) -> list[dict]:
    """Per geometry of the layout, its ``outputs`` object."""
    weighted = plan.pixel_rule == "exact"
    per_geometry: list[dict] = [{} for _ in range(layout.count)]
    starts = np.searchsorted(layout.owner, np.arange(layout.count + 1))
    for output, slots in zip(plan.outputs, bands, strict=True):
        band_results: list[dict] = [{} for _ in range(layout.count)]
        for band, (values, filled) in zip(output.bands, slots, strict=True):
            v = values[layout.index]
            ok = filled[layout.index]
            basics = basic_statistics(v, ok, layout.weights, layout.owner, layout.count)
            for g in range(layout.count):
                stats: dict[str, Any] = {
                    "min": number(basics.minimum[g]),
                    "max": number(basics.maximum[g]),
                    "mean": number(basics.mean[g]),
                    "stDev": number(basics.stdev[g]),
                    "sampleCount": int(basics.sample_count[g]),
                    "noDataCount": int(basics.nodata_count[g]),
                }
                result: dict[str, Any] = {"stats": stats}
                if band.percentiles is not None or band.histogram is not None:
                    part = slice(starts[g], starts[g + 1])
                    good = ok[part]
                    own = v[part][good]
                    if band.percentiles is not None:
                        weights = layout.weights[part][good] if weighted else None
                        found = percentiles(own, weights, band.percentiles, band.interpolation)
                        stats["percentiles"] = {
                            str(float(k)): number(q)
                            for k, q in zip(band.percentiles, found, strict=True)
                        }
                    if band.histogram is not None:
                        result["histogram"] = histogram(
                            own, band.histogram, basics.minimum[g], basics.maximum[g]
                        )
                band_results[g][band.name] = result
        for g in range(layout.count):
            per_geometry[g][output.name] = {"bands": band_results[g]}
    return per_geometry


def empty_interval(plan: Plan, k: int) -> dict:
    """An interval for a geometry covering no pixel (possible under ``center``)."""
    outputs = {}
    for output in plan.outputs:
        bands = {}
        for band in output.bands:
            stats: dict[str, Any] = {
                "min": NAN,
                "max": NAN,
                "mean": NAN,
                "stDev": NAN,
                "sampleCount": 0,
                "noDataCount": 0,
            }
            result: dict[str, Any] = {"stats": stats}
            if band.percentiles is not None:
                stats["percentiles"] = {str(float(q)): NAN for q in band.percentiles}
            if band.histogram is not None:
                result["histogram"] = histogram(np.empty(0), band.histogram, np.nan, np.nan)
            bands[band.name] = result
        outputs[output.name] = {"bands": bands}
    return {"interval": format_interval(plan.intervals[k]), "outputs": outputs}


def interval_error(plan: Plan, k: int, message: str) -> dict:
    """An interval whose scenes could not be read (Sentinel Hub's ``EXECUTION_ERROR``)."""
    return {
        "interval": format_interval(plan.intervals[k]),
        "error": error_object(EXECUTION_ERROR, message),
    }


def error_object(kind: str, message: str) -> dict:
    """An ``error`` object: ``BAD_REQUEST`` or ``EXECUTION_ERROR`` and why."""
    return {"type": kind, "message": message}


def bad_request(message: str) -> dict:
    """The ``error`` object of a geometry the request cannot use."""
    return error_object(BAD_REQUEST, message)


def failed(message: str, kind: str = BAD_REQUEST) -> dict:
    """The response of a geometry without any interval.

    Args:
        message: Why.
        kind: ``BAD_REQUEST`` (the request cannot use the geometry: retrying cannot help)
            or ``EXECUTION_ERROR`` (it could not be computed).

    """
    return {"data": [], "status": "FAILED", "error": error_object(kind, message)}


def response(plan: Plan, intervals: dict) -> dict:
    """A geometry's response from its per-interval entries (and its error, if any).

    ``status`` is ``OK``, ``PARTIAL`` when some intervals failed, ``FAILED`` when all did.
    """
    error = intervals.pop("error", None)
    if error is not None:
        return {"data": [], "status": "FAILED", "error": error}
    data = [intervals[k] for k in sorted(intervals)]
    failed = sum(1 for entry in data if "error" in entry)
    status = "OK" if failed == 0 else ("FAILED" if failed == len(data) else "PARTIAL")
    return {"data": data, "status": status}
