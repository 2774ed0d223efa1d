"""Small loopback HTTP servers for tests: scripted answers, recorded requests.

``StubServer`` answers every request with what a handler function returns and records the
requests (method, path, query, body), so tests can count retries or check the body of a
paging POST. It speaks HTTP/1.0 (one request per connection), so stopping it really cuts
the upstream off: the next request is refused.

``SilentServer`` accepts TCP connections and never answers: a hung upstream.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Recorded:
    """One request the stub received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    at: float = 0.0  # time.monotonic() on arrival

    @property
    def json(self) -> Any:
        """The body parsed as JSON (None when empty)."""
        return json.loads(self.body) if self.body else None


@dataclass
class StubResponse:
    """What the stub answers: a status, a body (JSON-encoded unless bytes/str), headers."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # close the connection without answering (a reset upstream)

    def encode(self) -> tuple[bytes, dict[str, str]]:
        """The body as bytes and the headers, with a content type when it is JSON."""
        headers = dict(self.headers)
        if isinstance(self.body, bytes):
            return self.body, headers
        if isinstance(self.body, str):
            headers.setdefault("Content-Type", "text/plain; charset=utf-8")
            return self.body.encode(), headers
        headers.setdefault("Content-Type", "application/json")
        return json.dumps(self.body).encode(), headers


Handler = Callable[[Recorded, "StubServer"], StubResponse]


class StubServer:
    """A threaded HTTP server on a free 127.0.0.1 port answering through ``handler``.

    Use as a context manager; ``url`` is ``http://127.0.0.1:<port>``, ``requests`` the
    recorded requests in arrival order.
    """

    def __init__(self, handler: Handler):
        self.handler = handler
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        stub = self

        class _Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                recorded = Recorded(
                    method=self.command,
                    path=parts.path,
                    query=parse_qs(parts.query),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                    at=time.monotonic(),
                )
                with stub._lock:
                    stub.requests.append(recorded)
                try:
                    response = stub.handler(recorded, stub)
                except Exception as error:  # a broken handler should fail loudly, not hang
                    response = StubResponse(500, {"description": f"stub handler: {error!r}"})
                if response.drop:
                    self.close_connection = True
                    return
                payload, headers = response.encode()
                self.send_response(response.status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_HEAD = _serve  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread: threading.Thread | None = None

    def start(self) -> StubServer:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket (later connections are refused)."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._server.server_close()

    def count(self, method: str | None = None, path: str | None = None) -> int:
        """How many requests matched ``method`` and ``path`` (None: any)."""
        with self._lock:
            return sum(
                1
                for r in self.requests
                if (method is None or r.method == method) and (path is None or r.path == path)
            )

    def __enter__(self) -> StubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SilentServer:
    """A TCP port on 127.0.0.1 that accepts connections (the kernel's backlog) and never
    answers a byte: requests to it hang until the client's read timeout."""

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(64)
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"

    def connections(self) -> int:
        """How many connections were made to the port so far (accepted and closed here)."""
        self._socket.setblocking(False)
        count = 0
        try:
            while True:
                connection, _ = self._socket.accept()
                connection.close()
                count += 1
        except BlockingIOError:
            return count
        finally:
            self._socket.setblocking(True)

    def close(self) -> None:
        """Close the port."""
        self._socket.close()

    def __enter__(self) -> SilentServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def landing_page(url: str, *, conforms_to: list[str] | None = None) -> dict[str, Any]:
    """A minimal STAC API landing page rooted at ``url`` (search over GET and POST)."""
    return {
        "type": "Catalog",
        "stac_version": "1.0.0",
        "id": "stub",
        "description": "a stub STAC API",
        "conformsTo": conforms_to
        or [
            "https://api.stacspec.org/v1.0.0/core",
            "https://api.stacspec.org/v1.0.0/collections",
            "https://api.stacspec.org/v1.0.0/ogcapi-features",
            "https://api.stacspec.org/v1.0.0/item-search",
            "https://api.stacspec.org/v1.0.0/item-search#query",
            "https://api.stacspec.org/v1.0.0/item-search#sort",
        ],
        "links": [
            {"rel": "self", "type": "application/json", "href": url},
            {"rel": "root", "type": "application/json", "href": url},
            {"rel": "data", "type": "application/json", "href": f"{url}/collections"},
            {"rel": "search", "type": "application/geo+json", "href": f"{url}/search",
             "method": "GET"},
            {"rel": "search", "type": "application/geo+json", "href": f"{url}/search",
             "method": "POST"},
        ],
    }  # fmt: skip
