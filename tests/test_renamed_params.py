"""Old titiler parameter names are a 400 naming today's parameter (issue 15, item 9).

``color_map=viridis`` (the name of titiler's early tutorials) used to be ignored: a grey
tile with no hint why. Every tiler (catalog item, ``/stac``, ``/cog``, a registered search)
refuses the old names on its tile, TileJSON and bbox routes, and still answers with the
current name.
"""

import demo_reads as demo
import morecantile
import pytest
from fastapi.testclient import TestClient

from app.request_checks import RENAMED_PARAMETERS

ITEMS = "/collections/sentinel-2-l2a/items"


@pytest.fixture(scope="module")
def routes(module_client: TestClient, demo_dir) -> dict[str, tuple[str, dict[str, str]]]:
    """One tile, TileJSON and bbox route of each tiler, with the query it needs."""
    item = demo.swath_edge_item(demo_dir)
    url = str(demo.href(demo_dir, item, "red"))
    registered = module_client.post("/searches/register", json={"collections": ["sentinel-2-l2a"]})
    assert registered.status_code == 200, registered.text
    search = registered.json()["id"]
    west, south, east, north = item["bbox"]
    lon, lat = (west + east) / 2, (south + north) / 2
    tile = morecantile.tms.get("WebMercatorQuad").tile(lon, lat, 12)
    xyz = f"{tile.z}/{tile.x}/{tile.y}"
    bbox = f"{lon - 0.005},{lat - 0.005},{lon + 0.005},{lat + 0.005}"
    layer = {"assets": "red"}
    sources = {
        "item": (f"{ITEMS}/{item['id']}", layer),
        "stac": ("/stac", {"url": str(demo_dir / "items" / f"{item['id']}.json"), **layer}),
        "cog": ("/cog", {"url": url}),
        "search": (f"/searches/{search}", layer),
    }
    found = {}
    for name, (prefix, query) in sources.items():
        found[f"{name} tile"] = (f"{prefix}/tiles/WebMercatorQuad/{xyz}.png", query)
        found[f"{name} tilejson"] = (f"{prefix}/WebMercatorQuad/tilejson.json", query)
        found[f"{name} bbox"] = (f"{prefix}/bbox/{bbox}/64x64.png", query)
    return found


ROUTES = [
    f"{s} {r}" for s in ("item", "stac", "cog", "search") for r in ("tile", "tilejson", "bbox")
]


@pytest.mark.parametrize("route", ROUTES)
def test_color_map_is_400_naming_colormap_name(
    module_client: TestClient, routes: dict, route: str
) -> None:
    path, query = routes[route]
    current = module_client.get(
        path, params={**query, "colormap_name": "viridis", "rescale": "0,1"}
    )
    assert current.status_code == 200, current.text
    old = module_client.get(path, params={**query, "color_map": "viridis", "rescale": "0,1"})
    assert old.status_code == 400, old.text
    assert old.json()["detail"] == (
        "color_map: not a parameter (an older titiler name); use colormap_name, "
        "e.g. colormap_name=viridis"
    )


@pytest.mark.parametrize("old", sorted(RENAMED_PARAMETERS))
def test_every_old_name_names_its_successor(
    module_client: TestClient, routes: dict, old: str
) -> None:
    current, _ = RENAMED_PARAMETERS[old]
    for route in ("item tile", "cog bbox", "search tilejson"):
        path, query = routes[route]
        response = module_client.get(path, params={**query, old: "1"})
        assert response.status_code == 400, (route, response.text)
        assert response.json()["detail"].startswith(f"{old}: ")
        assert f"use {current}," in response.json()["detail"]


def test_the_successors_are_parameters_of_the_routes(module_client: TestClient) -> None:
    """Each name a message points to is a parameter of the tile or bbox routes."""
    document = module_client.get("/openapi.json").json()
    names = {
        parameter["name"]
        for path, operations in document["paths"].items()
        if "/bbox/" in path or "/tiles/{tileMatrixSetId}/{z}" in path
        for operation in operations.values()
        for parameter in operation.get("parameters", [])
    }
    assert {current for current, _ in RENAMED_PARAMETERS.values()} <= names
    assert not set(RENAMED_PARAMETERS) & names
