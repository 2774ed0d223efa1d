"""Attacks on ``GET|HEAD /catalog/data/{collection_id}/{path}`` (the embedded catalog's files).

The route serves what ``/catalog`` publishes: the files its assets point at. Here a catalog
folder holds what an operator's folder may also hold (the service's own data folder with its
SQLite database, hidden files, HTML and SVG, FIFOs, symlinks to devices, the demo's
``fields.geojson``), and a result collection's folder its job's bookkeeping (``_batch/``:
the uploaded features). None of it is served; the published files are, with the same bytes
as on disk, ``nosniff`` and a sandboxing CSP, and HEAD answers as GET does for every kind of
``Range``.
"""

import http.client
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import demo_reads as demo
import httpx
import pytest
from fastapi.testclient import TestClient
from live_server import live_server

from app.catalog.layered import register_collection
from app.db import engine_from_settings
from app.main import create_app
from app.settings import Settings

COLLECTION = "sentinel-2-l2a"
DATA = f"/catalog/data/{COLLECTION}"


@pytest.fixture(scope="module")
def catalog_dir(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo catalog, holding the service's data folder and files that are no assets."""
    catalog = tmp_path_factory.mktemp("attack") / "catalog"
    shutil.copytree(demo_dir, catalog)
    (catalog / ".env").write_text("TERRATILER_API_KEYS=secret")
    (catalog / ".git").mkdir()
    (catalog / ".git" / "config").write_text("[remote]\nurl = https://token@example.com")
    (catalog / "page.html").write_text("<script>alert(document.cookie)</script>")
    (catalog / "cogs" / "drawing.svg").write_text(
        "<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>"
    )
    (catalog / "cogs" / "unlisted.tif").write_bytes(b"II*\x00 not an asset of any item")
    os.mkfifo(catalog / "cogs" / "pipe.tif")
    (catalog / "cogs" / "zero.tif").symlink_to("/dev/zero")
    # An asset whose file is a symlink to a file elsewhere in the folder: served.
    last = sorted((catalog / "cogs").glob("*/B04.tif"))[-1]
    (catalog / "moved").mkdir()
    last.rename(catalog / "moved" / "B04.tif")
    last.symlink_to(catalog / "moved" / "B04.tif")
    return catalog


@pytest.fixture(scope="module")
def settings(catalog_dir: Path) -> Settings:
    """The service's data folder (database, batch folder) inside the catalog folder."""
    return Settings(catalog=str(catalog_dir), data_dir=catalog_dir / "service")


@pytest.fixture(scope="module")
def base_url(settings: Settings) -> Iterator[str]:
    with live_server(create_app(settings)) as url:
        with httpx.Client(trust_env=False) as http:  # the database exists from here on
            assert http.post(f"{url}/searches/register", json={}).status_code == 200
        yield url


def _raw(base_url: str, target: str, method: str = "GET", headers: dict | None = None):
    """(status, headers, body) of a request sent as written (no client normalisation)."""
    host = base_url.removeprefix("http://")
    connection = http.client.HTTPConnection(host, timeout=10)
    try:
        connection.putrequest(method, target, skip_accept_encoding=True)
        for key, value in (headers or {}).items():
            connection.putheader(key, value)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def _asset_files(catalog_dir: Path) -> list[Path]:
    """Every file an item of the catalog points at (read from the item files)."""
    files = set()
    for item in demo.items(catalog_dir):
        for asset in item["assets"].values():
            href = asset["href"]
            if "://" not in href:
                files.add(Path(os.path.normpath(catalog_dir / "items" / href)))
    return sorted(files)


def test_only_files_the_catalog_publishes_are_served(base_url: str, catalog_dir: Path) -> None:
    database = catalog_dir / "service" / "terratiler.db"
    assert database.is_file()
    unpublished = [
        "service/terratiler.db",
        "service/terratiler.db-wal",
        ".env",
        ".git/config",
        "page.html",
        "cogs/drawing.svg",
        "cogs/unlisted.tif",
        "cogs/pipe.tif",
        "cogs/zero.tif",
        "fields.geojson",
        "collection.json",
        "items",
    ]
    for relative in unpublished:
        for method in ("GET", "HEAD"):
            status, _, body = _raw(base_url, f"{DATA}/{relative}", method)
            assert status == 404, (relative, method, status, body[:80])
            assert b"SQLite" not in body and b"secret" not in body and b"<script" not in body
    files = _asset_files(catalog_dir)
    assert len(files) > 10
    for file in files[:3]:
        status, _, body = _raw(base_url, f"{DATA}/{file.relative_to(catalog_dir)}")
        assert status == 200 and body == file.read_bytes(), file
    # An asset that is a symlink: served under the path the asset names, not the target's.
    linked = sorted((catalog_dir / "cogs").glob("*/B04.tif"))[-1]
    assert linked.is_symlink() and linked in files
    status, _, body = _raw(base_url, f"{DATA}/{linked.relative_to(catalog_dir)}")
    assert status == 200 and body == (catalog_dir / "moved" / "B04.tif").read_bytes()
    assert _raw(base_url, f"{DATA}/moved/B04.tif")[0] == 404


def test_published_files_are_never_sniffed_or_run(base_url: str, catalog_dir: Path) -> None:
    """``nosniff`` and a sandboxing CSP: a file is never a page of the service's origin."""
    file = _asset_files(catalog_dir)[0]
    for method in ("GET", "HEAD"):
        status, headers, _ = _raw(base_url, f"{DATA}/{file.relative_to(catalog_dir)}", method)
        assert status == 200
        assert headers["x-content-type-options"] == "nosniff"
        assert "sandbox" in headers["content-security-policy"]
        assert "set-cookie" not in headers


def test_head_answers_as_get_for_every_range(base_url: str, catalog_dir: Path) -> None:
    file = _asset_files(catalog_dir)[0]
    target = f"{DATA}/{file.relative_to(catalog_dir)}"
    size = file.stat().st_size
    ranges = [
        None,
        "bytes=0-9",
        "bytes=-5",
        f"bytes={size - 1}-",
        "bytes=" + ",".join(["0-"] * 100),  # merged into one: the whole file, once
        "bytes=" + ",".join(f"{4 * i}-{4 * i + 1}" for i in range(100)),
        "bytes=" + ",".join(f"{i}-{i}" for i in range(101)),  # over 100 ranges: 200
        "bytes=0-" + "9" * 5000,  # a number int() refuses
        "bytes=" + "9" * 40 + "-",
        f"bytes={size}-",
        "bytes=-0",
        "bytes=5-4",
        "items=0-9",
        "bytes=,",
    ]
    for value in ranges:
        headers = {} if value is None else {"Range": value}
        got, got_headers, body = _raw(base_url, target, "GET", headers)
        head, head_headers, head_body = _raw(base_url, target, "HEAD", headers)
        assert got == head and head_body == b"", value and value[:40]
        assert got in (200, 206, 416), (value[:40], got)
        same = ("content-length", "content-range", "etag", "accept-ranges", "last-modified")
        for key in same:
            assert got_headers.get(key) == head_headers.get(key), (value and value[:40], key)
        if got == 200:
            assert body == file.read_bytes()
        # Never more than the file (plus one part header per range) for any number of ranges.
        assert len(body) <= size + 100 * 120, value and value[:40]


def test_a_result_collection_does_not_serve_its_jobs_bookkeeping(
    catalog_dir: Path, tmp_path: Path
) -> None:
    """``<results>/_batch/input.geojson`` is the job's upload: not a file of the collection."""
    settings = Settings(catalog=str(catalog_dir), data_dir=tmp_path / "data")
    results = settings.data_dir / "batch" / "out" / "results-1"
    (results / "items").mkdir(parents=True)
    (results / "_batch").mkdir()
    (results / "_batch" / "input.geojson").write_text('{"private": "uploaded features"}')
    (results / "T1").mkdir()
    cog = results / "T1" / "val.tif"
    cog.write_bytes(b"II*\x00 a result")
    collection = json.loads((catalog_dir / "collection.json").read_text())
    collection.update(id="results-1", links=[], assets={})
    (results / "collection.json").write_text(json.dumps(collection))
    item = next(iter(demo.items(catalog_dir)))
    item = {**item, "id": "T1", "collection": "results-1", "links": []}
    item["assets"] = {"val": {"href": "../T1/val.tif", "type": "image/tiff"}}
    (results / "items" / "T1.json").write_text(json.dumps(item))
    engine = engine_from_settings(settings)
    register_collection(engine, "results-1", str(results))
    engine.dispose()
    with TestClient(create_app(settings)) as client:
        assert client.get("/catalog/data/results-1/T1/val.tif").content == cog.read_bytes()
        for relative in ("_batch/input.geojson", "collection.json", "items/T1.json"):
            response = client.get(f"/catalog/data/results-1/{relative}")
            assert response.status_code == 404, relative
            assert b"private" not in response.content


def test_checks_behind_the_asset_list_still_hold(catalog_dir: Path, tmp_path: Path) -> None:
    """An asset that names a symlink out of the folder, a FIFO, a device or a folder: 404.

    ``served_file`` with every path published: the checks after the asset list alone.
    """
    from app.catalog.files import NOT_FOUND, served_file
    from app.errors import NotFoundError

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.tif").write_bytes(b"secret")
    (catalog_dir / "cogs" / "out.tif").symlink_to(outside / "secret.tif")
    (catalog_dir / "out-folder").symlink_to(outside, target_is_directory=True)
    folder = catalog_dir.resolve()
    allowed = [str(folder)]
    refused = [
        "cogs/out.tif",
        "out-folder/secret.tif",
        "cogs/pipe.tif",
        "cogs/zero.tif",
        "cogs",
        "../outside/secret.tif",
        "cogs/../../outside/secret.tif",
        "cogs\\..\\..\\outside\\secret.tif",
        "/etc/passwd",
        "cogs/\x00.tif",
        "a" * 5000,
        "/".join(["a"] * 3000),
    ]
    for relative in refused:
        with pytest.raises(NotFoundError) as raised:
            served_file(folder, relative, allowed, lambda _path: True)
        assert raised.value.message == NOT_FOUND, relative
    file = _asset_files(catalog_dir)[0]
    found, status = served_file(folder, str(file.relative_to(folder)), allowed, lambda _p: True)
    assert found == file and status.st_size == file.stat().st_size
    # Outside the allow-list (a catalog folder the operator did not allow): 404 too.
    with pytest.raises(NotFoundError):
        served_file(folder, str(file.relative_to(folder)), [str(tmp_path)], lambda _p: True)


def test_an_item_with_an_absurd_scale_is_served_as_it_is(demo_dir: Path, tmp_path: Path) -> None:
    """``raster:bands`` scale or offset no float holds (a 400-digit integer): not a 500.

    ``/catalog`` rewrites ``raster:bands`` (``publish_scale_offset``); a value it cannot
    read is published as the catalog has it, like a non-numeric one.
    """
    catalog = tmp_path / "catalog"
    shutil.copytree(demo_dir, catalog)
    path = sorted((catalog / "items").glob("*.json"))[0]
    text = path.read_text()
    item = json.loads(text)
    huge = "1" + "0" * 400
    item["assets"]["red"]["raster:bands"] = [{"scale": "__HUGE__", "offset": "__HUGE__"}]
    path.write_text(json.dumps(item).replace('"__HUGE__"', huge))
    settings = Settings(catalog=str(catalog), data_dir=tmp_path / "data")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        for url in (
            f"/catalog/collections/{COLLECTION}/items/{item['id']}",
            f"/catalog/collections/{COLLECTION}/items",
            f"/catalog/search?ids={item['id']}",
        ):
            response = client.get(url)
            assert response.status_code == 200, (url, response.text[:200])
        served = client.get(f"/catalog/collections/{COLLECTION}/items/{item['id']}").json()
        assert served["assets"]["red"]["raster:bands"][0]["scale"] == int(huge)
