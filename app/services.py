"""Application wiring: the service's parts, built from ``Settings`` in one place.

Two kinds of state, each set up in one place:

- **process-wide** (``configure_process``): GDAL's environment, the dataset pool, PNG
  encoding, redirect handling. Module-level state of the libraries, set explicitly by
  whoever starts the process (``create_app``; the batch CLI; a Dask worker sets GDAL's
  own in ``app.batch.worker``), never by importing a module.
- **per app** (``Services``): catalog, item cache, database engine, mosaic service, batch
  service. ``create_app``'s lifespan builds them at startup and closes them at shutdown;
  routers get them through ``app.dependencies`` (``get_catalog``, ``get_item_cache``,
  ``get_mosaics``, ``get_batch``), so ``app.dependency_overrides`` reaches every use.

The engine packages (``catalog``, ``stats``, ``batch``, ``mosaic``) never import this
module: they are handed what they need, e.g. the batch service gets ``catalog_factory``'s
picklable builder for its Dask workers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from sqlalchemy import Engine

from app import datasets, redirects, reprojection
from app.batch import BatchService
from app.catalog import Catalog
from app.catalog.cache import ItemCache
from app.catalog.layered import LayeredCatalog, layered_catalog
from app.db import database_url, engine_from_settings
from app.evalscript.v8 import configure_v8
from app.gdal_env import configure_gdal
from app.mosaic import MosaicConfig, MosaicService, SearchStore, reader_options_from_settings
from app.readers.stac import ignore_absent_statistics_warning
from app.rendering import configure_rendering
from app.settings import Settings

__all__ = [
    "Services",
    "base_catalog_factory",
    "catalog_factory",
    "catalog_from_settings",
    "configure_process",
]


def catalog_factory(settings: Settings) -> Callable[[], Catalog]:
    """How to build the service's catalog: its base plus the registered result collections.

    The base is what ``settings.catalog`` names (a STAC API URL or a folder,
    ``base_catalog_factory``); above it, the result collections of batch processing jobs
    registered in the service database (``app.catalog.layered.LayeredCatalog``).

    Args:
        settings: The service settings (``catalog``, the ``stac_*`` options, the database).

    Returns:
        A function of no arguments that builds the catalog: a ``functools.partial`` of
        an engine module's function, so it pickles by reference and a Dask worker can
        build its own catalog (reading the same registry) without importing the
        application.

    """
    return partial(
        layered_catalog,
        base_catalog_factory(settings),
        database_url(settings),
        settings.result_collections_refresh_seconds,
        _storage_options(settings),
    )


def _storage_options(settings: Settings) -> dict[str, Any]:
    """The storage options of s3:// result collections (another endpoint than AWS)."""
    if settings.s3_endpoint_url:
        return {"client_kwargs": {"endpoint_url": settings.s3_endpoint_url}}
    return {}


def base_catalog_factory(settings: Settings) -> Callable[[], Catalog]:
    """How to build the catalog ``settings.catalog`` names: a STAC API URL or a folder.

    The folder is local, or on ``s3://`` (``app.catalog.remote``).

    Args:
        settings: The service settings (``catalog`` and the ``stac_*`` options).

    Returns:
        A picklable function of no arguments that builds the catalog (a
        ``functools.partial`` of the backend class).

    """
    if settings.catalog_is_remote:
        from app.catalog.stacapi import StacApiCatalog

        return partial(
            StacApiCatalog,
            settings.catalog,
            timeout=settings.stac_timeout,
            retries=settings.stac_retries,
            backoff=settings.stac_backoff,
            deadline=settings.stac_request_deadline,
            max_concurrency=settings.stac_max_concurrency,
            queue_timeout=settings.stac_queue_timeout,
        )
    if settings.catalog_is_s3:
        from app.catalog.remote import bucket_catalog

        return partial(bucket_catalog, settings.catalog, _storage_options(settings))
    from app.catalog.local import LocalCatalog

    return partial(LocalCatalog, settings.catalog)


def catalog_from_settings(settings: Settings) -> Catalog:
    """The catalog backend ``settings.catalog`` names (see ``catalog_factory``)."""
    return catalog_factory(settings)()


def configure_process(settings: Settings) -> None:
    """Set the process-wide state of the libraries the service reads and renders with.

    Call it before the process opens its first dataset: ``GDAL_SKIP`` only counts when
    GDAL registers its drivers (rasterio's first ``Env``; pyogrio's import). Each call
    replaces the last one's values (a test process creates several apps; the newest
    app's settings hold).

    Args:
        settings: The service settings.

    """
    configure_gdal(settings)
    datasets.configure(
        max_idle=settings.dataset_pool_size,
        remote_ttl=settings.dataset_pool_remote_ttl,
        reader_threads=settings.reader_threads,
    )
    # rio-tiler's per-format GDAL creation options are one process-wide registry.
    configure_rendering(settings.png_zlevel)
    reprojection.install()
    ignore_absent_statistics_warning()
    redirects.configure(
        max_redirects=settings.source_max_redirects,
        cache_seconds=settings.source_redirect_cache_seconds,
        timeout=settings.gdal_http_timeout,
        connect_timeout=settings.gdal_http_connect_timeout,
    )
    configure_v8(
        idle_workers=settings.evalscript_v8_idle_workers,
        concurrency=settings.evalscript_v8_concurrency,
        queue_seconds=settings.evalscript_v8_queue_seconds,
        max_waiting=settings.evalscript_v8_max_waiting or max(1, settings.request_threads // 2),
    )


@dataclass
class Services:
    """What one app holds from startup to shutdown.

    Building opens nothing remote and starts no thread or process: the database is
    connected, its tables created, on first use; the batch service's Dask cluster starts
    with its first job (a LocalCluster at startup would cost every start seconds).
    ``start`` starts the batch supervisor; ``close`` undoes everything.

    Attributes:
        settings: The settings the services were built from.
        catalog: Where items come from (``/catalog``, items, ``/statistics``, mosaics):
            the configured catalog plus the registered result collections.
        item_cache: Items by id, for the item endpoints.
        db_engine: The service database (searches, batch jobs).
        mosaics: Registered searches and their mosaics.
        batch: Batch statistics jobs.

    """

    settings: Settings = field(repr=False)
    catalog: Catalog
    item_cache: ItemCache
    db_engine: Engine
    mosaics: MosaicService
    batch: BatchService

    @classmethod
    def build(cls, settings: Settings) -> Services:
        """Build every service from ``settings``, sharing one catalog and one engine.

        Raises:
            FileNotFoundError: A local catalog folder that does not exist.
            BadRequestError: A ``database_url`` that cannot be used.

        """
        open_catalog = catalog_factory(settings)
        engine = engine_from_settings(settings)
        # The app's own catalog shares the app's engine; workers build theirs from
        # open_catalog (the same base and registry).
        catalog = LayeredCatalog(
            base_catalog_factory(settings)(),
            engine,
            refresh_seconds=settings.result_collections_refresh_seconds,
            storage_options=_storage_options(settings),
        )
        return cls(
            settings=settings,
            catalog=catalog,
            item_cache=ItemCache(
                catalog, ttl=settings.item_cache_ttl, maxsize=settings.item_cache_size
            ),
            db_engine=engine,
            mosaics=MosaicService(
                catalog,
                SearchStore(engine),
                MosaicConfig.from_settings(settings),
                reader_options_from_settings(settings),
            ),
            batch=BatchService(settings, open_catalog, catalog=catalog, engine=engine),
        )

    def start(self) -> None:
        """Start background work: the batch supervisor (it resumes orphaned jobs)."""
        self.batch.start_supervisor()

    def close(self) -> None:
        """Leave this replica's batch jobs to the next, stop Dask, close the database pool."""
        self.batch.close()
        self.db_engine.dispose()
