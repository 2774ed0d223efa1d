"""A real STAC API peer for tests: stac-fastapi-pgstac over PostgreSQL + PostGIS + pgstac.

The peer is built only from parts a machine can install through its package managers:

- Debian's PostgreSQL (already on the machine) and the PostGIS package matching its major
  version (``postgresql-<major>-postgis-3``, installed with apt-get when missing, as root);
- a separate virtualenv, ``.venv-pgstac`` at the repository root, with the pinned versions of
  ``requirements-pgstac.txt`` (stac-fastapi-pgstac, pypgstac), created when missing or stale.

``PgstacPeer`` runs a private PostgreSQL cluster (initdb into its own folder, a free loopback
port, trust auth, fsync off), migrates pgstac into it, registers the numeric queryables
(``eo:cloud_cover`` wrapped ``to_float`` so it sorts and compares as a number), turns on
``context`` (``numberMatched``), loads a collection and its items (asset hrefs made absolute),
and serves it with ``uvicorn stac_fastapi.pgstac.app:create_app --factory`` on another free
loopback port. Background processes write to log files, never to the caller's stdout.

The cluster is a ``harness.postgres.PostgresCluster`` (which says how it runs as root).

Command line, from the repository root::

    python -m tests.harness.pgstac up [--load DIR]   # start (idempotent), print the URL
    python -m tests.harness.pgstac load DIR          # load DIR/collection.json + DIR/items/
    python -m tests.harness.pgstac url               # print the URL of the running peer
    python -m tests.harness.pgstac status
    python -m tests.harness.pgstac down [--keep]     # stop (and remove the cluster)

The CLI keeps its state in ``data/pgstac-peer/`` (override with ``--state DIR``). Tests use
``PgstacPeer`` directly through the session fixture in ``tests/pgstac_fixtures.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .postgres import (
    PG_PASSWORD,
    PG_SUPERUSER,
    HarnessError,
    PostgresCluster,
    free_port,
    pg_major,
    port_open,
    tail,
)

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = Path(__file__).with_name("requirements-pgstac.txt")
DEFAULT_VENV = ROOT / ".venv-pgstac"
DEFAULT_STATE = ROOT / "data" / "pgstac-peer"
PG_DATABASE = "pgstac"
# Properties registered as pgstac queryables with a wrapper, so that sortby and comparisons
# treat them as numbers (unregistered properties compare as JSON / text).
NUMERIC_QUERYABLES: dict[str, dict[str, Any]] = {
    "eo:cloud_cover": {
        "title": "Cloud cover",
        "description": "Estimated cloud cover, percent",
        "type": "number",
        "minimum": 0,
        "maximum": 100,
    },
}
STRUCTURAL_RELS = {"self", "root", "parent", "collection", "items", "item", "child"}


# --------------------------------------------------------------------------------------
# Installation: PostGIS from Debian, the peer virtualenv from PyPI.


def postgis_installed(major: str) -> bool:
    """Whether the PostGIS extension is installed for PostgreSQL ``major``."""
    return Path(f"/usr/share/postgresql/{major}/extension/postgis.control").exists()


def ensure_postgis(major: str, log: Path) -> None:
    """Install ``postgresql-<major>-postgis-3`` with apt-get when PostGIS is missing.

    Raises:
        HarnessError: PostGIS is missing and cannot be installed (not root, apt failed).
    """
    if postgis_installed(major):
        return
    package = f"postgresql-{major}-postgis-3"
    if os.geteuid() != 0:
        raise HarnessError(
            f"PostGIS for PostgreSQL {major} is missing and installing it needs root: "
            f"run `sudo apt-get install {package}` (or `make apt-test` as root)"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with log.open("ab") as out:
        for command in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", package],
        ):
            result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env)
            if result.returncode != 0:
                raise HarnessError(
                    f"`{' '.join(command)}` failed ({result.returncode}); see {log}\n{tail(log)}"
                )
    if not postgis_installed(major):
        raise HarnessError(f"{package} installed but postgis.control is still missing")


def _path_digest(path: Path) -> str:
    return hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]


def _requirements_digest() -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()


def venv_is_ready(venv: Path) -> bool:
    """Whether ``venv`` exists and was installed from the current requirements file."""
    stamp = venv / "terratiler-requirements.sha256"
    return (
        (venv / "bin" / "uvicorn").exists()
        and (venv / "bin" / "pypgstac").exists()
        and stamp.exists()
        and stamp.read_text().strip() == _requirements_digest()
    )


def ensure_venv(venv: Path, log: Path) -> None:
    """Create or update the peer virtualenv from ``requirements-pgstac.txt`` when stale.

    Raises:
        HarnessError: the virtualenv cannot be created or the packages cannot be installed.
    """
    if venv_is_ready(venv):
        return
    lock = Path(tempfile.gettempdir()) / f"terratiler-venv-{_path_digest(venv)}.lock"
    with _file_lock(lock):
        if venv_is_ready(venv):  # another process finished it meanwhile
            return
        python = venv / "bin" / "python"
        steps = []
        if not python.exists():
            steps.append([sys.executable, "-m", "venv", str(venv)])
        steps.append([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
        steps.append([str(python), "-m", "pip", "install", "--quiet", "-r", str(REQUIREMENTS)])
        with log.open("ab") as out:
            for command in steps:
                result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT)
                if result.returncode != 0:
                    raise HarnessError(
                        f"creating the pgstac peer virtualenv failed: `{' '.join(command)}` "
                        f"exited {result.returncode}; see {log}\n{tail(log)}"
                    )
        (venv / "terratiler-requirements.sha256").write_text(_requirements_digest() + "\n")


# --------------------------------------------------------------------------------------
# Helpers.


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive; /proc tells (Linux).
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def _pid_is_peer_api(pid: int | None) -> bool:
    if not _pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return b"stac_fastapi.pgstac" in cmdline


def _absolute_href(href: str, base_dir: Path) -> str:
    """``href`` made absolute: relative paths against ``base_dir``; URLs are left alone."""
    if urlparse(href).scheme or os.path.isabs(href):
        return href
    # As LocalCatalog does (normpath, no symlink resolution), so both serve the same hrefs.
    return os.path.normpath(os.path.join(base_dir, href))


def _absolutize(obj: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """A copy of a STAC item/collection dict with absolute asset hrefs and no structural links.

    stac-fastapi-pgstac writes its own self/root/parent/collection links; other links and
    assets keep their targets, made absolute against the file's folder.
    """
    obj = json.loads(json.dumps(obj))
    for asset in (obj.get("assets") or {}).values():
        if "href" in asset:
            asset["href"] = _absolute_href(asset["href"], base_dir)
    links = []
    for link in obj.get("links") or []:
        if link.get("rel") in STRUCTURAL_RELS:
            continue
        links.append({**link, "href": _absolute_href(link["href"], base_dir)})
    obj["links"] = links
    return obj


def read_catalog_dir(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The collections and items of a demo-style folder, ready to load into pgstac.

    Reads ``collection.json`` and ``collections/*.json`` (collections), ``items/*.json``,
    ``items/*.geojson`` and ``*.ndjson`` / ``items/*.ndjson`` (items, one per line).

    Raises:
        HarnessError: the folder holds no items.
    """
    path = path.resolve()
    collections: list[dict[str, Any]] = []
    items: list[dict[str, Any]] = []
    for file in [path / "collection.json", *sorted(path.glob("collections/*.json"))]:
        if file.is_file():
            collections.append(_absolutize(json.loads(file.read_text()), file.parent))
    item_files = sorted(path.glob("items/*.json")) + sorted(path.glob("items/*.geojson"))
    for file in item_files:
        data = json.loads(file.read_text())
        is_collection = data.get("type") == "FeatureCollection"
        features = data.get("features", []) if is_collection else [data]
        items.extend(_absolutize(feature, file.parent) for feature in features)
    for file in sorted(path.glob("*.ndjson")) + sorted(path.glob("items/*.ndjson")):
        for line in file.read_text().splitlines():
            if line.strip():
                items.append(_absolutize(json.loads(line), file.parent))
    if not items:
        raise HarnessError(f"no STAC items found in {path} (expected items/*.json)")
    if len(collections) == 1:  # as LocalCatalog: items without one get the folder's
        for item in items:
            item.setdefault("collection", collections[0]["id"])
    return collections, items


# --------------------------------------------------------------------------------------
# The peer.


@dataclass
class PgstacPeer:
    """One pgstac STAC API peer: a private PostgreSQL cluster and a stac-fastapi-pgstac server.

    Attributes:
        workdir: the folder for logs, load files, state and the API's clean cwd.
        venv: the peer virtualenv.
        postgres: its PostgreSQL cluster (``cluster_dir`` and ``pg_port`` of a saved state
            are those of a cluster started before).
        api_port: the STAC API's loopback port.
        api_pid: the uvicorn process id.
        timings: seconds spent per start/load step, for reports.
    """

    workdir: Path
    venv: Path = DEFAULT_VENV
    postgres: PostgresCluster = field(init=False)
    cluster_dir: InitVar[Path | None] = None
    pg_port: InitVar[int | None] = None
    api_port: int | None = None
    api_pid: int | None = None
    timings: dict[str, float] = field(default_factory=dict)
    _api_process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def __post_init__(self, cluster_dir: Path | None, pg_port: int | None) -> None:
        self.postgres = PostgresCluster(self.workdir, cluster_dir=cluster_dir, port=pg_port)

    # -- state -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The STAC API root URL (no trailing slash)."""
        if not self.api_port:
            raise HarnessError("the pgstac peer is not started")
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def dsn(self) -> str:
        """A libpq DSN of the pgstac database."""
        port = self.postgres.port
        return f"postgresql://{PG_SUPERUSER}:{PG_PASSWORD}@127.0.0.1:{port}/{PG_DATABASE}"

    @property
    def state_file(self) -> Path:
        """Where the CLI keeps this peer's ports, pids and folders."""
        return self.workdir / "state.json"

    def save(self) -> None:
        """Write the state file."""
        state = {
            "workdir": str(self.workdir),
            "venv": str(self.venv),
            "cluster_dir": str(self.postgres.cluster_dir) if self.postgres.cluster_dir else None,
            "pg_port": self.postgres.port,
            "api_port": self.api_port,
            "api_pid": self.api_pid,
            "timings": self.timings,
        }
        self.state_file.write_text(json.dumps(state, indent=2) + "\n")

    @classmethod
    def from_state(cls, workdir: Path, venv: Path = DEFAULT_VENV) -> PgstacPeer:
        """The peer recorded in ``workdir/state.json`` (a fresh one when there is none)."""
        workdir = workdir.resolve()
        path = workdir / "state.json"
        if not path.exists():
            return cls(workdir=workdir, venv=venv)
        state = json.loads(path.read_text())
        return cls(
            workdir=workdir,
            venv=Path(state.get("venv") or venv),
            cluster_dir=Path(state["cluster_dir"]) if state.get("cluster_dir") else None,
            pg_port=state.get("pg_port"),
            api_port=state.get("api_port"),
            api_pid=state.get("api_pid"),
            timings=state.get("timings") or {},
        )

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> str:
        """Install what is missing and start PostgreSQL and the API; idempotent.

        Returns:
            The STAC API URL.

        Raises:
            HarnessError: something could not be installed or started (the message says what).
        """
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)
        started = time.monotonic()
        major = pg_major()
        self._timed("install_postgis", lambda: ensure_postgis(major, self._log("apt")))
        self._timed("install_venv", lambda: ensure_venv(self.venv, self._log("pip")))
        self._timed("postgres", self._start_postgres)
        self._timed("migrate", self._migrate)
        self._timed("api", self._start_api)
        self.timings["start_total"] = round(time.monotonic() - started, 2)
        self.save()
        return self.url

    def stop(self, remove: bool = True) -> None:
        """Stop the API and PostgreSQL; remove the cluster folder unless ``remove`` is False."""
        self._stop_api()
        self.postgres.stop(remove=remove)
        if self.workdir.exists():
            self.save()

    def is_running(self) -> bool:
        """Whether the API answers its landing page."""
        if not self.api_port or not port_open(self.api_port):
            return False
        try:
            with urllib.request.urlopen(self.url + "/", timeout=5) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    # -- loading ---------------------------------------------------------------------

    def load(self, path: Path) -> tuple[int, int]:
        """Load the collections and items of a demo-style folder (upsert).

        Args:
            path: a folder with ``collection.json`` and ``items/*.json`` (relative hrefs are
                made absolute against the file that holds them).

        Returns:
            (number of collections, number of items) loaded.

        Raises:
            HarnessError: the folder holds no items or pypgstac failed.
        """
        started = time.monotonic()
        collections, items = read_catalog_dir(Path(path))
        if not collections:
            collections = [_collection_for(items)]
        load_dir = self.workdir / "load"
        load_dir.mkdir(parents=True, exist_ok=True)
        collections_file = load_dir / "collections.ndjson"
        items_file = load_dir / "items.ndjson"
        collections_file.write_text("".join(json.dumps(c) + "\n" for c in collections))
        items_file.write_text("".join(json.dumps(i) + "\n" for i in items))
        pypgstac = str(self.venv / "bin" / "pypgstac")
        for table, file in (("collections", collections_file), ("items", items_file)):
            self._run_logged(
                [pypgstac, "load", table, str(file), "--dsn", self.dsn, "--method", "upsert"],
                self._log("pypgstac"),
                f"pypgstac load {table}",
            )
        self.timings["load"] = round(time.monotonic() - started, 2)
        self.save()
        return len(collections), len(items)

    # -- internals -------------------------------------------------------------------

    def _timed(self, name: str, step: Any) -> None:
        started = time.monotonic()
        step()
        self.timings[name] = round(time.monotonic() - started, 2)

    def _log(self, name: str) -> Path:
        return self.workdir / "logs" / f"{name}.log"

    def _psql(self, sql: str, database: str = PG_DATABASE) -> str:
        return self.postgres.psql(sql, database)

    def _run_logged(self, command: list[str], log: Path, what: str) -> None:
        with log.open("ab") as out:
            out.write(f"\n$ {' '.join(command)}\n".encode())
            out.flush()
            result = subprocess.run(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                env=self._clean_env(),
            )
        if result.returncode != 0:
            raise HarnessError(f"{what} failed ({result.returncode}); see {log}\n{tail(log)}")

    def _clean_env(self) -> dict[str, str]:
        """The peer's environment: nothing of ours (TERRATILER_*, a caller's PG*) leaks in."""
        keep = ("PATH", "LANG", "LC_ALL", "TMPDIR", "HOME", "SSL_CERT_FILE")
        env = {key: os.environ[key] for key in keep if key in os.environ}
        env.update(
            {
                "PGUSER": PG_SUPERUSER,
                "PGPASSWORD": PG_PASSWORD,
                "PGHOST": "127.0.0.1",
                "PGPORT": str(self.postgres.port),
                "PGDATABASE": PG_DATABASE,
            }
        )
        return env

    def _start_postgres(self) -> None:
        self.postgres.start()
        self.save()
        self.postgres.ensure_database(PG_DATABASE)

    def _migrate(self) -> None:
        self._psql("CREATE EXTENSION IF NOT EXISTS postgis")
        self._run_logged(
            [str(self.venv / "bin" / "pypgstac"), "migrate", "--dsn", self.dsn],
            self._log("pypgstac"),
            "pypgstac migrate",
        )
        statements = ["SET search_path TO pgstac, public", "BEGIN"]
        for name, definition in NUMERIC_QUERYABLES.items():
            statements.append(f"DELETE FROM queryables WHERE name = '{name}'")
            statements.append(
                "INSERT INTO queryables (name, definition, property_wrapper, "
                f"property_index_type) VALUES ('{name}', '{json.dumps(definition)}'::jsonb, "
                "'to_float', 'BTREE')"
            )
        statements.append(
            "INSERT INTO pgstac_settings (name, value) VALUES ('context', 'on') "
            "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value"
        )
        statements.append("COMMIT")
        self._psql(";\n".join(statements))

    def _start_api(self) -> None:
        if _pid_is_peer_api(self.api_pid) and self.is_running():
            return
        self._stop_api()
        self.api_port = free_port()
        cwd = self.workdir / "api"  # an empty cwd: stac-fastapi reads a .env from its cwd
        cwd.mkdir(exist_ok=True)
        log = self._log("api")
        command = [str(self.venv / "bin" / "uvicorn"), "stac_fastapi.pgstac.app:create_app"]
        command += ["--factory", "--host", "127.0.0.1", "--port", str(self.api_port)]
        command += ["--log-level", "warning", "--no-access-log"]
        with log.open("ab") as out:
            self._api_process = subprocess.Popen(
                command,
                cwd=cwd,
                env=self._clean_env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        self.api_pid = self._api_process.pid
        self.save()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self._api_process.poll() is not None:
                raise HarnessError(
                    f"stac-fastapi-pgstac exited {self._api_process.returncode} on start; "
                    f"see {log}\n{tail(log)}"
                )
            if self._api_ready():
                return
            time.sleep(0.25)
        self._stop_api()
        raise HarnessError(f"stac-fastapi-pgstac did not answer within 90 s; see {log}")

    def _api_ready(self) -> bool:
        """Whether the API answers and reaches the database (``/collections`` is a 200)."""
        if not self.api_port or not port_open(self.api_port):
            return False
        try:
            with urllib.request.urlopen(self.url + "/collections", timeout=5) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _stop_api(self) -> None:
        process, self._api_process = self._api_process, None
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=15)
        elif _pid_is_peer_api(self.api_pid):
            assert self.api_pid is not None
            os.kill(self.api_pid, signal.SIGTERM)
            deadline = time.monotonic() + 15
            while _pid_alive(self.api_pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _pid_alive(self.api_pid):
                os.kill(self.api_pid, signal.SIGKILL)
        self.api_pid = None
        self.api_port = None


def _collection_for(items: list[dict[str, Any]]) -> dict[str, Any]:
    """A minimal collection for items that came without one."""
    ids = {item.get("collection") for item in items}
    if len(ids) != 1 or None in ids:
        raise HarnessError("items without collection.json must all name one collection")
    bboxes = [item["bbox"] for item in items if item.get("bbox")]
    bbox = [
        min(b[0] for b in bboxes),
        min(b[1] for b in bboxes),
        max(b[-2] for b in bboxes),
        max(b[-1] for b in bboxes),
    ]
    times = sorted(item["properties"].get("datetime") for item in items)
    return {
        "type": "Collection",
        "stac_version": "1.0.0",
        "id": ids.pop(),
        "description": "Loaded by the terratiler pgstac harness",
        "license": "other",
        "links": [],
        "extent": {
            "spatial": {"bbox": [bbox]},
            "temporal": {"interval": [[times[0], times[-1]]]},
        },
    }


# --------------------------------------------------------------------------------------
# Command line.


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.harness.pgstac up|load|url|status|down``."""
    parser = argparse.ArgumentParser(prog="python -m tests.harness.pgstac", description=__doc__)
    parser.add_argument("--state", type=Path, default=DEFAULT_STATE, help="state folder")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="peer virtualenv")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start the peer (idempotent) and print its URL")
    up.add_argument("--load", type=Path, help="a demo folder to load after starting")
    load = commands.add_parser("load", help="load a demo folder into the running peer")
    load.add_argument("path", type=Path)
    commands.add_parser("url", help="print the URL of the running peer")
    commands.add_parser("status", help="print the peer's state as JSON")
    down = commands.add_parser("down", help="stop the peer")
    down.add_argument("--keep", action="store_true", help="keep the cluster's data")
    args = parser.parse_args(argv)

    args.state.mkdir(parents=True, exist_ok=True)
    with _file_lock(args.state / "cli.lock"):
        peer = PgstacPeer.from_state(args.state, venv=args.venv.resolve())
        try:
            if args.command == "up":
                url = peer.start()
                if args.load:
                    peer.load(args.load)
                print(url)
            elif args.command == "load":
                if not peer.is_running():
                    peer.start()
                collections, items = peer.load(args.path)
                print(f"loaded {collections} collection(s), {items} item(s) into {peer.url}")
            elif args.command == "url":
                if not peer.is_running():
                    print("the pgstac peer is not running (start it with `up`)", file=sys.stderr)
                    return 1
                print(peer.url)
            elif args.command == "status":
                print(
                    json.dumps(
                        {**json.loads(peer.state_file.read_text()), "running": peer.is_running()}
                        if peer.state_file.exists()
                        else {"running": False},
                        indent=2,
                    )
                )
            elif args.command == "down":
                peer.stop(remove=not args.keep)
                print("stopped")
        except HarnessError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
