"""Statistics of pixel values: per-geometry basics, percentiles and histograms.

Definitions (``w`` is a pixel's weight: its coverage fraction under the ``exact`` rule, 1
under ``center`` and ``all_touched``; only valid pixels count):

- ``mean`` = sum(w * v) / sum(w);
- ``stDev`` = sqrt(sum(w * (v - mean)^2) / sum(w)), the population standard deviation
  (exactextract's ``stdev``; numpy's ``std`` with ``ddof=0`` when all weights are 1);
- ``min`` / ``max`` over valid pixels, whatever their weight;
- percentiles: with weights (``exact``) exactextract's weighted quantile, which sums the
  weights of equal values and interpolates linearly between distinct values so that with
  equal weights and distinct values it is R's type 7; without weights numpy's default
  ``linear`` method (also type 7, equal values counted one by one). Sentinel Hub's
  ``interpolation`` picks another of numpy's methods between the two values a
  percentile falls between: ``lower``, ``higher``, ``nearest`` (the closer one, ties to
  the even index) or ``midpoint``; with weights at the same weighted positions;
- histogram counts are numbers of valid pixels (unweighted).

Basic statistics of many geometries are computed together with ``np.bincount`` over their
concatenated pixels, so their cost does not grow with the number of Python objects.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from app.errors import BadRequestError

#: Percentile methods (Sentinel Hub's ``interpolation``), as numpy.percentile's.
PERCENTILE_METHODS = ("linear", "lower", "higher", "nearest", "midpoint")
_FRACTION_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Basics:
    """Basic statistics of several geometries (one entry per geometry).

    Attributes:
        sample_count: Pixels each geometry covers.
        nodata_count: Of those, the pixels without a valid value.
        minimum: Smallest valid value (NaN without valid pixels).
        maximum: Largest valid value (NaN without valid pixels).
        mean: Weighted mean.
        stdev: Weighted population standard deviation.

    """

    sample_count: np.ndarray
    nodata_count: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray
    mean: np.ndarray
    stdev: np.ndarray


def basic_statistics(
    values: np.ndarray,
    valid: np.ndarray,
    weights: np.ndarray,
    owner: np.ndarray,
    count: int,
) -> Basics:
    """Compute the basic statistics of ``count`` geometries at once.

    Args:
        values: Pixel values of all geometries, concatenated (float).
        valid: Whether each value is valid.
        weights: Weight of each pixel (> 0).
        owner: Index of the geometry each pixel belongs to, non-decreasing.
        count: Number of geometries.

    Returns:
        One entry per geometry.

    """
    values = values.astype(np.float64, copy=False)
    valid_w = np.where(valid, weights, 0.0)
    safe = np.where(valid, values, 0.0)
    samples = np.bincount(owner, minlength=count)
    nodata = samples - np.bincount(owner, weights=valid, minlength=count).astype(np.int64)
    total = np.bincount(owner, weights=valid_w, minlength=count)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(owner, weights=valid_w * safe, minlength=count) / total
        deviation = np.where(valid, safe - mean[owner], 0.0)
        variance = np.bincount(owner, weights=valid_w * deviation * deviation, minlength=count)
        stdev = np.sqrt(variance / total)
    has_valid = (samples - nodata) > 0
    mean[~has_valid] = np.nan
    stdev[~has_valid] = np.nan
    minimum = np.full(count, np.nan)
    maximum = np.full(count, np.nan)
    if len(owner):
        starts = np.searchsorted(owner, np.arange(count))
        nonempty = samples > 0
        first = starts[nonempty]
        low = np.minimum.reduceat(np.where(valid, values, np.inf), first)
        high = np.maximum.reduceat(np.where(valid, values, -np.inf), first)
        minimum[nonempty] = low
        maximum[nonempty] = high
        minimum[~has_valid] = np.nan
        maximum[~has_valid] = np.nan
    return Basics(samples, nodata, minimum, maximum, mean, stdev)


def weighted_quantiles(
    values: np.ndarray, weights: np.ndarray, qs: Sequence[float], method: str = "linear"
) -> np.ndarray:
    """Quantiles by exactextract's weighted definition.

    Equal values are merged (weights summed). With the n distinct values sorted,
    ``c_i`` the cumulative weight before value i and ``W`` the total weight, value i sits at
    ``s_i = i * w_i + (n - 1) * c_i``; quantile q interpolates linearly in ``s`` at
    ``q * W * (n - 1)`` (``linear``), or takes the value below it (``lower``), above it
    (``higher``), the closer one (``nearest``, ties to the even index) or their mean
    (``midpoint``). With equal weights and distinct values, s is a multiple of the index
    and each method is numpy.percentile's.

    Args:
        values: Valid values.
        weights: Their positive weights.
        qs: Quantiles in [0, 1].
        method: One of ``PERCENTILE_METHODS``.

    Returns:
        One value per quantile (NaN when there are no values).

    """
    if len(values) == 0:
        return np.full(len(qs), np.nan)
    distinct, inverse = np.unique(values, return_inverse=True)
    w = np.bincount(inverse.ravel(), weights=weights, minlength=len(distinct))
    n = len(distinct)
    if n == 1:
        return np.full(len(qs), float(distinct[0]))
    before = np.cumsum(w) - w
    s = np.arange(n) * w + (n - 1) * before
    targets = np.asarray(qs, dtype=np.float64) * w.sum() * (n - 1)
    # First position whose s exceeds the target (C++ std::upper_bound).
    right = np.searchsorted(s, targets, side="right")
    out = np.empty(len(targets))
    for k, (target, r) in enumerate(zip(targets, right, strict=True)):
        if r == 0:
            out[k] = distinct[0]
        elif r == n:
            out[k] = distinct[-1]
        else:
            left = r - 1
            out[k] = _between(distinct[left], distinct[r], s[left], s[r], target, left, method)
    return out


def _between(
    low: float, high: float, s_low: float, s_high: float, target: float, left: int, method: str
) -> float:
    """The quantile at ``target`` between positions ``s_low`` <= target < ``s_high``."""
    fraction = (target - s_low) / (s_high - s_low)
    if method == "linear":
        return low + fraction * (high - low)
    # Rounding (q * W * (n - 1) against i * w * n) must not turn a hit on a value, or a
    # tie, into the next value: a tolerance far below any real gap between positions.
    if fraction < _FRACTION_TOLERANCE:
        return low
    if fraction > 1 - _FRACTION_TOLERANCE:
        return high
    if method == "lower":
        return low
    if method == "higher":
        return high
    if method == "midpoint":
        return (low + high) / 2
    # nearest: a tie goes to the even index, as numpy's (np.around) does.
    if abs(fraction - 0.5) < _FRACTION_TOLERANCE:
        return low if left % 2 == 0 else high
    return low if fraction < 0.5 else high


def percentiles(
    values: np.ndarray,
    weights: np.ndarray | None,
    ks: Sequence[float],
    method: str = "linear",
) -> np.ndarray:
    """Percentiles ``ks`` (0-100) of valid values, weighted or not (see the module docstring).

    Args:
        values: Valid values.
        weights: Their positive weights, or None (every value counts once).
        ks: Percentiles in [0, 100].
        method: One of ``PERCENTILE_METHODS`` (Sentinel Hub's ``interpolation``).

    Returns:
        One value per percentile (NaN without values).

    """
    if len(values) == 0:
        return np.full(len(ks), np.nan)
    values = values.astype(np.float64, copy=False)
    if weights is None:
        return np.percentile(values, np.asarray(ks, dtype=np.float64), method=method)
    return weighted_quantiles(values, weights, [k / 100.0 for k in ks], method)


@dataclass(frozen=True)
class HistogramSpec:
    """How to bin values, in one of Sentinel Hub's three forms.

    Attributes:
        bins: Explicit edges ``[e0, e1, ..., en]``: bins ``[e0, e1) ... [en-1, en]``.
        n_bins: Number of equal bins between the low and high edges.
        bin_width: Width of equal bins from the low edge; the last bin ends at the high
            edge (and may be narrower).
        low_edge: Lower edge; default the smallest valid value.
        high_edge: Upper edge; default the largest valid value.
        max_bins: Most bins a histogram may have (the ``max_histogram_bins`` limit).
        field: The request field this histogram comes from, for error messages.

    """

    bins: tuple[float, ...] | None = None
    n_bins: int | None = None
    bin_width: float | None = None
    low_edge: float | None = None
    high_edge: float | None = None
    max_bins: int | None = None
    field: str = "histogram"

    def count(self, low: float, high: float) -> float:
        """The number of bins between ``low`` and ``high`` (a float: it may be huge)."""
        if self.bins is not None:
            return float(len(self.bins) - 1)
        if self.n_bins is not None:
            return float(self.n_bins)
        assert self.bin_width is not None
        bins = (high - low) / self.bin_width - 1e-12
        return max(float(math.ceil(bins)) if math.isfinite(bins) else math.inf, 1.0)

    def check_bins(self, low: float | None = None, high: float | None = None) -> None:
        """Refuse more than ``max_bins`` bins, once the edges are known.

        Args:
            low: Lower edge of the data, when ``low_edge`` is not given.
            high: Upper edge of the data, when ``high_edge`` is not given.

        Raises:
            BadRequestError: Over ``max_bins``.

        """
        low = self.low_edge if self.low_edge is not None else low
        high = self.high_edge if self.high_edge is not None else high
        if self.max_bins is None or (self.bin_width is not None and (low is None or high is None)):
            return
        count = self.count(low or 0.0, high or 0.0)
        if count > self.max_bins:
            span = f" of {self.bin_width:g} over [{low:g}, {high:g}]" if self.bin_width else ""
            raise BadRequestError(
                f"{self.field}: {count:.6g} bins{span}, over the limit "
                f"max_histogram_bins={self.max_bins}"
            )

    def edges(self, minimum: float, maximum: float) -> np.ndarray | None:
        """Bin edges for data spanning [minimum, maximum]; None when they are undefined."""
        if self.bins is not None:
            return np.asarray(self.bins, dtype=np.float64)
        low = self.low_edge if self.low_edge is not None else minimum
        high = self.high_edge if self.high_edge is not None else maximum
        if not (np.isfinite(low) and np.isfinite(high)) or high < low:
            return None
        if self.n_bins is not None:  # checked when the request was planned
            return np.linspace(low, high, self.n_bins + 1)
        assert self.bin_width is not None
        self.check_bins(low, high)  # the edges may come from the data: known only now
        count = int(self.count(low, high))
        edges = low + self.bin_width * np.arange(count + 1)
        edges[-1] = high
        return edges


def histogram(values: np.ndarray, spec: HistogramSpec, minimum: float, maximum: float) -> dict:
    """Bin valid values: bins ``[low, high)``, the last one closed.

    Args:
        values: Valid values.
        spec: The bins.
        minimum: Smallest valid value (default low edge).
        maximum: Largest valid value (default high edge).

    Returns:
        ``{"bins": [{"lowEdge", "highEdge", "count"}], "overflowCount", "underflowCount"}``;
        no bins when the edges are undefined (no valid value and no explicit edges).

    """
    edges = spec.edges(minimum, maximum)
    if edges is None:
        return {"bins": [], "overflowCount": 0, "underflowCount": 0}
    values = values.astype(np.float64, copy=False)
    underflow = int(np.count_nonzero(values < edges[0]))
    overflow = int(np.count_nonzero(values > edges[-1]))
    inside = values[(values >= edges[0]) & (values <= edges[-1])]
    index = np.searchsorted(edges, inside, side="right") - 1
    # Values equal to the last edge belong to the last bin.
    index = np.clip(index, 0, len(edges) - 2)
    counts = np.bincount(index, minlength=len(edges) - 1)
    bins = [
        {"lowEdge": float(low), "highEdge": float(high), "count": int(n)}
        for low, high, n in zip(edges[:-1], edges[1:], counts, strict=True)
    ]
    return {"bins": bins, "overflowCount": overflow, "underflowCount": underflow}
