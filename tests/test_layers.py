"""Presets and search defaults: what the layer parameters of a tiler request resolve to.

Each parameter resolves on its own: the caller's value, else the search's default
(``metadata.defaults``; a request naming a layer of its own takes no layer default), else
the preset's value (the caller's ``preset``, else the search's default one), else the
parameter's own default. The links a response builds (TileJSON ``tiles``, map.html's
TileJSON and point URLs, tileset links) carry the resolved layer, so the tables below are
read off them; the pixels are then checked to be the resolved layer's.
"""

import io
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import demo_reads as demo
import morecantile
import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.errors import BadRequestError
from app.layers import complete_query
from app.main import create_app
from app.settings import Settings

ITEMS = "/collections/sentinel-2-l2a/items"
EXPRESSION = "expression=%28nir-red%29%2F%28nir%2Bred%29"
NDVI = f"{EXPRESSION}&rescale=-0.2%2C0.9&colormap_name=rdylgn&harmonize=true"
TRUE_COLOR = (
    "assets=red&assets=green&assets=blue"
    "&rescale=0.0%2C0.3&rescale=0.0%2C0.3&rescale=0.0%2C0.3&harmonize=true"
)
UNKNOWN = "preset: unknown preset 'sepia'; one of true-color, false-color, ndvi, ndwi, ndmi, scl"
TMS = morecantile.tms.get("WebMercatorQuad")


@pytest.fixture(scope="module")
def client(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(catalog=str(demo_dir), data_dir=tmp_path_factory.mktemp("layers"))
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def item(demo_dir: Path) -> dict:
    return demo.items(demo_dir)[0]


@pytest.fixture(scope="module")
def tile(item: dict) -> morecantile.Tile:
    minx, miny, maxx, maxy = item["bbox"]
    return TMS.tile((minx + maxx) / 2, (miny + maxy) / 2, 14)


def _register(client: TestClient, demo_dir: Path, defaults: dict | None) -> str:
    """The demo's items as a search; with defaults, another search of the same items.

    Registering a search again replaces its metadata (not part of its id).
    """
    body: dict = {"ids": [i["id"] for i in demo.items(demo_dir)]}
    if defaults is not None:
        body["datetime"] = "2000-01-01T00:00:00Z/2100-01-01T00:00:00Z"
        body["metadata"] = {"defaults": defaults}
    r = client.post("/searches/register", json=body)
    assert r.status_code == 200, r.text
    return r.json()["id"]


def _tiles_query(response) -> str:
    """The query string of a TileJSON's tile URL."""
    assert response.status_code == 200, response.text
    return response.json()["tiles"][0].split("?", 1)[1]


def _map_urls(response) -> list[str]:
    """The TileJSON and point URLs of a map.html page."""
    assert response.status_code == 200, response.text
    return re.findall(r"http://testserver[^\"'`]*", response.text)


# ---------------------------------------------------------------------- presets (items, /stac)

ITEM_PRESETS = [
    pytest.param({"preset": "ndvi"}, NDVI, id="preset"),
    pytest.param({"preset": "NDVI"}, NDVI, id="case-insensitive"),
    pytest.param(
        {"preset": "ndvi", "expression": "nir"},
        "expression=nir&rescale=-0.2%2C0.9&colormap_name=rdylgn&harmonize=true",
        id="caller-expression-wins",
    ),
    pytest.param(
        {"preset": "ndvi", "assets": "red"},
        "assets=red&rescale=-0.2%2C0.9&colormap_name=rdylgn&harmonize=true",
        id="caller-assets-replace-expression",
    ),
    pytest.param(
        {"preset": "ndvi", "colormap_name": "viridis"},
        f"colormap_name=viridis&{EXPRESSION}&rescale=-0.2%2C0.9&harmonize=true",
        id="caller-colormap-name-wins",
    ),
    pytest.param(
        {"preset": "ndvi", "colormap": '{"1": [0, 0, 0, 255]}'},
        "colormap=%7B%221%22%3A+%5B0%2C+0%2C+0%2C+255%5D%7D"
        f"&{EXPRESSION}&rescale=-0.2%2C0.9&harmonize=true",
        id="caller-colormap-replaces-colormap-name",
    ),
    pytest.param(
        {"harmonize": "false", "preset": "true-color", "rescale": "0,1"},
        "harmonize=false&rescale=0%2C1&assets=red&assets=green&assets=blue",
        id="caller-rescale-and-harmonize-win",
    ),
    pytest.param([("preset", "ndvi"), ("preset", "true-color")], TRUE_COLOR, id="last-preset-wins"),
    pytest.param({"assets": "red", "rescale": "0,3000"}, "assets=red&rescale=0%2C3000", id="none"),
]


@pytest.mark.parametrize("params,expected", ITEM_PRESETS)
def test_item_presets(client, item, tile, params, expected):
    path = f"{ITEMS}/{item['id']}"
    tilejson = client.get(f"{path}/WebMercatorQuad/tilejson.json", params=params)
    assert _tiles_query(tilejson) == f"{expected}&tilesize=256"
    # The tiles are the resolved layer's.
    tile_path = f"{path}/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.png"
    given = client.get(tile_path, params=params)
    resolved = client.get(tile_path, params=parse_qsl(expected))
    assert given.status_code == resolved.status_code == 200, given.text
    assert given.content == resolved.content


def test_scl_preset_sends_its_colormap(client, item):
    tilejson = client.get(
        f"{ITEMS}/{item['id']}/WebMercatorQuad/tilejson.json", params={"preset": "scl"}
    )
    query = _tiles_query(tilejson)
    assert query.startswith("assets=scl&colormap=%7B%220%22%3A+%5B0%2C+0%2C+0%2C+0%5D%2C+")
    assert query.endswith(
        "%2C+%2211%22%3A+%5B255%2C+150%2C+255%2C+255%5D%7D&harmonize=false&tilesize=256"
    )


def test_item_map_and_tileset_links_carry_the_preset(client, item):
    base = f"http://testserver{ITEMS}/{item['id']}"
    page = client.get(f"{ITEMS}/{item['id']}/WebMercatorQuad/map.html", params={"preset": "ndvi"})
    assert _map_urls(page) == [
        f"{base}/WebMercatorQuad/tilejson.json?{NDVI}&tilesize=256",
        f"{base}/point/{{lon}},{{lat}}?{EXPRESSION}&rescale=-0.2%2C0.9&harmonize=true",
    ]
    tileset = client.get(f"{ITEMS}/{item['id']}/tiles/WebMercatorQuad", params={"preset": "ndvi"})
    assert tileset.status_code == 200, tileset.text
    hrefs = [link["href"] for link in tileset.json()["links"]]
    assert f"{base}/tiles/WebMercatorQuad/%7Bz%7D/%7Bx%7D/%7By%7D?{NDVI}" in hrefs


def test_stac_by_url_presets(client, demo_dir, item, tile):
    url = str(demo_dir / "items" / f"{item['id']}.json")
    tilejson = client.get(
        "/stac/WebMercatorQuad/tilejson.json", params={"url": url, "preset": "ndvi"}
    )
    assert _tiles_query(tilejson) == f"{urlencode({'url': url})}&{NDVI}&tilesize=256"
    tile_path = f"/stac/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.png"
    given = client.get(tile_path, params={"url": url, "preset": "true-color"})
    resolved = client.get(tile_path, params=[("url", url), *parse_qsl(TRUE_COLOR)])
    assert given.status_code == resolved.status_code == 200, given.text
    assert given.content == resolved.content


def test_preset_assets_select_what_info_describes(client, item):
    r = client.get(f"{ITEMS}/{item['id']}/info", params={"preset": "true-color"})
    assert r.status_code == 200, r.text
    assert list(r.json()) == ["red", "green", "blue"]


def test_point_and_crop_take_the_preset(client, item):
    path = f"{ITEMS}/{item['id']}"
    minx, miny, maxx, maxy = item["bbox"]
    lon, lat = (minx + maxx) / 2, (miny + maxy) / 2
    given = client.get(f"{path}/point/{lon},{lat}", params={"preset": "ndvi"})
    resolved = client.get(f"{path}/point/{lon},{lat}", params=parse_qsl(NDVI))
    assert given.status_code == 200, given.text
    assert given.json() == resolved.json()
    bbox = f"{minx + 0.002},{miny + 0.002},{minx + 0.006},{miny + 0.005}"
    given = client.get(f"{path}/bbox/{bbox}/64x64.npy", params={"preset": "ndvi"})
    resolved = client.get(f"{path}/bbox/{bbox}/64x64.npy", params=parse_qsl(NDVI))
    assert given.status_code == 200, given.text
    assert given.content == resolved.content


def test_cog_takes_no_preset(client, demo_dir, item, tile):
    url = str(demo.href(demo_dir, item, "red"))
    tile_path = f"/cog/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.png"
    given = client.get(tile_path, params={"url": url, "preset": "sepia"})
    plain = client.get(tile_path, params={"url": url})
    assert given.status_code == plain.status_code == 200, given.text
    assert given.content == plain.content


# ---------------------------------------------------------------------- search defaults

SEARCH_DEFAULTS = [
    pytest.param({"preset": "ndvi", "mask": "scl-clear"}, {}, f"mask=scl-clear&{NDVI}", id="bare"),
    pytest.param(
        {"preset": "ndvi", "mask": "scl-clear"},
        {"assets": "red"},
        "assets=red&mask=scl-clear",
        id="own-layer-takes-no-layer-default",
    ),
    pytest.param(
        {"preset": "ndvi", "mask": "scl-clear"},
        {"preset": "true-color"},
        f"mask=scl-clear&{TRUE_COLOR}",
        id="caller-preset-beats-default-preset",
    ),
    pytest.param(
        {"preset": "ndvi", "mask": "scl-clear"},
        {"mask": "none"},
        f"mask=none&{NDVI}",
        id="caller-beats-default",
    ),
    pytest.param(
        {"rescale": ["0,1"], "harmonize": False, "tilesize": 512},
        {"preset": "ndvi"},
        f"harmonize=false&tilesize=512&{EXPRESSION}&rescale=-0.2%2C0.9&colormap_name=rdylgn",
        id="default-beats-preset",
    ),
    pytest.param(
        {"preset": "ndvi", "rescale": ["0,0.5"], "colormap_name": "viridis"},
        {},
        f"colormap_name=viridis&rescale=0%2C0.5&{EXPRESSION}&harmonize=true",
        id="default-layer-beats-its-preset",
    ),
    pytest.param(
        {"order": "leastCC", "pixel_selection": "median", "buffer": 1},
        {"assets": "red", "order": "mostRecent"},
        "assets=red&order=mostRecent&buffer=1&pixel_selection=median",
        id="mosaic-and-tile-defaults",
    ),
    pytest.param(
        {"algorithm": "hillshade", "nodata": 0, "resampling": "bilinear"},
        {"expression": "nir"},
        "expression=nir&nodata=0&resampling=bilinear",
        id="own-layer-takes-no-default-algorithm",
    ),
    pytest.param(
        {"expression": "nir", "rescale": "0,3000", "colormap_name": "viridis"},
        {"harmonize": "true"},
        "harmonize=true&colormap_name=viridis&expression=nir&rescale=0%2C3000",
        id="no-preset",
    ),
]


@pytest.mark.parametrize("defaults,params,expected", SEARCH_DEFAULTS)
def test_search_defaults(client, demo_dir, tile, defaults, params, expected):
    search_id = _register(client, demo_dir, defaults)
    plain = _register(client, demo_dir, None)
    tilejson = client.get(f"/searches/{search_id}/WebMercatorQuad/tilejson.json", params=params)
    assert _tiles_query(tilejson) == expected
    base = f"http://testserver/searches/{search_id}"
    page = client.get(f"/searches/{search_id}/WebMercatorQuad/map.html", params=params)
    tilesize = "" if "tilesize" in expected else "&tilesize=256"
    assert _map_urls(page)[0] == f"{base}/WebMercatorQuad/tilejson.json?{expected}{tilesize}"
    # The tiles are the resolved layer's: the same bytes as asking a search without defaults.
    tile_path = f"tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.png"
    given = client.get(f"/searches/{search_id}/{tile_path}", params=params)
    resolved = client.get(f"/searches/{plain}/{tile_path}", params=parse_qsl(expected))
    assert given.status_code == resolved.status_code == 200, given.text
    assert given.content == resolved.content


def test_search_point_crop_and_statistics_take_the_defaults(client, demo_dir, item):
    defaults = {"preset": "ndvi", "mask": "scl-clear", "pixel_selection": "median"}
    search_id = _register(client, demo_dir, defaults)
    plain = _register(client, demo_dir, None)
    explicit = [("mask", "scl-clear"), ("pixel_selection", "median"), *parse_qsl(NDVI)]
    minx, miny, maxx, maxy = item["bbox"]
    lon, lat = (minx + maxx) / 2, (miny + maxy) / 2
    given = client.get(f"/searches/{search_id}/point/{lon},{lat}")
    resolved = client.get(f"/searches/{plain}/point/{lon},{lat}", params=explicit)
    assert given.status_code == 200, given.text
    assert given.json() == resolved.json()
    bbox = f"{minx + 0.002},{miny + 0.002},{minx + 0.006},{miny + 0.005}"
    given = client.get(f"/searches/{search_id}/bbox/{bbox}/64x64.npy")
    resolved = client.get(f"/searches/{plain}/bbox/{bbox}/64x64.npy", params=explicit)
    assert given.status_code == 200, given.text
    assert given.content == resolved.content
    feature = {
        "type": "Feature",
        "properties": {},
        "geometry": {
            "type": "Polygon",
            "coordinates": [
                [
                    [minx + 0.002, miny + 0.002],
                    [minx + 0.006, miny + 0.002],
                    [minx + 0.006, miny + 0.005],
                    [minx + 0.002, miny + 0.002],
                ]
            ],
        },
    }
    given = client.post(f"/searches/{search_id}/statistics", json=feature)
    resolved = client.post(f"/searches/{plain}/statistics", json=feature, params=explicit)
    assert given.status_code == 200, given.text
    assert given.json() == resolved.json()


def test_a_default_tilesize_sizes_the_tiles(client, demo_dir, tile):
    search_id = _register(client, demo_dir, {"tilesize": 512, "assets": "red"})
    r = client.get(f"/searches/{search_id}/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.npy")
    assert r.status_code == 200, r.text
    assert np.load(io.BytesIO(r.content)).shape[-2:] == (512, 512)


# ---------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "path",
    [
        "{item}/tiles/WebMercatorQuad/14/0/0.png",
        "{item}/WebMercatorQuad/tilejson.json",
        "{item}/WebMercatorQuad/map.html",
        "{item}/preview.png",
        "{item}/point/0,0",
        "{item}/info",
        "/collections/sentinel-2-l2a/items/no-such-item/preview.png",
        "/stac/preview.png?url=/no/such/file.json",
        "/searches/{search}/tiles/WebMercatorQuad/14/0/0.png",
        "/searches/{search}/WebMercatorQuad/tilejson.json",
        "/searches/{search}/WebMercatorQuad/map.html",
        "/searches/{search}/point/0,0",
        "/searches/0123456789abcdef0123456789abcdef/WebMercatorQuad/tilejson.json",
    ],
)
def test_an_unknown_preset_is_a_400(client, demo_dir, item, path):
    search_id = _register(client, demo_dir, {"mask": "scl-clear"})
    path = path.format(item=f"{ITEMS}/{item['id']}", search=search_id)
    r = client.get(path, params={"preset": "sepia"})
    assert r.status_code == 400, r.text
    assert r.json() == {"detail": UNKNOWN}


def test_a_bad_default_is_the_422_a_bad_parameter_is(client, demo_dir, tile):
    search_id = _register(client, demo_dir, {"nodata": "abc"})
    plain = _register(client, demo_dir, None)
    tile_path = f"tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.png"
    given = client.get(f"/searches/{search_id}/{tile_path}", params={"assets": "red"})
    explicit = client.get(
        f"/searches/{plain}/{tile_path}", params={"assets": "red", "nodata": "abc"}
    )
    assert given.status_code == explicit.status_code == 422
    assert given.json() == explicit.json()


def test_an_unknown_search_is_a_404(client):
    r = client.get(
        "/searches/0123456789abcdef0123456789abcdef/tiles/WebMercatorQuad/14/0/0.png",
        params={"preset": "ndvi"},
    )
    assert r.status_code == 404, r.text


# ---------------------------------------------------------------------- the rule, the docs


@pytest.mark.parametrize(
    "query,defaults,expected",
    [
        pytest.param([("assets", "red")], None, [("assets", "red")], id="nothing-to-add"),
        pytest.param(
            [("preset", "ndvi"), ("rescale", "0,1")],
            None,
            [
                ("rescale", "0,1"),
                *parse_qsl(EXPRESSION),
                ("colormap_name", "rdylgn"),
                ("harmonize", "true"),
            ],
            id="preset-dropped-caller-first",
        ),
        pytest.param(
            [("rescale", "0,1")],
            {"preset": "ndvi", "mask": "scl-clear"},
            [("rescale", "0,1"), ("mask", "scl-clear")],
            id="own-layer",
        ),
    ],
)
def test_complete_query(query, defaults, expected):
    assert complete_query(query, defaults) == expected


def test_an_unknown_preset_is_the_callers_error():
    with pytest.raises(BadRequestError, match=re.escape(UNKNOWN)):
        complete_query([("preset", "sepia")])


def test_preset_is_a_documented_parameter_where_it_applies(client):
    paths = client.get("/openapi.json").json()["paths"]

    def names(path: str, method: str = "get") -> set[str]:
        return {p["name"] for p in paths[path][method]["parameters"]}

    item = "/collections/{collection_id}/items/{item_id}"
    tile = "tiles/{tileMatrixSetId}/{z}/{x}/{y}.{format}"
    for path, method in [
        (f"{item}/{tile}", "get"),
        (f"{item}/{{tileMatrixSetId}}/tilejson.json", "get"),
        (f"{item}/info", "get"),
        (f"/stac/{tile}", "get"),
        ("/stac/feature", "post"),
        (f"/searches/{{search_id}}/{tile}", "get"),
        ("/searches/{search_id}/{tileMatrixSetId}/map.html", "get"),
        ("/searches/{search_id}/point/{lon},{lat}", "get"),
        ("/searches/{search_id}/statistics", "post"),
    ]:
        assert "preset" in names(path, method), path
    assert "preset" not in names(f"/cog/{tile}")
