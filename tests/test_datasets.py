"""The dataset pool: reuse, one thread per dataset, no stale handles, bounded."""

import http.server
import os
import re
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from rasterio.errors import RasterioIOError
from rasters import write_tif, write_vrt

from app.datasets import DatasetPool, reader_executor


def write_cog(path: Path, value: int) -> Path:
    return write_tif(path, value=value)


def test_a_returned_dataset_is_lent_again(tmp_path):
    source = str(write_cog(tmp_path / "a.tif", 7))
    pool = DatasetPool(max_idle=4)
    with pool.open(source) as first:
        assert first.read(1)[0, 0] == 7
    with pool.open(source) as second:
        assert second is first
        assert not second.closed
    assert len(pool) == 1


def test_concurrent_borrowers_get_their_own_dataset(tmp_path):
    source = str(write_cog(tmp_path / "a.tif", 7))
    pool = DatasetPool(max_idle=4)
    with pool.open(source) as first, pool.open(source) as second:
        assert first is not second
    assert len(pool) == 2

    barrier = threading.Barrier(4)

    def borrow(_: int) -> int:
        with pool.open(source) as dataset:
            barrier.wait(timeout=10)
            value = int(dataset.read(1)[10, 10])
            return id(dataset) if value == 7 else -1

    with ThreadPoolExecutor(4) as executor:
        ids = list(executor.map(borrow, range(4)))
    assert -1 not in ids
    assert len(set(ids)) == 4  # all four held at once: four distinct datasets


def test_a_replaced_file_is_reopened(tmp_path):
    path = write_cog(tmp_path / "a.tif", 7)
    pool = DatasetPool(max_idle=4)
    with pool.open(str(path)) as old:
        assert old.read(1)[0, 0] == 7
    replacement = write_cog(tmp_path / "b.tif", 9)
    os.replace(replacement, path)
    with pool.open(str(path)) as new:
        assert new is not old
        assert new.read(1)[0, 0] == 9
    assert old.closed


def test_a_moved_file_is_not_read_through_an_old_handle(tmp_path):
    path = write_cog(tmp_path / "a.tif", 7)
    pool = DatasetPool(max_idle=4)
    with pool.open(str(path)):
        pass
    shutil.move(path, tmp_path / "elsewhere.tif")
    with pytest.raises(RasterioIOError), pool.open(str(path)):
        pass
    assert len(pool) == 0


def test_a_dataset_whose_read_failed_is_closed_not_lent(tmp_path):
    source = str(write_cog(tmp_path / "a.tif", 7))
    pool = DatasetPool(max_idle=4)
    with pytest.raises(ZeroDivisionError), pool.open(source) as failed:
        1 / 0  # noqa: B018
    assert failed.closed
    assert len(pool) == 0
    with pool.open(source) as fresh:
        assert fresh is not failed


def test_idle_datasets_are_bounded_least_recent_closed_first(tmp_path):
    sources = [str(write_cog(tmp_path / f"{i}.tif", i)) for i in range(3)]
    pool = DatasetPool(max_idle=2)
    held = []
    for source in sources:
        with pool.open(source) as dataset:
            held.append(dataset)
    assert len(pool) == 2
    assert held[0].closed
    assert not held[1].closed and not held[2].closed

    no_reuse = DatasetPool(max_idle=0)
    with no_reuse.open(sources[0]) as dataset:
        pass
    assert dataset.closed
    assert len(no_reuse) == 0


def test_clear_closes_every_idle_dataset(tmp_path):
    pool = DatasetPool(max_idle=4)
    datasets = []
    for i in range(2):
        with pool.open(str(write_cog(tmp_path / f"{i}.tif", i))) as dataset:
            datasets.append(dataset)
    pool.clear()
    assert len(pool) == 0
    assert all(dataset.closed for dataset in datasets)


def test_a_vrt_is_refused_by_the_pool(tmp_path):
    vrt = write_vrt(tmp_path / "disguised.tif", write_cog(tmp_path / "a.tif", 7))
    with pytest.raises(RasterioIOError), DatasetPool().open(str(vrt)):
        pass


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with single byte ranges, as object stores serve COGs."""

    opened: list[str] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if match is None:
            self.send_response(200)
            body = data
        else:
            start = int(match[1])
            end = min(int(match[2]) if match[2] else len(data) - 1, len(data) - 1)
            body = data[start : end + 1]
            if start == 0:
                type(self).opened.append(self.path)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self) -> None:  # noqa: N802
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(path.stat().st_size))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()


@pytest.fixture
def http_files(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    folder = tmp_path / "www"
    folder.mkdir()
    RangeHandler.opened = []

    def handler(*args, **kwargs):
        return RangeHandler(*args, directory=str(folder), **kwargs)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", folder
    finally:
        server.shutdown()
        server.server_close()


def test_a_remote_dataset_is_reused_within_its_ttl_only(http_files, monkeypatch):
    base, folder = http_files
    write_cog(folder / "a.tif", 7)
    # GDAL caches file headers per URL on its own; switch that off to see each open.
    monkeypatch.setenv("CPL_VSIL_CURL_NON_CACHED", f"/vsicurl/{base}/")
    source = f"{base}/a.tif"

    reusing = DatasetPool(max_idle=4, remote_ttl=3600)
    with reusing.open(source) as first:
        assert first.read(1)[0, 0] == 7
    with reusing.open(source) as second:
        assert second is first
    assert RangeHandler.opened.count("/a.tif") == 1

    expiring = DatasetPool(max_idle=4, remote_ttl=0)
    with expiring.open(source) as first:
        pass
    with expiring.open(source) as second:
        assert second is not first
    assert first.closed
    assert RangeHandler.opened.count("/a.tif") == 3


def test_the_reader_executor_is_one_long_lived_pool():
    assert reader_executor() is reader_executor()
    names = set(reader_executor().map(lambda _: threading.current_thread().name, range(8)))
    assert all(name.startswith("asset-read") for name in names)
