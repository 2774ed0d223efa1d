"""WMTS capabilities as GDAL and OWSLib read them (issue 15 item 7).

The service runs under uvicorn; GDAL's WMTS driver (rasterio, in a subprocess: the test
process skips the WMTS driver as the service does, ``gdal_skip_drivers``) opens each
source's ``/WebMercatorQuad/WMTSCapabilities.xml`` and reads a window, which must be the
pixels of the tile endpoint (decoded by Pillow) at the same place. OWSLib parses the same
documents: one layer, the TileMatrixSet, the limits, and a tile URL template whose tiles
are the tile endpoint's.
"""

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import demo_reads as demo
import httpx
import morecantile
import numpy as np
import pytest
from live_server import live_server
from owslib.wmts import WebMapTileService
from PIL import Image

from app.main import create_app
from app.settings import Settings

TMS = morecantile.tms.get("WebMercatorQuad")
ITEMS = "/collections/sentinel-2-l2a/items"
NDVI = {"preset": "ndvi"}

# Opens each capabilities document with GDAL's WMTS driver and reads the window of one
# tile (given in EPSG:3857): what `gdalinfo WMTS:<url>` shows, and the pixels.
GDAL_SCRIPT = r"""
import json, sys
import numpy as np
import rasterio
from rasterio.windows import from_bounds

out = {}
for name, job in json.loads(sys.argv[1]).items():
    with rasterio.open("WMTS:" + job["url"]) as src:
        window = from_bounds(*job["bounds"], transform=src.transform).round_offsets().round_lengths()
        np.save(job["npy"], src.read(window=window, boundless=True, fill_value=0))
        out[name] = {
            "driver": src.driver,
            "crs": src.crs.to_epsg(),
            "res": src.res,
            "bounds": list(src.bounds),
            "count": src.count,
            "width": src.width,
            "height": src.height,
            "window": [window.col_off, window.row_off, window.width, window.height],
        }
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def item(demo_dir: Path) -> dict:
    return demo.items(demo_dir)[0]


@pytest.fixture(scope="module")
def base_url(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = Settings(catalog=str(demo_dir), data_dir=tmp_path_factory.mktemp("wmts"))
    with live_server(create_app(settings)) as url:
        yield url


@pytest.fixture(scope="module")
def http(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, trust_env=False, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def sources(http: httpx.Client, demo_dir: Path, item: dict) -> dict[str, tuple[str, dict]]:
    """Each kind of source: its path and a layer's query parameters."""
    search = http.post("/searches/register", json={"ids": [item["id"]]})
    assert search.status_code == 200, search.text
    item_json = str(demo_dir / "items" / f"{item['id']}.json")
    cog = str(demo.href(demo_dir, item, "nir"))
    return {
        "item": (f"{ITEMS}/{item['id']}", NDVI),
        "stac": ("/stac", {"url": item_json, **NDVI}),
        "cog": ("/cog", {"url": cog, "rescale": "0,5000", "colormap_name": "viridis"}),
        "search": (f"/searches/{search.json()['id']}", NDVI),
    }


def _capabilities(http: httpx.Client, path: str, params: dict) -> str:
    return str(
        http.build_request("GET", f"{path}/WebMercatorQuad/WMTSCapabilities.xml", params=params).url
    )


@pytest.fixture(scope="module")
def tile(item: dict) -> morecantile.Tile:
    """A tile at the sources' maxzoom (13 for the demo's 10 m grid) inside the item."""
    minx, miny, maxx, maxy = item["bbox"]
    return TMS.tile((minx + maxx) / 2, (miny + maxy) / 2, 13)


@pytest.fixture(scope="module")
def gdal(
    http: httpx.Client,
    sources: dict[str, tuple[str, dict]],
    tile: morecantile.Tile,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """What GDAL's WMTS driver reads of every source (one subprocess for all)."""
    folder = tmp_path_factory.mktemp("gdal")
    bounds = list(TMS.xy_bounds(tile))
    jobs = {
        name: {
            "url": _capabilities(http, path, params),
            "bounds": bounds,
            "npy": str(folder / f"{name}.npy"),
        }
        for name, (path, params) in sources.items()
    }
    env = {key: value for key, value in os.environ.items() if key != "GDAL_SKIP"}
    done = subprocess.run(
        [sys.executable, "-c", GDAL_SCRIPT, json.dumps(jobs)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    for name, job in jobs.items():
        report[name]["pixels"] = np.load(job["npy"])
    return report


def _tile_rgba(http: httpx.Client, path: str, params: dict, tile: morecantile.Tile) -> np.ndarray:
    r = http.get(f"{path}/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.png", params=params)
    assert r.status_code == 200, r.text
    image = Image.open(io.BytesIO(r.content)).convert("RGBA")
    return np.moveaxis(np.asarray(image), -1, 0)


@pytest.mark.parametrize("name", ["item", "stac", "cog", "search"])
def test_gdal_reads_the_tiles_of_the_capabilities(http, sources, gdal, tile, name):
    path, params = sources[name]
    seen = gdal[name]
    assert seen["driver"] == "WMTS"
    assert seen["crs"] == 3857
    # Full resolution is the source's maxzoom (the demo's 10 m bands: zoom 13).
    resolution = TMS.matrix(13).cellSize
    assert seen["res"] == pytest.approx((resolution, resolution))
    assert seen["count"] == 4  # RGBA: PNG tiles with a mask
    assert seen["window"][2:] == [256, 256]
    expected = _tile_rgba(http, path, params, tile)
    got = seen["pixels"]
    # GDAL's dataset ends at the layer's bounding box (the item): the window's part inside it
    # is the tile's; outside it GDAL fills 0 and the tile is transparent.
    col, row = seen["window"][:2]
    inside = np.zeros((256, 256), dtype=bool)
    inside[max(0, -row) : seen["height"] - row, max(0, -col) : seen["width"] - col] = True
    assert 0 < inside.sum() < 256 * 256
    assert expected[3][inside].any()  # the tile holds data there
    assert not expected[3][~inside].any()
    np.testing.assert_array_equal(got[3], np.where(inside, expected[3], 0))
    opaque = expected[3] > 0
    np.testing.assert_array_equal(got[:3, opaque], expected[:3, opaque])


def test_gdal_extent_is_the_items(gdal, item):
    """The dataset covers the item's footprint (the layer's WGS84BoundingBox), in 3857."""
    minx, miny, maxx, maxy = item["bbox"]
    left, bottom = TMS.xy(minx, miny)
    right, top = TMS.xy(maxx, maxy)
    resolution = TMS.matrix(13).cellSize
    for name in ("item", "stac", "search"):
        got = gdal[name]["bounds"]
        assert got == pytest.approx([left, bottom, right, top], abs=2 * resolution), name


@pytest.mark.parametrize("name", ["item", "stac", "cog", "search"])
def test_owslib_reads_layer_matrix_set_and_tile_template(http, sources, tile, item, name):
    path, params = sources[name]
    wmts = WebMapTileService(_capabilities(http, path, params))
    assert list(wmts.tilematrixsets) == ["WebMercatorQuad"]
    matrix_set = wmts.tilematrixsets["WebMercatorQuad"]
    assert matrix_set.crs == "urn:ogc:def:crs:EPSG::3857"
    # Down to the source's maxzoom (13), every matrix as morecantile defines it.
    assert list(matrix_set.tilematrix) == [str(z) for z in range(14)]
    for z, matrix in matrix_set.tilematrix.items():
        expected = TMS.matrix(int(z))
        assert (matrix.matrixwidth, matrix.tilewidth) == (expected.matrixWidth, 256)
        assert matrix.scaledenominator == pytest.approx(expected.scaleDenominator)
    assert len(wmts.contents) == 1
    layer = next(iter(wmts.contents.values()))
    assert layer.formats == ["image/png"]
    if name != "cog":
        assert layer.id == (
            item["id"] if name in ("item", "stac") else sources[name][0].split("/")[-1]
        )
        minx, miny, maxx, maxy = item["bbox"]
        # The grid of the item's assets (proj:*), within a few 10 m pixels of its bbox.
        assert layer.boundingBoxWGS84 == pytest.approx((minx, miny, maxx, maxy), abs=5e-4)
    limits = layer.tilematrixsetlinks["WebMercatorQuad"].tilematrixlimits
    assert set(limits) == {"12", "13"}  # the demo's zooms
    assert limits["13"].mintilecol <= tile.x <= limits["13"].maxtilecol
    assert limits["13"].mintilerow <= tile.y <= limits["13"].maxtilerow
    # The template's tile is the tile endpoint's, with the layer in its query.
    [template] = [u["template"] for u in layer.resourceURLs if u["resourceType"] == "tile"]
    url = template.format(TileMatrix=tile.z, TileCol=tile.x, TileRow=tile.y)
    by_template = httpx.get(url, trust_env=False, timeout=60)
    direct = http.get(f"{path}/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.png", params=params)
    assert by_template.status_code == direct.status_code == 200, by_template.text
    assert by_template.content == direct.content
    if name != "cog":
        assert "expression=%28nir-red%29%2F%28nir%2Bred%29" in template
        assert "colormap_name=rdylgn" in template


def test_owslib_reads_other_tile_matrix_sets(http, sources, tile):
    path, params = sources["item"]
    url = str(
        http.build_request("GET", f"{path}/WorldCRS84Quad/WMTSCapabilities.xml", params=params).url
    )
    wmts = WebMapTileService(url)
    assert list(wmts.tilematrixsets) == ["WorldCRS84Quad"]
    layer = next(iter(wmts.contents.values()))
    assert (
        "/tiles/WorldCRS84Quad/{TileMatrix}/{TileCol}/{TileRow}.png?"
        in layer.resourceURLs[0]["template"]
    )


@pytest.mark.parametrize("name", ["item", "stac", "search"])
def test_a_layer_the_source_cannot_read_is_a_400_not_a_document(http, sources, name):
    path, params = sources[name]
    for bad, field in [({"assets": "B99"}, "B99"), ({"expression": "nir_b2"}, "nir_b2")]:
        query = {k: v for k, v in params.items() if k == "url"} | bad
        r = http.get(f"{path}/WebMercatorQuad/WMTSCapabilities.xml", params=query)
        assert r.status_code == 400, r.text
        assert field in r.json()["detail"]


def test_a_registered_search_links_its_capabilities(http, item):
    r = http.post(
        "/searches/register",
        json={"ids": [item["id"]], "metadata": {"defaults": {"preset": "ndvi"}}},
    )
    assert r.status_code == 200, r.text
    [link] = [link for link in r.json()["links"] if link["rel"] == "wmts"]
    assert link["type"] == "application/xml"
    layer = next(iter(WebMapTileService(link["href"]).contents.values()))
    # The search's default layer is in the tile template.
    assert "colormap_name=rdylgn" in layer.resourceURLs[0]["template"]
