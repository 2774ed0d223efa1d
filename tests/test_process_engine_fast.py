"""The tile engine's fast paths against numpy's own: the median.

``nan_median`` must equal ``numpy.nanmedian`` bit for bit (random stacks with NaN, all-NaN
pixels, odd and even counts, ties, infinities, huge values).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from app.batch.processing.engine import nan_median


def _numpy(layers: list[np.ndarray]) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # All-NaN slice
        return np.nanmedian(np.stack(layers), axis=0)


def _same_bits(result: np.ndarray, expected: np.ndarray) -> None:
    assert result.dtype == expected.dtype == np.float32
    assert result.shape == expected.shape
    np.testing.assert_array_equal(result.view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize("scenes", [1, 2, 3, 4, 7, 12, 13])
@pytest.mark.parametrize("empty", [0.0, 0.3, 0.8])
def test_nan_median_is_numpy_nanmedian_bit_for_bit(scenes: int, empty: float):
    rng = np.random.default_rng(scenes * 100 + int(empty * 10))
    shape = (61, 47)
    layers = []
    for _ in range(scenes):
        layer = rng.standard_normal(shape).astype(np.float32)
        layer[rng.random(shape) < empty] = np.nan
        layers.append(layer)
    layers[0][:, :9] = np.nan  # whole columns no layer covers
    for layer in layers:
        layer[:, :9] = np.nan
    result = nan_median(layers, shape)
    expected = _numpy(layers)
    _same_bits(result, expected)
    assert np.isnan(result[:, :9]).all()
    counts = np.count_nonzero(~np.isnan(np.stack(layers)), axis=0)
    if scenes > 1 and empty:  # both parities of valid values per pixel were met
        assert {0, 1} <= set(np.unique(counts[:, 9:] % 2))


def test_nan_median_ties_infinities_and_extremes():
    big = np.float32(3e38)  # x + x overflows float32: numpy's odd count gives inf too
    columns = [
        [1.0, 1.0, 2.0, np.nan],
        [np.inf, 1.0, np.nan, np.nan],
        [np.inf, np.inf, -np.inf, 5.0],
        [big, np.nan, np.nan, np.nan],
        [big, big, np.nan, np.nan],
        [-big, big, 0.0, np.nan],
        [1e-45, 1e-45, 3e-45, np.nan],  # subnormals
        [0.1, 0.2, 0.3, 0.4],
        [np.nan, np.nan, np.nan, np.nan],
    ]
    stack = np.array(columns, dtype=np.float32).T  # (layers, pixels)
    layers = [row.reshape(1, -1) for row in stack]
    with np.errstate(over="ignore"):
        expected = _numpy(layers)
    _same_bits(nan_median(layers, (1, len(columns))), expected)
    assert np.isinf(expected[0, 3])  # the quirk is kept, not fixed


def test_nan_median_of_no_layer_is_all_nan():
    result = nan_median([], (3, 5))
    assert result.dtype == np.float32 and result.shape == (3, 5)
    assert np.isnan(result).all()
