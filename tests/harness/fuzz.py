"""``make fuzz``: schemathesis over the whole OpenAPI document of a real service.

Starts ``terratiler serve`` on a demo catalog (a fresh data folder, a free loopback
port), registers a search, picks an item and its COG, and runs ``schemathesis run`` with
the checks ``not_a_server_error`` and ``status_code_conformance`` (tests/schemathesis.toml),
bounded by ``--max-examples`` and ``--max-time``. The exit status is schemathesis'.

    python -m tests.harness.fuzz --catalog data/demo --max-examples 5 --max-time 300
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

CONFIG = Path(__file__).parents[1] / "schemathesis.toml"
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(url: str, server: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the service exited ({server.returncode}) before answering")
        try:
            if httpx.get(f"{url}/healthz", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the service did not answer {url}/healthz in {timeout} s")


def _identifiers(url: str, catalog: Path) -> dict[str, str]:
    """An item, its item file and COG, and a registered search of the catalog."""
    collection = httpx.get(f"{url}/catalog/collections", timeout=30).json()["collections"][0]
    items = httpx.get(f"{url}/catalog/collections/{collection['id']}/items?limit=1", timeout=30)
    item = items.json()["features"][0]
    item_file = catalog / "items" / f"{item['id']}.json"
    hrefs = [a["href"] for a in json.loads(item_file.read_text())["assets"].values()]
    cog = next((item_file.parent / href).resolve() for href in hrefs if href.endswith(".tif"))
    search = httpx.post(
        f"{url}/searches/register", json={"collections": [collection["id"]]}, timeout=60
    )
    search.raise_for_status()
    return {
        "TERRATILER_FUZZ_COLLECTION": collection["id"],
        "TERRATILER_FUZZ_ITEM": item["id"],
        "TERRATILER_FUZZ_ITEM_URL": str(item_file.resolve()),
        "TERRATILER_FUZZ_COG": str(cog),
        "TERRATILER_FUZZ_SEARCH": search.json()["id"],
    }


def main(argv: list[str] | None = None) -> int:
    """Serve, fuzz, stop; return schemathesis' exit status."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--catalog", default="data/demo")
    parser.add_argument("--max-examples", type=int, default=5)
    parser.add_argument("--max-time", type=int, default=300, help="seconds for the whole run")
    parser.add_argument("--workers", default="1")
    parser.add_argument("extra", nargs="*", help="more `schemathesis run` options")
    args = parser.parse_args(argv)
    catalog = Path(args.catalog).resolve()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="terratiler-fuzz-") as data:
        env = {**os.environ, "TERRATILER_CATALOG": str(catalog), "TERRATILER_DATA_DIR": data}
        env.pop("TERRATILER_API_KEYS", None)
        server = subprocess.Popen(
            [str(BIN / "terratiler"), "serve", "--port", str(port), "--log-level", "warning"],
            env=env,
        )
        try:
            _wait(url, server)
            env.update(_identifiers(url, catalog))
            command = [
                str(BIN / "schemathesis"),
                "--config-file",
                str(CONFIG),
                "run",
                f"{url}/openapi.json",
                "--max-examples",
                str(args.max_examples),
                "--max-time",
                str(args.max_time),
                "--workers",
                args.workers,
                "--phases",
                "examples,coverage,fuzzing",
                "--request-timeout",
                "60",
                *args.extra,
            ]
            return subprocess.run(command, env=env).returncode
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()


if __name__ == "__main__":
    sys.exit(main())
