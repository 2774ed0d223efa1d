"""The /searches API: registration, persistence (SQLite and PostgreSQL), errors, TileJSON,
statistics, and the same mosaic through LocalCatalog and a real STAC API (pgstac peer)."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import morecantile
import numpy as np
import psycopg
import pytest
from demo_reads import items_by_id, reflectance, scl_invalid
from fastapi.testclient import TestClient
from pgstac_fixtures import pgstac_api, pgstac_peer  # noqa: F401
from PIL import Image

from app.main import create_app
from app.settings import Settings

NDVI = "(nir-red)/(nir+red)"


@pytest.fixture
def client(searches_client: TestClient) -> TestClient:
    """The module's client (its app over ``settings``), with no search registered yet."""
    return searches_client


def _register(client: TestClient, body: dict) -> dict:
    r = client.post("/searches/register", json=body)
    assert r.status_code == 200, r.text
    return r.json()


# ---------------------------------------------------------------------------- registry


def test_registering_twice_gives_one_id(client, demo_dir):
    items = items_by_id(demo_dir)
    first = _register(
        client,
        {
            "collections": ["sentinel-2-l2a"],
            "bbox": [16, 46, 17, 47],
            "datetime": "2023-04-01T00:00:00Z/2023-09-30T23:59:59Z",
            "query": {"eo:cloud_cover": {"lt": 50}},
            "ids": sorted(items)[:3],
            "limit": 5,
        },
    )
    # Same search, other spelling: key order, ints vs floats, offset datetimes, id order,
    # a duplicate id, another limit.
    again = _register(
        client,
        {
            "limit": 100,
            "ids": list(reversed(sorted(items)[:3])) + [sorted(items)[0]],
            "query": {"eo:cloud_cover": {"lt": 50.0}},
            "datetime": "2023-04-01T02:00:00+02:00/2023-09-30T23:59:59Z",
            "bbox": [16.0, 46.0, 17.0, 47.0],
            "collections": ["sentinel-2-l2a"],
            "metadata": {"name": "renamed"},
        },
    )
    assert again["id"] == first["id"]
    assert len(first["id"]) == 32
    assert again["metadata"] == {"name": "renamed"}
    expected = sum(items[i]["properties"]["eo:cloud_cover"] < 50 for i in sorted(items)[:3])
    assert first["numberMatched"] == again["numberMatched"] == expected
    listing = client.get("/searches").json()
    assert listing["numberMatched"] == 1
    assert [s["id"] for s in listing["searches"]] == [first["id"]]
    got = client.get(f"/searches/{first['id']}").json()
    assert got["search"] == first["search"]
    assert got["metadata"]["name"] == "renamed"
    # A search without collections means the configured one: the same mosaic.
    implicit = _register(client, {"bbox": [16, 46, 17, 47]})
    explicit = _register(client, {"bbox": [16, 46, 17, 47], "collections": ["sentinel-2-l2a"]})
    assert implicit["id"] == explicit["id"]
    other = _register(client, {"bbox": [16, 46, 17, 47.5]})
    assert other["id"] != implicit["id"]


def test_register_links_and_defaults(client):
    doc = _register(
        client,
        {
            "collections": ["sentinel-2-l2a"],
            "metadata": {
                "name": "NDVI",
                "defaults": {"preset": "ndvi", "mask": "scl-clear", "rescale": ["0,1"]},
            },
        },
    )
    links = {link["rel"]: link for link in doc["links"]}
    assert set(links) >= {"self", "tilejson", "tiles", "map"}
    assert links["tiles"]["templated"] is True
    assert "/tiles/WebMercatorQuad/{z}/{x}/{y}?" in links["tiles"]["href"]
    assert "preset=ndvi" in links["tiles"]["href"]
    assert "mask=scl-clear" in links["tiles"]["href"]
    # The links work as they are.
    path = links["tilejson"]["href"].replace("http://testserver", "")
    tj = client.get(path)
    assert tj.status_code == 200, tj.text
    assert "preset=ndvi" in tj.json()["tiles"][0] or "expression=" in tj.json()["tiles"][0]
    html = client.get(links["map"]["href"].replace("http://testserver", ""))
    assert html.status_code == 200 and "tilejson.json" in html.text


def test_defaults_apply_to_requests_that_do_not_give_them(client, demo_dir):
    items = items_by_id(demo_dir)
    item = next(iter(items.values()))
    defaults = {"preset": "ndvi", "mask": "scl-clear"}
    with_defaults = _register(client, {"ids": list(items), "metadata": {"defaults": defaults}})[
        "id"
    ]
    # The same items under another search (metadata is not part of the id), no defaults.
    everything = "2000-01-01T00:00:00Z/2100-01-01T00:00:00Z"
    plain = _register(client, {"ids": list(items), "datetime": everything})["id"]
    assert plain != with_defaults
    tms = morecantile.tms.get("WebMercatorQuad")
    minx, miny, maxx, maxy = item["bbox"]
    tile = tms.tile((minx + maxx) / 2, (miny + maxy) / 2, 14)

    def path(search_id: str) -> str:
        return f"/searches/{search_id}/tiles/WebMercatorQuad/14/{tile.x}/{tile.y}.png"

    def png(search_id: str, **params: str) -> bytes:
        r = client.get(path(search_id), params=params)
        assert r.status_code == 200, r.text
        return r.content

    # A bare request is the default layer: the same bytes as asking for it.
    assert png(with_defaults) == png(plain, **defaults)
    # A layer of its own takes no layer default (no NDVI colormap/rescale on red), but the
    # other defaults (the mask) still apply, unless given.
    red = {"assets": "red", "rescale": "0,3000"}
    assert png(with_defaults, **red) == png(plain, **red, mask="scl-clear")
    assert png(with_defaults, **red, mask="none") == png(plain, **red)
    assert png(with_defaults, **red) != png(plain, **red)
    # Crops too: the default expression's values, as .npy.
    bbox = ",".join(str(v) for v in (minx + 0.002, miny + 0.002, minx + 0.006, miny + 0.005))
    bare = client.get(f"/searches/{with_defaults}/bbox/{bbox}/64x64.npy")
    explicit = client.get(f"/searches/{plain}/bbox/{bbox}/64x64.npy", params=defaults)
    assert bare.status_code == explicit.status_code == 200, bare.text
    assert np.array_equal(np.load(io.BytesIO(bare.content)), np.load(io.BytesIO(explicit.content)))
    # Without defaults a bare request is the default preset's (settings.default_preset).
    assert png(plain) == png(plain, preset="true-color")


@pytest.mark.parametrize(
    "body,parameter,status",
    [
        ({"bbox": [1, 2, 3]}, "bbox", 400),
        ({"bbox": [10, 50, 5, 55]}, "bbox", 400),
        ({"datetime": "yesterday"}, "datetime", 400),
        ({"datetime": "2023-09-01/2023-01-01"}, "datetime", 400),
        ({"intersects": {"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]}}, "intersects", 400),
        ({"query": {"eo:cloud_cover": {"approx": 3}}}, "query", 400),
        ({"filter": "eo:cloud_cover <<< 3", "filter-lang": "cql2-text"}, "filter", 400),
        ({"sortby": [{"field": "datetime", "direction": "sideways"}]}, "sortby", 400),
        ({"collections": "sentinel-2-l2a", "token": "abc"}, "token", 400),
        ({"collections": [1, 2]}, "collections", 400),
        ({"metadata": {"minzoom": 12, "maxzoom": 3}}, "metadata.minzoom", 400),
        ({"metadata": {"defaults": {"url": "/etc/passwd"}}}, "metadata.defaults", 400),
        ({"metadata": "name"}, "metadata", 400),
        # Defaults with a fixed set of values: refused at registration, not on every tile.
        ({"metadata": {"defaults": {"pixel_selection": "bogus"}}}, "metadata.defaults", 400),
        ({"metadata": {"defaults": {"order": "random"}}}, "metadata.defaults.order", 400),
        ({"metadata": {"defaults": {"preset": "sepia"}}}, "metadata.defaults.preset", 400),
        # TileJSON's bounds and centre come from them: no infinities, and on Earth.
        ({"metadata": {"bounds": [-math.inf, -90, math.inf, 90]}}, "metadata.bounds", 400),
        ({"metadata": {"bounds": [1e308, 0, 1e308, 0]}}, "metadata.bounds", 400),
        ({"metadata": {"bounds": [-500, -100, 500, 100]}}, "metadata.bounds", 400),
    ],
)
def test_bad_searches_are_400_naming_the_parameter(client, body, parameter, status):
    # json.dumps writes inf as Infinity, as Python clients send it.
    r = client.post(
        "/searches/register", content=json.dumps(body), headers={"content-type": "application/json"}
    )
    assert r.status_code == status, r.text
    assert r.json()["detail"].startswith(parameter), r.json()["detail"]
    assert client.get("/searches").json()["numberMatched"] == 0


def test_preset_defaults_are_looked_up_as_requests_do(client):
    # Presets are case-insensitive in requests; registration must accept what they accept.
    body = {"collections": ["sentinel-2-l2a"], "metadata": {"defaults": {"preset": "NDVI"}}}
    r = client.post("/searches/register", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["metadata"]["defaults"] == {"preset": "NDVI"}


def test_not_json_is_422(client):
    r = client.post(
        "/searches/register", content=b"[1, 2", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422


def test_search_over_the_item_limit_is_413(settings):
    limited = settings.model_copy(update={"mosaic_max_search_items": 2})
    with TestClient(create_app(limited)) as client:
        r = client.post("/searches/register", json={"collections": ["sentinel-2-l2a"]})
        assert r.status_code == 413
        assert "mosaic_max_search_items=2" in r.json()["detail"]


def test_unknown_search_is_404(client):
    for path in (
        "/searches/0123456789abcdef0123456789abcdef",
        "/searches/0123456789abcdef0123456789abcdef/tiles/WebMercatorQuad/14/8000/5000.png",
        "/searches/0123456789abcdef0123456789abcdef/WebMercatorQuad/tilejson.json",
        "/searches/not-an-id/point/16.1,46.6",
    ):
        r = client.get(path, params={"assets": "red"})
        assert r.status_code == 404, (path, r.text)
        assert "not found" in r.json()["detail"]


# ---------------------------------------------------------------------------- tiles


def test_tilejson_bounds_and_zooms_come_from_the_items(client, demo_dir):
    items = items_by_id(demo_dir)
    search_id = _register(client, {"collections": ["sentinel-2-l2a"]})["id"]
    tj = client.get(
        f"/searches/{search_id}/WebMercatorQuad/tilejson.json", params={"preset": "ndvi"}
    ).json()
    bboxes = np.array([i["bbox"] for i in items.values()])
    expected = [*bboxes[:, :2].min(axis=0), *bboxes[:, 2:].max(axis=0)]
    np.testing.assert_allclose(tj["bounds"], expected, atol=1e-9)
    single = client.get(
        f"/collections/sentinel-2-l2a/items/{next(iter(items))}/WebMercatorQuad/tilejson.json"
    ).json()
    assert tj["maxzoom"] == single["maxzoom"]
    assert tj["minzoom"] == max(single["minzoom"], 7)
    assert (
        tj["tiles"][0]
        .split("?")[0]
        .endswith(f"/searches/{search_id}/tiles/WebMercatorQuad/{{z}}/{{x}}/{{y}}")
    )
    assert "expression=" in tj["tiles"][0]  # the preset, expanded


def test_tiles_formats_outside_and_below_min_zoom(client, demo_dir):
    items = items_by_id(demo_dir)
    item = next(iter(items.values()))
    search_id = _register(client, {"collections": ["sentinel-2-l2a"], "bbox": item["bbox"]})["id"]
    tms = morecantile.tms.get("WebMercatorQuad")
    minx, miny, maxx, maxy = item["bbox"]
    tile = tms.tile((minx + maxx) / 2, (miny + maxy) / 2, 14)
    base = f"/searches/{search_id}/tiles/WebMercatorQuad"
    for suffix, fmt, size in [
        (".png", "PNG", 256),
        (".webp", "WEBP", 256),
        ("@2x.png", "PNG", 512),
        (".jpg", "JPEG", 256),
    ]:
        r = client.get(f"{base}/14/{tile.x}/{tile.y}{suffix}", params={"preset": "true-color"})
        assert r.status_code == 200, r.text
        image = Image.open(io.BytesIO(r.content))
        assert (image.format, image.size) == (fmt, (size, size))
    assert "max-age" in r.headers["cache-control"]
    # Outside the search (no item there, or outside its bbox): 404 that says so.
    far = tms.tile(minx - 1.0, miny - 1.0, 14)
    r = client.get(f"{base}/14/{far.x}/{far.y}.png", params={"preset": "true-color"})
    assert r.status_code == 404
    assert "outside search" in r.json()["detail"]
    assert "cache-control" not in r.headers
    # Below the minimum zoom: 400 naming the setting.
    low = tms.tile(minx, miny, 5)
    r = client.get(f"{base}/5/{low.x}/{low.y}.png", params={"preset": "true-color"})
    assert r.status_code == 400
    assert "mosaic_min_zoom=7" in r.json()["detail"]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("bbox/nan,46.6,16.2,46.7.npy", "bbox: needs four finite numbers"),
        ("bbox/16.1,46.6,inf,46.7.npy", "bbox: needs four finite numbers"),
        ("bbox/200,0,210,10.npy", "is not a place on Earth"),
        ("bbox/16.2,46.6,16.1,46.7.npy", "minx < maxx and miny < maxy are needed"),
        ("point/nan,46.6", "point: needs finite coordinates"),
        ("point/16.1,95", "is not a place on Earth"),
    ],
)
def test_bad_crops_and_points_are_400_not_outside_the_search(client, path, message):
    search_id = _register(client, {"collections": ["sentinel-2-l2a"]})["id"]
    r = client.get(f"/searches/{search_id}/{path}", params={"assets": "red"})
    assert r.status_code == 400, r.text
    assert message in r.json()["detail"]


@pytest.mark.parametrize(
    ("geometry", "message"),
    [
        (
            {
                "type": "Polygon",
                "coordinates": [[[16.09, 46.64], [math.nan, 46.64], [16.1, 46.65], [16.09, 46.64]]],
            },
            "feature: coordinates must be finite numbers",
        ),
        (
            {"type": "Polygon", "coordinates": [[[200, 0], [0, 80], [1, 1], [200, 0]]]},
            "is not a place on Earth",
        ),
        ({"type": "Point", "coordinates": [16.1, 46.65]}, "needs a Polygon or MultiPolygon"),
    ],
)
def test_bad_statistics_geometries_are_400(client, geometry, message):
    search_id = _register(client, {"collections": ["sentinel-2-l2a"]})["id"]
    feature = {"type": "Feature", "properties": {}, "geometry": geometry}
    r = client.post(
        f"/searches/{search_id}/statistics",
        params={"assets": "red"},
        content=json.dumps(feature),  # NaN as json.dumps writes it
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400, r.text
    assert message in r.json()["detail"]


def test_tiles_and_crops_are_clipped_to_the_search_area(client, demo_dir):
    items = items_by_id(demo_dir)
    item = next(iter(items.values()))
    minx, miny, maxx, maxy = item["bbox"]
    tms = morecantile.tms.get("WebMercatorQuad")
    # A z15 tile across the middle meridian of the scene; the search keeps the west half
    # (bbox) or a triangle (intersects) of it.
    middle = tms.tile((minx + maxx) / 2, (miny + maxy) / 2, 15)
    west, south, east, north = tms.bounds(middle)
    cut = (west + east) / 2
    whole = _register(client, {"ids": [item["id"]]})["id"]
    half = _register(client, {"ids": [item["id"]], "bbox": [minx, miny, cut, maxy]})["id"]
    triangle = {
        "type": "Polygon",
        "coordinates": [[[west, south], [east, south], [west, north], [west, south]]],
    }
    tri = _register(client, {"ids": [item["id"]], "intersects": triangle})["id"]
    path = f"tiles/WebMercatorQuad/15/{middle.x}/{middle.y}.npy"
    params = {"assets": "red"}
    full = np.load(io.BytesIO(client.get(f"/searches/{whole}/{path}", params=params).content))
    assert (full[-1] != 0).all()  # the scene covers the whole tile (mask band: 0 = masked)

    # Pixel centres in lon/lat.
    size = full.shape[-1]
    xs = west + (np.arange(size) + 0.5) * (east - west) / size
    merc = tms.xy(west, north), tms.xy(east, south)
    ys_merc = merc[0].y + (np.arange(size) + 0.5) * (merc[1].y - merc[0].y) / size
    lats = np.array([tms.lnglat(merc[0].x, y).y for y in ys_merc])
    lon, lat = np.meshgrid(xs, lats)

    for search_id, inside in [
        (half, lon < cut),
        # West of the hypotenuse from (east, south) to (west, north).
        (tri, (lon - west) / (east - west) + (lat - south) / (north - south) < 1),
    ]:
        r = client.get(f"/searches/{search_id}/{path}", params=params)
        assert r.status_code == 200, r.text
        clipped = np.load(io.BytesIO(r.content))
        valid = clipped[-1] != 0
        # Pixel-centre rule; the rasterized edge may differ on the pixels it crosses.
        disagree = valid != inside
        assert disagree.mean() < 2 / size, disagree.mean()
        assert 0.3 < valid.mean() < 0.7
        assert np.array_equal(clipped[0][valid], full[0][valid])

    # A crop across the bbox's edge: the same rule.
    bbox = (cut - 0.002, (south + north) / 2 - 0.001, cut + 0.002, (south + north) / 2 + 0.001)
    crop = np.load(
        io.BytesIO(
            client.get(
                f"/searches/{half}/bbox/{','.join(map(str, bbox))}/80x40.npy", params=params
            ).content
        )
    )
    valid = crop[-1] != 0
    assert valid[:, :39].all() and not valid[:, 41:].any()
    # Outside the area altogether: 404, as before.
    east_tile = tms.tile(maxx - 0.001, (miny + maxy) / 2, 15)
    r = client.get(
        f"/searches/{half}/tiles/WebMercatorQuad/15/{east_tile.x}/{east_tile.y}.png", params=params
    )
    assert r.status_code == 404


def test_fully_masked_tile_is_transparent(client, demo_dir):
    items = items_by_id(demo_dir)
    cloudy = max(items.values(), key=lambda i: i["properties"]["eo:cloud_cover"])
    search_id = _register(client, {"ids": [cloudy["id"]]})["id"]
    # The SCL of the cloudiest scene: find a tile-sized fully cloudy block, else skip.
    tms = morecantile.tms.get("WebMercatorQuad")
    minx, miny, maxx, maxy = cloudy["bbox"]
    for tile in tms.tiles(minx, miny, maxx, maxy, [17]):
        r = client.get(
            f"/searches/{search_id}/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.png",
            params={"assets": "red", "mask": "scl-clear", "rescale": "0,3000"},
        )
        assert r.status_code in (200, 404), r.text
        if r.status_code == 200:
            alpha = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGBA"))[..., 3]
            if (alpha == 0).all():
                return
    pytest.skip("no fully cloudy z17 tile in this demo")


def test_bbox_and_statistics_match_numpy(client, demo_dir, settings):
    items = items_by_id(demo_dir)
    newest = sorted(items.values(), key=lambda i: i["properties"]["datetime"])[-2:]
    search_id = _register(client, {"ids": [i["id"] for i in newest]})["id"]
    newest = sorted(newest, key=lambda i: i["properties"]["datetime"], reverse=True)
    # A rectangle on the 10 m grid, 40 px in from the corner, 100 x 60 px.
    t = newest[0]["assets"]["red"]["proj:transform"]
    x0, y0 = t[2] + 40 * t[0], t[5] + 40 * t[4]
    bounds = (x0, y0 + 60 * t[4], x0 + 100 * t[0], y0)
    composite = None
    for item in newest:
        red = reflectance(demo_dir, item, "red")
        nir = reflectance(demo_dir, item, "nir")
        ndvi = (nir - red) / (nir + red)
        mask = np.ma.getmaskarray(ndvi) | scl_invalid(
            demo_dir, item, settings.scl_mask_classes, ndvi.shape
        )
        ndvi = np.ma.MaskedArray(ndvi, mask=mask)[40:100, 40:140]
        if composite is None:
            composite = ndvi
        else:
            fill = np.ma.getmaskarray(composite) & ~np.ma.getmaskarray(ndvi)
            composite = np.ma.MaskedArray(
                np.where(fill, ndvi.data, composite.data),
                mask=np.ma.getmaskarray(composite) & ~fill,
            )
    r = client.get(
        f"/searches/{search_id}/bbox/{','.join(map(str, bounds))}.npy",
        params={
            "expression": NDVI,
            "mask": "scl-clear",
            "coord_crs": "epsg:32633",
            "dst_crs": "epsg:32633",
        },
    )
    data = np.load(io.BytesIO(r.content))
    valid = data[-1] > 0
    np.testing.assert_array_equal(valid, ~np.ma.getmaskarray(composite))
    np.testing.assert_allclose(data[0][valid], composite.compressed(), atol=1e-6)

    feature = {
        "type": "Feature",
        "properties": {"name": "field"},
        "geometry": {
            "type": "Polygon",
            "coordinates": [
                [
                    [bounds[0], bounds[1]],
                    [bounds[2], bounds[1]],
                    [bounds[2], bounds[3]],
                    [bounds[0], bounds[3]],
                    [bounds[0], bounds[1]],
                ]
            ],
        },
    }
    r = client.post(
        f"/searches/{search_id}/statistics",
        params={"expression": NDVI, "mask": "scl-clear", "coord_crs": "epsg:32633"},
        json=feature,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    stats = next(iter(body["properties"]["statistics"].values()))
    assert body["properties"]["name"] == "field"
    assert stats["count"] == composite.count()
    assert stats["mean"] == pytest.approx(float(composite.mean()), abs=1e-6)
    assert stats["min"] == pytest.approx(float(composite.min()), abs=1e-6)
    assert stats["max"] == pytest.approx(float(composite.max()), abs=1e-6)
    assert body["properties"]["mosaic"]["items"] == [i["id"] for i in newest]

    collection = {"type": "FeatureCollection", "features": [feature, feature]}
    r = client.post(
        f"/searches/{search_id}/statistics",
        params={"expression": NDVI, "mask": "scl-clear", "coord_crs": "epsg:32633"},
        json=collection,
    )
    assert r.status_code == 200 and len(r.json()["features"]) == 2


# ---------------------------------------------------------------------------- persistence


def _survives_restart(settings: Settings, demo_dir: Path) -> None:
    item = next(iter(items_by_id(demo_dir).values()))
    minx, miny, maxx, maxy = item["bbox"]
    tile = morecantile.tms.get("WebMercatorQuad").tile((minx + maxx) / 2, (miny + maxy) / 2, 14)
    path = f"tiles/WebMercatorQuad/14/{tile.x}/{tile.y}.png"
    app = create_app(settings)
    with TestClient(app) as client:
        doc = _register(client, {"collections": ["sentinel-2-l2a"], "metadata": {"name": "kept"}})
        before = client.get(f"/searches/{doc['id']}/{path}", params={"preset": "ndvi"})
        assert before.status_code == 200
    # Leaving the `with` stopped the app: its services closed, its database pool too.
    app = create_app(settings)  # a new process, as far as the service can tell
    with TestClient(app) as client:
        got = client.get(f"/searches/{doc['id']}")
        assert got.status_code == 200, got.text
        assert got.json()["metadata"] == {"name": "kept"}
        assert got.json()["search"] == doc["search"]
        after = client.get(f"/searches/{doc['id']}/{path}", params={"preset": "ndvi"})
        assert after.status_code == 200 and after.content == before.content
        assert client.get("/searches").json()["numberMatched"] == 1


def test_searches_survive_a_restart_with_sqlite(demo_dir, tmp_path):
    database = tmp_path / "db" / "searches.sqlite"
    settings = Settings(
        catalog=str(demo_dir), data_dir=tmp_path / "data", database_url=f"sqlite:///{database}"
    )
    _survives_restart(settings, demo_dir)
    assert database.exists()


def test_default_database_is_sqlite_in_the_data_folder(demo_dir, tmp_path):
    settings = Settings(catalog=str(demo_dir), data_dir=tmp_path / "data")
    _survives_restart(settings, demo_dir)
    assert (tmp_path / "data" / "terratiler.db").exists()


def test_searches_survive_a_restart_with_postgresql(demo_dir, tmp_path, postgres_url):
    settings = Settings(
        catalog=str(demo_dir), data_dir=tmp_path / "data", database_url=postgres_url
    )
    _survives_restart(settings, demo_dir)
    with psycopg.connect(postgres_url.replace("+psycopg", "")) as conn:
        assert conn.execute("SELECT count(*) FROM mosaic_searches").fetchone()[0] == 1


# ---------------------------------------------------------------------------- catalogs


@pytest.mark.pgstac
def test_stac_api_catalog_gives_the_same_tiles_as_the_local_catalog(
    demo_dir,
    tmp_path,
    pgstac_api,  # noqa: F811
):
    items = items_by_id(demo_dir)
    local = Settings(catalog=str(demo_dir), data_dir=tmp_path / "local")
    remote = Settings(
        catalog=pgstac_api,
        data_dir=tmp_path / "remote",
        allowed_sources=[str(demo_dir.resolve())],
    )
    minx, miny, maxx, maxy = next(iter(items.values()))["bbox"]
    tms = morecantile.tms.get("WebMercatorQuad")
    tiles = list(tms.tiles(minx, miny, maxx, maxy, [14, 15]))
    search = {
        "collections": ["sentinel-2-l2a"],
        "bbox": [minx - 0.01, miny - 0.01, maxx + 0.01, maxy + 0.01],
        "datetime": "2023-01-01T00:00:00Z/2023-12-31T23:59:59Z",
        "query": {"eo:cloud_cover": {"lt": 90}},
    }
    renders = [
        {"preset": "ndvi", "mask": "scl-clear"},
        {"preset": "true-color", "pixel_selection": "median", "mask": "scl-clear"},
        {"preset": "true-color", "order": "leastCC"},
    ]
    outputs = []
    for settings in (local, remote):
        with TestClient(create_app(settings)) as client:
            doc = _register(client, search)
            assert doc["numberMatched"] in (None, len(items))
            got = [doc["id"]]
            for tile in tiles:
                for params in renders:
                    r = client.get(
                        f"/searches/{doc['id']}/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.png",
                        params=params,
                    )
                    assert r.status_code == 200, r.text
                    got.append((r.headers["x-mosaic-items"], r.content))
            lon, lat = (minx + maxx) / 2, (miny + maxy) / 2
            point = client.get(
                f"/searches/{doc['id']}/point/{lon},{lat}", params={"expression": NDVI}
            ).json()
            got.append(([e["id"] for e in point["series"]], [e["values"] for e in point["series"]]))
            tj = client.get(f"/searches/{doc['id']}/WebMercatorQuad/tilejson.json").json()
            got.append((tj["bounds"], tj["minzoom"], tj["maxzoom"]))
            outputs.append(got)
    assert outputs[0][0] == outputs[1][0]  # the same search id on both backends
    assert len(outputs[0]) == len(outputs[1])
    for a, b in zip(outputs[0][1:], outputs[1][1:], strict=True):
        assert a == b


def test_href_outside_the_allow_list_is_refused(demo_dir, tmp_path):
    # The same items served from a catalog whose assets are not allow-listed: 403, and
    # nothing is read.
    settings = Settings(
        catalog=str(demo_dir), data_dir=tmp_path / "data", allowed_sources=[str(tmp_path)]
    )
    item = next(iter(items_by_id(demo_dir).values()))
    with TestClient(create_app(settings)) as client:
        search_id = _register(client, {"ids": [item["id"]]})["id"]
        minx, miny, maxx, maxy = item["bbox"]
        tile = morecantile.tms.get("WebMercatorQuad").tile((minx + maxx) / 2, (miny + maxy) / 2, 14)
        r = client.get(
            f"/searches/{search_id}/tiles/WebMercatorQuad/14/{tile.x}/{tile.y}.png",
            params={"assets": "red"},
        )
        assert r.status_code == 403, r.text


def test_info_lists_the_items_and_extent(client, demo_dir):
    items = items_by_id(demo_dir)
    search_id = _register(client, {"collections": ["sentinel-2-l2a"]})["id"]
    info = client.get(f"/searches/{search_id}/info").json()
    assert info["numberOfItems"] == len(items)
    newest_first = sorted(items.values(), key=lambda i: i["properties"]["datetime"], reverse=True)
    assert [i["id"] for i in info["items"]] == [i["id"] for i in newest_first]
    assert info["minzoom"] <= info["maxzoom"]
    r = client.get(
        f"/searches/{search_id}/point/16.1,46.6", params={"assets": "red", "order": "sideways"}
    )
    assert r.status_code == 422


def test_openapi_lists_the_search_endpoints(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/searches/register",
        "/searches",
        "/searches/{search_id}",
        "/searches/{search_id}/tiles/{tileMatrixSetId}/{z}/{x}/{y}.{format}",
        "/searches/{search_id}/{tileMatrixSetId}/tilejson.json",
        "/searches/{search_id}/{tileMatrixSetId}/map.html",
        "/searches/{search_id}/point/{lon},{lat}",
        "/searches/{search_id}/statistics",
    ):
        assert path in paths, path
    assert json.dumps(paths)  # serializable


def test_a_tile_with_no_lon_lat_extent_is_404(client):
    """Far outside its projection's domain a TMS tile folds over in lon/lat (CanadianNAD83_LCC
    7/1/1: top below bottom); GDAL refused to transform it (a 500 before)."""
    search = _register(client, {"bbox": [16.05, 46.6, 16.15, 46.7]})["id"]
    r = client.get(
        f"/searches/{search}/tiles/CanadianNAD83_LCC/7/1/1.png", params={"assets": "red"}
    )
    assert r.status_code == 404, r.text
    assert "no extent" in r.json()["detail"]
