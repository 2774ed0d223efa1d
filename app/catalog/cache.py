"""A small TTL cache of catalog items, so a tile request does not refetch its item."""

import threading
from collections.abc import Sequence

import pystac
from cachetools import TTLCache

from app.catalog.base import Catalog, SearchQuery
from app.settings import default_settings

_DEFAULTS = default_settings()

#: Ids per search of ``get_many``: a GET search's URL stays a few kB.
IDS_PER_SEARCH = 100


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

    def get_many(self, collection_id: str, item_ids: Sequence[str]) -> list[pystac.Item]:
        """The items, in ``item_ids``' order: cached ones, the others by a few searches.

        One search per ``IDS_PER_SEARCH`` ids not cached (not one request per id: a list of
        thousands of ids is a few upstream requests). An id the searches did not find is
        asked for alone, so that an unknown one is the ``NotFoundError`` naming it (or its
        collection).
        """
        found: dict[str, pystac.Item] = {}
        with self._lock:
            for item_id in item_ids:
                item = self._items.get((collection_id, item_id))
                if item is not None:
                    found[item_id] = item
        missing = list(dict.fromkeys(i for i in item_ids if i not in found))
        for start in range(0, len(missing), IDS_PER_SEARCH):
            chunk = missing[start : start + IDS_PER_SEARCH]
            query = SearchQuery(ids=chunk, collections=[collection_id], limit=len(chunk))
            for item in self.catalog.search(query, max_items=len(chunk)):
                if item.id in chunk and item.collection_id in (None, collection_id):
                    found.setdefault(item.id, item)
                    with self._lock:
                        self._items[(collection_id, item.id)] = item
        return [found[i] if i in found else self.get(collection_id, i) for i in item_ids]

    def clear(self) -> None:
        """Forget every cached item."""
        with self._lock:
            self._items.clear()
