"""``StacApiCatalog``: the Catalog protocol over any STAC API, through pystac-client.

HTTP goes through pystac-client's ``StacApiIO`` (a ``requests`` session) with:

- a timeout per request (connect and read);
- retries with exponential backoff (``backoff``, ``2 * backoff``, ``4 * backoff`` ...) on
  connection errors and on 429 / 500 / 502 / 503 / 504 answers, honouring ``Retry-After``
  (capped at the timeout). Searches are read-only, so POST is retried like GET. A read
  timeout is *not* retried: an upstream that is too slow once is likely too slow again,
  and retrying would multiply the caller's wait;
- no redirect away from the configured API root.

Failures become engine errors: ``UpstreamTimeoutError`` (504) when the upstream does not
answer in time, ``UpstreamError`` (502) when it cannot be reached or fails, ``NotFoundError``
for a 404 on an item or a collection, ``BadRequestError`` carrying the upstream's message
when it rejects a search (400 / 422).

Paging. ``search_page`` returns an opaque ``next_token`` built from the upstream's ``next``
link, and a later ``search_page`` with that token replays that link. Tokens come back from
clients, so they are untrusted: a token never holds a URL, only the link's path *relative to
the configured API root* (checked to be a plain path: no ``..``, no scheme, no host) and,
for a POST link, the difference between the link's body and the body this catalog builds
from the same ``SearchQuery`` (typically just the upstream's own ``token`` / ``next`` key).
Whatever a client puts in a token, the request goes to the configured root. Links the
upstream itself returns (search, collections, next) are used only when they lie under the
configured root, or under the root the API advertises on its landing page (``self`` /
``root`` links, e.g. its public name behind a proxy), in which case they are rebased onto the
configured root; any other link is refused.

Searches pass through: the STAC ``query`` extension as is, but for numeric strings against
properties the service knows to be numeric, sent as numbers (operators beyond the basic
comparisons are sent as CQL2 instead when the upstream conforms to ``filter``, since some
servers validate ``query`` to the basic six), CQL2 ``filter`` as cql2-json, ``sortby`` with
property fields prefixed ``properties.`` (the form every STAC API accepts).

The landing page is fetched once, lazily, on first use (and again only if that failed). One
catalog may be shared by the threads of a threaded server; ``requests`` sessions share their
connection pool safely. No lock is held while waiting on the upstream: the first caller
fetches the landing page and the callers arriving meanwhile wait (at most ``timeout``) on
that one fetch's outcome, so a hung upstream costs one connection and one timeout, not one
timeout per caller in turn.

Concurrency is bounded: at most ``max_concurrency`` callers talk to (or wait on) the upstream
at once; a further caller waits at most ``queue_timeout`` seconds for a slot and then fails
fast with ``UpstreamBusyError`` (503). A hung upstream therefore holds at most
``max_concurrency`` of the server's threads, each for at most ``timeout`` seconds (a read
timeout is not retried); the rest of the service keeps answering.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import time
import zlib
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urljoin, urlsplit

import pystac
import pystac_client
import requests
from pystac_client import Client
from pystac_client.conformance import ConformanceClasses
from pystac_client.exceptions import APIError
from pystac_client.stac_api_io import StacApiIO
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ReadTimeoutError
from urllib3.util.retry import Retry

from app import __version__
from app.catalog.base import SearchPage, SearchQuery
from app.catalog.query import search_to_body, typed_query_operands
from app.errors import (
    BadRequestError,
    NotFoundError,
    UpstreamBusyError,
    UpstreamError,
    UpstreamTimeoutError,
)
from app.settings import default_settings

__all__ = ["StacApiCatalog"]

# The ``stac_*`` settings' defaults are the constructor's.
_DEFAULTS = default_settings()

#: Answers worth retrying: rate limiting and transient server trouble.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: ``query`` operators every STAC API that has the extension validates; others (``in``,
#: ``startsWith`` ...) go as CQL2 to upstreams that conform to ``filter``.
BASIC_QUERY_OPERATORS = frozenset({"eq", "neq", "lt", "lte", "gt", "gte"})
#: Item fields that are not under ``properties`` (sortby leaves them unprefixed).
TOP_LEVEL_FIELDS = frozenset({"id", "collection", "geometry", "bbox"})
#: Page size of ``search`` (all items), capped by ``max_items``.
DEFAULT_PAGE_SIZE = 100
#: Longest token accepted, and the most a token may inflate to.
MAX_TOKEN_CHARS = 16_384
MAX_TOKEN_JSON = 262_144
_TOKEN_VERSION = 1
_CHUNK_BYTES = 65_536
_PLAIN_PATH = re.compile(r"^[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$")


class _Retry(Retry):
    """urllib3 ``Retry`` tuned for STAC APIs.

    The first retry waits ``backoff_factor`` (urllib3 waits 0), read timeouts are not
    retried, and ``Retry-After`` is capped at ``max_retry_after`` seconds.
    """

    max_retry_after: float = 30.0
    max_backoff: float = 30.0

    def new(self, **kw: Any) -> _Retry:
        retry = super().new(**kw)
        retry.max_retry_after = self.max_retry_after
        return retry

    def increment(self, method: Any = None, url: Any = None, *args: Any, **kwargs: Any) -> Any:
        error = kwargs.get("error", args[1] if len(args) > 1 else None)
        if isinstance(error, ReadTimeoutError):
            raise error  # requests turns it into ReadTimeout
        return super().increment(method, url, *args, **kwargs)

    def get_backoff_time(self) -> float:
        errors = 0
        for entry in reversed(self.history):
            if entry.redirect_location is not None:
                break
            errors += 1
        if errors == 0:
            return 0.0
        return float(min(self.max_backoff, self.backoff_factor * 2 ** (errors - 1)))

    def get_retry_after(self, response: Any) -> float | None:
        seconds = super().get_retry_after(response)
        if seconds is None:
            return None
        return min(float(seconds), self.max_retry_after)


class _DeadlineExceeded(requests.exceptions.ReadTimeout):
    """An upstream answer still coming in when the request's total deadline passed."""


class _RootBoundSession(requests.Session):
    """A session that sends requests, and follows redirects, only under the API root.

    Each request also has a total ``deadline`` (seconds, retries included): the connect
    and read timeouts bound each socket operation, so an upstream trickling a byte at a
    time would otherwise hold the caller for ever.
    """

    def __init__(self, allowed: Any, deadline: float | None = None):
        super().__init__()
        self._allowed = allowed
        self.deadline = deadline

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        """Send ``request``, unless its URL is not under the API root (whoever built it)."""
        if not request.url or not self._allowed(request.url):
            raise requests.exceptions.InvalidURL(
                f"refusing to request {request.url}: not under the STAC API root"
            )
        started = time.monotonic()
        stream = kwargs.pop("stream", False)
        response = super().send(request, stream=True, **kwargs)
        if stream or self.deadline is None:
            return response
        chunks: list[bytes] = []
        try:
            for chunk in response.iter_content(_CHUNK_BYTES):
                chunks.append(chunk)
                if time.monotonic() - started > self.deadline:
                    raise _DeadlineExceeded(f"answer not complete after {self.deadline:g} s")
        finally:
            response.close()
        response._content = b"".join(chunks)  # what ``response.content`` then returns
        response._content_consumed = True
        return response

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        """Return the redirect target, or None (the 3xx comes back as is) if it leaves the root."""
        target = super().get_redirect_target(resp)
        if target is None:
            return None
        absolute = urljoin(resp.url, target)
        return target if self._allowed(absolute) else None


@dataclass(frozen=True)
class _PageRequest:
    """One upstream search request: an absolute URL under the root, a method, a body."""

    method: str
    url: str
    body: dict[str, Any] | None = None


def _origin(parts: Any) -> tuple[str, str, int | None]:
    scheme = parts.scheme.lower()
    default = {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), parts.port or default


def _upstream_message(text: str) -> str:
    """Extract the human part of an upstream error body (``description``, ``detail`` ...)."""
    try:
        data = json.loads(text)
    except (ValueError, TypeError):
        return " ".join((text or "").split())[:500]
    if isinstance(data, Mapping):
        for key in ("description", "detail", "message", "error", "title"):
            if data.get(key):
                value = data[key]
                return (value if isinstance(value, str) else json.dumps(value))[:500]
    return json.dumps(data)[:500]


def _query_clause_to_cql2(prop: str, op: str, value: Any) -> dict[str, Any]:
    """Write one STAC ``query`` clause as cql2-json."""
    target = {"property": prop}
    if op == "in":
        return {"op": "in", "args": [target, list(value)]}
    escaped = str(value).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    pattern = {
        "startsWith": f"{escaped}%",
        "endsWith": f"%{escaped}",
        "contains": f"%{escaped}%",
    }.get(op)
    if pattern is not None:
        return {"op": "like", "args": [target, pattern]}
    symbol = {"eq": "=", "neq": "<>", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}[op]
    return {"op": symbol, "args": [target, value]}


class StacApiCatalog:
    """Items from a STAC API (Earth-Search, Planetary Computer, stac-fastapi, ...).

    Args:
        url: the API's landing page URL, e.g. ``https://earth-search.aws.element84.com/v1``.
        timeout: seconds to wait for a connection and for each read.
        retries: how many times a failed request is retried (0: never).
        backoff: seconds before the first retry; doubled at each further one.
        headers: extra HTTP headers sent with every request (e.g. an API key).
        page_size: page size ``search`` asks for while walking all pages.
        deadline: seconds one request may take in all (retries included); None: no bound
            but the connect and read timeouts of each socket operation.
        max_concurrency: upstream requests (and waits on the landing page) in flight at once.
        queue_timeout: seconds a caller waits for one of those slots before a 503.

    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = _DEFAULTS.stac_timeout,
        retries: int = _DEFAULTS.stac_retries,
        backoff: float = _DEFAULTS.stac_backoff,
        headers: dict[str, str] | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        deadline: float | None = None,
        max_concurrency: int = _DEFAULTS.stac_max_concurrency,
        queue_timeout: float = _DEFAULTS.stac_queue_timeout,
    ):
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) STAC API URL: {url!r}")
        if parts.username or parts.password:
            raise ValueError("credentials in the STAC API URL are not supported; use headers")
        self.url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.page_size = page_size
        self.deadline = deadline
        self._roots: list[str] = [self.url]  # + the roots the landing page advertises
        self._io = self._make_io(headers or {})
        self.max_concurrency = max_concurrency
        self.queue_timeout = queue_timeout
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._in_flight = 0
        self._client: Client | None = None
        # Guards only _client / _landing (never held during I/O).
        self._lock = threading.Lock()
        self._landing: Future[Client] | None = None

    def __repr__(self) -> str:
        return f"StacApiCatalog({self.url!r})"

    # ------------------------------------------------------------------ protocol

    @property
    def conformance(self) -> list[str]:
        """The upstream's conformance classes (the /catalog router declares no more)."""
        return list(self._open().get_conforms_to())

    def search(self, query: SearchQuery, max_items: int | None = None) -> Iterator[pystac.Item]:
        """All items matching ``query`` (its limit and token ignored), up to ``max_items``.

        The first page is fetched when this is called, so a rejected search or a failing
        upstream raises here (as with LocalCatalog); further pages, ``page_size`` items at
        a time, are fetched as the iterator is consumed, following the upstream's ``next``
        links (only those under the API root).

        Raises:
            BadRequestError: the upstream rejected the search.
            UpstreamError: the upstream failed or sent a link outside its root.
            UpstreamTimeoutError: the upstream did not answer in time.

        """
        if max_items is not None and max_items <= 0:
            return iter(())
        limit = self.page_size if max_items is None else min(self.page_size, max_items)
        request = self._first_request(query, limit)
        return self._walk(request, self._fetch_page(request), max_items)

    def _walk(
        self, request: _PageRequest, page: dict[str, Any], max_items: int | None
    ) -> Iterator[pystac.Item]:
        """Yield the items of ``page`` and of the pages its ``next`` links lead to."""
        seen = {_request_key(request)}
        count = 0
        while True:
            features = page.get("features") or []
            for feature in features:
                yield self._item(feature)
                count += 1
                if max_items is not None and count >= max_items:
                    return
            following = self._next_request(page, request) if features else None
            if following is None or _request_key(following) in seen:
                return  # the end, or an upstream whose next link points back
            request = following
            seen.add(_request_key(request))
            page = self._fetch_page(request)

    def search_page(self, query: SearchQuery) -> SearchPage:
        """One page of ``query.limit`` items, starting at ``query.token``.

        Raises:
            BadRequestError: the token is not one of this catalog's, or the upstream
                rejected the search.
            UpstreamError: the upstream failed.
            UpstreamTimeoutError: the upstream did not answer in time.

        """
        first = self._first_request(query, query.limit)
        request = self._decode_token(query.token, first) if query.token else first
        page = self._fetch_page(request)
        items = [self._item(feature) for feature in page.get("features") or []]
        following = self._next_request(page, request) if items else None
        matched = page.get("numberMatched")
        if matched is None and isinstance(page.get("context"), Mapping):
            matched = page["context"].get("matched")
        return SearchPage(
            items=items,
            next_token=self._encode_token(following, first) if following else None,
            number_matched=matched if isinstance(matched, int) else None,
        )

    def get_item(self, collection_id: str, item_id: str) -> pystac.Item:
        """One item, from ``/collections/{collection_id}/items/{item_id}``.

        Falls back to a search by id for APIs without OGC API Features.

        Raises:
            NotFoundError: the upstream has no such collection or item.
            UpstreamError: the upstream failed.
            UpstreamTimeoutError: the upstream did not answer in time.

        """
        client = self._open()
        if client.conforms_to(ConformanceClasses.FEATURES):
            url = f"{self._collections_url()}/{quote(collection_id, safe='')}/items/"
            url += quote(item_id, safe="")
            data = self._get_json(
                url,
                not_found=f"item '{item_id}' not found in collection '{collection_id}'",
            )
            if not isinstance(data, Mapping) or data.get("type") != "Feature":
                raise UpstreamError(f"STAC API {self.url} sent something else than an item")
            return self._item(dict(data))
        query = SearchQuery(ids=[item_id], collections=[collection_id], limit=1)
        for item in self.search(query, max_items=1):
            return item
        raise NotFoundError(f"item '{item_id}' not found in collection '{collection_id}'")

    def collections(self) -> list[pystac.Collection]:
        """Every collection of the API (``/collections``, following its paging).

        Raises:
            UpstreamError: the upstream failed.
            UpstreamTimeoutError: the upstream did not answer in time.

        """
        result: list[pystac.Collection] = []
        request: _PageRequest | None = _PageRequest("GET", self._collections_url())
        seen: set[str] = set()
        while request is not None and request.url not in seen:
            seen.add(request.url)
            page = self._request_json(request)
            if not isinstance(page, Mapping) or not isinstance(page.get("collections"), list):
                raise UpstreamError(f"STAC API {self.url}: invalid /collections response")
            if not page["collections"]:
                break
            result.extend(self._collection(c) for c in page["collections"])
            request = self._next_request(page, request)
        return result

    def get_collection(self, collection_id: str) -> pystac.Collection:
        """One collection, from ``/collections/{collection_id}``.

        Raises:
            NotFoundError: the upstream has no such collection.
            UpstreamError: the upstream failed.
            UpstreamTimeoutError: the upstream did not answer in time.

        """
        url = f"{self._collections_url()}/{quote(collection_id, safe='')}"
        data = self._get_json(url, not_found=f"collection '{collection_id}' not found")
        if not isinstance(data, Mapping) or data.get("type") != "Collection":
            raise UpstreamError(f"STAC API {self.url} sent something else than a collection")
        return self._collection(data)

    # ------------------------------------------------------------------ HTTP

    def _make_io(self, headers: dict[str, str]) -> StacApiIO:
        retry = _Retry(
            total=self.retries,
            connect=self.retries,
            read=self.retries,
            status=self.retries,
            other=0,
            redirect=5,
            allowed_methods=frozenset({"GET", "HEAD", "POST"}),
            status_forcelist=RETRY_STATUSES,
            backoff_factor=self.backoff,
            respect_retry_after_header=True,
            raise_on_status=False,  # the last answer comes back: its status and body say why
            raise_on_redirect=False,
        )
        retry.max_retry_after = float(self.timeout)
        io = StacApiIO(max_retries=None, timeout=self.timeout)
        io.session = _RootBoundSession(self._is_under_root, self.deadline)
        adapter = HTTPAdapter(max_retries=retry, pool_connections=4, pool_maxsize=32)
        io.session.mount("http://", adapter)
        io.session.mount("https://", adapter)
        user_agent = f"terratiler/{__version__} pystac-client/{pystac_client.__version__}"
        io.update(
            headers={"User-Agent": user_agent, "Accept": "application/json", **headers},
            timeout=self.timeout,
        )
        return io

    @property
    def in_flight(self) -> int:
        """Callers holding an upstream slot right now (talking to or waiting on the upstream)."""
        return self._in_flight

    @contextmanager
    def _slot(self) -> Iterator[None]:
        """Hold one of the ``max_concurrency`` upstream slots, or fail fast with a 503.

        Raises:
            UpstreamBusyError: no slot freed up within ``queue_timeout`` seconds.

        """
        if not self._slots.acquire(timeout=self.queue_timeout):
            raise UpstreamBusyError(
                f"STAC API {self.url} is busy: {self.max_concurrency} requests already in "
                f"flight (stac_max_concurrency), none finished within "
                f"{self.queue_timeout:g} s (stac_queue_timeout); try again later"
            )
        with self._lock:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1
            self._slots.release()

    def _open(self) -> Client:
        """Return the pystac-client ``Client`` of the API (its landing page, fetched once).

        The first caller fetches the page with no lock held; callers arriving during that
        fetch hold an upstream slot and wait on its outcome (the client, or the same error),
        at most ``timeout`` seconds more than the fetch may take. A failed fetch is tried
        again by the next caller.
        """
        client = self._client
        if client is not None:
            return client
        with self._lock:
            if self._client is not None:
                return self._client
            pending = self._landing
            owner = pending is None
            if owner:
                pending = self._landing = Future()
        assert pending is not None
        if not owner:
            with self._slot():
                try:
                    return pending.result(timeout=self._landing_wait())
                except FutureTimeout:
                    raise UpstreamTimeoutError(
                        f"STAC API {self.url} did not answer its landing page within "
                        f"{self._landing_wait():g} s (stac_timeout)"
                    ) from None
        try:
            client = self._fetch_landing()
        except BaseException as error:
            with self._lock:
                self._landing = None
            pending.set_exception(error)
            raise
        with self._lock:
            self._client = client
            self._landing = None
        pending.set_result(client)
        return client

    def _landing_wait(self) -> float:
        # The landing fetch may take a connect and a read timeout, the conformance page too.
        return 2 * self.timeout + self.queue_timeout

    def _fetch_landing(self) -> Client:
        """Fetch the landing page and build the ``Client`` (see ``_open``).

        The landing page is read through the same root-bound session as everything else
        and turned into a ``Client`` without ``Client.open``, which would fetch the page's
        ``root`` link when it names another host (the API's public name behind a proxy).
        """
        data = self._request_json(_PageRequest("GET", self.url))
        if not isinstance(data, dict) or not isinstance(data.get("links"), list):
            raise UpstreamError(f"STAC API {self.url}: the landing page is not STAC")
        for link in data["links"]:
            if not isinstance(link, Mapping):
                continue
            href = link.get("href")
            if link.get("rel") in ("self", "root") and isinstance(href, str):
                if href.startswith(("http://", "https://")):
                    self._roots.append(href.rstrip("/"))
        if "conformsTo" not in data:
            data["conformsTo"] = self._conformance(data["links"])
        try:
            client = self._io.stac_object_from_dict(data, href=self.url)
        except (ValueError, TypeError, KeyError, pystac.STACError, pystac.STACTypeError) as error:
            raise UpstreamError(
                f"STAC API {self.url}: the landing page is not a STAC catalog ({error})"
            ) from None
        if not isinstance(client, Client):
            raise UpstreamError(f"STAC API {self.url}: the landing page is no catalog")
        client.set_root(client)
        _conform_to_any_v1(client)
        return client

    def _conformance(self, links: list[Any]) -> list[str]:
        """Read ``/conformance`` for a landing page without ``conformsTo`` (OGC style)."""
        for link in links:
            if isinstance(link, Mapping) and link.get("rel") == "conformance":
                url = self._rebase(urljoin(self.url + "/", str(link.get("href"))))
                if url is None:
                    break
                try:
                    data = self._request_json(_PageRequest("GET", url))
                except UpstreamError:
                    break
                if isinstance(data, Mapping) and isinstance(data.get("conformsTo"), list):
                    return [str(uri) for uri in data["conformsTo"]]
        return []

    def _request_text(self, request: _PageRequest) -> str:
        if not self._is_under_root(request.url):  # defence in depth: never leave the root
            raise UpstreamError(f"refusing to request {request.url}: not under {self.url}")
        try:
            with self._slot():
                return self._io.request(
                    request.url,
                    method=request.method,
                    parameters=request.body if request.method == "POST" else None,
                )
        except APIError as error:
            raise self._error(error, request.method, request.url) from None

    def _request_json(self, request: _PageRequest) -> Any:
        text = self._request_text(request)
        try:
            return json.loads(text)
        except ValueError:
            raise UpstreamError(
                f"STAC API {self.url}: {request.method} {request.url} did not answer JSON"
            ) from None

    def _get_json(self, url: str, *, not_found: str) -> Any:
        self._open()
        try:
            return self._request_json(_PageRequest("GET", url))
        except _UpstreamStatusError as error:
            if error.status == 404:
                raise NotFoundError(f"{not_found} ({error.upstream_message})") from None
            raise UpstreamError(error.message) from None

    def _fetch_page(self, request: _PageRequest) -> dict[str, Any]:
        try:
            page = self._request_json(request)
        except _UpstreamStatusError as error:
            if error.status in (400, 422):
                raise BadRequestError(
                    f"the STAC API {self.url} rejected the search: {error.upstream_message}"
                ) from None
            raise UpstreamError(error.message) from None
        if not isinstance(page, dict) or not isinstance(page.get("features"), list):
            raise UpstreamError(f"STAC API {self.url}: the search answer is not a collection")
        return page

    def _error(self, error: APIError, method: str, url: str) -> UpstreamError:
        """Translate an ``APIError`` from pystac-client into the matching engine error."""
        status = getattr(error, "status_code", None)
        if status is not None:
            message = _upstream_message(str(error))
            return _UpstreamStatusError(
                f"STAC API {self.url} answered {status} to {method} {url}: {message}",
                status=status,
                upstream_message=message,
            )
        cause: BaseException | None = error.__context__ or error.__cause__
        while cause is not None and not isinstance(cause, requests.RequestException):
            cause = cause.__context__ or cause.__cause__
        if isinstance(cause, _DeadlineExceeded):
            return UpstreamTimeoutError(
                f"STAC API {self.url} did not finish answering {method} {url} within "
                f"{self.deadline:g} s (stac_request_deadline)"
            )
        if isinstance(cause, requests.Timeout):
            return UpstreamTimeoutError(
                f"STAC API {self.url} did not answer {method} {url} within {self.timeout:g} s"
                " (stac_timeout)"
            )
        if isinstance(cause, requests.ConnectionError):
            return UpstreamError(
                f"cannot reach STAC API {self.url} ({method} {url}, after {self.retries} "
                f"retries): {_short(cause)}"
            )
        return UpstreamError(f"STAC API {self.url} failed on {method} {url}: {_short(error)}")

    # ------------------------------------------------------------------ URLs

    def _is_under_root(self, url: str) -> bool:
        return _under(url, self.url)

    def _rebase(self, href: str) -> str | None:
        """Rebase ``href`` onto the configured root (None when under no known root).

        The roots are the configured one and those the landing page advertises; the result
        always starts with the configured root, whatever the link's spelling.
        """
        for root in self._roots:
            if _under(href, root):
                rebased = self.url + _suffix(href, root)
                return rebased if _under(rebased, self.url) else None
        return None

    def _link_url(self, rel: str, method: str | None = None) -> str | None:
        client = self._open()
        for link in client.links:
            if link.rel != rel:
                continue
            link_method = (link.extra_fields.get("method") or "GET").upper()
            if method is not None and link_method != method:
                continue
            href = link.get_absolute_href() or link.href
            if href:
                return self._rebase(href)
        return None

    def _collections_url(self) -> str:
        return self._link_url("data") or f"{self.url}/collections"

    def _search_request_target(self) -> tuple[str, str]:
        """Return (method, URL) of the search endpoint: POST unless only GET is advertised."""
        client = self._open()
        post = self._link_url("search", "POST")
        if post:
            return "POST", post
        get = self._link_url("search", "GET")
        links = [link for link in client.links if link.rel == "search"]
        if get and links and all(link.extra_fields.get("method") for link in links):
            return "GET", get
        return "POST", get or f"{self.url}/search"

    # ------------------------------------------------------------------ searches

    def _search_body(self, query: SearchQuery, limit: int) -> dict[str, Any]:
        """Build the upstream POST /search body for ``query`` (without its token)."""
        client = self._open()
        body = search_to_body(query)
        body.pop("token", None)
        body["limit"] = limit
        if query.query:
            body["query"] = typed_query_operands(query.query)
        if query.sortby:
            body["sortby"] = [
                {
                    "field": s.field
                    if s.field in TOP_LEVEL_FIELDS or s.field.startswith("properties.")
                    else f"properties.{s.field}",
                    "direction": s.direction,
                }
                for s in query.sortby
            ]
        if query.query and client.conforms_to(ConformanceClasses.FILTER):
            basic: dict[str, dict[str, Any]] = {}
            clauses: list[dict[str, Any]] = []
            for prop, ops in body["query"].items():
                for op, value in ops.items():
                    if op in BASIC_QUERY_OPERATORS:
                        basic.setdefault(prop, {})[op] = value
                    else:
                        clauses.append(_query_clause_to_cql2(prop, op, value))
            if clauses:
                if basic:
                    body["query"] = basic
                else:
                    body.pop("query", None)
                if query.filter is not None:
                    clauses.insert(0, query.filter)
                body["filter"] = clauses[0] if len(clauses) == 1 else {"op": "and", "args": clauses}
                body["filter-lang"] = "cql2-json"
        return body

    def _first_request(self, query: SearchQuery, limit: int) -> _PageRequest:
        method, url = self._search_request_target()
        body = self._search_body(query, limit)
        if method == "GET":
            return _PageRequest("GET", _with_params(url, _get_params(body)))
        return _PageRequest("POST", url, body)

    def _next_request(self, page: Mapping[str, Any], current: _PageRequest) -> _PageRequest | None:
        """Return the request of the upstream's ``next`` link, rebased under the root.

        Raises:
            UpstreamError: the link points outside the API root.

        """
        link = next(
            (
                link
                for link in page.get("links") or []
                if isinstance(link, Mapping) and link.get("rel") == "next"
            ),
            None,
        )
        if link is None or not isinstance(link.get("href"), str):
            return None
        href = urljoin(current.url, link["href"])
        url = self._rebase(href)
        if url is None:
            raise UpstreamError(
                f"STAC API {self.url} sent a next link outside its root ({href}); not followed"
            )
        method = str(link.get("method") or "GET").upper()
        if method == "POST":
            body = link.get("body") if isinstance(link.get("body"), Mapping) else {}
            if link.get("merge") and current.body is not None:
                body = {**current.body, **body}
            return _PageRequest("POST", url, dict(body))
        if method == "GET":
            return _PageRequest("GET", url)
        raise UpstreamError(f"STAC API {self.url} sent a next link with method {method}")

    # ------------------------------------------------------------------ tokens

    def _encode_token(self, request: _PageRequest, first: _PageRequest) -> str:
        """Encode ``request`` as a token: its path below the root and its body's delta."""
        suffix = _suffix(request.url, self.url)
        token: dict[str, Any] = {"v": _TOKEN_VERSION, "m": request.method, "p": suffix}
        if request.method == "POST":
            base = first.body or {}
            body = request.body or {}
            token["s"] = {k: v for k, v in body.items() if k not in base or base[k] != v}
            token["u"] = [k for k in base if k not in body]
        raw = zlib.compress(json.dumps(token, separators=(",", ":")).encode(), 9)
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def _decode_token(self, token: str, first: _PageRequest) -> _PageRequest:
        """Rebuild the request a token stands for, under the root; refuse anything else.

        Raises:
            BadRequestError: not a token of this catalog.

        """
        invalid = BadRequestError("token: not a valid page token of this catalog")
        if len(token) > MAX_TOKEN_CHARS:
            raise invalid
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            inflater = zlib.decompressobj()
            text = inflater.decompress(raw, MAX_TOKEN_JSON)
            if inflater.unconsumed_tail:
                raise invalid
            data = json.loads(text)
        except (binascii.Error, zlib.error, ValueError, RecursionError):
            # RecursionError: "[" x 100 000 compresses into a 200-character token (a 500).
            raise invalid from None
        if not isinstance(data, dict) or data.get("v") != _TOKEN_VERSION:
            raise invalid
        method, suffix = data.get("m"), data.get("p")
        if method not in ("GET", "POST") or not isinstance(suffix, str):
            raise invalid
        path, _, query_string = suffix.partition("?")
        if (
            (path and not path.startswith("/"))
            or not _PLAIN_PATH.match(path)
            or _has_dot_segment(path)
            or "//" in path
            or "#" in query_string
        ):
            raise invalid
        url = self.url + suffix
        if not self._is_under_root(url):
            raise invalid
        if method == "GET":
            return _PageRequest("GET", url)
        changed, removed = data.get("s"), data.get("u")
        if not isinstance(changed, dict) or not isinstance(removed, list):
            raise invalid
        body = {k: v for k, v in (first.body or {}).items() if k not in removed}
        body.update(changed)
        return _PageRequest("POST", url, body)

    # ------------------------------------------------------------------ STAC objects

    def _item(self, data: dict[str, Any]) -> pystac.Item:
        try:
            return pystac.Item.from_dict(data, migrate=False, preserve_dict=False)
        except (KeyError, TypeError, ValueError, pystac.STACError, pystac.STACTypeError) as error:
            item_id = data.get("id") if isinstance(data, Mapping) else None
            raise UpstreamError(
                f"STAC API {self.url} sent an invalid item {item_id!r}: {error}"
            ) from None

    def _collection(self, data: Mapping[str, Any]) -> pystac.Collection:
        try:
            return pystac.Collection.from_dict(dict(data), migrate=False, preserve_dict=False)
        except (KeyError, TypeError, ValueError, pystac.STACError, pystac.STACTypeError) as error:
            raise UpstreamError(
                f"STAC API {self.url} sent an invalid collection {data.get('id')!r}: {error}"
            ) from None


class _UpstreamStatusError(UpstreamError):
    """An upstream HTTP error answer (kept apart so callers can map 404 / 400)."""

    def __init__(self, message: str, *, status: int, upstream_message: str):
        super().__init__(message)
        self.status = status
        self.upstream_message = upstream_message


def _request_key(request: _PageRequest) -> str:
    return json.dumps([request.method, request.url, request.body], sort_keys=True)


def _short(error: BaseException) -> str:
    text = str(error)
    return text if len(text) <= 300 else text[:297] + "..."


def _under(url: str, root: str) -> bool:
    """Tell whether ``url`` is ``root`` or below it: same origin, path prefix, no dots."""
    try:
        parts, root_parts = urlsplit(url), urlsplit(root)
        if parts.username or parts.password or "\\" in url:
            return False
        if _origin(parts) != _origin(root_parts):
            return False
    except ValueError:  # a bad port number
        return False
    base = root_parts.path.rstrip("/")
    path = parts.path
    if _has_dot_segment(path):
        return False
    return path == base or path.startswith(base + "/")


def _has_dot_segment(path: str) -> bool:
    """Tell whether a URL path has a ``.`` or ``..`` segment, percent-encoded or not."""
    return any(unquote(segment) in (".", "..") for segment in path.split("/"))


def _suffix(url: str, root: str) -> str:
    """Return the part of ``url`` (under ``root``) after the root's path: ``/search?x=1``."""
    parts = urlsplit(url)
    path = parts.path[len(urlsplit(root).path.rstrip("/")) :]
    return path + (f"?{parts.query}" if parts.query else "")


def _conform_to_any_v1(client: Client) -> None:
    """Teach pystac-client that ``v1.1.0/item-search#sort`` etc. are conformance too.

    pystac-client 0.9 matches only ``https://api.stacspec.org/v1.0.*``; STAC API 1.1
    servers (stac-fastapi 6+) advertise some classes as v1.1.0 and would otherwise be
    taken not to conform (pystac-client then warns ``DoesNotConformTo``).
    """
    uris = client.get_conforms_to()
    for conformance in ConformanceClasses:
        if client.conforms_to(conformance):
            continue
        pattern = re.compile(
            r"https://api\.stacspec\.org/v1\.\d+\.[^/]*" + re.escape(conformance.value) + "$"
        )
        if any(pattern.match(uri) for uri in uris):
            client.add_conforms_to(conformance.name)


def _get_params(body: Mapping[str, Any]) -> dict[str, str]:
    """Write a POST search body as GET query parameters (for GET-only APIs)."""
    params: dict[str, str] = {}
    for key, value in body.items():
        if key in ("ids", "collections"):
            params[key] = ",".join(value)
        elif key == "bbox":
            params[key] = ",".join(str(v) for v in value)
        elif key == "sortby":
            params[key] = ",".join(
                ("-" if s["direction"] == "desc" else "") + s["field"] for s in value
            )
        elif isinstance(value, dict | list):
            params[key] = json.dumps(value, separators=(",", ":"))
        else:
            params[key] = str(value)
    return params


def _with_params(url: str, params: Mapping[str, str]) -> str:
    prepared = requests.Request("GET", url, params=dict(params)).prepare().url
    return prepared or url
