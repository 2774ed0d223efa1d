"""STAC clients read the data /catalog lists (issue 15, items 1 and 2).

The embedded catalog's asset hrefs are served as URLs of ``/catalog/data/...``, a route with
HEAD, ranges and validators. Under a real uvicorn, odc-stac and stackstac load through
pystac-client and GDAL's ``/vsicurl/`` reads a window; each equals rasterio's read of the
file. The route's HTTP is checked header by header, and every way out of the catalog folder
(``..``, encoded, absolute, symlinks) is a 404 that names no path. Item 2: ``raster:bands``
say the service's scale and offset, so stackstac's ``rescale`` equals the service's point
values, for items whose flag ``earthsearch:boa_offset_applied`` is true (the demo, as
Earth-Search, records offset -0.1 there although their DN carry no +1000) and false.
"""

import http.client
import shutil
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path
from urllib.parse import urlsplit

import demo_reads as demo
import httpx
import numpy as np
import odc.stac
import pytest
import rasterio
import stackstac
from fastapi.testclient import TestClient
from harness.stubapi import Recorded, StubResponse, StubServer, landing_page
from live_server import live_server
from odc.geo.geobox import GeoBox
from pyproj import Transformer
from pystac_client import Client
from pystac_client.stac_api_io import StacApiIO
from rasterio.windows import Window

from app.catalog.local import LocalCatalog
from app.catalog.stacapi import StacApiCatalog
from app.dependencies import get_catalog
from app.main import create_app
from app.settings import Settings

COLLECTION = "sentinel-2-l2a"
SECRET = b"outside the catalog folder"


@pytest.fixture(scope="module")
def tree(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the demo catalog in ``<tree>/catalog``, beside files it must not serve.

    ``<tree>/outside/secret.tif`` is outside the catalog folder (and in no allowed folder),
    ``<tree>/service-data/private.tif`` in the service's data folder (allowed for the tiler,
    not served here); the catalog holds symlinks to them (files and a folder) and one to a
    file of its own.
    """
    tree = tmp_path_factory.mktemp("data-access")
    catalog = tree / "catalog"
    shutil.copytree(demo_dir, catalog)
    (tree / "outside").mkdir()
    (tree / "outside" / "secret.tif").write_bytes(SECRET)
    (catalog / "cogs" / "escape.tif").symlink_to(tree / "outside" / "secret.tif")
    # The service's data folder is an allowed source of the tiler, yet not the catalog's.
    (tree / "service-data").mkdir()
    (tree / "service-data" / "private.tif").write_bytes(SECRET)
    (catalog / "cogs" / "data.tif").symlink_to(tree / "service-data" / "private.tif")
    (catalog / "escape").symlink_to(tree / "outside", target_is_directory=True)
    first = sorted((catalog / "cogs").glob("*/B04.tif"))[0]
    (catalog / "cogs" / "alias.tif").symlink_to(first)
    return tree


@pytest.fixture(scope="module")
def settings(tree: Path) -> Settings:
    return Settings(catalog=str(tree / "catalog"), data_dir=tree / "service-data")


@pytest.fixture(scope="module")
def base_url(settings: Settings) -> Iterator[str]:
    with live_server(create_app(settings)) as url:
        yield url


@pytest.fixture(scope="module")
def stac(base_url: str) -> Client:
    stac_io = StacApiIO()
    stac_io.session.trust_env = False  # loopback: never through a proxy from the env
    return Client.open(f"{base_url}/catalog", stac_io=stac_io)


@pytest.fixture(scope="module")
def catalog_dir(tree: Path) -> Path:
    return tree / "catalog"


@pytest.fixture(scope="module")
def items(catalog_dir: Path) -> dict[str, dict]:
    """The catalog's item files, as written (independent of the service)."""
    return demo.items_by_id(catalog_dir)


def _by_flag(items: dict[str, dict], applied: bool) -> dict:
    """The clearest item whose ``earthsearch:boa_offset_applied`` is ``applied``."""
    flagged = [
        i for i in items.values() if i["properties"]["earthsearch:boa_offset_applied"] is applied
    ]
    return min(flagged, key=lambda item: item["properties"]["eo:cloud_cover"])


@pytest.fixture(scope="module")
def two(items: dict[str, dict]) -> list[dict]:
    """One item whose DN carry no BOA offset (flag true) and one whose DN do (false)."""
    return [_by_flag(items, True), _by_flag(items, False)]


@pytest.fixture(scope="module")
def red_url(stac: Client, two: list[dict]) -> str:
    item = stac.get_collection(COLLECTION).get_item(two[0]["id"])
    assert item is not None
    return item.assets["red"].href


def _file(catalog_dir: Path, item: dict, asset: str) -> Path:
    return demo.href(catalog_dir, item, asset)


def _pixel(values: np.ndarray) -> tuple[int, int]:
    """A pixel with data (DN > 0) near the middle of the scene."""
    rows, cols = np.nonzero(values > 0)
    middle = np.argmin((rows - values.shape[0] / 2) ** 2 + (cols - values.shape[1] / 2) ** 2)
    return int(rows[middle]), int(cols[middle])


# --------------------------------------------------------------------- what /catalog lists


def test_assets_are_urls_of_the_data_route_and_the_catalog_keeps_paths(
    stac: Client, base_url: str, catalog_dir: Path, items: dict[str, dict]
) -> None:
    found = list(stac.search(collections=[COLLECTION], max_items=20).items())
    assert len(found) == len(items)
    for item in found:
        written = items[item.id]
        for key, asset in item.assets.items():
            relative = _file(catalog_dir, written, key).relative_to(catalog_dir)
            assert asset.href == f"{base_url}/catalog/data/{COLLECTION}/{relative}", key
    # The same through /collections/{id}/items and /collections/{id}/items/{item_id}
    one = found[0]
    page = httpx.get(f"{base_url}/catalog/collections/{COLLECTION}/items", trust_env=False)
    (served,) = [f for f in page.json()["features"] if f["id"] == one.id]
    assert served["assets"]["red"]["href"] == one.assets["red"].href
    # The service's own catalog objects keep the local files: the tiler reads them directly.
    local = LocalCatalog(catalog_dir).get_item(COLLECTION, one.id)
    assert local.assets["red"].href == str(_file(catalog_dir, items[one.id], "red"))


def test_asset_urls_follow_public_url_and_root_path(settings: Settings, two: list[dict]) -> None:
    path = f"/catalog/collections/{COLLECTION}/items/{two[0]['id']}"
    public = settings.model_copy(update={"public_url": "https://tiles.example.org/tt"})
    with TestClient(create_app(public)) as client:
        href = client.get(path).json()["assets"]["red"]["href"]
        assert href.startswith(f"https://tiles.example.org/tt/catalog/data/{COLLECTION}/cogs/")
        local_path = urlsplit(href).path.removeprefix("/tt")
        assert client.head(local_path).status_code == 200
    with TestClient(create_app(settings), root_path="/proxy") as client:
        href = client.get(path).json()["assets"]["red"]["href"]
        assert href.startswith(f"http://testserver/proxy/catalog/data/{COLLECTION}/cogs/")


def test_remote_catalog_items_keep_their_hrefs(settings: Settings) -> None:
    from catalog_items import template_item

    recorded = template_item()

    def handle(request: Recorded, server: StubServer) -> StubResponse:
        if request.path in ("", "/"):
            return StubResponse(200, landing_page(server.url))
        return StubResponse(200, recorded)

    with StubServer(handle) as server:
        app = create_app(settings)
        remote = StacApiCatalog(server.url, retries=0)
        app.dependency_overrides[get_catalog] = lambda: remote
        with TestClient(app) as client:
            served = client.get(f"/catalog/collections/{COLLECTION}/items/{recorded['id']}")
    assert served.status_code == 200, served.text
    body = served.json()
    assert {k: a["href"] for k, a in body["assets"].items()} == {
        k: a["href"] for k, a in recorded["assets"].items()
    }
    # Earth-Search's own trap: flag true, -0.1 recorded; served as what the DN need (0).
    assert recorded["properties"]["earthsearch:boa_offset_applied"] is True
    assert recorded["assets"]["red"]["raster:bands"][0]["offset"] == -0.1
    band = body["assets"]["red"]["raster:bands"][0]
    assert band["offset"] == 0 and band["terratiler:original_offset"] == -0.1


# --------------------------------------------------------------------- real clients


def test_odc_stac_loads_what_rasterio_reads(
    stac: Client, catalog_dir: Path, two: list[dict]
) -> None:
    found = list(stac.search(ids=[item["id"] for item in two]).items())
    assert len(found) == 2
    with rasterio.open(_file(catalog_dir, two[0], "red")) as src:
        geobox = GeoBox(src.shape, src.transform, src.crs.to_wkt())
    loaded = odc.stac.load(found, bands=["red", "nir"], geobox=geobox)
    assert loaded.sizes["time"] == 2
    for item in two:
        when = np.datetime64(item["properties"]["datetime"].rstrip("Z"), "ns")
        for band in ("red", "nir"):
            got = loaded[band].sel(time=when, method="nearest").values
            np.testing.assert_array_equal(got, demo.read(catalog_dir, item, band))


def test_stackstac_loads_what_rasterio_reads(
    stac: Client, catalog_dir: Path, two: list[dict]
) -> None:
    found = list(stac.search(ids=[item["id"] for item in two]).items())
    with rasterio.open(_file(catalog_dir, two[0], "red")) as src:
        bounds, epsg = tuple(src.bounds), src.crs.to_epsg()
    stack = stackstac.stack(
        found, assets=["red", "nir"], epsg=epsg, resolution=10, bounds=bounds, rescale=False
    ).compute(scheduler="threads")
    for item in two:
        for band in ("red", "nir"):
            got = stack.sel(id=item["id"], band=band).squeeze().values
            expected = demo.read(catalog_dir, item, band).astype("float64")
            expected[expected == 0] = np.nan  # raster:bands nodata 0: stackstac's NaN
            np.testing.assert_array_equal(got, expected)


def test_gdal_vsicurl_reads_a_window(red_url: str, catalog_dir: Path, two: list[dict]) -> None:
    window = Window(17, 23, 64, 48)
    with rasterio.open(_file(catalog_dir, two[0], "red")) as src:
        expected = src.read(1, window=window)
        profile = (src.width, src.height, src.crs, src.transform, src.overviews(1))
    with rasterio.open(red_url) as remote:  # http: GDAL's /vsicurl/
        assert remote.driver == "GTiff"
        assert (
            remote.width,
            remote.height,
            remote.crs,
            remote.transform,
            remote.overviews(1),
        ) == profile
        np.testing.assert_array_equal(remote.read(1, window=window), expected)


# --------------------------------------------------------------------- item 2: scale/offset


def test_stackstac_rescale_equals_the_service_point_values(
    stac: Client, base_url: str, catalog_dir: Path, two: list[dict]
) -> None:
    found = {item.id: item for item in stac.search(ids=[i["id"] for i in two]).items()}
    with rasterio.open(_file(catalog_dir, two[0], "red")) as src:
        bounds, epsg, transform = tuple(src.bounds), src.crs.to_epsg(), src.transform
    stack = stackstac.stack(
        list(found.values()), assets=["red"], epsg=epsg, resolution=10, bounds=bounds
    ).compute(scheduler="threads")
    to_lonlat = Transformer.from_crs(epsg, 4326, always_xy=True)
    for item in two:
        served = found[item["id"]].assets["red"].extra_fields["raster:bands"][0]
        written = item["assets"]["red"]["raster:bands"][0]
        assert written["offset"] == -0.1  # as Earth-Search records it, whatever the flag
        applied = item["properties"]["earthsearch:boa_offset_applied"]
        if applied:
            assert served["offset"] == 0 and served["terratiler:original_offset"] == -0.1
        else:
            assert served["offset"] == -0.1 and "terratiler:original_offset" not in served
        dn = demo.read(catalog_dir, item, "red")
        row, col = _pixel(dn)
        scale, offset = demo.scale_offset(item, "red")  # Earth-Search's rule, independent
        expected = dn[row, col] * scale + offset
        lon, lat = to_lonlat.transform(*(transform @ (col + 0.5, row + 0.5)))
        point = httpx.get(
            f"{base_url}/collections/{COLLECTION}/items/{item['id']}/point/{lon},{lat}",
            params={"assets": "red", "harmonize": "true"},
            trust_env=False,
        )
        assert point.status_code == 200, point.text
        (service,) = point.json()["values"]
        client = float(stack.sel(id=item["id"], band="red").squeeze().values[row, col])
        assert service == pytest.approx(expected, abs=1e-6)
        assert client == pytest.approx(service, abs=1e-6), item["id"]


# --------------------------------------------------------------------- the route's HTTP


def test_head_range_and_validators(red_url: str, catalog_dir: Path, two: list[dict]) -> None:
    content = _file(catalog_dir, two[0], "red").read_bytes()
    size = len(content)
    with httpx.Client(trust_env=False) as http:
        head = http.head(red_url)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(size)
        assert head.headers["accept-ranges"] == "bytes"
        assert head.headers["content-type"] == "image/tiff"
        etag, modified = head.headers["etag"], head.headers["last-modified"]
        assert etag.startswith('"') and modified.endswith("GMT")

        whole = http.get(red_url)
        assert whole.status_code == 200 and whole.content == content

        for spec, start, end in [
            ("bytes=0-99", 0, 100),
            ("bytes=1000-1999", 1000, 2000),
            ("bytes=-100", size - 100, size),
            (f"bytes={size - 10}-", size - 10, size),
            (f"bytes=5-{size + 1000}", 5, size),
        ]:
            part = http.get(red_url, headers={"Range": spec})
            assert part.status_code == 206, spec
            assert part.content == content[start:end], spec
            assert part.headers["content-range"] == f"bytes {start}-{end - 1}/{size}", spec
            assert part.headers["content-length"] == str(end - start), spec

        ranged_head = http.head(red_url, headers={"Range": "bytes=0-9"})
        assert ranged_head.status_code == 206 and ranged_head.content == b""
        assert ranged_head.headers["content-range"] == f"bytes 0-9/{size}"

        many = http.get(red_url, headers={"Range": "bytes=0-9, 100-109"})
        assert many.status_code == 206
        assert many.headers["content-type"].startswith("multipart/byteranges; boundary=")
        assert content[0:10] in many.content and content[100:110] in many.content
        assert f"Content-Range: bytes 100-109/{size}".encode() in many.content
        overlapping = http.get(red_url, headers={"Range": "bytes=0-9, 5-19"})  # merged: one
        assert overlapping.status_code == 206 and overlapping.content == content[:20]
        assert overlapping.headers["content-range"] == f"bytes 0-19/{size}"
        too_many = ", ".join(f"{10 * i}-{10 * i + 1}" for i in range(101))
        whole_again = http.get(red_url, headers={"Range": f"bytes={too_many}"})
        assert whole_again.status_code == 200 and whole_again.content == content

        for spec in (f"bytes={size}-", f"bytes={size + 5}-{size + 10}", "bytes=-0"):
            beyond = http.get(red_url, headers={"Range": spec})
            assert beyond.status_code == 416, spec
            assert beyond.headers["content-range"] == f"bytes */{size}", spec

        huge = "9" * 5000
        for spec in (
            "bytes=9-2",
            "items=0-9",
            "bytes=",
            "bytes=a-b",
            "0-9",
            f"bytes={huge}-",
            f"bytes=0-{huge}",
        ):
            ignored = http.get(red_url, headers={"Range": spec})
            assert ignored.status_code == 200, spec
            assert ignored.content == content, spec

        for tag in (etag, f"W/{etag}", f'"other", {etag}', "*"):
            cached = http.get(red_url, headers={"If-None-Match": tag})
            assert cached.status_code == 304, tag
            assert cached.content == b"" and cached.headers["etag"] == etag
        assert http.head(red_url, headers={"If-None-Match": etag}).status_code == 304
        assert http.get(red_url, headers={"If-None-Match": '"other"'}).status_code == 200
        later = formatdate(_file(catalog_dir, two[0], "red").stat().st_mtime + 60, usegmt=True)
        assert http.get(red_url, headers={"If-Modified-Since": later}).status_code == 304
        assert http.get(red_url, headers={"If-Modified-Since": modified}).status_code == 304
        assert http.get(red_url, headers={"If-Modified-Since": "not a date"}).status_code == 200
        earlier = formatdate(0, usegmt=True)
        assert http.get(red_url, headers={"If-Modified-Since": earlier}).status_code == 200
        # If-None-Match wins over If-Modified-Since (RFC 9110 13.1.3).
        both = {"If-None-Match": '"other"', "If-Modified-Since": later}
        assert http.get(red_url, headers=both).status_code == 200

        current = http.get(red_url, headers={"Range": "bytes=0-9", "If-Range": etag})
        assert current.status_code == 206 and current.content == content[:10]
        stale = http.get(red_url, headers={"Range": "bytes=0-9", "If-Range": '"stale"'})
        assert stale.status_code == 200 and stale.content == content


def _raw_get(base_url: str, target: str) -> tuple[int, bytes]:
    """GET with the request target sent byte for byte (httpx would remove dot segments)."""
    parts = urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.putrequest("GET", target, skip_accept_encoding=True)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_nothing_outside_the_catalog_folder_is_served(
    base_url: str, tree: Path, catalog_dir: Path, red_url: str
) -> None:
    data = f"/catalog/data/{COLLECTION}"
    refused = [
        f"{data}/../../../../../../etc/passwd",
        f"{data}/cogs/../../outside/secret.tif",
        f"{data}/%2e%2e/outside/secret.tif",
        f"{data}/%2E%2E%2Foutside%2Fsecret.tif",
        f"{data}/cogs/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        f"{data}//etc/passwd",
        f"{data}/%2Fetc%2Fpasswd",
        f"{data}/{tree}/outside/secret.tif",
        f"{data}/cogs/escape.tif",  # a symlink to a file outside
        f"{data}/escape/secret.tif",  # through a symlinked folder
        f"{data}/cogs/data.tif",  # a symlink into an allowed folder that is not the catalog
        f"{data}/cogs/./alias.tif",
        f"{data}/cogs%00.tif",
        f"{data}/cogs",  # folders: no listing
        f"{data}/cogs/",
        f"{data}/",  # (without the slash: Starlette's redirect to this one)
        f"{data}/cogs/missing.tif",
        "/catalog/data/no-such-collection/cogs/alias.tif",
        "/catalog/data/..%2F..%2Foutside/secret.tif",
    ]
    for target in refused:
        status, body = _raw_get(base_url, target)
        assert status == 404, (target, status, body[:200])
        assert SECRET not in body and b"root:" not in body, target
        assert str(tree).encode() not in body, target  # no path leaks
    # A symlink inside the folder that no asset names is not served (only what /catalog
    # lists is; tests/test_security_catalog_data.py serves an asset that is a symlink).
    assert _raw_get(base_url, f"{data}/cogs/alias.tif")[0] == 404
    # POST and others are not this route's.
    with httpx.Client(trust_env=False) as http:
        assert http.post(red_url).status_code == 405


def test_a_local_result_collection_is_served_from_its_own_folder(
    settings: Settings, tree: Path, catalog_dir: Path, two: list[dict]
) -> None:
    """A processing job's collection (registered results folder) reads as the demo does."""
    import json

    from app.catalog.layered import register_collection
    from app.db import engine_from_settings

    # Where processing jobs write by default: the data folder (an allowed source).
    own = settings.model_copy(update={"data_dir": tree / "results-service"})
    results = own.data_dir / "process" / "results-1"
    (results / "items").mkdir(parents=True)
    (results / "T1").mkdir()
    cog = results / "T1" / "val.tif"
    shutil.copyfile(_file(catalog_dir, two[0], "red"), cog)
    collection = json.loads((catalog_dir / "collection.json").read_text())
    collection.update(id="results-1", links=[], assets={"overview": {"href": "./T1/val.tif"}})
    (results / "collection.json").write_text(json.dumps(collection))
    item = {
        **two[0],
        "id": "T1",
        "collection": "results-1",
        "links": [],
        "assets": {"val": {"href": "../T1/val.tif", "type": "image/tiff"}},
    }
    (results / "items" / "T1.json").write_text(json.dumps(item))
    engine = engine_from_settings(own)
    register_collection(engine, "results-1", str(results))
    engine.dispose()
    with TestClient(create_app(own)) as client:
        served = client.get("/catalog/collections/results-1/items/T1").json()
        href = served["assets"]["val"]["href"]
        assert href == "http://testserver/catalog/data/results-1/T1/val.tif"
        assert client.get(href).content == cog.read_bytes()
        for path in ("/catalog/collections/results-1", "/catalog/collections"):
            body = client.get(path).json()
            (served_collection,) = [
                c for c in body.get("collections", [body]) if c["id"] == "results-1"
            ]
            assert served_collection["assets"]["overview"]["href"] == href, path
        # The demo's files are not the results collection's.
        relative = _file(catalog_dir, two[0], "red").relative_to(catalog_dir)
        assert client.get(f"/catalog/data/results-1/{relative}").status_code == 404
        assert client.get(f"/catalog/data/{COLLECTION}/{relative}").status_code == 200
