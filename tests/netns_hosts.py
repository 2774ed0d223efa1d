"""Several hosts on one machine, and terratiler deployed across them (Linux network namespaces).

Each host is a network namespace with one interface, ``eth0``, on a bridge that lives in a
namespace of its own (the switch): addresses in a private test range (10.213.x.0/24) exist
only inside the namespaces, nothing is added to the machine's own network, and no two hosts
share a loopback. ``Deployment`` runs the service across them as a cluster runs it:

- ``s3``: moto's S3 server, holding the inputs (the demo catalog and its COGs, under
  ``s3://data/demo``) and the batch outputs (``s3://results/jobs``);
- ``api``: PostgreSQL (the job store, read by the workers too) and the service (uvicorn,
  ``TERRATILER_CATALOG=s3://data/demo``);
- ``scheduler``: ``dask scheduler``; one host per worker: ``dask worker``;
- ``client``: where the harness uploads and downloads (boto3) and checks ports.

Each process has a folder of its own (HOME, Dask's local directory, the service's data dir):
job data moves only through S3 and PostgreSQL, over the bridge. The harness reaches the
service through a Unix socket forwarded inside the ``api`` namespace (a socket file is the
one thing namespaces do not separate; only the harness uses it).

Used by tests/test_deploy_netns.py and ``bench/batch.py --netns``. Needs root (``ip netns``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.postgres import _pg_owner, pg_bin, pg_major  # noqa: E402

PREFIX = "10.213"
S3_PORT = 5000
SCHEDULER_PORT = 8786
API_PORT = 8000
POSTGRES_PORT = 5432
DATA_BUCKET = "data"
RESULTS_BUCKET = "results"
CATALOG = f"s3://{DATA_BUCKET}/demo"
OUTPUTS = f"s3://{RESULTS_BUCKET}/jobs"
# moto accepts any credentials; every process gets these (and no others from the machine).
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}

# A Unix socket -> TCP forwarder, run inside a namespace (the harness's way in).
FORWARD = """
import asyncio, sys
path, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])

async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()

async def handle(reader, writer):
    try:
        upstream_reader, upstream_writer = await asyncio.open_connection(host, port)
    except OSError:
        writer.close()
        return
    await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

async def main():
    server = await asyncio.start_unix_server(handle, path)
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""

# Waits until host:port accepts a connection (run inside a namespace).
WAIT_PORT = """
import socket, sys, time
host, port, deadline = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
while True:
    try:
        socket.create_connection((host, port), timeout=2).close()
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit(f"{host}:{port} does not answer")
        time.sleep(0.2)
"""

# S3 through boto3 (run in the client namespace): put a folder, list or get a prefix.
S3_TOOL = """
import json, os, sys
import boto3
endpoint, command = sys.argv[1], sys.argv[2]
s3 = boto3.client("s3", endpoint_url=endpoint)
if command == "buckets":
    for bucket in sys.argv[3:]:
        s3.create_bucket(Bucket=bucket)
elif command == "put":
    folder, bucket, prefix = sys.argv[3:6]
    for base, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(base, name)
            key = prefix + "/" + os.path.relpath(path, folder)
            s3.upload_file(path, bucket, key)
elif command in ("list", "get"):
    bucket, prefix = sys.argv[3:5]
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [entry["Key"] for entry in page.get("Contents", [])]
    if command == "get":
        target = sys.argv[5]
        for key in keys:
            path = os.path.join(target, key)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            s3.download_file(bucket, key, path)
    print(json.dumps(keys))
"""


def netns_unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None when they can."""
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux's"
    if os.geteuid() != 0:
        return "creating network namespaces (ip netns add) needs root"
    if shutil.which("ip") is None:
        return "iproute2's `ip` command is not installed"
    probe = f"ttprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


@dataclass
class Host:
    """One network namespace with an address on the test network."""

    name: str
    namespace: str
    address: str
    home: Path
    procs: list[subprocess.Popen] = field(default_factory=list)

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def spawn(self, argv: list[str], env: dict[str, str], log_name: str) -> subprocess.Popen:
        """Start a long-running process here, in its own session, logging to its home."""
        log = open(self.home / f"{log_name}.log", "ab")  # noqa: SIM115 (the child holds it)
        proc = subprocess.Popen(
            self.command(argv),
            env=env,
            cwd=self.home,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def run(self, argv: list[str], env: dict[str, str] | None = None, timeout: float = 120) -> str:
        """Run ``argv`` here to completion; its stdout (RuntimeError with stderr on failure)."""
        result = subprocess.run(
            self.command(argv),
            env=env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{self.name}: {argv[:3]} failed:\n{result.stderr[-3000:]}")
        return result.stdout

    def pids(self) -> list[int]:
        """Every process in this namespace (all started by the harness)."""
        result = subprocess.run(
            ["ip", "netns", "pids", self.namespace], capture_output=True, text=True
        )
        return [int(pid) for pid in result.stdout.split()]

    def kill_processes(self) -> list[int]:
        """SIGKILL every process of this host, as if the machine died; the pids killed."""
        killed = self.pids()
        for pid in killed:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        return killed

    def log(self, log_name: str) -> str:
        """The end of a process's log."""
        path = self.home / f"{log_name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


class Network:
    """Hosts (namespaces) joined by a bridge in a switch namespace; removed by ``close``."""

    def __init__(self, names: list[str], workdir: Path):
        """Plan the hosts ``names`` (created by ``start`` or ``with``)."""
        tag = f"{os.getpid() % 100000}{secrets.token_hex(2)}"
        subnet = f"{PREFIX}.{secrets.randbelow(250) + 1}"
        self.switch = f"tt{tag}-switch"
        self.hosts: dict[str, Host] = {}
        for index, name in enumerate(names):
            home = workdir / name
            home.mkdir(parents=True, exist_ok=True)
            self.hosts[name] = Host(name, f"tt{tag}-{name}", f"{subnet}.{10 + index}", home)
        self._made: list[str] = []

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def start(self) -> Network:
        """Create the namespaces, the bridge and one veth pair per host."""
        try:
            _ip("netns", "add", self.switch)
            self._made.append(self.switch)
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")
            for index, host in enumerate(self.hosts.values()):
                _ip("netns", "add", host.namespace)
                self._made.append(host.namespace)
                port = f"port{index}"
                _ip(
                    "link", "add", "name", "eth0", "netns", host.namespace, "type", "veth",
                    "peer", "name", port, "netns", self.switch,
                )  # fmt: skip
                _ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
                _ip("-n", host.namespace, "link", "set", "lo", "up")
                _ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", "eth0")
                _ip("-n", host.namespace, "link", "set", "eth0", "up")
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Kill every process of every host and delete the namespaces (idempotent)."""
        for host in self.hosts.values():
            if host.namespace in self._made:
                host.kill_processes()
        for namespace in reversed(self._made):
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        self._made.clear()

    def __enter__(self) -> Network:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _python(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


class Deployment:
    """terratiler across hosts: S3 (moto), PostgreSQL + the API, a scheduler, workers.

    ``workers`` names the worker hosts (each runs one ``dask worker`` process with
    ``threads`` threads). ``settings`` are extra ``TERRATILER_*`` values of the service.
    """

    def __init__(
        self,
        network: Network,
        demo: Path,
        workers: list[str],
        threads: int = 1,
        settings: dict[str, str] | None = None,
    ):
        """Plan a deployment of the demo folder ``demo`` on ``network``'s hosts."""
        self.network = network
        self.demo = demo
        self.workers = workers
        self.threads = threads
        self.settings = dict(settings or {})
        self.socket = network["api"].home.parent / "api.sock"
        self._postgres: Path | None = None

    # ----------------------------------------------------------------- addresses

    @property
    def s3_endpoint(self) -> str:
        """The S3 server's URL, as every host reaches it."""
        return f"http://{self.network['s3'].address}:{S3_PORT}"

    @property
    def scheduler_address(self) -> str:
        """The Dask scheduler's address."""
        return f"tcp://{self.network['scheduler'].address}:{SCHEDULER_PORT}"

    @property
    def database_url(self) -> str:
        """The service database (PostgreSQL on the api host)."""
        return (
            f"postgresql+psycopg://postgres@{self.network['api'].address}:{POSTGRES_PORT}/postgres"
        )

    def env(self, host: Host, **extra: str) -> dict[str, str]:
        """A process's environment: nothing of the machine's but PATH; its own HOME."""
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(host.home),
            "TMPDIR": str(host.home),
            "PYTHONPATH": str(ROOT),
            "PYTHONDONTWRITEBYTECODE": "1",
            "DASK_TEMPORARY_DIRECTORY": str(host.home),
            **AWS_ENV,
            **extra,
        }

    # ----------------------------------------------------------------- pieces

    def wait_port(self, address: str, port: int, timeout: float = 60) -> None:
        """Wait until ``address:port`` answers, seen from the client host."""
        client = self.network["client"]
        client.run(_python(WAIT_PORT, address, str(port), str(timeout)), self.env(client))

    def s3(self, *args: str) -> str:
        """Run the S3 tool from the client host (``buckets``, ``put``, ``list``, ``get``)."""
        client = self.network["client"]
        return client.run(_python(S3_TOOL, self.s3_endpoint, *args), self.env(client))

    def s3_keys(self, bucket: str, prefix: str, download_to: Path | None = None) -> list[str]:
        """Keys under ``prefix`` (downloaded to ``download_to``/<key> when given)."""
        if download_to is None:
            return json.loads(self.s3("list", bucket, prefix))
        return json.loads(self.s3("get", bucket, prefix, str(download_to)))

    def start_s3(self) -> None:
        """moto's S3 server; the buckets; the demo uploaded to ``s3://data/demo``."""
        host = self.network["s3"]
        argv = [sys.executable, "-m", "moto.server", "-H", host.address, "-p", str(S3_PORT)]
        host.spawn(argv, self.env(host), "moto")
        self.wait_port(host.address, S3_PORT)
        self.s3("buckets", DATA_BUCKET, RESULTS_BUCKET)
        self.s3("put", str(self.demo), DATA_BUCKET, "demo")

    def start_postgres(self) -> None:
        """A throwaway PostgreSQL cluster listening on the api host's address only."""
        host = self.network["api"]
        owner = _pg_owner()
        folder = Path(tempfile.mkdtemp(prefix="terratiler-netns-pg-"))
        self._postgres = folder
        run_as: list[str] = []
        if owner is not None:
            os.chown(folder, owner.pw_uid, owner.pw_gid)
            run_as = ["runuser", "-u", owner.pw_name, "--"]
        major = pg_major()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": str(folder)}
        data = folder / "data"
        host.run(
            [*run_as, pg_bin(major, "initdb"), "-D", str(data), "-U", "postgres"]
            + ["-A", "trust", "-E", "UTF8", "--locale=C", "-N"],
            env,
        )
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '{host.address}'\nport = {POSTGRES_PORT}\n"
                f"unix_socket_directories = '{folder}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            )
        with (data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {host.address.rsplit('.', 1)[0]}.0/24 trust\n")
        host.run(
            [*run_as, pg_bin(major, "pg_ctl"), "-D", str(data), "-l", str(folder / "log")]
            + ["-w", "-t", "60", "start"],
            env,
        )

    def stop_postgres(self) -> None:
        """Stop the cluster and remove its folder."""
        if self._postgres is None:
            return
        host, owner = self.network["api"], _pg_owner()
        run_as = ["runuser", "-u", owner.pw_name, "--"] if owner is not None else []
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
        try:
            host.run(
                [*run_as, pg_bin(pg_major(), "pg_ctl"), "-D", str(self._postgres / "data")]
                + ["-m", "immediate", "-w", "-t", "30", "stop"],
                env,
            )
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
        shutil.rmtree(self._postgres, ignore_errors=True)
        self._postgres = None

    def start_scheduler(self) -> None:
        """``dask scheduler`` on the scheduler host."""
        host = self.network["scheduler"]
        dask = str(Path(sys.executable).with_name("dask"))
        argv = [dask, "scheduler", "--host", host.address, "--port", str(SCHEDULER_PORT)]
        host.spawn([*argv, "--no-dashboard"], self.env(host), "scheduler")
        self.wait_port(host.address, SCHEDULER_PORT)

    def start_worker(self, name: str) -> None:
        """``dask worker`` (a nanny and one worker process) on host ``name``."""
        host = self.network[name]
        dask = str(Path(sys.executable).with_name("dask"))
        argv = [dask, "worker", self.scheduler_address, "--host", host.address]
        argv += ["--nworkers", "1", "--nthreads", str(self.threads), "--no-dashboard"]
        argv += ["--memory-limit", "0", "--local-directory", str(host.home)]
        host.spawn(argv, self.env(host), "worker")

    def service_env(self) -> dict[str, str]:
        """The service's settings: everything remote, on the other hosts."""
        host = self.network["api"]
        return self.env(
            host,
            TERRATILER_CATALOG=CATALOG,
            TERRATILER_S3_ENDPOINT_URL=self.s3_endpoint,
            # moto wants signed requests (GDAL then signs with the credentials above).
            TERRATILER_AWS_NO_SIGN_REQUEST="false",
            TERRATILER_DATABASE_URL=self.database_url,
            TERRATILER_DASK_SCHEDULER=self.scheduler_address,
            TERRATILER_BATCH_OUTPUTS=OUTPUTS,
            TERRATILER_DATA_DIR=str(host.home / "data"),
            **self.settings,
        )

    def start_api(self) -> None:
        """The service (uvicorn) on the api host, and the harness's socket to it."""
        host = self.network["api"]
        serve = "from app.cli import main; import sys; sys.exit(main(sys.argv[1:]))"
        argv = _python(serve, "serve", "--host", host.address, "--port", str(API_PORT))
        host.spawn([*argv, "--log-level", "warning"], self.service_env(), "api")
        self.socket.unlink(missing_ok=True)
        host.spawn(
            _python(FORWARD, str(self.socket), host.address, str(API_PORT)),
            self.env(host),
            "forward",
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                with self.http() as http:
                    if http.get("/healthz").status_code == 200:
                        return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the service did not start:\n{host.log('api')}")
            time.sleep(0.3)

    def http(self, timeout: float = 60) -> httpx.Client:
        """An HTTP client of the service (through the harness's socket)."""
        transport = httpx.HTTPTransport(uds=str(self.socket))
        base = f"http://{self.network['api'].address}:{API_PORT}"
        return httpx.Client(transport=transport, base_url=base, timeout=timeout, trust_env=False)

    def wait_for_workers(self, count: int, timeout: float = 90) -> None:
        """Wait until ``count`` workers are connected (asked from the api host)."""
        code = (
            "import sys; from distributed import Client\n"
            "with Client(sys.argv[1], timeout=30, set_as_default=False) as c:\n"
            "    c.wait_for_workers(int(sys.argv[2]), timeout=float(sys.argv[3]))\n"
        )
        host = self.network["api"]
        host.run(_python(code, self.scheduler_address, str(count), str(timeout)), self.env(host))

    def start(self) -> Deployment:
        """Everything, in order; the workers connected and the service answering."""
        self.start_s3()
        self.start_postgres()
        self.start_scheduler()
        for name in self.workers:
            self.start_worker(name)
        self.wait_for_workers(len(self.workers))
        self.start_api()
        return self

    def close(self) -> None:
        """Stop PostgreSQL (the network's ``close`` kills the rest)."""
        self.stop_postgres()
        self.socket.unlink(missing_ok=True)


@contextmanager
def deployed(
    workdir: Path,
    demo: Path,
    workers: int = 2,
    threads: int = 1,
    settings: dict[str, str] | None = None,
) -> Iterator[Deployment]:
    """A network of ``s3, api, scheduler, worker1..N, client`` with terratiler deployed."""
    names = ["s3", "api", "scheduler", *[f"worker{i + 1}" for i in range(workers)], "client"]
    network = Network(names, workdir)
    deployment = Deployment(network, demo, names[3:-1], threads, settings)
    try:
        network.start()
        deployment.start()
        yield deployment
    finally:
        deployment.close()
        network.close()


def job_view(http: httpx.Client, path: str) -> dict[str, Any]:
    """GET a job's view (raising on an HTTP error)."""
    response = http.get(path)
    response.raise_for_status()
    return response.json()
