"""The cached whole-dataset grid rio-tiler asks for on every tile read."""

import json

import numpy as np
import pytest
import rasterio
import rio_tiler.utils
from rasterio.crs import CRS
from rasterio.warp import calculate_default_transform, transform_bounds
from rio_tiler.io import Reader

from app import reprojection


def _red_href(demo_dir):
    path = sorted((demo_dir / "items").glob("*.json"))[0]
    item = json.loads(path.read_text())
    return str((path.parent / item["assets"]["red"]["href"]).resolve())


def test_the_app_gives_rio_tiler_the_cached_function(client):
    # Installed by create_app (the session's client built one), not by importing a reader.
    assert rio_tiler.utils.calculate_default_transform is reprojection.default_transform


@pytest.mark.parametrize("dst", ["EPSG:3857", "EPSG:4326", "EPSG:3035"])
def test_cached_grid_equals_rasterios(demo_dir, dst):
    with rasterio.open(_red_href(demo_dir)) as src:
        args = (src.crs, CRS.from_user_input(dst), src.width, src.height, *src.bounds)
    expected = calculate_default_transform(*args)
    assert reprojection.default_transform(*args) == expected
    assert reprojection.default_transform(*args) == expected  # from the cache


def test_calls_with_options_are_not_cached(demo_dir):
    with rasterio.open(_red_href(demo_dir)) as src:
        args = (src.crs, CRS.from_epsg(3857), src.width, src.height, *src.bounds)
    before = reprojection._default_grid.cache_info()
    got = reprojection.default_transform(*args, resolution=25.0)
    assert got == calculate_default_transform(*args, resolution=25.0)
    assert got[0].a == 25.0
    assert reprojection._default_grid.cache_info() == before


def test_tiles_are_the_same_with_and_without_the_cache(demo_dir, monkeypatch):
    # What reprojection.install() does at startup, undone after the test.
    monkeypatch.setattr(
        rio_tiler.utils, "calculate_default_transform", reprojection.default_transform
    )
    href = _red_href(demo_dir)
    with Reader(href) as cog:
        tiles = [(x, y, cog.minzoom + 2) for x, y in _tiles_over(cog, cog.minzoom + 2)]
        reprojection._default_grid.cache_clear()
        cached = [cog.tile(*t) for t in tiles]
        assert reprojection._default_grid.cache_info().hits >= len(tiles) - 1
        monkeypatch.setattr(rio_tiler.utils, "calculate_default_transform", reprojection._uncached)
        plain = [cog.tile(*t) for t in tiles]
    assert len(tiles) >= 4
    for a, b in zip(cached, plain, strict=True):
        assert a.bounds == b.bounds
        np.testing.assert_array_equal(a.array.data, b.array.data)
        np.testing.assert_array_equal(a.array.mask, b.array.mask)


def _tiles_over(cog: Reader, zoom: int) -> list[tuple[int, int]]:
    bounds = transform_bounds(cog.crs, "EPSG:4326", *cog.bounds)
    return [(t.x, t.y) for t in cog.tms.tiles(*bounds, [zoom])]
