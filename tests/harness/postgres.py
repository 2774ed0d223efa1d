"""A private PostgreSQL cluster for tests, from Debian's PostgreSQL server binaries.

``PostgresCluster`` runs initdb into its own folder (trust auth, fsync off) and starts
``postgres`` on a free loopback port with its unix socket in that folder, so it never
touches the machine's own server. The pgstac STAC API peer (``harness.pgstac``) runs its
database in one, and the ``postgres_url`` fixture (``tests/conftest.py``) starts one when
nothing answers on 127.0.0.1:5432, so the tests need no database running beforehand.

PostgreSQL refuses to run as root: as root, the cluster belongs to the ``postgres`` OS user
(created when missing), its programs run as that user, and it lives in a folder under the
system temp dir that user can reach (pytest's folders are often private to root).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PG_SUPERUSER = "postgres"
# stac-fastapi-pgstac requires PGPASSWORD even though the cluster trusts loopback.
PG_PASSWORD = "postgres"


class HarnessError(RuntimeError):
    """A harness part could not be installed, started or loaded; the message says why."""


def pg_major() -> str:
    """The PostgreSQL major version to use: ``$PG_MAJOR``, else the newest Debian runs.

    Raises:
        HarnessError: no PostgreSQL server binaries are installed.
    """
    if os.environ.get("PG_MAJOR"):
        return os.environ["PG_MAJOR"]
    installed = [
        path.parent.parent.name
        for path in Path("/usr/lib/postgresql").glob("*/bin/initdb")
        if path.parent.parent.name.isdigit()
    ]
    # The version Debian runs (/etc/postgresql/<major>, as the Makefile's apt-test reads
    # it), else any installed server.
    running = [p.name for p in Path("/etc/postgresql").glob("*") if p.name in installed]
    majors = running or installed
    if not majors:
        raise HarnessError(
            "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: "
            "install Debian's `postgresql` package (apt-get install postgresql)"
        )
    return max(majors, key=int)


def pg_bin(major: str, name: str) -> str:
    """The path of one PostgreSQL program of ``major``."""
    return str(Path("/usr/lib/postgresql") / major / "bin" / name)


def tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` of a log file ('' when it cannot be read)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _pg_owner() -> pwd.struct_passwd | None:
    """The OS user PostgreSQL runs as: ``postgres`` when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/bin/sh", "postgres"],
            check=True,
        )
        return pwd.getpwnam("postgres")


@dataclass
class PostgresCluster:
    """One private PostgreSQL cluster on loopback.

    Attributes:
        workdir: the caller's folder; the cluster lives in ``workdir/cluster`` unless we
            are root (then in a folder of the system temp dir, see the module docstring).
        cluster_dir: the cluster's folder (chosen on first start).
        port: its loopback port (chosen on each start).
    """

    workdir: Path
    cluster_dir: Path | None = None
    port: int | None = None

    @property
    def url(self) -> str:
        """The server's libpq URL as the superuser, no database (append ``/<name>``).

        No password: the cluster trusts loopback connections.
        """
        if not self.port:
            raise HarnessError("the PostgreSQL cluster is not started")
        return f"postgresql://{PG_SUPERUSER}@127.0.0.1:{self.port}"

    def start(self) -> None:
        """Create the cluster when missing and start it; idempotent.

        Raises:
            HarnessError: initdb or pg_ctl failed (the message holds their output and log).
        """
        major = pg_major()
        owner = _pg_owner()
        if self.cluster_dir is None or not (self.cluster_dir / "data" / "PG_VERSION").exists():
            if owner is not None:
                self.cluster_dir = Path(tempfile.mkdtemp(prefix="terratiler-pg-"))
                os.chown(self.cluster_dir, owner.pw_uid, owner.pw_gid)
            else:
                self.cluster_dir = self.workdir / "cluster"
                self.cluster_dir.mkdir(parents=True, exist_ok=True)
            self.run(
                [pg_bin(major, "initdb"), "-D", str(self.cluster_dir / "data")]
                + ["-U", PG_SUPERUSER, "-A", "trust", "-E", "UTF8", "--locale=C", "-N"]
            )
            conf = self.cluster_dir / "data" / "postgresql.conf"
            with conf.open("a") as handle:
                handle.write(
                    "\n# terratiler tests: a throwaway cluster\n"
                    "listen_addresses = '127.0.0.1'\n"
                    f"unix_socket_directories = '{self.cluster_dir}'\n"
                    "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                    "max_connections = 100\nshared_buffers = 128MB\n"
                )
        data = str(self.cluster_dir / "data")
        status = self.run([pg_bin(major, "pg_ctl"), "-D", data, "status"], check=False)
        if status.returncode == 0 and self.port and port_open(self.port):
            return
        if status.returncode == 0:  # running on a port we lost track of: restart cleanly
            self.run([pg_bin(major, "pg_ctl"), "-D", data, "-m", "fast", "-w", "stop"])
        self.port = free_port()
        self.run(
            [pg_bin(major, "pg_ctl"), "-D", data, "-l", str(self.cluster_dir / "postgres.log")]
            + ["-o", f"-p {self.port}", "-w", "-t", "60", "start"]
        )

    def stop(self, remove: bool = True) -> None:
        """Stop the cluster; remove its folder unless ``remove`` is False."""
        if self.cluster_dir and (self.cluster_dir / "data" / "PG_VERSION").exists():
            self.run(
                [pg_bin(pg_major(), "pg_ctl"), "-D", str(self.cluster_dir / "data")]
                + ["-m", "fast", "-w", "-t", "60", "stop"],
                check=False,
            )
        if remove and self.cluster_dir:
            shutil.rmtree(self.cluster_dir, ignore_errors=True)
            self.cluster_dir = None
            self.port = None

    def ensure_database(self, name: str) -> None:
        """Create database ``name`` unless it exists."""
        exists = self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'")
        if exists != "1":
            self.psql(f"CREATE DATABASE {name}")

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` in ``database`` through psql; return its unaligned output.

        Raises:
            HarnessError: psql failed (the message holds its stderr).
        """
        command = [pg_bin(pg_major(), "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]
        command += ["-h", "127.0.0.1", "-p", str(self.port), "-U", PG_SUPERUSER, "-d"]
        command += [database, "-c", sql]
        env = {**os.environ, "PGPASSWORD": PG_PASSWORD, "PGCONNECT_TIMEOUT": "10"}
        result = subprocess.run(
            command, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True
        )
        if result.returncode != 0:
            raise HarnessError(f"psql failed on {sql!r}:\n{result.stderr}")
        return result.stdout.strip()

    def run(self, command: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL server program as the cluster's OS user.

        Raises:
            HarnessError: it exited non-zero and ``check`` is set.
        """
        owner = _pg_owner()
        assert self.cluster_dir is not None
        kwargs: dict[str, Any] = {}
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LC_ALL": "C",
            "LANG": "C",
            "HOME": str(self.cluster_dir),
        }
        if owner is not None:
            kwargs = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
        result = subprocess.run(
            command,
            cwd=self.cluster_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            **kwargs,
        )
        if check and result.returncode != 0:
            raise HarnessError(
                f"`{' '.join(command)}` exited {result.returncode}:\n{result.stdout}"
                f"{result.stderr}\n{tail(self.cluster_dir / 'postgres.log')}"
            )
        return result
