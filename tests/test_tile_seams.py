"""Neighbouring tiles, one holding the scene's edge, read the same pixels a reference reads.

The viewer showed a step along a tile edge past the demo's native zoom (the tile holding the
scene's west edge smoother than its neighbour). The service's tiles are not the cause: each
tile of a pair equals ``rasterio.warp.reproject`` of the full-resolution COG onto its grid
(nearest: the same source pixel), over the native zoom, at it, and at an overview zoom
(both tiles then read the same overview). The step was the browser's: Leaflet stretched
the TileJSON's maxzoom tiles 16 times, each tile smoothed on its own, so that every tile
edge showed. The viewer now asks for the service's tiles at every zoom (last test).

A kernel resampling (``reproject=bilinear``, ``cubic`` ...) had a seam of the service's own:
GDAL sized the kernel of each tile from its source window, cut at the scene's edge in the
edge tile (``app.readers.warp_scale`` sets one size for all).

Nearest-neighbour is exact but for sampling ties: a tile pixel whose centre falls on a
source pixel's edge (within ``TIE`` of a pixel, computed exactly with pyproj) may take either
neighbour, as GDAL's warper interpolates the transformation (WarpedVRT and reproject both).
"""

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import morecantile
import numpy as np
import pytest
import rasterio
from demo_reads import href, scale_offset, valid
from fastapi.testclient import TestClient
from live_server import live_server
from pyproj import Transformer
from rasterio.transform import from_bounds
from rasterio.warp import Resampling, calculate_default_transform, reproject
from selenium.webdriver.support.ui import WebDriverWait

from app.main import create_app
from app.settings import Settings

TMS = morecantile.tms.get("WebMercatorQuad")
COLLECTION = "sentinel-2-l2a"
SIZE = 256
# A tie: a pixel centre this close (in source pixels) to a source pixel's edge. Measured:
# the full-resolution tiles' ties are within 0.006 px, the overview tiles' within 0.05 px.
TIE = {None: 0.01, 0: 0.06}
# At most this share of a tile's pixels are ties that came out the other way.
MAX_TIES = 0.01


@pytest.fixture(scope="module")
def item(demo_dir: Path) -> dict:
    """The demo's clearest scene."""
    items = [json.loads(p.read_text()) for p in sorted((demo_dir / "items").glob("*.json"))]
    return min(items, key=lambda i: i["properties"]["eo:cloud_cover"])


def west_pair(item: dict, z: int) -> tuple[morecantile.Tile, morecantile.Tile]:
    """The tile holding the scene's west edge (mid-scene row) and its east neighbour."""
    west, south, east, north = item["bbox"]
    edge = TMS.tile(west, (south + north) / 2, z)
    pair = edge, morecantile.Tile(edge.x + 1, edge.y, z)
    assert TMS.bounds(pair[0]).left < west < TMS.bounds(pair[1]).left
    return pair


def tile_url(item: dict, tile: morecantile.Tile, query: str) -> str:
    return (
        f"/collections/{COLLECTION}/items/{item['id']}/tiles/WebMercatorQuad/"
        f"{tile.z}/{tile.x}/{tile.y}.npy?{query}"
    )


def get_npy(client: TestClient, url: str) -> np.ndarray:
    response = client.get(url)
    assert response.status_code == 200, response.text
    return np.load(io.BytesIO(response.content))


def grid(tiles: tuple[morecantile.Tile, ...]) -> tuple[Any, int, int]:
    """Transform, width and height of ``tiles`` (one row, west to east) side by side."""
    first, last = TMS.xy_bounds(tiles[0]), TMS.xy_bounds(tiles[-1])
    width = SIZE * len(tiles)
    return from_bounds(first.left, first.bottom, last.right, last.top, width, SIZE), width, SIZE


def reference(
    path: Path,
    tiles: tuple,
    level: int | None = None,
    resampling: Resampling = Resampling.nearest,
    **warp_options: str,
) -> np.ndarray:
    """Band 1 of ``path`` (its overview ``level``, None: full resolution) on the tiles'
    grid by ``rasterio.warp.reproject``, 0 where no data."""
    transform, width, height = grid(tiles)
    out = np.zeros((height, width), "uint16")
    options = {} if level is None else {"overview_level": level}
    with rasterio.open(path, **options) as src:
        reproject(
            rasterio.band(src, 1),
            out,
            dst_transform=transform,
            dst_crs=TMS.crs._pyproj_crs,
            resampling=resampling,
            src_nodata=0,
            dst_nodata=0,
            **warp_options,
        )
    return out


def ties(path: Path, tiles: tuple, level: int | None = None) -> np.ndarray:
    """Pixels of the tiles' grid whose centre lies within ``TIE[level]`` of a source pixel's
    edge, by pyproj's exact transformation (not GDAL's)."""
    transform, width, height = grid(tiles)
    options = {} if level is None else {"overview_level": level}
    with rasterio.open(path, **options) as src:
        to_src = Transformer.from_crs(TMS.crs._pyproj_crs, src.crs, always_xy=True)
        cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
        col, row = ~src.transform * to_src.transform(*(transform * (cols, rows)))
    distance = np.minimum.reduce([col % 1, 1 - col % 1, row % 1, 1 - row % 1])
    return distance < TIE[level]


def assert_nearest(got: np.ndarray, ref: np.ndarray, tied: np.ndarray) -> None:
    """``got`` equals ``ref`` but at a few ties."""
    off = got != ref
    assert not (off & ~tied).any(), f"{int((off & ~tied).sum())} pixels off, not at ties"
    assert off.sum() <= MAX_TIES * off.size


def red_tiles(client: TestClient, item: dict, tiles: tuple) -> np.ndarray:
    """The tiles' red DN side by side, 0 where masked."""
    parts = []
    for tile in tiles:
        data, mask = get_npy(client, tile_url(item, tile, "assets=red"))
        parts.append(np.where(valid(mask), data, 0))
    return np.hstack(parts)


@pytest.mark.parametrize("z", [13, 14, 16])
def test_neighbouring_tiles_read_the_full_resolution_pixels(module_client, demo_dir, item, z):
    """At and past the native zoom (13): each tile of the pair, the edge tile too."""
    tiles = west_pair(item, z)
    path = href(demo_dir, item, "red")
    got = red_tiles(module_client, item, tiles)
    ref = reference(path, tiles)
    assert (ref[:, :SIZE] != 0).sum() > 100, "the edge tile holds part of the scene"
    assert (ref[:, :SIZE] == 0).sum() > 100, "the edge tile reaches out of the scene"
    tied = ties(path, tiles)
    for half in (slice(0, SIZE), slice(SIZE, 2 * SIZE)):
        assert_nearest(got[:, half], ref[:, half], tied[:, half])
    # The shared edge: the last column of one tile, the first of the other, as one read.
    edge = slice(SIZE - 1, SIZE + 1)
    assert_nearest(got[:, edge], ref[:, edge], tied[:, edge])


def test_neighbouring_tiles_at_an_overview_zoom_read_the_same_overview(
    module_client, demo_dir, item
):
    """At zoom 12 GDAL reads the COG's first overview: both tiles do, the edge tile too."""
    tiles = west_pair(item, 12)
    path = href(demo_dir, item, "red")
    with rasterio.open(path) as src:
        assert src.overviews(1) == [2]
    got = red_tiles(module_client, item, tiles)
    overview = reference(path, tiles, level=0)
    full = reference(path, tiles)
    tied = ties(path, tiles, level=0)
    for half in (slice(0, SIZE), slice(SIZE, 2 * SIZE)):
        assert_nearest(got[:, half], overview[:, half], tied[:, half])
        data = overview[:, half] != 0
        # Not the full resolution: that is another image at this zoom.
        assert (got[:, half] != full[:, half])[data].mean() > 0.5


def kernel_scale(path: Path, tiles: tuple) -> dict[str, str]:
    """GDAL's XSCALE / YSCALE of the tiles' warp: tile pixels per source pixel, from the
    source's pixel size in Web Mercator (rasterio's default transform) and the tile's."""
    transform, _, _ = grid(tiles)
    with rasterio.open(path) as src:
        native, _, _ = calculate_default_transform(
            src.crs, TMS.crs._pyproj_crs, src.width, src.height, *src.bounds
        )
    return {"XSCALE": str(native.a / transform.a), "YSCALE": str(native.e / transform.e)}


@pytest.mark.parametrize("method", ["bilinear", "cubic"])
def test_neighbouring_tiles_resampled_by_a_kernel_meet_without_a_step(
    module_client, demo_dir, item, method
):
    """At the native zoom a kernel downsamples: the tile cut by the scene's edge used a
    kernel of its own (GDAL sized it from the cut source window), up to 175 DN off its
    neighbour's; now both equal one reprojection of the pair with one kernel size."""
    tiles = west_pair(item, 13)
    path = href(demo_dir, item, "red")
    parts = []
    for tile in tiles:
        data, mask = get_npy(module_client, tile_url(item, tile, f"assets=red&reproject={method}"))
        parts.append(np.where(valid(mask), data, 0))
    got = np.hstack(parts).astype(int)
    scale = kernel_scale(path, tiles)
    assert float(scale["XSCALE"]) < 0.9, "the tiles downsample the source"
    ref = reference(path, tiles, resampling=Resampling[method], **scale).astype(int)
    assert ((got != 0) == (ref != 0)).all()
    assert (ref[:, :SIZE] != 0).sum() > 100
    assert np.abs(got - ref).max() <= 1


def ndvi_reference(demo_dir: Path, item: dict, tiles: tuple) -> tuple[np.ndarray, np.ndarray]:
    """The viewer's layer by rasterio and numpy: NDVI of reflectance, SCL-masked; and the
    pixels that are ties on the 10 m or the 20 m grid."""
    bands, tied = {}, np.zeros((SIZE, SIZE * len(tiles)), bool)
    for asset in ("red", "nir", "scl"):
        path = href(demo_dir, item, asset)
        bands[asset] = reference(path, tiles)
        tied |= ties(path, tiles)
    red, nir = (
        bands[a] * scale_offset(item, a)[0] + scale_offset(item, a)[1] for a in ("red", "nir")
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        ndvi = (nir - red) / (nir + red)
    masked = np.isin(bands["scl"], Settings().scl_mask_classes)
    ok = (bands["red"] != 0) & (bands["nir"] != 0) & ~masked
    return np.where(ok, ndvi, np.nan), tied


def ndvi_tiles(client: TestClient, url: Any, tiles: tuple) -> np.ndarray:
    parts = []
    for tile in tiles:
        data, mask = get_npy(client, url(tile))
        parts.append(np.where(valid(mask), data, np.nan))
    return np.hstack(parts)


def test_the_viewers_ndvi_layer_and_its_mosaic_past_the_native_zoom(module_client, demo_dir, item):
    """The viewer's layer (NDVI, SCL mask), of the item and of a search's mosaic of it."""
    tiles = west_pair(item, 15)
    # The viewer's preset=ndvi, as data (the preset also asks for a colour map).
    query = "expression=(nir-red)/(nir%2Bred)&harmonize=true&mask=scl-clear"
    got = ndvi_tiles(module_client, lambda t: tile_url(item, t, query), tiles)
    ref, tied = ndvi_reference(demo_dir, item, tiles)
    assert np.isfinite(ref[:, :SIZE]).sum() > 100
    same = np.isnan(got) == np.isnan(ref)
    assert not (~same & ~tied).any()
    both = np.isfinite(got) & np.isfinite(ref) & ~tied
    np.testing.assert_allclose(got[both], ref[both], atol=1e-6)
    assert (~same | (np.isfinite(got) & (np.abs(got - ref) > 1e-6))).mean() <= MAX_TIES

    response = module_client.post(
        "/searches/register", json={"collections": [COLLECTION], "ids": [item["id"]]}
    )
    assert response.status_code == 200, response.text
    search = response.json()["id"]
    mosaic = ndvi_tiles(
        module_client,
        lambda t: f"/searches/{search}/tiles/WebMercatorQuad/{t.z}/{t.x}/{t.y}.npy?{query}",
        tiles,
    )
    np.testing.assert_array_equal(mosaic, got)


@pytest.fixture(scope="module")
def site(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = Settings(catalog=str(demo_dir), data_dir=tmp_path_factory.mktemp("seams"))
    with live_server(create_app(settings)) as url:
        yield url


TILE_IMAGES = """
return Array.from(document.querySelectorAll('img.leaflet-tile-loaded'))
  .filter(img => img.src.includes('/tiles/WebMercatorQuad/'))
  .map(img => [img.src, img.naturalWidth, img.getBoundingClientRect().width]);
"""


def test_the_viewer_asks_for_the_services_tiles_past_the_native_zoom(site, browser, item):
    """Zoomed to 17 on the seam (TileJSON maxzoom 13): zoom-17 tiles, drawn unstretched."""
    browser.get(f"{site}/")
    WebDriverWait(browser, 60).until(
        lambda d: d.execute_script("return document.body.dataset.ready")
    )
    edge, east = west_pair(item, 13)
    lon, lat = TMS.bounds(east).left, (item["bbox"][1] + item["bbox"][3]) / 2
    browser.execute_script(
        "map.setView([arguments[1], arguments[0]], 17, {animate: false});", lon, lat
    )

    def zoomed(driver: Any) -> list | None:
        images = driver.execute_script(TILE_IMAGES)
        return images if images and all("/WebMercatorQuad/17/" in i[0] for i in images) else None

    images = WebDriverWait(browser, 30).until(zoomed)
    assert all(natural == SIZE and abs(drawn - SIZE) < 0.5 for _, natural, drawn in images)
