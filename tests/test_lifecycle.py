"""One lifecycle for the app's services, and no process-wide side effects at import.

- The lifespan of ``create_app`` builds every service (``app.services.Services``) at
  startup and closes them at shutdown; the Dask cluster still waits for the first job.
- Routers get the services through typed dependencies, so ``app.dependency_overrides``
  reaches every use (``/statistics``, ``/catalog``, the item endpoints, batch).
- Importing ``app`` sets no GDAL option and touches no library registry; creating the
  app does, before GDAL registers its drivers, so a skipped driver stays skipped.
"""

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from demo_reads import items
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.batch import worker
from app.dependencies import get_batch, get_catalog
from app.main import create_app
from app.services import Services
from app.settings import Settings

REPOSITORY = Path(__file__).parent.parent
GDAL_PREFIXES = ("GDAL_", "CPL_", "VSI_", "AWS_NO_SIGN_REQUEST")


def _fresh_python(script: str, *args: str) -> Any:
    """Run ``script`` in a new interpreter without this process's GDAL options."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(GDAL_PREFIXES)}
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=REPOSITORY,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------- startup, shutdown


def test_services_are_built_at_startup_and_closed_at_shutdown(
    demo_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = demo_settings.model_copy(update={"data_dir": tmp_path})
    closed: list[Services] = []
    close = Services.close

    def recording_close(self: Services) -> None:
        closed.append(self)
        close(self)

    monkeypatch.setattr(Services, "close", recording_close)
    app = create_app(settings)
    assert app.state.services is None  # nothing built before the app starts

    with TestClient(app) as client:
        services = app.state.services
        assert isinstance(services, Services)
        assert services.item_cache.catalog is services.catalog
        assert services.mosaics.catalog is services.catalog
        assert services.batch.catalog is services.catalog
        assert services.batch.store.engine is services.db_engine
        assert services.mosaics.store.engine is services.db_engine
        assert client.get("/catalog").status_code == 200
        # The batch service is up (its supervisor runs) but starts Dask with its first job.
        assert client.get("/batch/statistics").status_code == 200
        assert not services.batch.executor.connected
        pool = services.db_engine.pool

    assert closed == [services]
    assert app.state.services is None
    assert services.db_engine.pool is not pool  # disposed: a fresh, empty pool
    supervisor = services.batch._supervisor
    assert supervisor is not None and not supervisor.is_alive()

    # A second start of the same app builds its services again.
    with TestClient(app) as client:
        assert app.state.services is not None and app.state.services is not services
        assert client.get("/catalog").status_code == 200
    assert closed[-1] is not services and app.state.services is None


def test_a_request_before_startup_names_the_lifespan(demo_settings: Settings) -> None:
    app = create_app(demo_settings)
    client = TestClient(app)  # no `with`: the lifespan does not run
    assert client.get("/healthz").status_code == 200
    response = client.get("/catalog")
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error: RuntimeError"}


# ------------------------------------------------------------------- dependency overrides


class RecordingCatalog:
    """The demo catalog, recording the methods called on it."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.inner, name)
        if not callable(value):
            return value

        def recorded(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return value(*args, **kwargs)

        return recorded


@pytest.fixture(scope="module")
def started(demo_settings: Settings) -> Iterator[TestClient]:
    """One started app for the override tests; each test sets and clears its overrides."""
    with TestClient(create_app(demo_settings)) as test_client:
        yield test_client


@pytest.fixture
def overrides(started: TestClient) -> Iterator[dict]:
    """The started app's ``dependency_overrides``, cleared after the test."""
    app: FastAPI = started.app  # type: ignore[assignment]
    yield app.dependency_overrides
    app.dependency_overrides.clear()


@pytest.fixture
def recording(started: TestClient, overrides: dict) -> RecordingCatalog:
    """The app's catalog, recording its calls, swapped in by ``get_catalog``."""
    catalog = RecordingCatalog(started.app.state.services.catalog)  # type: ignore[attr-defined]
    overrides[get_catalog] = lambda: catalog
    return catalog


def _statistics_body(item: dict) -> dict:
    """One day of NDVI over a small box in the middle of ``item``."""
    west, south, east, north = item["bbox"]
    x, y = (west + east) / 2, (south + north) / 2
    day = date.fromisoformat(item["properties"]["datetime"][:10])
    return {
        "input": {
            "bounds": {"bbox": [x - 0.002, y - 0.002, x + 0.002, y + 0.002]},
            "data": [{"type": "sentinel-2-l2a"}],
        },
        "aggregation": {
            "timeRange": {"from": f"{day}T00:00:00Z", "to": f"{day + timedelta(1)}T00:00:00Z"},
            "aggregationInterval": {"of": "P1D"},
            "outputs": {"ndvi": {"expression": "(nir-red)/(nir+red)"}},
        },
    }


def test_a_catalog_override_reaches_statistics(started, recording, demo_dir) -> None:
    item = items(demo_dir)[0]
    response = started.post("/statistics", json=_statistics_body(item))
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "OK"
    assert len(response.json()["data"]) == 1
    assert "search" in recording.calls


def test_a_catalog_override_reaches_the_stac_api(started, recording, demo_dir) -> None:
    item = items(demo_dir)[0]
    got = started.get(f"/catalog/collections/{item['collection']}/items/{item['id']}")
    assert got.status_code == 200, got.text
    assert started.get("/catalog/search", params={"limit": 1}).status_code == 200
    assert {"get_item", "search_page"} <= set(recording.calls)


def test_a_catalog_override_reaches_the_item_endpoints(
    started, overrides, recording, demo_dir
) -> None:
    # Once the app's item cache holds the item, an override is still the one asked.
    item = items(demo_dir)[1]
    path = f"/collections/{item['collection']}/items/{item['id']}"
    del overrides[get_catalog]
    assert started.get(f"{path}/info", params={"assets": "red"}).status_code == 200
    assert recording.calls == []
    overrides[get_catalog] = lambda: recording
    response = started.get(f"{path}/info", params={"assets": "red"})
    assert response.status_code == 200, response.text
    assert recording.calls == ["get_item"]


def test_a_batch_override_reaches_the_batch_endpoints(started, overrides) -> None:
    listing = {"jobs": [], "numberMatched": 0, "links": []}
    overrides[get_batch] = lambda: SimpleNamespace(list=lambda **query: listing)
    assert started.get("/batch/statistics").json() == listing


# ------------------------------------------------------------------ process-wide state


def test_importing_the_package_sets_no_process_wide_state() -> None:
    result = _fresh_python(
        "import json, os\n"
        "from rio_tiler.profiles import PNGProfile, img_profiles\n"
        "import app, app.main, app.services, app.batch.worker\n"
        "from app.gdal_env import gdal_options\n"
        "from app.settings import Settings\n"
        "gdal = sorted(set(gdal_options(Settings())) & set(os.environ))\n"
        "png = dict(img_profiles.get('png')) == dict(PNGProfile())\n"
        "print(json.dumps({'gdal': gdal, 'png_untouched': png}))\n"
    )
    assert result == {"gdal": [], "png_untouched": True}


@pytest.mark.parametrize("creates_app", [True, False])
def test_a_process_that_creates_the_app_skips_the_indirection_drivers(
    tmp_path: Path, creates_app: bool
) -> None:
    # GDAL_SKIP counts when GDAL registers its drivers: rasterio's first Env, pyogrio's
    # import. create_app must set it before either, in a process that imported app.main
    # (as uvicorn does). Without create_app (the control) the drivers are there.
    script = (
        "import json, sys\n"
        "from app.main import create_app\n"
        "from app.settings import Settings\n"
        "if sys.argv[1] == 'yes':\n"
        "    create_app(Settings(catalog=sys.argv[2], data_dir=sys.argv[3]))\n"
        "import rasterio, pyogrio\n"
        "with rasterio.Env() as env:\n"
        "    raster = env.drivers()\n"
        "vector = pyogrio.list_drivers()\n"
        "print(json.dumps({'WMS': 'WMS' in raster, 'CSV': 'CSV' in vector,\n"
        "                  'OGR_VRT': 'OGR_VRT' in vector, 'GTiff': 'GTiff' in raster}))\n"
    )
    flag = "yes" if creates_app else "no"
    result = _fresh_python(script, flag, str(tmp_path), str(tmp_path / "data"))
    registered = not creates_app
    assert result == {"WMS": registered, "CSV": registered, "OGR_VRT": registered, "GTiff": True}


def test_a_batch_worker_configures_gdal_before_it_reads_its_unit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A remote `dask worker` has none of the service's environment: the first unit it runs
    # sets GDAL's, before anything of the unit is read.
    environ: dict[str, str] = {}
    monkeypatch.setattr(os, "environ", environ)
    monkeypatch.setattr(worker, "_configured", False)
    settings = Settings(catalog=str(tmp_path), data_dir=tmp_path, gdal_skip_drivers=["WMS"])
    task = worker.UnitTask(
        job_id="job",
        unit=0,
        generation=0,
        root=str(tmp_path / "no-such-job"),
        request={},
        settings=settings,
        open_catalog=lambda: pytest.fail("no catalog is needed to fail reading the unit"),
    )
    with pytest.raises(FileNotFoundError):  # the unit's features were never staged
        worker.run_unit(task)
    assert environ["GDAL_SKIP"] == "WMS"
    assert environ["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR"
