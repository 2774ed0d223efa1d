"""Where the links the service writes point, and who may cache responses that hold them.

TileJSON ``tiles``, ``map.html``, WMTS capabilities, ``/tileMatrixSets``, ``/searches`` and
``/catalog`` documents all hold absolute links, built by Starlette from the request:
scheme, ``Host`` header, root path. Served with ``Cache-Control: public, max-age=3600``,
one request with a forged ``Host`` put links to another host into a shared cache, served
to every user after it for an hour.

- ``public_url`` set: ``PublicURLMiddleware`` makes every request look, to the link
  builders, as if it came to that URL (scheme, host, path prefix): links never come from
  request headers, and responses may be cached publicly.
- ``public_url`` unset (the default): ``HostLinksMiddleware`` adds ``Vary: Host`` to every
  response, and a response whose body holds a link to the request's host is
  ``Cache-Control: private`` (a browser keeps it for its user; no shared cache stores it).

``X-Forwarded-Proto`` / ``-For`` are honoured only by uvicorn's proxy-headers support, for
the proxies ``--forwarded-allow-ips`` names (default 127.0.0.1); ``X-Forwarded-Host`` never.
"""

from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.settings import check_public_url

#: Content types whose bodies may hold links (images, GeoTIFFs, NumPy arrays do not).
_TEXTUAL = (
    b"application/json",
    b"application/geo+json",
    b"text/html",
    b"text/xml",
    b"application/xml",
)
#: Bodies held to look for links at most; bigger or streamed ones are kept private unseen.
MAX_INSPECTED_BYTES = 1024 * 1024
#: Cache-Control directives already keeping a response out of shared caches.
_NOT_SHARED = ("private", "no-store")


class PublicURLMiddleware:
    """Requests seen as sent to ``public_url``: every link is built from it."""

    def __init__(self, app: ASGIApp, public_url: str):
        self.app = app
        parts = urlsplit(check_public_url(public_url))
        self.scheme = parts.scheme
        self.host = parts.netloc.encode("latin-1")
        self.server = (parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
        self.prefix = parts.path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Replace scheme, Host and the links' root path; routing is unchanged."""
        if scope["type"] == "http":
            scope = dict(scope)
            scope["scheme"] = self.scheme
            scope["server"] = self.server
            headers = [(k, v) for k, v in scope["headers"] if k != b"host"]
            scope["headers"] = [*headers, (b"host", self.host)]
            if self.prefix:
                # Starlette builds base_url (and url_for) from app_root_path; routes still
                # match on path and root_path as the server gave them.
                scope["app_root_path"] = self.prefix
        await self.app(scope, receive, send)


class HostLinksMiddleware:
    """``Vary: Host`` everywhere; responses linking to the request's host kept private."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Hold textual bodies until complete, to see whether they link to the host."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = _host(scope)
        start: Message | None = None
        chunks: list[bytes] = []

        async def send_wrapper(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.add_vary_header("Host")
                if b"://" + host in headers.get("location", "").encode("latin-1"):
                    # A redirect built from the request (redirect_slashes: /searches/ ->
                    # http://<Host>/searches) links to the Host in its header, no body.
                    _keep_private(headers)
                content_type = headers.get("content-type", "").encode("latin-1")
                if content_type.startswith(_TEXTUAL) and message["status"] < 400:
                    length = headers.get("content-length", "")
                    small = length.isdigit() and int(length) <= MAX_INSPECTED_BYTES
                    if scope["method"] == "HEAD" or not small:
                        # No body to look into (HEAD), or one too big / streamed to hold:
                        # assume it holds links.
                        _keep_private(headers)
                    else:
                        start = message  # sent with the body, once we know what it holds
                        return
                await send(message)
            elif message["type"] == "http.response.body" and start is not None:
                chunks.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                body = b"".join(chunks)
                if b"://" + host in body:
                    _keep_private(MutableHeaders(scope=start))
                await send(start)
                await send({"type": "http.response.body", "body": body})
            else:
                await send(message)

        await self.app(scope, receive, send_wrapper)


def _host(scope: Scope) -> bytes:
    for key, value in scope["headers"]:
        if key == b"host":
            return value
    server = scope.get("server")
    return f"{server[0]}:{server[1]}".encode() if server else b""


def _keep_private(headers: MutableHeaders) -> None:
    current = headers.get("cache-control", "")
    if not any(directive in current for directive in _NOT_SHARED):
        headers["Cache-Control"] = "private"
