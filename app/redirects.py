"""Redirects of remote sources, followed hop by hop, every hop checked against the allow-list.

``security.check_source`` checks the URL a user or a catalog gives; the server behind it may
answer with a redirect anywhere (a loopback port, a cloud metadata address), and GDAL would
follow it: GDAL 3.10 sets curl's ``FOLLOWLOCATION`` (up to 10 hops) and has no configuration
option to turn it off (the ``GDAL_HTTP_*`` / ``CPL_VSIL_CURL_*`` options of libgdal 3.10.3
were checked: none controls redirects). httpx and aiohttp (fsspec) follow redirects too
unless told not to.

So before any of them sees a remote ``http(s)://`` source, ``resolve_redirects`` asks the
source itself, one hop at a time and never following on its own (one ranged GET of a byte
per hop), checks each ``Location`` with ``check_source`` (the same allow-list, the same
private-address rule) and hands back the last URL, the one that answers without a
redirect: GDAL, httpx and fsspec are given that URL. A chain that leaves the allow-list is a
403 naming the hop; more than ``source_max_redirects`` hops is a 403 naming that setting
(0 refuses every redirect). A checked chain is reused for ``source_redirect_cache_seconds``,
so tiles of the same COG pay nothing more.

Limit: GDAL still follows a redirect that the server answers only to GDAL's own later
requests (a server that changes its answer between the check and the read). httpx and
fsspec are told not to follow at all; for GDAL, allow only servers you trust to answer
consistently (object stores, your own servers), as ``check_source`` already asks.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from urllib.parse import urljoin

import httpx
from cachetools import TTLCache

from app import __version__
from app.errors import ForbiddenError, UpstreamError, UpstreamTimeoutError
from app.security import check_source
from app.settings import default_settings

__all__ = ["configure", "resolve_redirects"]

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

_CACHE_SIZE = 4096
# Until ``configure`` is called (a process that never runs create_app, such as a Dask
# worker), the limits are the settings' defaults.
_DEFAULTS = default_settings()


class _Config:
    max_redirects = _DEFAULTS.source_max_redirects
    timeout: float = _DEFAULTS.gdal_http_timeout
    connect_timeout: float = _DEFAULTS.gdal_http_connect_timeout


_config = _Config()
_lock = threading.Lock()
_checked: TTLCache[tuple, str] = TTLCache(_CACHE_SIZE, _DEFAULTS.source_redirect_cache_seconds)
_client: httpx.Client | None = None


def configure(
    max_redirects: int = _DEFAULTS.source_max_redirects,
    cache_seconds: float = _DEFAULTS.source_redirect_cache_seconds,
    timeout: float = _DEFAULTS.gdal_http_timeout,
    connect_timeout: float = _DEFAULTS.gdal_http_connect_timeout,
) -> None:
    """Set the process's redirect limits (from the settings; GDAL's timeouts apply).

    Args:
        max_redirects: Hops followed at most (``source_max_redirects``); 0 refuses all.
        cache_seconds: Seconds a checked chain is reused (``source_redirect_cache_seconds``).
        timeout: Seconds for each hop's answer (``gdal_http_timeout``).
        connect_timeout: Seconds to connect (``gdal_http_connect_timeout``).

    """
    global _checked, _client
    with _lock:
        _config.max_redirects = max(0, max_redirects)
        _config.timeout = timeout
        _config.connect_timeout = connect_timeout
        _checked = TTLCache(_CACHE_SIZE, cache_seconds) if cache_seconds > 0 else TTLCache(1, 0)
        if _client is not None:
            _client.close()
            _client = None


def _http() -> httpx.Client:
    global _client
    with _lock:
        if _client is None:
            _client = httpx.Client(
                follow_redirects=False,
                trust_env=False,  # no proxy or netrc from the host's environment
                timeout=httpx.Timeout(_config.timeout, connect=_config.connect_timeout),
                headers={"User-Agent": f"terratiler/{__version__}"},
            )
        return _client


def _location(url: str) -> str | None:
    """The absolute redirect target ``url`` answers with, or None when it does not redirect.

    Raises:
        UpstreamTimeoutError: No answer within the timeout.
        UpstreamError: The server cannot be reached.

    """
    try:
        with _http().stream("GET", url, headers={"Range": "bytes=0-0"}) as response:
            location = response.headers.get("location")
            if response.status_code not in REDIRECT_STATUSES or not location:
                return None
            return urljoin(url, location)
    except httpx.TimeoutException:
        raise UpstreamTimeoutError(
            f"url: {url} did not answer within {_config.timeout:g} s (gdal_http_timeout)"
        ) from None
    except httpx.HTTPError as error:
        raise UpstreamError(f"url: cannot reach {url} ({type(error).__name__}: {error})") from None


def resolve_redirects(source: str, allowed: Sequence[str], *, allow_private: bool = False) -> str:
    """Follow the redirects of a checked remote source, checking every hop.

    Args:
        source: A source ``check_source`` accepted; paths and ``s3://`` come back as they are.
        allowed: The allow-list it was checked against.
        allow_private: As given to ``check_source``.

    Returns:
        The URL that answers without a redirect (``source`` itself when it does not redirect).

    Raises:
        ForbiddenError: A hop leads outside the allow-list, or there are more than
            ``source_max_redirects`` hops.
        UpstreamError: A hop cannot be reached (``UpstreamTimeoutError``: not in time).

    """
    if not source.startswith(("http://", "https://")):
        return source
    key = (source, tuple(allowed), allow_private, _config.max_redirects)
    with _lock:
        cached = _checked.get(key)
    if cached is not None:
        return cached
    url = source
    for hop in range(_config.max_redirects + 1):
        target = _location(url)
        if target is None:
            with _lock:
                _checked[key] = url
            return url
        if hop == _config.max_redirects:
            raise ForbiddenError(
                f"url: {source} redirects more than {_config.max_redirects} times "
                f"(source_max_redirects={_config.max_redirects}); not followed"
            )
        if not target.startswith(("http://", "https://")):
            raise ForbiddenError(f"url: {url} redirects to {target}: only http(s) is followed")
        try:
            url = check_source(target, allowed, allow_private=allow_private)
        except ForbiddenError as error:
            raise ForbiddenError(
                f"url: {url} redirects to {target}, refused: {error.message.removeprefix('url: ')}"
            ) from None
    raise AssertionError("unreachable")  # the loop returns or raises
