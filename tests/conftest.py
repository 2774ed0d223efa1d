"""Shared fixtures: small demo catalogs in tmp dirs, apps over them."""

from collections.abc import Iterator
from pathlib import Path

import pytest
import rio_tiler.reader
from fastapi.testclient import TestClient

from app.gdal_env import configure_gdal
from app.main import create_app
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
