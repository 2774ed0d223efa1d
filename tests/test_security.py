import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import rasterio
from rasterio.errors import RasterioIOError
from rasters import write_tif, write_vrt

from app import gdal_env
from app.errors import ForbiddenError
from app.security import SOURCE_DRIVER, check_source, is_vrt_file, validate_allowed
from app.settings import SKIPPED_DRIVERS, Settings

COGS = "https://sentinel-cogs.s3.us-west-2.amazonaws.com/"
PUBLIC = {"sentinel-cogs.s3.us-west-2.amazonaws.com": ["52.218.232.90"]}


class FakeResolver:
    """DNS from a table; records every lookup; unknown hosts fail like getaddrinfo."""

    def __init__(self, table: dict[str, list[str]] | None = None):
        self.table = {**PUBLIC, **(table or {})}
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.table[host]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    root = tmp_path / "data" / "demo"
    write_tif(root / "cogs" / "a.tif")
    (tmp_path / "data" / "demo2").mkdir()
    write_tif(tmp_path / "data" / "demo2" / "b.tif")
    write_tif(tmp_path / "secret" / "s.tif")
    return root


# --- URLs ---------------------------------------------------------------------------


ALLOWED_URLS = [
    COGS,
    "https://data.example.com/public/",
    "http://minio.internal:9000/bucket/",
    "s3://sentinel-cogs/sentinel-s2-l2a-cogs/",
]
ACCEPTED = [
    (COGS + "sentinel-s2-l2a-cogs/13/T/DE/2023/10/S2A_13TDE_20231008_0_L2A/B04.tif", None),
    ("HTTPS://Sentinel-Cogs.S3.us-west-2.amazonaws.com/a/B04.tif", COGS + "a/B04.tif"),
    ("https://sentinel-cogs.s3.us-west-2.amazonaws.com:443/a.tif", COGS + "a.tif"),
    ("  " + COGS + "a.tif\n", COGS + "a.tif"),
    (COGS + "a.tif#fragment", COGS + "a.tif"),
    (COGS + "a.tif?X-Amz-Signature=abc&x=1", None),
    (COGS + "a/./b/../c.tif", COGS + "a/c.tif"),
    ("https://data.example.com/public/x/y.tif", None),
    ("https://data.example.com/public", None),
    ("s3://sentinel-cogs/sentinel-s2-l2a-cogs/13/T/DE/B04.tif", None),
]


@pytest.mark.parametrize(("source", "expected"), ACCEPTED)
def test_accepted_urls(source: str, expected: str | None) -> None:
    resolver = FakeResolver({"data.example.com": ["93.184.216.34", "2606:2800:220:1::1"]})
    assert check_source(source, ALLOWED_URLS, resolver=resolver) == (expected or source)


REFUSED = [
    ("", "url: empty source"),
    ("   ", "url: empty source"),
    ("file:///etc/passwd", "url: file:// URLs are not accepted"),
    ("FILE:///etc/passwd", "url: file:// URLs are not accepted"),
    ("File://localhost/etc/passwd", "url: file:// URLs are not accepted"),
    (
        "/vsicurl/http://169.254.169.254/",
        "url: GDAL virtual file systems (/vsi...) are not accepted",
    ),
    ("/VSIS3/bucket/key.tif", "url: GDAL virtual file systems"),
    ("vsimem/x.tif", "url: GDAL virtual file systems"),
    (COGS + "a.tif/vsizip/x", "url: GDAL virtual file systems"),
    ("GTIFF_DIR:1:/data/demo/a.tif", "url: 'GTIFF_DIR:' sources are not accepted"),
    ("HDF5:/data/x.h5://band", "url: 'HDF5:' sources are not accepted"),
    ("NETCDF:/data/x.nc:var", "url: 'NETCDF:' sources are not accepted"),
    ("DERIVED_SUBDATASET:AMPLITUDE:/data/a.tif", "url: 'DERIVED_SUBDATASET:' sources"),
    ("PG:dbname=x", "url: 'PG:' sources are not accepted"),
    ("ftp://sentinel-cogs/a.tif", "url: 'ftp:' sources are not accepted"),
    ("gs://bucket/a.tif", "url: 'gs:' sources are not accepted"),
    ("zip+https://sentinel-cogs.s3.us-west-2.amazonaws.com/a.zip!a.tif", "url: 'zip+https:'"),
    ("https://evil.example.com/a.tif", "url: not in the allowed sources ("),
    ("http://sentinel-cogs.s3.us-west-2.amazonaws.com/a.tif", "url: not in the allowed sources"),
    ("https://sentinel-cogs.s3.us-west-2.amazonaws.com:8443/a.tif", "url: not in the allowed"),
    ("https://sentinel-cogs.s3.us-west-2.amazonaws.com.evil.com/a.tif", "url: not in the allowed"),
    ("https://data.example.com/publicity/a.tif", "url: not in the allowed sources"),
    ("https://data.example.com/public/../private/a.tif", "url: not in the allowed sources"),
    ("https://data.example.com/public/%2e%2e/private/a.tif", "url: percent-encoded"),
    ("https://data.example.com/public/..%2Fprivate/a.tif", "url: percent-encoded"),
    ("https://data.example.com/public/a.tif%5c..", "url: percent-encoded"),
    ("https://user:pw@data.example.com/public/a.tif", "url: URLs with credentials (user@host)"),
    ("https://data.example.com@evil.com/public/a.tif", "url: URLs with credentials"),
    ("https://data.example.com\\@evil.com/public/a.tif", "url: URLs with credentials"),
    ("https://data.example.com\\.evil.com/public/a.tif", "url: backslashes are not accepted"),
    ("https://data.exa mple.com/public/a.tif", "url: invalid host"),
    ("https://data.example.com:99999/public/a.tif", "url: invalid port"),
    ("https:///public/a.tif", "url: no host"),
    ("https:/public/a.tif", "url: no host"),
    ("https://data.example.com/public/a.tif\x00.png", "url: control characters"),
    ("https://data.example.com/public/a\r\nHost: x", "url: control characters"),
    ("s3://other-bucket/a.tif", "url: not in the allowed sources"),
    ("s3://sentinel-cogs/other-prefix/a.tif", "url: not in the allowed sources"),
    ("s3://sentinel-cogs/sentinel-s2-l2a-cogs/../x.tif", "url: not in the allowed sources"),
]


@pytest.mark.parametrize(("source", "message"), REFUSED)
def test_refused_urls(source: str, message: str) -> None:
    resolver = FakeResolver({"data.example.com": ["93.184.216.34"]})
    with pytest.raises(ForbiddenError) as info:
        check_source(source, ALLOWED_URLS, resolver=resolver)
    assert info.value.status_code == 403
    assert info.value.message.startswith(message), info.value.message


def test_refused_urls_cause_no_dns_lookup() -> None:
    resolver = FakeResolver()
    for source in ["https://evil.example.com/a.tif", "http://169.254.169.254/latest/meta-data/"]:
        with pytest.raises(ForbiddenError):
            check_source(source, ALLOWED_URLS, resolver=resolver)
    assert resolver.calls == []


def test_allowed_url_is_resolved_once_with_its_port() -> None:
    resolver = FakeResolver()
    check_source(COGS + "a.tif", ALLOWED_URLS, resolver=resolver)
    assert resolver.calls == [("sentinel-cogs.s3.us-west-2.amazonaws.com", 443)]


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.1.2.3",
        "2130706433",  # decimal 127.0.0.1
        "0x7f000001",  # hex
        "0x7f.1",  # hex, short form
        "0177.0.0.1",  # octal
        "017700000001",
        "0",  # 0.0.0.0
        "0.0.0.0",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "0xa9fea9fe",  # 169.254.169.254 in hex
        "100.64.0.1",  # carrier-grade NAT
        "224.0.0.1",  # multicast
        "240.0.0.1",  # reserved
        "255.255.255.255",
        "[::1]",
        "[::]",
        "[::ffff:127.0.0.1]",  # IPv4-mapped
        "[::ffff:a9fe:a9fe]",  # IPv4-mapped metadata address
        "[fe80::1]",
        "[fc00::1]",
        "[ff02::1]",
        "[2002:7f00:1::]",  # 6to4 of 127.0.0.1
        "[64:ff9b::a9fe:a9fe]",  # NAT64 of 169.254.169.254
    ],
)
def test_private_addresses_in_any_spelling_are_refused(host: str) -> None:
    url = f"http://{host}/x.tif"
    resolver = FakeResolver()
    with pytest.raises(ForbiddenError, match="private/loopback/link-local") as info:
        check_source(url, [f"http://{host}/"], resolver=resolver)
    assert info.value.message.startswith("url: host '")
    assert resolver.calls == []  # literal addresses are judged without DNS
    assert check_source(url, [f"http://{host}/"], allow_private=True, resolver=resolver) == url


@pytest.mark.parametrize(
    ("addresses", "refused"),
    [
        (["93.184.216.34"], False),
        (["2606:2800:220:1::1"], False),
        (["10.1.2.3"], True),
        (["93.184.216.34", "127.0.0.1"], True),  # ANY bad address refuses
        (["2606:2800:220:1::1", "fd00::5"], True),
        (["169.254.169.254"], True),
        (["::ffff:10.0.0.1"], True),
        (["fe80::1%eth0"], True),
    ],
)
def test_hostnames_are_judged_by_every_address(addresses: list[str], refused: bool) -> None:
    resolver = FakeResolver({"tiles.example.org": addresses})
    url = "https://tiles.example.org/cogs/a.tif"
    if refused:
        with pytest.raises(ForbiddenError, match="^url: host 'tiles.example.org' resolves to a pr"):
            check_source(url, ["https://tiles.example.org/cogs/"], resolver=resolver)
    else:
        assert check_source(url, ["https://tiles.example.org/cogs/"], resolver=resolver) == url


def test_unresolvable_host_is_refused() -> None:
    with pytest.raises(ForbiddenError, match="^url: host 'nowhere.invalid' does not resolve"):
        check_source("https://nowhere.invalid/a.tif", ["https://nowhere.invalid/"],
                     resolver=FakeResolver())  # fmt: skip
    with pytest.raises(ForbiddenError, match="does not resolve"):
        check_source("https://empty.example/a.tif", ["https://empty.example/"],
                     resolver=FakeResolver({"empty.example": []}))  # fmt: skip


def test_s3_urls_are_not_resolved() -> None:
    resolver = FakeResolver()
    source = "s3://sentinel-cogs/sentinel-s2-l2a-cogs/x/B04.tif"
    assert check_source(source, ALLOWED_URLS, resolver=resolver) == source
    assert resolver.calls == []


def test_loopback_listener_receives_no_connection(listener) -> None:
    port = listener.port
    for host in ("127.0.0.1", "localhost", "2130706433"):
        url = f"http://{host}:{port}/x.tif"
        # The real system resolver: localhost comes from /etc/hosts.
        with pytest.raises(ForbiddenError, match="private/loopback/link-local"):
            check_source(url, [f"http://{host}:{port}/"])
        with pytest.raises(ForbiddenError, match="not in the allowed sources"):
            check_source(url, [COGS])
    assert check_source(f"http://127.0.0.1:{port}/x.tif", [f"http://127.0.0.1:{port}/"],
                        allow_private=True) == f"http://127.0.0.1:{port}/x.tif"  # fmt: skip
    listener.assert_no_connection(within=0.5)


def test_url_prefix_without_trailing_slash_is_a_segment_boundary() -> None:
    resolver = FakeResolver({"h.example": ["93.184.216.34"]})
    allowed = ["https://h.example/data"]
    assert check_source("https://h.example/data/a.tif", allowed, resolver=resolver)
    with pytest.raises(ForbiddenError, match="not in the allowed"):
        check_source("https://h.example/data2/a.tif", allowed, resolver=resolver)


# --- local paths ----------------------------------------------------------------------


def test_local_file_inside_an_allowed_folder(data: Path) -> None:
    source = data / "cogs" / "a.tif"
    assert check_source(str(source), [str(data)]) == str(source.resolve())


def test_relative_path_resolves_from_the_working_directory(
    data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(data.parent)
    assert check_source("demo/cogs/a.tif", [str(data)]) == str((data / "cogs" / "a.tif").resolve())


def test_local_prefix_is_a_path_not_a_string_prefix(data: Path) -> None:
    with pytest.raises(ForbiddenError, match="^url: not in the allowed sources"):
        check_source(str(data.parent / "demo2" / "b.tif"), [str(data)])


@pytest.mark.parametrize(
    "relative",
    ["cogs/../../../secret/s.tif", "../demo2/b.tif", "cogs/../../demo/../../secret/s.tif"],
)
def test_dot_dot_traversal_is_resolved_before_checking(data: Path, relative: str) -> None:
    with pytest.raises(ForbiddenError, match="not in the allowed sources"):
        check_source(f"{data}/{relative}", [str(data)])


def test_dot_dot_that_stays_inside_is_fine(data: Path) -> None:
    source = f"{data}/cogs/../cogs/a.tif"
    assert check_source(source, [str(data)]) == str((data / "cogs" / "a.tif").resolve())


def test_symlink_out_of_the_allowed_folder_is_refused(data: Path) -> None:
    (data / "link.tif").symlink_to(data.parent.parent / "secret" / "s.tif")
    (data / "linkdir").symlink_to(data.parent.parent / "secret")
    with pytest.raises(ForbiddenError, match="not in the allowed sources"):
        check_source(str(data / "link.tif"), [str(data)])
    with pytest.raises(ForbiddenError, match="not in the allowed sources"):
        check_source(str(data / "linkdir" / "s.tif"), [str(data)])


def test_an_accepted_path_is_checked_again_when_it_leads_elsewhere(data: Path) -> None:
    allowed = [str(data)]
    inside = data / "cogs" / "a.tif"
    secret = data.parent.parent / "secret" / "s.tif"
    # A symlinked folder on the way, accepted while it points inside ...
    (data / "dir").symlink_to(data / "cogs")
    assert check_source(str(data / "dir" / "a.tif"), allowed) == str(inside.resolve())
    assert check_source(str(data / "dir" / "a.tif"), allowed) == str(inside.resolve())
    # ... then re-pointed at a folder outside, holding a file of the same name.
    (data / "dir").unlink()
    (data / "dir").symlink_to(secret.parent)
    (secret.parent / "a.tif").write_bytes(secret.read_bytes())
    with pytest.raises(ForbiddenError, match="not in the allowed sources"):
        check_source(str(data / "dir" / "a.tif"), allowed)
    # A file accepted as a GeoTIFF, then rewritten as a VRT under the same name.
    target = data / "cogs" / "later.tif"
    write_tif(target)
    assert check_source(str(target), allowed) == str(target.resolve())
    write_vrt(target, secret)
    with pytest.raises(ForbiddenError, match="VRT"):
        check_source(str(target), allowed)
    # And a file replaced by another (os.replace: a new inode) is checked anew too.
    write_vrt(data / "cogs" / "swap.tif", secret)
    os.replace(data / "cogs" / "swap.tif", inside)
    with pytest.raises(ForbiddenError, match="VRT"):
        check_source(str(inside), allowed)


def test_allowed_folder_behind_a_symlink(data: Path, tmp_path: Path) -> None:
    (tmp_path / "alias").symlink_to(data)
    expected = str((data / "cogs" / "a.tif").resolve())
    assert check_source(str(tmp_path / "alias" / "cogs" / "a.tif"), [str(data)]) == expected
    assert check_source(str(data / "cogs" / "a.tif"), [str(tmp_path / "alias")]) == expected


def test_local_paths_never_match_url_prefixes(data: Path) -> None:
    with pytest.raises(ForbiddenError, match="not in the allowed sources"):
        check_source(str(data / "cogs" / "a.tif"), [COGS])
    with pytest.raises(ForbiddenError, match=r"not in the allowed sources \(none configured\)"):
        check_source(str(data / "cogs" / "a.tif"), [])


def test_vrt_named_tif_is_refused(data: Path) -> None:
    vrt = write_vrt(data / "cogs" / "evil.tif", data.parent.parent / "secret" / "s.tif")
    assert is_vrt_file(vrt)
    assert not is_vrt_file(data / "cogs" / "a.tif")
    assert not is_vrt_file(data / "missing.tif")
    assert not is_vrt_file(data)
    with pytest.raises(ForbiddenError, match="^url: VRT documents are not accepted"):
        check_source(str(vrt), [str(data)])


def test_vrt_sniffing_tolerates_xml_prologue(tmp_path: Path) -> None:
    path = tmp_path / "x.tif"
    path.write_bytes(b'\xef\xbb\xbf<?xml version="1.0"?>\n  <vrtdataset rasterXSize="1">')
    assert is_vrt_file(path)


# --- GDAL: opening sources ---------------------------------------------------------


# Static files with HTTP range requests, as object stores serve COGs. It runs in its
# own process: rasterio holds the GIL while GDAL waits for curl, so a server thread in
# this process could never answer.
RANGE_SERVER = textwrap.dedent(
    """
    import http.server, io, re, sys
    from pathlib import Path

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def send_head(self):
            match = re.fullmatch(r"bytes=(\\d+)-(\\d*)", self.headers.get("Range", ""))
            path = Path(self.translate_path(self.path))
            if match is None or not path.is_file():
                return super().send_head()
            body = path.read_bytes()
            start = int(match.group(1))
            end = min(int(match.group(2) or len(body) - 1), len(body) - 1)
            self.send_response(206)
            self.send_header("Content-Type", "image/tiff")
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(body)}")
            self.send_header("Content-Length", str(end - start + 1))
            self.end_headers()
            return io.BytesIO(body[start : end + 1])

    def handler(*args, **kwargs):
        return Handler(*args, directory=sys.argv[1], **kwargs)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()
    """
)


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A loopback HTTP server over tmp_path/www (a COG and a VRT named .tif)."""
    root = tmp_path / "www"
    write_tif(root / "cog.tif")
    write_vrt(root / "evil.tif", root / "cog.tif")
    server = subprocess.Popen(
        [sys.executable, "-c", RANGE_SERVER, str(root)], stdout=subprocess.PIPE, text=True
    )
    try:
        port = int(server.stdout.readline())
        yield f"http://127.0.0.1:{port}", root
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_source_driver_refuses_a_remote_vrt_named_tif(http_root: tuple[str, Path]) -> None:
    # check_source cannot sniff remote files; opening with the GeoTIFF driver only is
    # what stops a VRT served as .tif from reading local files.
    base, _ = http_root
    with rasterio.open(f"{base}/cog.tif", driver=SOURCE_DRIVER) as src:
        assert src.driver == "GTiff"
    with pytest.raises(RasterioIOError, match="not recognized"):
        rasterio.open(f"{base}/evil.tif", driver=SOURCE_DRIVER)
    with rasterio.open(f"{base}/evil.tif") as src:  # the hole the driver closes
        assert src.driver == "VRT"


def test_source_driver_refuses_a_local_vrt_named_tif(tmp_path: Path) -> None:
    cog = write_tif(tmp_path / "cog.tif")
    vrt = write_vrt(tmp_path / "evil.tif", cog)
    with pytest.raises(RasterioIOError, match="not recognized"):
        rasterio.open(vrt, driver=SOURCE_DRIVER)


# --- GDAL environment ----------------------------------------------------------------


def test_gdal_options_defaults() -> None:
    options = gdal_env.gdal_options(None)
    assert options == {
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff",
        "GDAL_INGESTED_BYTES_AT_OPEN": "32768",
        "VSI_CACHE": "TRUE",
        "VSI_CACHE_SIZE": "50000000",
        "CPL_VSIL_CURL_CACHE_SIZE": "128000000",
        "GDAL_CACHEMAX": "512",
        "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
        "GDAL_HTTP_MULTIPLEX": "YES",
        "GDAL_HTTP_VERSION": "2TLS",
        "GDAL_HTTP_MAX_RETRY": "3",
        "GDAL_HTTP_RETRY_DELAY": "0.5",
        "GDAL_HTTP_TIMEOUT": "30",
        "GDAL_HTTP_CONNECTTIMEOUT": "10",
        "GDAL_HTTP_NETRC": "NO",
        "GDAL_SKIP": " ".join(SKIPPED_DRIVERS),
        "AWS_NO_SIGN_REQUEST": "YES",
    }
    assert "VRT" not in SKIPPED_DRIVERS


def test_gdal_options_from_settings() -> None:
    settings = Settings(
        gdal_cachemax_mb=1024,
        vsi_cache_size=1_000_000,
        vsicurl_cache_size=2_000_000,
        gdal_http_max_retry=5,
        gdal_http_retry_delay=1.25,
        gdal_http_timeout=12,
        gdal_http_connect_timeout=3,
        gdal_skip_drivers=["WMS"],
        aws_no_sign_request=False,
    )
    options = gdal_env.gdal_options(settings)
    assert options["GDAL_CACHEMAX"] == "1024"
    assert options["VSI_CACHE_SIZE"] == "1000000"
    assert options["CPL_VSIL_CURL_CACHE_SIZE"] == "2000000"
    assert options["GDAL_HTTP_MAX_RETRY"] == "5"
    assert options["GDAL_HTTP_RETRY_DELAY"] == "1.25"
    assert options["GDAL_HTTP_TIMEOUT"] == "12"
    assert options["GDAL_HTTP_CONNECTTIMEOUT"] == "3"
    assert options["GDAL_SKIP"] == "WMS"
    assert "AWS_NO_SIGN_REQUEST" not in options
    assert all(isinstance(value, str) for value in gdal_env.gdal_options(Settings()).values())


def test_configure_gdal_sets_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # A private copy: GDAL_SKIP in this process's real environment would change which
    # drivers later tests get.
    environ = {"GDAL_SKIP": "stale", "UNRELATED": "kept"}
    monkeypatch.setattr(gdal_env.os, "environ", environ)
    gdal_env.configure_gdal(Settings(gdal_skip_drivers=[], gdal_cachemax_mb=64))
    assert environ["GDAL_CACHEMAX"] == "64"
    assert environ["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR"
    assert environ["UNRELATED"] == "kept"
    assert "GDAL_SKIP" not in environ
    gdal_env.configure_gdal(None)
    assert environ["GDAL_SKIP"] == " ".join(SKIPPED_DRIVERS)


# Driver registration happens once per process, so each case runs in a fresh one that
# calls configure_gdal before rasterio opens anything.
SUBPROCESS = textwrap.dedent(
    """
    import json, sys, warnings
    warnings.simplefilter("ignore")
    args = json.loads(sys.argv[1])
    from app.gdal_env import configure_gdal
    from app.settings import Settings
    settings = None if args["skip"] is None else Settings(gdal_skip_drivers=args["skip"])
    configure_gdal(settings)
    import rasterio
    from rio_tiler.io import Reader

    def attempt(name, action):
        try:
            action()
            return "ok"
        except Exception as error:
            return f"{type(error).__name__}: {error}"[:200]

    def open_vrt(driver=None):
        with rasterio.open(args["vrt"], driver=driver) as src:
            src.read(1)

    def open_wms():
        with rasterio.open(args["wms"]):
            pass

    def tile():
        with Reader(args["cog"]) as src:
            west, south, east, north = src.get_geographic_bounds("EPSG:4326")
            t = src.tms.tile((west + east) / 2, (south + north) / 2, 16)
            assert src.tile(t.x, t.y, t.z).data.shape == (1, 256, 256)

    def edge_crop():
        # A bbox overhanging the scene, in the scene's own CRS: a boundless read.
        with Reader(args["cog"]) as src:
            left, bottom, right, top = src.bounds
            img = src.part((left - 100, bottom, left + 200, top), dst_crs=src.crs,
                           bounds_crs=src.crs)
            assert img.mask[:, :5].sum() == 0

    def statistics():
        with Reader(args["cog"]) as src:
            assert src.statistics()["b1"].count > 0

    with rasterio.Env() as env:
        drivers = env.drivers()
    print(json.dumps({
        "vrt_registered": "VRT" in drivers,
        "wms_registered": "WMS" in drivers,
        "open_vrt": attempt("open_vrt", open_vrt),
        "open_vrt_as_gtiff": attempt("open_vrt_as_gtiff", lambda: open_vrt("GTiff")),
        "open_wms": attempt("open_wms", open_wms),
        "tile": attempt("tile", tile),
        "edge_crop": attempt("edge_crop", edge_crop),
        "statistics": attempt("statistics", statistics),
    }))
    """
)


def run_gdal_subprocess(tmp_path: Path, skip: list[str] | None) -> dict[str, object]:
    cog = write_tif(tmp_path / "cog.tif", size=512)
    vrt = write_vrt(tmp_path / "evil.tif", cog)
    wms = tmp_path / "wms.tif"
    wms.write_text(
        '<GDAL_WMS><Service name="TMS"><ServerUrl>http://127.0.0.1:9/${z}/${x}/${y}.png'
        "</ServerUrl></Service><DataWindow><UpperLeftX>-20037508.34</UpperLeftX>"
        "<UpperLeftY>20037508.34</UpperLeftY><LowerRightX>20037508.34</LowerRightX>"
        "<LowerRightY>-20037508.34</LowerRightY><TileLevel>18</TileLevel>"
        "<TileCountX>1</TileCountX><TileCountY>1</TileCountY><YOrigin>top</YOrigin>"
        "</DataWindow><Projection>EPSG:3857</Projection><BlockSizeX>256</BlockSizeX>"
        "<BlockSizeY>256</BlockSizeY><BandsCount>3</BandsCount></GDAL_WMS>\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GDAL_", "CPL_", "VSI_"))}
    args = {"cog": str(cog), "vrt": str(vrt), "wms": str(wms), "skip": skip}
    completed = subprocess.run(
        [sys.executable, "-c", SUBPROCESS, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=Path(__file__).parent.parent,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_configured_gdal_serves_tiles_and_refuses_indirections(tmp_path: Path) -> None:
    result = run_gdal_subprocess(tmp_path, skip=None)
    assert result["wms_registered"] is False
    assert str(result["open_wms"]).startswith("RasterioIOError")  # GDAL_SKIP took effect
    # VRT stays registered (rasterio needs it) ...
    assert result["vrt_registered"] is True
    # ... so VRT documents are stopped by opening sources as GeoTIFF only.
    assert str(result["open_vrt_as_gtiff"]).startswith("RasterioIOError")
    assert result["tile"] == "ok"
    assert result["edge_crop"] == "ok"
    assert result["statistics"] == "ok"


def test_gdal_skip_vrt_stops_vrt_files_but_breaks_rasterio(tmp_path: Path) -> None:
    # Why VRT is not in SKIPPED_DRIVERS: with GDAL_SKIP=VRT a VRT named .tif does not
    # open at all, but rasterio's own in-memory VRTs fail too (the transform of every
    # reprojected tile, boundless reads at scene edges).
    result = run_gdal_subprocess(tmp_path, skip=["VRT"])
    assert result["vrt_registered"] is False
    assert str(result["open_vrt"]).startswith("RasterioIOError")
    assert result["statistics"] == "ok"
    # The reprojected tile fails in GDAL's warper (it builds a warped VRT to suggest the
    # output grid); the edge crop fails to open rasterio's own in-memory VRT document.
    assert str(result["tile"]).startswith("SystemError: Unknown GDAL Error")
    assert str(result["edge_crop"]).startswith("RasterioIOError: <VRTDataset")


@pytest.mark.parametrize(
    "prefix", ["gs://bucket/", "https://user@host.example/", "https:///x", "GTIFF_DIR:1:/data"]
)
def test_invalid_allow_list_entries_are_configuration_errors(prefix: str) -> None:
    with pytest.raises(ValueError, match="allowed source"):
        validate_allowed([COGS, prefix])
    with pytest.raises(ValueError, match="allowed source"):
        check_source(COGS + "a.tif", [COGS, prefix], resolver=FakeResolver())
    validate_allowed([COGS, "/data/demo", " ", "s3://sentinel-cogs/"])


def test_default_allow_list_is_the_catalog_and_data_folders_and_the_earth_search_bucket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.settings import EARTH_SEARCH_URL, Settings

    for name in [k for k in os.environ if k.startswith("TERRATILER_")]:
        monkeypatch.delenv(name)
    catalog, data = tmp_path / "catalog", tmp_path / "data"
    catalog.mkdir()
    local = Settings(catalog=str(catalog), data_dir=data)
    assert local.allowed_prefixes == [str(catalog.resolve()), str(data.resolve()), COGS]
    remote = Settings(catalog=EARTH_SEARCH_URL, data_dir=data)
    assert remote.allowed_prefixes == [str(data.resolve()), COGS]
    # An Earth-Search asset href passes the default list; a sibling bucket does not.
    href = COGS + "sentinel-s2-l2a-cogs/33/T/WM/2023/6/S2A_33TWM_20230611_0_L2A/B04.tif"
    assert check_source(href, remote.allowed_prefixes, resolver=FakeResolver()) == href
    with pytest.raises(ForbiddenError):
        check_source(
            "https://sentinel-cogs-private.s3.us-west-2.amazonaws.com/B04.tif",
            remote.allowed_prefixes,
            resolver=FakeResolver(),
        )
    # Set explicitly (comma-separated in the environment), the list replaces the defaults.
    monkeypatch.setenv("TERRATILER_ALLOWED_SOURCES", f"{COGS}, {data}")
    assert Settings(catalog=str(catalog)).allowed_prefixes == [COGS, str(data)]
