"""The tile engine's fast paths against numpy's own: the median and the pixel placement.

``nan_median`` must equal ``numpy.nanmedian`` bit for bit (random stacks with NaN, all-NaN
pixels, odd and even counts, ties, infinities, huge values); the aligned-grid placement
(a slice at the same resolution, ``np.take`` for nested grids) must put every tile pixel
on the source pixel holding its centre, as ``block[np.ix_(rows, cols)]`` did.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from app.batch.processing.engine import _TileReader, nan_median
from app.batch.processing.spec import GridTile
from app.settings import Settings


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


def _geotiff(path: Path, data: np.ndarray, transform: Affine, nodata: int | None) -> Path:
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[1],
        height=data.shape[0],
        count=1,
        dtype=data.dtype,
        crs="EPSG:32633",
        transform=transform,
        nodata=nodata,
    ) as dataset:
        dataset.write(data, 1)
    return path


def _expected(data: np.ndarray, src: Affine, tile: GridTile, nodata: int | None):
    """Each tile pixel's centre floored into the source: values and the off/nodata mask."""
    dst = tile.transform
    x = dst.c + (np.arange(tile.width) + 0.5) * dst.a
    y = dst.f + (np.arange(tile.height) + 0.5) * dst.e
    cols = np.floor((x - src.c) / src.a).astype(int)
    rows = np.floor((y - src.f) / src.e).astype(int)
    values = np.zeros((tile.height, tile.width), np.float32)
    mask = np.ones((tile.height, tile.width), bool)
    for i, row in enumerate(rows):
        for j, col in enumerate(cols):
            if 0 <= row < data.shape[0] and 0 <= col < data.shape[1]:
                values[i, j] = data[row, col]
                mask[i, j] = nodata is not None and data[row, col] == nodata
    return values, mask


@pytest.mark.parametrize(
    ("pixel", "dx", "dy", "nodata"),
    [
        (20.0, 10.0, -30.0, 0),  # 20 m on 10 m, odd offsets, partly off the asset
        (20.0, -50.0, 70.0, None),  # off the top left
        (10.0, 30.0, -20.0, 0),  # same resolution: a slice
        (10.0, -40.0, 40.0, 7),
        (60.0, 10.0, -10.0, None),  # 60 m on 10 m: 6 repeats
        (20.0, 4000.0, 0.0, 0),  # entirely off the asset
    ],
)
def test_aligned_assets_land_on_the_pixel_holding_each_centre(
    tmp_path: Path, pixel: float, dx: float, dy: float, nodata: int | None
):
    rng = np.random.default_rng(7)
    data = rng.integers(0, 40, (37, 29), dtype=np.uint16)
    src = Affine(pixel, 0.0, 500000.0, 0.0, -pixel, 5000000.0)
    path = _geotiff(tmp_path / "asset.tif", data, src, nodata)
    tile = GridTile(
        grid="1",
        name="t",
        crs="EPSG:32633",
        transform=Affine(10.0, 0.0, 500000.0 + dx, 0.0, -10.0, 5000000.0 + dy),
        width=83,
        height=71,
        resolution=10.0,
    )
    reader = _TileReader(tile, "nearest", Settings())
    with rasterio.open(path) as dataset:
        assert reader._aligned(dataset)
        result = reader._exact(dataset)
    values, mask = _expected(data, src, tile, nodata)
    assert result.dtype == np.float32 and result.shape == (71, 83)
    np.testing.assert_array_equal(np.ma.getmaskarray(result), mask)
    np.testing.assert_array_equal(result.data[~mask], values[~mask])
