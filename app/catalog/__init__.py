"""Catalog backends: where STAC items come from."""

from app.catalog.base import Catalog, SearchPage, SearchQuery, SortField
from app.settings import Settings

__all__ = ["Catalog", "SearchPage", "SearchQuery", "SortField", "catalog_from_settings"]


def catalog_from_settings(settings: Settings) -> Catalog:
    """The catalog backend ``settings.catalog`` names: a STAC API URL or a local folder."""
    if settings.catalog_is_remote:
        from app.catalog.stacapi import StacApiCatalog

        return StacApiCatalog(
            settings.catalog,
            timeout=settings.stac_timeout,
            retries=settings.stac_retries,
            backoff=settings.stac_backoff,
            deadline=settings.stac_request_deadline,
            max_concurrency=settings.stac_max_concurrency,
            queue_timeout=settings.stac_queue_timeout,
        )
    from app.catalog.local import LocalCatalog

    return LocalCatalog(settings.catalog)
