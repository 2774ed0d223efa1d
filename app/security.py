"""The source allow-list: checked before GDAL (or anything else) sees a path or URL.

Users hand the service ``url=`` parameters and catalogs hand it asset hrefs; GDAL would
open almost anything given as a string (virtual file systems, connection strings, VRT
documents pointing at other files, cloud metadata endpoints). ``check_source`` lets
through only local files under an allowed folder and http(s)/s3 URLs under an allowed
prefix, on public addresses.
"""

import ipaddress
import os
import posixpath
import re
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from stat import S_ISREG
from urllib.parse import SplitResult, urlsplit, urlunsplit

from app.errors import ForbiddenError

# The only GDAL driver sources are opened with: pass it as rasterio.open(..., driver=...)
# so a VRT (or WMS, STACTA ...) document served as ".tif" is refused by GDAL itself.
SOURCE_DRIVER = "GTiff"

URL_SCHEMES = frozenset({"http", "https", "s3"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-_]*):")
_HOSTNAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\.?$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Percent-encoded '.', '/' and '\': a server may decode them into a traversal the
# prefix check never saw.
_ENCODED_SEPARATORS = re.compile(r"%(2e|2f|5c)", re.IGNORECASE)
_VRT_MARKER = b"<vrtdataset"
_SNIFF_BYTES = 4096

# NAT64 well-known prefix: an IPv4 address embedded in IPv6.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

Resolver = Callable[[str, int], Iterable[str]]


def _forbid(message: str) -> ForbiddenError:
    return ForbiddenError(f"url: {message}")


def is_vrt_file(path: str | os.PathLike[str]) -> bool:
    """Whether a local file is a GDAL VRT document, whatever its name.

    GDAL recognizes a VRT by ``<VRTDataset`` in its first bytes, not by its extension, so
    a crafted ``x.tif`` can be a VRT that reads any other file or URL.

    Args:
        path: A local file path.

    Returns:
        True when ``<VRTDataset`` occurs in the first 4 KiB (case-insensitive);
        False for other files and for paths that cannot be read.

    """
    try:
        with open(path, "rb") as file:
            head = file.read(_SNIFF_BYTES)
    except OSError:
        return False
    return _VRT_MARKER in head.lower()


def _unsafe_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether an address is anything but a public unicast address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is None and address.teredo is not None:
            embedded = address.teredo[1]
        if embedded is not None and _unsafe_address(embedded):
            return True
    return (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


# Answers of the system resolver, kept briefly: every tile of a mosaic checks the same
# few hosts, and containers often have no local DNS cache.
DNS_CACHE_SECONDS = 60.0
_DNS_CACHE_SIZE = 1024
_dns_cache: dict[tuple[str, int], tuple[float, list[str]]] = {}
_dns_lock = threading.Lock()


def _system_resolver(host: str, port: int) -> list[str]:
    key = (host, port)
    now = time.monotonic()
    with _dns_lock:
        cached = _dns_cache.get(key)
    if cached is not None and cached[0] > now:
        return cached[1]
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = [str(info[4][0]) for info in infos]
    with _dns_lock:
        if len(_dns_cache) >= _DNS_CACHE_SIZE:
            _dns_cache.clear()
        _dns_cache[key] = (now + DNS_CACHE_SECONDS, addresses)
    return addresses


def _literal_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Return the IP a host literally names, in any spelling curl and inet_aton accept.

    ``2130706433``, ``0x7f.1`` and ``0177.0.0.1`` are all 127.0.0.1.
    """
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return None


def _check_host(host: str, port: int, resolver: Resolver) -> None:
    literal = _literal_address(host)
    if literal is not None:
        addresses: list[str] = [str(literal)]
    else:
        try:
            addresses = list(resolver(host, port))
        except (OSError, UnicodeError) as error:
            raise _forbid(f"host '{host}' does not resolve ({error})") from None
        if not addresses:
            raise _forbid(f"host '{host}' does not resolve")
    for text in addresses:
        try:
            # getaddrinfo may append an IPv6 zone ("fe80::1%eth0").
            address = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            raise _forbid(f"host '{host}' resolves to an unparsable address {text!r}") from None
        if _unsafe_address(address):
            raise _forbid(
                f"host '{host}' resolves to a private/loopback/link-local address ({address})"
            )


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 dot-segment removal, as curl does before sending the request."""
    if not path:
        return "/"
    normalized = posixpath.normpath(path)
    if normalized.startswith("//"):
        normalized = "/" + normalized.lstrip("/")
    if path.endswith("/") and normalized != "/":
        normalized += "/"
    return normalized


def _within(path: str, prefix: str) -> bool:
    """Path containment at a segment boundary: /data/demo2 is not inside /data/demo."""
    base = prefix.rstrip("/")
    return path == base or path.startswith(base + "/") or base == ""


class _Url:
    """A parsed, validated http(s) or s3 URL (or URL prefix)."""

    def __init__(self, text: str, *, is_prefix: bool = False):
        self.text = text
        parts = urlsplit(text)
        self.scheme = parts.scheme.lower()
        if "@" in parts.netloc:
            raise _forbid("URLs with credentials (user@host) are not accepted")
        if "\\" in text:
            raise _forbid("backslashes are not accepted in URLs")
        host = parts.hostname or ""
        if not host:
            raise _forbid(f"no host in '{text}'")
        try:
            port = parts.port
        except ValueError:
            raise _forbid(f"invalid port in '{text}'") from None
        if self.scheme == "s3":
            if port is not None or not _HOSTNAME.match(host):
                raise _forbid(f"invalid bucket in '{text}'")
        elif not (_HOSTNAME.match(host) or _is_ip(host)):
            raise _forbid(f"invalid host '{host}'")
        self.host = host
        self.port = port if port is not None else _DEFAULT_PORTS.get(self.scheme)
        if _ENCODED_SEPARATORS.search(parts.path):
            raise _forbid("percent-encoded '.', '/' or '\\' are not accepted in URL paths")
        self.path = _remove_dot_segments(parts.path)
        self.query = "" if is_prefix else parts.query

    def origin(self) -> tuple[str, str, int | None]:
        return self.scheme, self.host, self.port

    def normalized(self) -> str:
        netloc = _bracket(self.host)
        if self.scheme != "s3" and self.port != _DEFAULT_PORTS.get(self.scheme):
            netloc = f"{netloc}:{self.port}"
        return urlunsplit(SplitResult(self.scheme, netloc, self.path, self.query, ""))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _split_allowed(allowed: Sequence[str]) -> tuple[list[_Url], list[Path]]:
    return _split_allowed_cached(tuple(allowed))


@lru_cache(maxsize=64)
def _split_allowed_cached(allowed: tuple[str, ...]) -> tuple[list[_Url], list[Path]]:
    # The allow-list is configuration: its folders are resolved once, not per source.
    urls: list[_Url] = []
    paths: list[Path] = []
    for prefix in allowed:
        prefix = prefix.strip()
        if not prefix:
            continue
        match = _SCHEME.match(prefix)
        if match is None:
            paths.append(Path(os.path.realpath(prefix)))
            continue
        if match.group(1).lower() not in URL_SCHEMES:
            raise ValueError(f"allowed source {prefix!r}: only http(s)://, s3:// and paths")
        try:
            urls.append(_Url(prefix, is_prefix=True))
        except ForbiddenError as error:
            raise ValueError(f"allowed source {prefix!r}: {error.message}") from None
    return urls, paths


def validate_allowed(allowed: Sequence[str]) -> None:
    """Check the configured allow-list itself, e.g. once at start-up.

    Args:
        allowed: Allowed prefixes, as given to ``check_source``.

    Raises:
        ValueError: A prefix is neither a path nor a valid http(s):// or s3:// URL.

    """
    _split_allowed(allowed)


def _describe(allowed: Sequence[str]) -> str:
    """The allow-list as a 403 may show it: URL prefixes, and how many local folders.

    The folders are this machine's absolute paths (the data and catalog folders): naming
    them tells a caller the server's layout, so they are only counted.
    """
    urls, folders = _split_allowed(allowed)
    shown = [url.text for url in urls]
    if folders:
        shown.append(f"{len(folders)} local folder{'s' if len(folders) > 1 else ''}")
    return ", ".join(shown) or "none configured"


def _not_allowed(allowed: Sequence[str]) -> str:
    return f"not in the allowed sources ({_describe(allowed)}), setting allowed_sources"


def shown_source(source: str, allowed: Sequence[str]) -> str:
    """A checked source as messages may show it, without this machine's folders.

    Args:
        source: A path or URL ``check_source`` accepted.
        allowed: The allow-list it was checked against.

    Returns:
        URLs without their query string (signed URLs carry credentials there); local
        paths relative to the allowed folder holding them (else the file name alone).

    """
    if _SCHEME.match(source):
        return source.split("?", 1)[0]
    path = Path(source)
    for folder in _split_allowed(allowed)[1]:
        if path.is_relative_to(folder):
            return str(path.relative_to(folder))
    return path.name


def redact_source(message: str, source: str, allowed: Sequence[str]) -> str:
    """``message`` (e.g. GDAL's) with ``source`` and every allowed folder's path hidden.

    Args:
        message: Text that may name ``source`` or files under the allowed folders.
        source: The checked path or URL the message is about.
        allowed: The allow-list.

    Returns:
        The message with ``source`` as ``shown_source`` shows it and the allowed folders'
        absolute paths removed (their files appear relative to them).

    """
    message = message.replace(source, shown_source(source, allowed))
    for folder in sorted(_split_allowed(allowed)[1], key=lambda f: -len(str(f))):
        message = message.replace(f"{folder}/", "")
    return message


def check_source(
    source: str,
    allowed: Sequence[str],
    *,
    allow_private: bool = False,
    resolver: Resolver | None = None,
) -> str:
    """Check a path or URL against the allow-list before anything opens it.

    Accepted: local paths, resolved (``..`` and symlinks) and inside an allowed folder
    (segment-wise: ``/data/demo2`` is not inside ``/data/demo``) and not a VRT
    document; ``http(s)://`` URLs whose scheme, host and port equal an allowed prefix's
    and whose path (dot segments removed) lies under its path, without credentials,
    whose host resolves only to public addresses; ``s3://bucket/key`` under an allowed
    ``s3://`` prefix. Refused: everything else, including ``file://``, GDAL virtual file
    systems (``/vsi...``) and connection strings (``GTIFF_DIR:``, ``HDF5:`` ...).

    Limits: the host is resolved here and again by curl when GDAL reads, so a DNS name
    whose answer changes in between (DNS rebinding) is not caught here. Redirects are not
    looked at here: readers pass the checked URL through ``app.redirects.resolve_redirects``,
    which checks every hop with this function (a server that redirects only GDAL's later
    requests still escapes it). Allow only prefixes whose hosts you trust (object stores,
    your own servers). Remote files are not sniffed for
    VRT content: open sources with ``driver=SOURCE_DRIVER``. ``s3://`` hosts are not
    resolved (GDAL talks to the configured S3 endpoint).

    Args:
        source: What the user or catalog gave.
        allowed: Allowed prefixes: local folders and ``http(s)://`` / ``s3://`` URLs.
        allow_private: Let URLs reach private/loopback addresses (operator opt-in for
            on-premises object stores, and tests).
        resolver: ``(host, port) -> addresses``; default ``socket.getaddrinfo``, its
            answers kept for ``DNS_CACHE_SECONDS``.

    Returns:
        The normalized source: an absolute resolved path, or the URL with its scheme and
        host lower-cased, default port and fragment dropped, dot segments removed.

    Raises:
        ForbiddenError: With a ``url: ...`` message saying why.
        ValueError: The allow-list itself is invalid (see ``validate_allowed``).

    """
    text = source.strip() if isinstance(source, str) else ""
    if not text:
        raise _forbid("empty source")
    if _CONTROL.search(text):
        raise _forbid("control characters are not accepted")
    lowered = text.lower()
    if lowered.startswith("file:"):
        raise _forbid("file:// URLs are not accepted")
    if "/vsi" in lowered or lowered.startswith("vsi"):
        raise _forbid("GDAL virtual file systems (/vsi...) are not accepted")
    match = _SCHEME.match(text)
    if match:
        scheme = match.group(1).lower()
        if scheme not in URL_SCHEMES:
            raise _forbid(
                f"'{match.group(1)}:' sources are not accepted"
                " (GDAL connection strings and other schemes; only http, https, s3 and paths)"
            )
        return _check_url(text, allowed, allow_private, resolver or _system_resolver)
    return _check_path(text, allowed)


def _check_url(text: str, allowed: Sequence[str], allow_private: bool, resolver: Resolver) -> str:
    url = _Url(text)
    prefixes, _ = _split_allowed(allowed)
    if not any(
        prefix.origin() == url.origin() and _within(url.path, prefix.path) for prefix in prefixes
    ):
        raise _forbid(_not_allowed(allowed))
    # Checked after the allow-list so that refused URLs cause no DNS lookup at all.
    if url.scheme != "s3" and not allow_private:
        _check_host(url.host, url.port or 0, resolver)
    return url.normalized()


def _file_stamp(text: str) -> tuple[int, int, int, int] | None:
    """(device, inode, size, mtime) of the file a path leads to (symlinks followed)."""
    try:
        stat = os.stat(text)
    except (OSError, ValueError):
        return None
    if not S_ISREG(stat.st_mode):
        return None
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


class _PathChecks:
    """Accepted local paths, valid while the file they lead to is unchanged.

    Resolving a path (an lstat per component) and sniffing it for VRT content cost more
    than reading a tile's blocks from the page cache, for every asset of every tile. An
    accepted path is accepted again while one ``stat`` of it finds the same file (device,
    inode, size, mtime): a symlink on the way re-pointed elsewhere, or a file replaced or
    rewritten, leads to another stamp and a full check.
    """

    def __init__(self, maxsize: int = 8192):
        self.maxsize = maxsize
        self._accepted: OrderedDict[tuple[str, tuple[str, ...]], tuple[tuple, str]] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, text: str, allowed: Sequence[str]) -> str:
        key = (text, tuple(allowed))
        stamp = _file_stamp(text)
        if stamp is not None:
            with self._lock:
                hit = self._accepted.get(key)
                if hit is not None and hit[0] == stamp:
                    self._accepted.move_to_end(key)
                    return hit[1]
        resolved = _check_path_fully(text, allowed)
        if stamp is not None and _file_stamp(resolved) == stamp:
            with self._lock:
                self._accepted[key] = (stamp, resolved)
                while len(self._accepted) > self.maxsize:
                    self._accepted.popitem(last=False)
        return resolved


_path_checks = _PathChecks()


def _check_path(text: str, allowed: Sequence[str]) -> str:
    return _path_checks.check(text, allowed)


def _check_path_fully(text: str, allowed: Sequence[str]) -> str:
    resolved = Path(os.path.realpath(text))
    _, folders = _split_allowed(allowed)
    if not any(resolved.is_relative_to(folder) for folder in folders):
        raise _forbid(_not_allowed(allowed))
    try:
        is_file = resolved.is_file()
    except OSError as error:  # a name too long (ENAMETOOLONG), no permission ...
        raise _forbid(f"the path cannot be opened ({error.strerror})") from None
    if is_file and is_vrt_file(resolved):
        raise _forbid("VRT documents are not accepted")
    return str(resolved)
