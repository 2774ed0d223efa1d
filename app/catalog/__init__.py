"""Catalog backends: where STAC items come from.

Which backend a service uses is application wiring: ``app.services.catalog_factory``.
"""

from app.catalog.base import Catalog, SearchPage, SearchQuery, SortField

__all__ = ["Catalog", "SearchPage", "SearchQuery", "SortField"]
