"""Shared fixtures: small demo catalogs in tmp dirs, apps over them, a PostgreSQL database."""

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import rio_tiler.reader
from distributed import LocalCluster
from fastapi.testclient import TestClient
from harness.postgres import HarnessError, PostgresCluster
from sqlalchemy import Engine

from app.batch import BatchService
from app.db import engine_from_settings, ensure_tables
from app.gdal_env import configure_gdal
from app.main import create_app
from app.mosaic.store import searches_table
from app.services import catalog_factory
from app.settings import Settings

FIXTURES = Path(__file__).parent / "fixtures"

# The test process is a service process: GDAL's options are set at its start, as the
# service sets them (create_app), before the session's demo catalog opens a dataset and
# GDAL registers its drivers (GDAL_SKIP counts then only). Importing `app` sets nothing.
configure_gdal(Settings())


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small demo catalog (6 dates, 256 px = 2.56 km), generated once per session."""
    from app.demo import generate_demo

    path = tmp_path_factory.mktemp("demo")
    generate_demo(path, scenes=6, size=256, seed=1)
    return path


@pytest.fixture(scope="session")
def demo_settings(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings of a service over the small demo catalog."""
    return Settings(catalog=str(demo_dir), data_dir=tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def client(demo_settings: Settings) -> Iterator[TestClient]:
    """A TestClient of the service over the small demo catalog.

    Session-scoped: FastAPI builds each route's dependency graph on a new app's first
    requests (seconds for this many routes), and these tests only read.
    """
    with TestClient(create_app(demo_settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def settings(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings over the demo catalog with a data folder, so a database, of the module's own."""
    return Settings(catalog=str(demo_dir), data_dir=tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def module_client(settings: Settings) -> Iterator[TestClient]:
    """A TestClient of the service over ``settings``, shared by the tests of one module.

    A new app costs seconds (creating it, and FastAPI building each route's dependency graph
    on its first requests): one per module, not one per test.
    """
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def searches_engine(settings: Settings) -> Iterator[Engine]:
    """An engine on the database of ``settings`` (the one ``module_client``'s app uses)."""
    engine = engine_from_settings(settings)
    yield engine
    engine.dispose()


@pytest.fixture
def searches_client(module_client: TestClient, searches_engine: Engine) -> TestClient:
    """``module_client`` with no search registered: each test starts from an empty database.

    As with an app of its own: registered searches live in the database; what the app keeps
    in memory (records, footprint indexes) is keyed by search id, and registering a search
    refreshes it.
    """
    ensure_tables(searches_engine, [searches_table])
    with searches_engine.begin() as conn:
        conn.execute(searches_table.delete())
    return module_client


@pytest.fixture
def paddings(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The ``padding`` of every rio-tiler ``part`` read during a test."""
    seen: list[int] = []
    original = rio_tiler.reader.part

    def spying(*args, **kwargs):
        seen.append(kwargs.get("padding") or 0)
        return original(*args, **kwargs)

    monkeypatch.setattr(rio_tiler.reader, "part", spying)
    return seen


class Listener:
    """A loopback TCP socket that must never see a connection (requests refused before any)."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(8)

    @property
    def port(self) -> int:
        """The port it listens on."""
        return self.socket.getsockname()[1]

    def assert_no_connection(self, within: float = 0.3) -> None:
        """Fail when a connection arrived or arrives ``within`` seconds (a late one)."""
        self.socket.settimeout(within)
        with pytest.raises(TimeoutError):
            connection, _ = self.socket.accept()
            connection.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    """A loopback socket that must never see a connection."""
    server = Listener()
    try:
        yield server
    finally:
        server.socket.close()


# The machine's PostgreSQL, when it runs (CI's service, a developer's server): trusted
# loopback connections as ``postgres``.
LOOPBACK_POSTGRES = "postgresql://postgres@127.0.0.1:5432"
# Set to 1 to use a private cluster even when the server above answers (tests the fallback).
PRIVATE_POSTGRES_ENV = "TERRATILER_TEST_PRIVATE_PG"


def _answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=5):
            return True
    except psycopg.OperationalError:
        return False


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL server the tests may create databases on, as a URL without a database.

    The one on 127.0.0.1:5432 when it lets ``postgres`` in; else (or when
    ``TERRATILER_TEST_PRIVATE_PG=1``) a private cluster started for the session, as the
    pgstac peer starts its own (``harness.postgres``), so that ``make test`` passes on a
    machine with no database running. A cluster that cannot start FAILS the tests that need
    it, with the reason: ``make test`` installs what it needs, so that is a bug, not a skip.
    """
    if os.environ.get(PRIVATE_POSTGRES_ENV) != "1" and _answers(f"{LOOPBACK_POSTGRES}/postgres"):
        yield LOOPBACK_POSTGRES
        return
    cluster = PostgresCluster(workdir=tmp_path_factory.mktemp("postgres"))
    failure: str | None = None
    try:
        cluster.start()
    except HarnessError as error:
        failure = str(error)
    if failure is not None:
        cluster.stop()
        pytest.fail(f"no PostgreSQL on 127.0.0.1:5432 and no private cluster: {failure}")
    try:
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A throwaway PostgreSQL database (a SQLAlchemy psycopg URL), dropped afterwards."""
    name = f"terratiler_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{postgres_server}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{postgres_server.replace('postgresql://', 'postgresql+psycopg://')}/{name}"
    finally:
        with psycopg.connect(f"{postgres_server}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ------------------------------------------------------------------------- batch jobs


@pytest.fixture(scope="module")
def aws_env() -> Iterator[None]:
    """Credentials for moto, set before the Dask workers start (they inherit them)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        patch.delenv("AWS_PROFILE", raising=False)
        yield


@pytest.fixture(scope="module")
def cluster(aws_env: None) -> Iterator[LocalCluster]:
    """A real Dask LocalCluster: 2 worker processes, 1 thread each."""
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0"
    ) as local:
        yield local


@pytest.fixture(scope="module")
def make_settings(demo: Path, cluster: LocalCluster, folder: Path) -> Callable[..., Settings]:
    """Settings of a processing-jobs module: its ``demo`` catalog and ``folder``, the
    module's cluster, a job database in the folder, a 3 s lease (modules with other needs
    define their own)."""

    def build(**options: Any) -> Settings:
        return Settings(
            catalog=str(demo),
            data_dir=folder / "data",
            dask_scheduler=cluster.scheduler_address,
            allowed_sources=[str(demo), str(folder)],
            database_url=f"sqlite:///{folder / 'jobs.db'}",
            **{"batch_lease_seconds": 3.0, **options},
        )

    return build


@pytest.fixture(scope="module")
def service(make_settings: Callable[..., Settings]) -> Iterator[BatchService]:
    """A batch service on ``make_settings()``, closed at the end of the module."""
    settings = make_settings()
    batch = BatchService(settings, catalog_factory(settings))
    yield batch
    batch.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium through Selenium (``make apt-test`` installs both), 1400x900,
    the page's console kept (``browser.get_log("browser")``)."""
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,900"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(shutil.which("chromedriver") or "/usr/bin/chromedriver")
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()
