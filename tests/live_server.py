"""Run the service under a real uvicorn on a free loopback port, for tests that need HTTP.

TestClient talks ASGI in-process; clients such as pystac-client, GDAL, Dask workers or a
browser need a real socket. ``live_server`` binds 127.0.0.1 on port 0 (the OS picks a free
port, no race between choosing and binding), serves the app from a background thread, waits
until ``/healthz`` answers and stops uvicorn (lifespan shutdown included) on exit::

    with live_server(create_app(settings)) as base_url:
        Client.open(f"{base_url}/catalog")

As a fixture in a test module or conftest::

    @pytest.fixture(scope="module")
    def live_url(demo_settings):
        with live_server(create_app(demo_settings)) as url:
            yield url
"""

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn
from fastapi import FastAPI

__all__ = ["LiveProcess", "LiveServer", "live_server", "live_server_process"]


class LiveServer:
    """A uvicorn server of one ASGI app on a loopback socket, in a daemon thread.

    Attributes:
        url: the base URL, e.g. ``http://127.0.0.1:54321`` (set by ``start``).
    """

    def __init__(
        self,
        app: FastAPI,
        host: str = "127.0.0.1",
        log_level: str = "warning",
        root_path: str = "",
    ):
        self.app = app
        self.host = host
        self.url = ""
        # root_path: as ``terratiler serve --root-path`` (uvicorn puts it in scope["path"]).
        self._config = uvicorn.Config(
            app,
            host=host,
            port=0,
            log_level=log_level,
            lifespan="on",
            access_log=False,
            root_path=root_path,
        )
        self._server = uvicorn.Server(self._config)
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 30.0, health_path: str = "/healthz") -> str:
        """Bind, serve in the background and wait until ``health_path`` answers 200.

        Returns:
            The base URL of the server.

        Raises:
            RuntimeError: the server did not come up within ``timeout`` seconds.
        """
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self._socket = sock
        port = sock.getsockname()[1]
        self.url = f"http://{self.host}:{port}"
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [sock]},
            name=f"uvicorn-{port}",
            daemon=True,
        )
        self._thread.start()

        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        with httpx.Client(trust_env=False, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if not self._thread.is_alive():
                    raise RuntimeError(f"uvicorn on {self.url} exited during startup")
                if self._server.started:
                    try:
                        if client.get(self.url + health_path).status_code == 200:
                            return self.url
                    except httpx.HTTPError as exc:
                        last_error = exc
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"uvicorn on {self.url} did not answer {health_path}: {last_error}")

    def stop(self, timeout: float = 10.0) -> None:
        """Ask uvicorn to exit, wait for its thread and close the socket."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():  # open keep-alive connections: stop waiting for them
                self._server.force_exit = True
                self._thread.join(timeout)
        if self._socket is not None:
            self._socket.close()


@contextmanager
def live_server(app: FastAPI, **kwargs: object) -> Iterator[str]:
    """Serve ``app`` on a free loopback port for the duration of the ``with`` block.

    Args:
        app: the ASGI app, e.g. ``create_app(settings)``.
        **kwargs: passed to :class:`LiveServer` (``host``, ``log_level``, ``root_path``).

    Yields:
        The base URL, e.g. ``http://127.0.0.1:54321``.
    """
    server = LiveServer(app, **kwargs)  # type: ignore[arg-type]
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


class LiveProcess:
    """A uvicorn subprocess: its base ``url`` and ``process``."""

    def __init__(self, url: str, process: subprocess.Popen[bytes]):
        self.url = url
        self.process = process

    def alive(self) -> bool:
        """Whether the process runs and answers ``/healthz`` with 200."""
        if self.process.poll() is not None:
            return False
        try:
            return httpx.get(self.url + "/healthz", timeout=5, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False


SERVE_SCRIPT = """
import sys, uvicorn
from app.main import create_app
uvicorn.run(create_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


@contextmanager
def live_server_process(env: dict[str, str], timeout: float = 60.0) -> Iterator[LiveProcess]:
    """Serve ``create_app()`` (configured by ``env``) under uvicorn in a subprocess.

    For tests of inputs that may crash the process (a segfault in a native parser): the
    crash fails the test instead of killing pytest, and ``alive()`` tells it happened.

    Args:
        env: the subprocess environment (``TERRATILER_*`` settings, ``PYTHONPATH``).
        timeout: seconds to wait for ``/healthz``.

    Yields:
        The running server (``url``, ``process``, ``alive()``).
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-c", SERVE_SCRIPT, str(port)], env=env)
    server = LiveProcess(f"http://127.0.0.1:{port}", process)
    try:
        deadline = time.monotonic() + timeout
        while not server.alive():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn subprocess on {server.url} did not start")
            time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
