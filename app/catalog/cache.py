"""A small TTL cache of catalog items, so a tile request does not refetch its item."""

import threading

import pystac
from cachetools import TTLCache

from app.catalog.base import Catalog
from app.settings import default_settings

_DEFAULTS = default_settings()


class ItemCache:
    """Items by (collection, id), kept ``ttl`` seconds, at most ``maxsize`` of them.

    Returned items are shared: callers must not mutate them.
    """

    def __init__(
        self,
        catalog: Catalog,
        *,
        ttl: float = _DEFAULTS.item_cache_ttl,
        maxsize: int = _DEFAULTS.item_cache_size,
    ):
        self.catalog = catalog
        self._items: TTLCache[tuple[str, str], pystac.Item] = TTLCache(maxsize, ttl)
        self._lock = threading.Lock()

    def get(self, collection_id: str, item_id: str) -> pystac.Item:
        """The item, from the cache or the catalog (``NotFoundError`` when unknown)."""
        key = (collection_id, item_id)
        with self._lock:
            item = self._items.get(key)
        if item is None:
            item = self.catalog.get_item(collection_id, item_id)
            with self._lock:
                self._items[key] = item
        return item

    def clear(self) -> None:
        """Forget every cached item."""
        with self._lock:
            self._items.clear()
