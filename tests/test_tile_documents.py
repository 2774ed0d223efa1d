"""TileJSON, map and tiles as web maps and the TiTiler tutorials use them (issue 15 items 8, 10).

- A document (TileJSON, map.html) never lists tiles that fail: a layer the source cannot
  read is a 400 when the document is asked for, for items, ``/stac`` and searches.
- A request naming no layer is the ``true-color`` preset (``default_preset``).
- ``assets=B04,B03,B02`` (the comma form) and titiler's ``{asset}_b1`` expression names
  read what they say: values checked against rasterio's reads of the demo's files.
- TileJSON lists 256 px tiles (``tilesize`` / ``@2x`` for more) and no ``raster_layers``.
"""

import io
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import demo_reads as demo
import morecantile
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.layers import complete_query
from app.main import create_app
from app.settings import Settings

ITEMS = "/collections/sentinel-2-l2a/items"
TMS = morecantile.tms.get("WebMercatorQuad")
TRUE_COLOR = [
    ("assets", "red"),
    ("assets", "green"),
    ("assets", "blue"),
    *[("rescale", "0.0,0.3")] * 3,
    ("harmonize", "true"),
]


@pytest.fixture(scope="module")
def client(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(catalog=str(demo_dir), data_dir=tmp_path_factory.mktemp("documents"))
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def item(demo_dir: Path) -> dict:
    return demo.items(demo_dir)[0]


@pytest.fixture(scope="module")
def tile(item: dict) -> morecantile.Tile:
    minx, miny, maxx, maxy = item["bbox"]
    return TMS.tile((minx + maxx) / 2, (miny + maxy) / 2, 14)


@pytest.fixture(scope="module")
def sources(client: TestClient, demo_dir: Path, item: dict) -> dict[str, tuple[str, dict]]:
    """Each source with a layer: its path and the query naming it (``url=`` for /stac)."""
    r = client.post("/searches/register", json={"ids": [i["id"] for i in demo.items(demo_dir)]})
    assert r.status_code == 200, r.text
    return {
        "item": (f"{ITEMS}/{item['id']}", {}),
        "stac": ("/stac", {"url": str(demo_dir / "items" / f"{item['id']}.json")}),
        "search": (f"/searches/{r.json()['id']}", {}),
    }


def _tile_url(tilejson) -> tuple[str, list[tuple[str, str]]]:
    """The path and query of a TileJSON's tile template."""
    assert tilejson.status_code == 200, tilejson.text
    url = urlsplit(tilejson.json()["tiles"][0])
    return url.path, parse_qsl(url.query)


def _png(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.asarray(Image.open(io.BytesIO(response.content)))


def _pixel(item: dict, col: int, row: int) -> tuple[float, float]:
    """The UTM centre of pixel (col, row) of the item's 10 m grid."""
    t = item["assets"]["red"]["proj:transform"]
    return t[2] + (col + 0.5) * t[0], t[5] + (row + 0.5) * t[4]


# ---------------------------------------------------------------------- a bad layer: 400


@pytest.mark.parametrize("name", ["item", "stac", "search"])
@pytest.mark.parametrize("document", ["tilejson.json", "map.html"])
@pytest.mark.parametrize(
    "layer,named",
    [
        ({"assets": "B99"}, "B99"),
        ({"assets": "red,B99"}, "B99"),
        ({"expression": "(nir-nope)/(nir+nope)"}, "nope"),
        ({"expression": "nir_b2"}, "nir_b2"),
        ({"expression": "(nir_b1-red_b1"}, "expression"),
    ],
)
def test_a_document_refuses_a_layer_whose_tiles_would_fail(
    client, sources, tile, name, document, layer, named
):
    path, source = sources[name]
    r = client.get(f"{path}/WebMercatorQuad/{document}", params=source | layer)
    assert r.status_code == 400, r.text
    assert named in r.json()["detail"]
    # As the tile itself answers.
    tile_path = f"{path}/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.png"
    assert client.get(tile_path, params=source | layer).status_code == 400


# ---------------------------------------------------------------------- no layer: true-color


@pytest.mark.parametrize("name", ["item", "stac", "search"])
def test_no_layer_is_the_true_color_preset(client, sources, tile, name):
    path, source = sources[name]
    tiles_path, query = _tile_url(
        client.get(f"{path}/WebMercatorQuad/tilejson.json", params=source)
    )
    assert [pair for pair in query if pair[0] not in ("url", "tilesize")] == TRUE_COLOR
    tile_path = f"{path}/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.png"
    bare = _png(client.get(tile_path, params=source))
    preset = _png(client.get(tile_path, params=source | {"preset": "true-color"}))
    listed = _png(
        client.get(tiles_path.replace("{z}/{x}/{y}", f"{tile.z}/{tile.x}/{tile.y}"), params=query)
    )
    np.testing.assert_array_equal(bare, preset)
    np.testing.assert_array_equal(bare, listed)
    assert bare[..., :3].std() > 0  # a picture, not a blank tile


def test_the_default_preset_is_a_setting():
    assert complete_query([], None, "ndvi") == complete_query([("preset", "ndvi")])
    assert complete_query([], None, None) == []
    # A request naming a layer takes no default preset.
    assert complete_query([("assets", "red")], None, "true-color") == [("assets", "red")]
    assert complete_query([("expression", "nir")], None, "ndvi") == [("expression", "nir")]
    assert Settings(default_preset=" NDVI ").default_preset == "ndvi"
    assert Settings(default_preset="").default_preset is None
    # A name that is no preset stops the service from starting.
    with pytest.raises(ValueError, match="default_preset: unknown preset 'sepia'"):
        create_app(Settings(default_preset="sepia"))


def test_info_still_describes_what_it_is_asked(client, item):
    """/info is not a layer: no default preset; the comma form names its assets."""
    r = client.get(f"{ITEMS}/{item['id']}/info", params={"assets": "B04,B03"})
    assert r.status_code == 200, r.text
    assert list(r.json()) == ["red", "green"]


# ---------------------------------------------------------------------- the tutorial's forms


def test_comma_separated_assets_are_the_assets(client, demo_dir, item):
    col, row = 101, 57
    x, y = _pixel(item, col, row)
    path = f"{ITEMS}/{item['id']}/point/{x},{y}"
    comma = client.get(path, params={"assets": "B04,B03,B02", "coord_crs": "epsg:32633"})
    assert comma.status_code == 200, comma.text
    expected = [float(demo.read(demo_dir, item, a)[row, col]) for a in ("red", "green", "blue")]
    assert comma.json()["values"] == expected
    repeated = client.get(
        path, params=[("assets", a) for a in ("B04", "B03", "B02")] + [("coord_crs", "epsg:32633")]
    )
    assert repeated.json()["values"] == expected


def test_titiler_band_names_in_expressions(client, demo_dir, item):
    col, row = 33, 190
    x, y = _pixel(item, col, row)
    path = f"{ITEMS}/{item['id']}/point/{x},{y}"
    r = client.get(
        path,
        params={"expression": "(nir_b1-red_b1)/(nir_b1+red_b1)", "coord_crs": "epsg:32633"},
    )
    assert r.status_code == 200, r.text
    nir = demo.reflectance(demo_dir, item, "nir")[row, col]
    red = demo.reflectance(demo_dir, item, "red")[row, col]
    assert r.json()["values"] == pytest.approx([(nir - red) / (nir + red)], rel=1e-5)
    # Band names by ESA name too (B08_b1), and a band an asset does not have: 400.
    r = client.get(path, params={"expression": "B08_b1/B04_b1", "coord_crs": "epsg:32633"})
    assert r.json()["values"] == pytest.approx([nir / red], rel=1e-5)
    r = client.get(path, params={"expression": "red_b3", "coord_crs": "epsg:32633"})
    assert r.status_code == 400
    assert r.json()["detail"].startswith("expression: 'red_b3' names band 3 of asset 'red'")


# ---------------------------------------------------------------------- tile sizes


@pytest.mark.parametrize("name", ["item", "stac", "cog", "search"])
def test_tilejson_lists_256_px_tiles_and_no_raster_layers(
    client, sources, demo_dir, item, tile, name
):
    if name == "cog":
        path, source = "/cog", {"url": str(demo.href(demo_dir, item, "red"))}
    else:
        path, source = sources[name]
    layer = source | {"assets": "red", "rescale": "0,3000"} if name != "cog" else source
    tilejson = client.get(f"{path}/WebMercatorQuad/tilejson.json", params=layer)
    assert "raster_layers" not in tilejson.json()
    tiles_path, query = _tile_url(tilejson)
    assert dict(query).get("tilesize", "256") == "256"
    tile_path = tiles_path.replace("{z}/{x}/{y}", f"{tile.z}/{tile.x}/{tile.y}") + ".png"
    assert _png(client.get(tile_path, params=query)).shape[:2] == (256, 256)
    # More pixels when asked: tilesize, or the retina URL form.
    bigger = client.get(f"{path}/WebMercatorQuad/tilejson.json", params=layer | {"tilesize": 512})
    _, query = _tile_url(bigger)
    assert dict(query)["tilesize"] == "512"
    assert _png(client.get(tile_path, params=query)).shape[:2] == (512, 512)
    retina = tile_path.replace(".png", "@2x.png")
    assert _png(client.get(retina, params=layer)).shape[:2] == (512, 512)
