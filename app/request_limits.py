"""An ASGI middleware that bounds a request's size before any route reads it.

- The headers: over ``max_header_bytes`` in all is a 431 (uvicorn's httptools parser
  has read them already; this keeps routes from working on them).
- The query string: over ``max_query_bytes`` is a 414 (GET ``filter=``, ``intersects=``
  carry user text to parsers).
- The body: a ``Content-Length`` over the limit is a 413 before a byte is read; otherwise
  bytes are counted as they stream in (chunked requests have no length) and the request
  fails with 413 at the first chunk past the limit, so a 100 MB body costs the service
  one chunk, not 100 MB. The limit is ``max_body_bytes``; for batch job creation it is
  ``batch_max_upload_mb`` (a features file), or ``batch_max_geojson_mb`` for a JSON body
  (inline features, parsed whole at ~15x their size).
- JSON in query parameters (``colormap``, ``algorithm_params``, ``intersects``, ``query``,
  ``filter`` ...; titiler's own dependencies ``json.loads`` some): nested deeper than
  ``max_json_depth`` is a 400 naming the parameter.
- JSON bodies (``application/json``, ``*+json``, or no content type) are read here in
  full (they are bounded by the limit, and every route parses them whole anyway) and
  their nesting checked (``max_json_depth``, 400) before ``json.loads`` recurses on them;
  except a batch job's body (up to ``batch_max_upload_mb``), only counted here: its route
  checks the API key before it reads the body, then the nesting itself.
"""

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.asgi_paths import route_path
from app.errors import BadRequestError
from app.input_limits import check_json_depth
from app.settings import Settings

MIB = 1024 * 1024
#: The path whose bodies take the batch upload limit instead of ``max_body_bytes``: job
#: creation only. The job actions take no body; under a "/batch/" prefix rule any client
#: (no API key needed: keys are checked by the route, after this) could make the service
#: hold batch_max_upload_mb (512 MiB) per request for the nesting check.
BATCH_UPLOAD_PATH = "/batch/statistics"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# A query string that may carry JSON arrays or objects (raw or percent-encoded).
_JSON_OPENER = re.compile(rb"[\[{]|%5[bB]|%7[bB]")


class BodyTooLargeError(HTTPException):
    """A body past its limit, raised from ``receive`` while the route reads it (413)."""


@dataclass(frozen=True)
class RequestLimits:
    """The request bounds (``Settings`` fields of the same names; batch in MiB)."""

    max_body_bytes: int
    max_query_bytes: int
    max_header_bytes: int
    max_json_depth: int
    batch_max_upload_mb: int
    batch_max_geojson_mb: int

    @classmethod
    def from_settings(cls, settings: Settings) -> "RequestLimits":
        """The bounds of ``settings``."""
        return cls(
            max_body_bytes=settings.max_body_bytes,
            max_query_bytes=settings.max_query_bytes,
            max_header_bytes=settings.max_header_bytes,
            max_json_depth=settings.max_json_depth,
            batch_max_upload_mb=settings.batch_max_upload_mb,
            batch_max_geojson_mb=settings.batch_max_geojson_mb,
        )

    def body_limit(self, path: str, multipart: bool) -> tuple[int, str]:
        """The body limit of ``path`` (a ``multipart`` body or not) in bytes, and its setting.

        A batch job's features file comes multipart; any other body of it is parsed as JSON.
        """
        if path == BATCH_UPLOAD_PATH and multipart:
            return self.batch_max_upload_mb * MIB, f"batch_max_upload_mb={self.batch_max_upload_mb}"
        if path == BATCH_UPLOAD_PATH:
            mb = self.batch_max_geojson_mb
            return mb * MIB, f"batch_max_geojson_mb={mb}"
        return self.max_body_bytes, f"max_body_bytes={self.max_body_bytes}"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _is_json(scope: Scope) -> bool:
    content_type = _header(scope, b"content-type")
    if content_type is None:
        # FastAPI parses a body without a content type as JSON.
        return scope["method"] in _BODY_METHODS
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _is_multipart(scope: Scope) -> bool:
    content_type = _header(scope, b"content-type") or ""
    return content_type.split(";", 1)[0].strip().lower() == "multipart/form-data"


def _too_large(size: int | str, setting: str) -> str:
    return f"body: {size} bytes, over the limit {setting}"


class RequestLimitMiddleware:
    """Refuse requests over the query, body and JSON-nesting limits (414, 413, 400)."""

    def __init__(self, app: ASGIApp, limits: RequestLimits):
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check headers, query string and Content-Length, then count (or read) the body."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._head_error(scope)
        if refusal is not None:
            status, detail = refusal
            await JSONResponse({"detail": detail}, status_code=status)(scope, receive, send)
            return
        path = route_path(scope)
        limit, setting = self.limits.body_limit(path, _is_multipart(scope))
        # A batch job's body is counted, not held here: the route checks the API key first,
        # then the nesting of what it reads (app.routers.batch).
        if _is_json(scope) and path != BATCH_UPLOAD_PATH:
            await self._json(scope, receive, send, limit, setting)
        else:
            await self.app(scope, _counting(receive, limit, setting), send)

    def _head_error(self, scope: Scope) -> tuple[int, str] | None:
        """The status and message refusing a request on what precedes its body, or None."""
        limits = self.limits
        headers = sum(len(key) + len(value) + 4 for key, value in scope["headers"])
        query = len(scope["query_string"])
        for status, what, size, setting, limit in (
            (431, "headers", headers, "max_header_bytes", limits.max_header_bytes),
            (414, "query string", query, "max_query_bytes", limits.max_query_bytes),
        ):
            if size > limit:
                return status, f"{what}: {size} bytes, over the limit {setting}={limit}"
        detail = self._query_json_error(scope["query_string"])
        if detail is not None:
            return 400, detail
        limit, setting = limits.body_limit(route_path(scope), _is_multipart(scope))
        length = (_header(scope, b"content-length") or "").strip()
        if length.isdigit() and int(length) > limit:
            # Refused before reading: the client may stop sending.
            return 413, _too_large(length, setting)
        return None

    def _query_json_error(self, query: bytes) -> str | None:
        if not _JSON_OPENER.search(query):
            return None
        for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            try:
                check_json_depth(value, self.limits.max_json_depth, key)
            except BadRequestError as error:
                return error.message
        return None

    async def _json(
        self, scope: Scope, receive: Receive, send: Send, limit: int, setting: str
    ) -> None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left: nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                detail = _too_large(f"more than {limit}", setting)
                await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            check_json_depth(body, self.limits.max_json_depth)
        except BadRequestError as error:
            await JSONResponse({"detail": error.message}, status_code=400)(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)


def _counting(receive: Receive, limit: int, setting: str) -> Callable[[], Awaitable[Message]]:
    """``receive`` that raises ``BodyTooLargeError`` once more than ``limit`` bytes came."""
    size = 0

    async def counted() -> Message:
        nonlocal size
        message = await receive()
        if message["type"] == "http.request":
            size += len(message.get("body", b""))
            if size > limit:
                raise BodyTooLargeError(413, _too_large(f"more than {limit}", setting))
        return message

    return counted


def _replay(body: bytes, receive: Receive) -> Callable[[], Awaitable[Message]]:
    """``receive`` that gives ``body`` in one message, then what the client sends."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
