"""An independent attack on the merged security work of issue 12: what the pieces missed.

Each test reproduces a defect found after the merge (a 500 on user input, a Host link kept
public, a memory bound sidestepped) through the real app, and pins the fixed behaviour.
"""

import base64
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import morecantile
import numpy as np
import pytest
import rasterio
from fastapi.testclient import TestClient
from harness.stubapi import Recorded, StubResponse, StubServer, landing_page
from live_server import live_server
from rasterio.transform import from_origin
from rasterio.warp import transform

from app.catalog import SearchQuery
from app.catalog.stacapi import StacApiCatalog
from app.errors import BadRequestError
from app.main import create_app
from app.settings import Settings

DEEP = b"[" * 100_000 + b"]" * 100_000
DEEP_MESSAGE = "body: nested 100000 levels deep, over the limit max_json_depth=48"


@pytest.fixture(scope="module")
def cog(demo_dir: Path) -> str:
    """An allowed COG of the demo catalog."""
    item = json.loads(next((demo_dir / "items").glob("*.json")).read_text())
    href = next(a["href"] for a in item["assets"].values() if a["href"].endswith(".tif"))
    return str((demo_dir / "items" / href).resolve())


@pytest.mark.parametrize("content_type", ["text/plain", "application/octet-stream"])
@pytest.mark.parametrize(
    "path", ["/cog/feature?url={cog}", "/cog/statistics?url={cog}", "/statistics"]
)
def test_a_deep_body_of_a_non_json_content_type_is_a_400(client, cog, path, content_type):
    # RequestLimitMiddleware checks the nesting of JSON content types only; the geometry
    # check (GeometryBody) then json.loads'ed any body: RecursionError, a 500.
    r = client.post(path.format(cog=cog), content=DEEP, headers={"content-type": content_type})
    assert r.status_code == 400, r.text
    assert r.json() == {"detail": DEEP_MESSAGE}


def test_a_shallow_body_of_a_non_json_content_type_is_still_fastapis_422(client, cog):
    r = client.post(
        f"/cog/feature?url={cog}", content=b"[[1]]", headers={"content-type": "text/plain"}
    )
    assert r.status_code == 422, r.text


# U+0122 is the bytes 22 01 in UTF-16-LE: a byte scan for '"' saw a string close inside it.
HIDDEN = '["\u0122", ' + "[" * 5000 + "]" * 5000 + ', "\u0122"]'


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16", "utf-32-be"])
@pytest.mark.parametrize("content_type", ["application/json", "text/plain"])
@pytest.mark.parametrize("path", ["/cog/feature?url={cog}", "/statistics", "/catalog/search"])
def test_a_deep_body_in_utf16_or_utf32_is_a_400(client, cog, path, content_type, encoding):
    # json.loads(bytes) reads UTF-16 and UTF-32; the nesting was counted on the raw bytes,
    # where a string's character could end the string early and hide what followed.
    r = client.post(
        path.format(cog=cog),
        content=HIDDEN.encode(encoding),
        headers={"content-type": content_type},
    )
    assert r.status_code == 400, r.text
    assert r.json() == {"detail": "body: nested 5001 levels deep, over the limit max_json_depth=48"}


def test_a_shallow_utf16_search_body_is_still_read(client):
    r = client.post(
        "/catalog/search",
        content=json.dumps({"limit": 1}).encode("utf-16"),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 200, r.text
    assert len(r.json()["features"]) == 1


@pytest.mark.parametrize(
    "path, location",
    [
        ("/searches/", "http://evil.example/searches"),
        ("/tileMatrixSets/", "http://evil.example/tileMatrixSets"),
        ("/cog/info/?url=x", "http://evil.example/cog/info?url=x"),
    ],
)
def test_a_redirect_to_the_request_host_is_not_publicly_cached(client, path, location):
    # redirect_slashes builds Location from the Host header; with Cache-Control public a
    # shared cache served the forged host's redirect to every user for an hour.
    r = client.get(path, headers={"host": "evil.example"}, follow_redirects=False)
    assert r.status_code == 307
    assert r.headers["location"] == location
    assert r.headers["cache-control"] == "private"
    assert r.headers["vary"] == "Host"


# A WebMercator COG: tiles of WebMercatorQuad read it without a WarpedVRT. Its origin is
# off the tile grid, so rio-tiler pads (an aligned window is read unpadded).
MERCATOR_ORIGIN = (1_000_003.3, 6_000_007.7)
MERCATOR_RES = 9.0


@pytest.fixture(scope="module")
def mercator_cog(demo_settings) -> str:
    path = Path(demo_settings.data_dir) / "review-mercator.tif"
    profile = {
        "driver": "GTiff",
        "dtype": "uint16",
        "count": 1,
        "width": 512,
        "height": 512,
        "crs": "EPSG:3857",
        "transform": from_origin(*MERCATOR_ORIGIN, MERCATOR_RES, MERCATOR_RES),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "nodata": 0,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.arange(1, 512 * 512 + 1, dtype="uint32").reshape(1, 512, 512) % 60000 + 1)
    return str(path)


def test_padding_without_a_warp_is_bounded_by_max_output_pixels(
    client, demo_settings, mercator_cog, paddings
):
    # Without a WarpedVRT (the data already in the tile's CRS) rio-tiler reads the padded
    # tile into one (256 + 2p)^2 array: padding=20000 asked for 1.6 G pixels. Over
    # max_output_pixels the padding is dropped, as for warped tiles.
    x = MERCATOR_ORIGIN[0] + 256 * MERCATOR_RES
    y = MERCATOR_ORIGIN[1] - 256 * MERCATOR_RES
    (lon,), (lat,) = transform("EPSG:3857", "EPSG:4326", [x], [y])
    tile = morecantile.tms.get("WebMercatorQuad").tile(lon, lat, 14)
    base = f"/cog/tiles/WebMercatorQuad/14/{tile.x}/{tile.y}.npy?url={mercator_cog}"
    # The largest padding whose padded 256 px tile fits max_output_pixels, and one over.
    fits = (int(demo_settings.max_output_pixels**0.5) - 256) // 2
    for padding, expected in ((2, 2), (fits, fits), (fits + 1, 0)):
        r = client.get(f"{base}&padding={padding}")
        assert r.status_code == 200, r.text
        assert paddings == [expected]
        paddings.clear()


def _deep_item_server(request: Recorded, server: StubServer) -> StubResponse:
    if request.path == "/deep.json":
        return StubResponse(200, DEEP, {"Content-Type": "application/json"})
    if request.path == "/deep-member.json":
        body = b'{"type": "Feature", "properties": ' + DEEP + b"}"
        return StubResponse(200, body, {"Content-Type": "application/json"})
    return StubResponse(404, "no such file")


@pytest.fixture(scope="module")
def deep_items(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str, Path]]:
    """A service allowing a loopback server and a folder that both hold deep JSON."""
    folder = tmp_path_factory.mktemp("deep-items")
    (folder / "deep.json").write_bytes(DEEP)
    with StubServer(_deep_item_server) as server:
        settings = Settings(
            catalog=str(tmp_path_factory.mktemp("no-catalog")),
            data_dir=tmp_path_factory.mktemp("data"),
            allowed_sources=[f"{server.url}/", str(folder)],
            allow_private_sources=True,
        )
        yield TestClient(create_app(settings)), server.url, folder


@pytest.mark.parametrize("where", ["{server}/deep.json", "{server}/deep-member.json", "{folder}"])
@pytest.mark.parametrize("path", ["/stac/assets", "/stac/WebMercatorQuad/tilejson.json"])
def test_a_stac_item_url_holding_deep_json_is_a_400(deep_items, where, path):
    # rio-tiler's fetch json-decodes the document whole: RecursionError, a 500.
    client, server, folder = deep_items
    url = where.format(server=server, folder=f"{folder}/deep.json")
    r = client.get(path, params={"url": url})
    assert r.status_code == 400, r.text
    assert r.json() == {"detail": f"url: '{url}' is not a STAC item (JSON nested too deep)"}


def test_a_page_token_of_deep_json_is_refused_as_a_token():
    # A STAC API catalog's page token is zlib-compressed JSON: 100 000 "[" fit in a
    # 200-character token, and decoding it was a RecursionError (a 500 on /catalog/search).
    token = base64.urlsafe_b64encode(zlib.compress(DEEP)).decode().rstrip("=")
    assert len(token) < 1000

    def handle(request: Recorded, server: StubServer) -> StubResponse:
        if request.path in ("", "/"):
            return StubResponse(200, landing_page(server.url))
        return StubResponse(404, {"description": "no such thing"})

    with StubServer(handle) as server:
        catalog = StacApiCatalog(server.url)
        with pytest.raises(BadRequestError) as refused:
            catalog.search_page(SearchQuery(token=token))
        assert refused.value.message == "token: not a valid page token of this catalog"
        assert server.count(path="/search") == 0


@pytest.fixture(scope="module")
def under_root_path(demo_settings) -> Iterator[str]:
    """The service under ``--root-path /tt`` (a real uvicorn: it puts /tt in the path)."""
    settings = demo_settings.model_copy(update={"max_body_bytes": 1024})
    with live_server(create_app(settings), root_path="/tt") as url:
        yield url


def test_under_a_root_path_batch_jobs_are_not_publicly_cached(under_root_path):
    # CacheControlMiddleware's exclude_path matched /batch/ on the full path, /tt/batch/...:
    # job documents (API-keyed when api_keys is set) were public, max-age=3600.
    r = httpx.get(f"{under_root_path}/batch/statistics", trust_env=False, timeout=30)
    assert r.status_code == 200, r.text
    assert "cache-control" not in r.headers
    assert r.headers["vary"] == "Host"


def test_under_a_root_path_batch_bodies_have_the_batch_limit(under_root_path):
    # The body limit chose batch_max_upload_mb by the path's /batch/ prefix: under a root
    # path every batch upload over max_body_bytes (here 1024) was a 413.
    body = {"input": {"features": {"type": "FeatureCollection", "features": []}}, "x": "y" * 4096}
    payload = json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    r = httpx.post(
        f"{under_root_path}/batch/statistics", content=payload, headers=headers, trust_env=False
    )
    assert r.status_code == 422, r.text
    other = httpx.post(
        f"{under_root_path}/statistics", content=payload, headers=headers, trust_env=False
    )
    assert other.status_code == 413
    assert other.json()["detail"] == (
        f"body: {len(payload)} bytes, over the limit max_body_bytes=1024"
    )


def test_under_a_root_path_presets_are_expanded(under_root_path, demo_dir):
    item = json.loads(next((demo_dir / "items").glob("*.json")).read_text())
    west, south, east, north = item["bbox"]
    tile = morecantile.tms.get("WebMercatorQuad").tile((west + east) / 2, (south + north) / 2, 14)
    path = f"/collections/{item['collection']}/items/{item['id']}/tiles/WebMercatorQuad"
    r = httpx.get(
        f"{under_root_path}{path}/14/{tile.x}/{tile.y}.png?preset=ndvi", trust_env=False, timeout=60
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"


def test_under_a_root_path_search_defaults_are_applied(under_root_path, demo_dir):
    item = json.loads(next((demo_dir / "items").glob("*.json")).read_text())
    registered = httpx.post(
        f"{under_root_path}/searches/register",
        json={"collections": [item["collection"]], "metadata": {"defaults": {"assets": "red"}}},
        trust_env=False,
        timeout=60,
    )
    assert registered.status_code == 200, registered.text
    west, south, east, north = item["bbox"]
    tile = morecantile.tms.get("WebMercatorQuad").tile((west + east) / 2, (south + north) / 2, 14)
    path = f"/searches/{registered.json()['id']}/tiles/WebMercatorQuad/14/{tile.x}/{tile.y}.npy"
    r = httpx.get(f"{under_root_path}{path}", trust_env=False, timeout=60)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/x-binary"


@pytest.fixture(scope="module")
def keyed(demo_settings) -> Iterator[TestClient]:
    """The service with an API key and a 1 KiB body limit (batch uploads: 1 MiB)."""
    settings = demo_settings.model_copy(
        update={"api_keys": ["k1"], "max_body_bytes": 1024, "batch_max_upload_mb": 1}
    )
    with TestClient(create_app(settings)) as test_client:  # the batch service starts with it
        yield test_client


@pytest.mark.parametrize("action", ["start", "stop", "analyse", "retry-failed"])
def test_batch_job_actions_take_the_plain_body_limit(keyed, action):
    # Every /batch/ path took batch_max_upload_mb; the actions read no body, yet the
    # middleware held (and scanned) up to that many bytes of one, before any key check.
    r = keyed.post(
        f"/batch/statistics/no-such-job/{action}",
        content=b"[" + b"0," * 2047 + b"0",  # 4096 bytes
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413, r.text
    assert r.json() == {"detail": "body: 4096 bytes, over the limit max_body_bytes=1024"}


def test_a_batch_job_body_is_not_read_before_the_api_key_is_checked(keyed):
    # The middleware parsed a job's JSON body (its nesting) before the route asked for a
    # key: a client without one got the body read, here a 400 about its nesting.
    headers = {"content-type": "application/json"}
    r = keyed.post("/batch/statistics", content=b"[" * 100 + b"]" * 100, headers=headers)
    assert r.status_code == 401, r.text
    keyed_headers = {**headers, "X-API-Key": "k1"}
    r = keyed.post("/batch/statistics", content=b"[" * 100 + b"]" * 100, headers=keyed_headers)
    assert r.status_code == 400, r.text
    assert r.json() == {"detail": "body: nested 100 levels deep, over the limit max_json_depth=48"}


CRS_REFUSED = "not an AUTHORITY:CODE, OGC CRS URN or URL, WKT or PROJJSON (no other URLs or files)"
CRS_FILES = "names a grid, init or parameter file"


@pytest.fixture(scope="module")
def crs_host() -> Iterator[StubServer]:
    """A loopback server that answers any request with a WKT CRS (and counts requests)."""
    wkt = 'GEOGCS["x",DATUM["y",SPHEROID["z",6378137,298.257]],PRIMEM["G",0],UNIT["deg",0.01]]'
    with StubServer(lambda request, server: StubResponse(200, wkt)) as server:
        yield server


@pytest.mark.parametrize(
    "value, reason",
    [
        ("{host}/crs.wkt", CRS_REFUSED),
        ("/vsicurl/{host}/crs.wkt", CRS_REFUSED),
        ("/etc/hostname", CRS_REFUSED),
        ("+proj=longlat +nadgrids=/etc/hostname", CRS_FILES),
        ("+init=/etc/hostname:x", CRS_FILES),
    ],
)
@pytest.mark.parametrize("where", ["dst_crs", "coord_crs", "dst%5Fcrs", "statistics"])
def test_a_crs_naming_a_url_or_file_is_refused_before_gdal_or_proj(
    client, cog, demo_dir, crs_host, value, reason, where
):
    # GDAL's OSRSetFromUserInput fetches URLs and reads files it is given as a CRS:
    # dst_crs=http://<any host>/ sent 4 requests there (coord_crs 9), past allowed_sources;
    # +nadgrids=<file> made PROJ open the file (a 500 on /cog/bbox).
    value = value.format(host=crs_host.url)
    item = json.loads(next((demo_dir / "items").glob("*.json")).read_text())
    west, south, east, north = item["bbox"]
    if where == "statistics":
        bounds = {"bbox": item["bbox"], "properties": {"crs": value}}
        r = client.post("/statistics", json=_statistics_request(item, bounds))
        expected = f"input.bounds.properties.crs: '{value}' refused: {reason}"
    else:
        path = f"/cog/point/{west},{south}" if where == "coord_crs" else "/cog/bbox/0,0,1,1.png"
        query = f"url={cog}&{where}={quote(value)}"
        r = client.get(f"{path}?{query}")
        expected = f"{where.replace('%5F', '_')}: {reason}"
    assert r.status_code == 400, r.text
    assert r.json() == {"detail": expected}
    assert crs_host.requests == []


def _statistics_request(item: dict, bounds: dict) -> dict:
    return {
        "input": {"data": [{"type": item["collection"]}], "bounds": bounds},
        "aggregation": {
            "timeRange": {"from": "2023-01-01T00:00:00Z", "to": "2024-01-01T00:00:00Z"},
            "aggregationInterval": {"of": "P1D"},
            "outputs": {"red": {"expression": "red"}},
        },
    }


@pytest.mark.parametrize(
    "crs", ["EPSG:4326", "http://www.opengis.net/def/crs/EPSG/0/4326", "urn:ogc:def:crs:EPSG::4326"]
)
def test_crs_names_and_ogc_uris_are_still_read(client, cog, demo_dir, crs):
    item = json.loads(next((demo_dir / "items").glob("*.json")).read_text())
    west, south, east, north = item["bbox"]
    x, y = (west + east) / 2, (south + north) / 2
    r = client.get(f"/cog/point/{x},{y}?url={cog}&coord_crs={quote(crs)}")
    assert r.status_code == 200, r.text
    bounds = {"bbox": item["bbox"], "properties": {"crs": crs}}
    stats = client.post("/statistics", json=_statistics_request(item, bounds))
    assert stats.status_code == 200, stats.text


@pytest.mark.parametrize("query", ["maxzoo%6D=1000", "maxzoom=%2B1000", "maxzoom=1000.0"])
def test_zoom_bounds_hold_for_every_spelling_titiler_reads(client, cog, query):
    # The check matched the raw "zoom=" and digits only; titiler (pydantic) reads a
    # percent-encoded name, "+1000" and "1000.0" as maxzoom=1000 all the same.
    r = client.get(f"/cog/WebMercatorQuad/tilejson.json?url={cog}&{query}")
    assert r.status_code == 400, r.text
    assert r.json()["detail"].startswith("maxzoom: ")
    assert r.json()["detail"].endswith("is not a zoom level of any tile matrix set (-10..28)")
