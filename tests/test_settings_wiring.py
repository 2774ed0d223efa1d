"""Every default lives in ``Settings``; engine configs are built from it (issue 13 item 2).

The environment reaches each engine config through pydantic-settings, a field set on
``Settings`` reaches the engine that uses it, and the defaults process-wide state starts
with (before ``create_app`` applies the settings) are the fields' defaults.
"""

import ast
from pathlib import Path

import pytest

from app import gdal_env
from app.batch.config import BatchConfig
from app.catalog.cache import ItemCache
from app.catalog.local import LocalCatalog
from app.catalog.query import search_from_get
from app.catalog.stacapi import StacApiCatalog
from app.datasets import DatasetPool
from app.db import engine_from_url
from app.errors import BadRequestError, TooLargeError
from app.input_limits import DEFAULT_LIMITS, InputLimits
from app.mosaic import MosaicConfig, MosaicService, SearchStore, reader_options_from_settings
from app.mosaic.index import IndexCache
from app.settings import Settings, default_settings
from app.stats.models import StatisticalRequest
from app.stats.plan import make_plan

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``TERRATILER_*`` variable: ``Settings()`` is the defaults."""
    import os

    for name in [name for name in os.environ if name.startswith("TERRATILER_")]:
        monkeypatch.delenv(name)


def test_settings_imports_no_app_module():
    tree = ast.parse((ROOT / "app" / "settings.py").read_text())
    imported = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported += [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    ]
    assert not [name for name in imported if name == "app" or name.startswith("app.")]


def test_default_settings_are_the_validated_defaults(no_environment):
    assert default_settings().model_dump() == Settings().model_dump()


def test_engine_defaults_are_the_settings_defaults(no_environment, demo_dir):
    settings = Settings()
    assert DEFAULT_LIMITS == InputLimits.from_settings(settings)
    pool = DatasetPool()
    assert (pool.max_idle, pool.remote_ttl) == (
        settings.dataset_pool_size,
        settings.dataset_pool_remote_ttl,
    )
    assert gdal_env.gdal_options(None) == gdal_env.gdal_options(settings)
    index = IndexCache()
    assert (index.ttl, index.max_items) == (
        settings.mosaic_index_ttl,
        settings.mosaic_index_max_items,
    )
    cache = ItemCache(LocalCatalog(demo_dir))
    assert (cache._items.ttl, cache._items.maxsize) == (
        settings.item_cache_ttl,
        settings.item_cache_size,
    )
    catalog = StacApiCatalog("https://stac.example.com")
    assert catalog.timeout == settings.stac_timeout
    assert search_from_get({}).limit == settings.default_search_limit
    over = search_from_get({"limit": str(settings.max_search_limit + 1)})
    assert over.limit == settings.max_search_limit


def test_environment_reaches_the_batch_config(monkeypatch, tmp_path):
    monkeypatch.setenv("TERRATILER_BATCH_WORKERS", "5")
    monkeypatch.setenv("TERRATILER_BATCH_LEASE_SECONDS", "12.5")
    monkeypatch.setenv("TERRATILER_DASK_SCHEDULER", "")
    monkeypatch.setenv("TERRATILER_DATA_DIR", str(tmp_path))
    config = BatchConfig.from_settings(Settings())
    assert config.batch_workers == 5
    assert config.batch_lease_seconds == 12.5
    assert config.dask_scheduler is None
    assert config.default_output == str(tmp_path / "batch")


def test_batch_config_has_every_batch_setting():
    batch_fields = {name for name in Settings.model_fields if name.startswith("batch_")}
    assert batch_fields <= set(BatchConfig.__dataclass_fields__)


def test_settings_reach_the_mosaic_config():
    settings = Settings(
        collection="other",
        mosaic_min_zoom=3,
        mosaic_time_limit=1.5,
        mosaic_index_wait=2.0,
        mosaic_threads=9,
        max_search_bytes=5000,
        max_search_metadata_bytes=700,
        max_filter_depth=4,
    )
    config = MosaicConfig.from_settings(settings)
    assert (config.default_collection, config.min_zoom, config.time_limit) == ("other", 3, 1.5)
    assert (config.index_wait, config.threads) == (2.0, 9)
    assert (config.max_search_bytes, config.max_metadata_bytes) == (5000, 700)
    assert config.input_limits.max_filter_depth == 4
    options = reader_options_from_settings(
        Settings(allow_private_sources=True, max_output_pixels=1000, max_tile_size=64)
    )
    assert (options["allow_private"], options["max_pixels"], options["max_tile_size"]) == (
        True,
        1000,
        64,
    )


def test_search_metadata_is_bounded_by_its_setting(demo_dir, tmp_path):
    def service(**fields) -> MosaicService:
        settings = Settings(catalog=str(demo_dir), data_dir=tmp_path, **fields)
        store = SearchStore(engine_from_url(f"sqlite:///{tmp_path / 'searches.db'}"))
        return MosaicService(
            LocalCatalog(str(demo_dir)), store, MosaicConfig.from_settings(settings)
        )

    metadata = {"description": "x" * 20_000}
    with pytest.raises(BadRequestError, match=r"^metadata: larger than 16384 bytes$"):
        service().register({"collections": ["sentinel-2-l2a"]}, metadata)
    record, _ = service(max_search_metadata_bytes=30_000).register(
        {"collections": ["sentinel-2-l2a"]}, metadata
    )
    assert record.metadata == metadata


def test_settings_reach_the_statistics_plan():
    request = StatisticalRequest.model_validate(
        {
            "input": {
                "bounds": {"bbox": [0, 0, 1, 1]},
                "data": [{"type": "sentinel-2-l2a"}],
            },
            "aggregation": {
                "timeRange": {"from": "2023-04-01T00:00:00Z", "to": "2023-04-03T00:00:00Z"},
                "aggregationInterval": {"of": "P1D"},
                "outputs": {"a": {"expression": "red"}, "b": {"expression": "nir"}},
            },
        }
    )
    assert len(make_plan(request, Settings()).outputs) == 2
    with pytest.raises(BadRequestError, match="stats_max_outputs=1"):
        make_plan(request, Settings(stats_max_outputs=1))
    with pytest.raises(BadRequestError, match="stats_max_intervals=1"):
        make_plan(request, Settings(stats_max_intervals=1))
    with pytest.raises(TooLargeError, match="max_expression_outputs=0"):
        make_plan(request, Settings(max_expression_outputs=0))
