"""Mosaics of registered searches: register them, index their items, open their mosaics.

``MosaicService`` ties the parts together: the search store (database), the footprint
index cache (one catalog search per search id per TTL), and ``backend``, which opens a
search's mosaic as a rio-tiler backend (``app.mosaic.backend.SearchBackend``) that reads
tiles, crops, features, points and statistics from the cached index. Every item is read by
``S2STACReader`` exactly as the single-item endpoints read it (same aliases, expressions,
harmonization and ``mask=scl-clear``).

An unknown search id is a ``NotFoundError`` (404); a search matching more than
``mosaic_max_search_items`` items is a ``TooLargeError`` (413), at registration or when its
index is built.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, replace
from typing import Any

import pystac
import shapely
import shapely.geometry
from cachetools import TTLCache
from morecantile import TileMatrixSet
from rio_tiler.constants import WEB_MERCATOR_TMS

from app.budget import MemoryBudget
from app.catalog.base import Catalog
from app.errors import NotFoundError, TooLargeError
from app.input_limits import DEFAULT_LIMITS, InputLimits
from app.mosaic.backend import SearchBackend
from app.mosaic.index import FootprintIndex, IndexCache
from app.mosaic.search import (
    SearchRecord,
    is_search_id,
    normalize_metadata,
    normalize_search,
    search_hash,
)
from app.mosaic.store import SearchStore
from app.readers import S2STACReader

__all__ = [
    "MosaicConfig",
    "MosaicService",
    "reader_options_from_settings",
]


@dataclass(frozen=True)
class MosaicConfig:
    """Bounds and tuning of mosaics (the ``mosaic_*`` settings).

    Attributes:
        min_zoom: tiles below this WebMercatorQuad zoom are refused (400).
        max_items_per_tile: items read at most for one tile, crop or feature.
        max_items_per_point: items read at most for one point time series.
        time_limit: seconds a tile (crop, feature, point) waits for items at most.
        max_search_items: a search matching more items cannot be registered or indexed.
        index_ttl: seconds a search's footprint index is used before it is rebuilt.
        index_max_items: items held over all cached indexes.
        index_wait: seconds a request waits for another's first build of the same index.
        threads: item reads in flight at most per request.
        default_collection: the collection of a search that names none.
        input_limits: bounds on a registered search's filter and JSON nesting.
        max_search_bytes: canonical JSON bytes of a registered search.
    """

    min_zoom: int = 7
    max_items_per_tile: int = 50
    max_items_per_point: int = 500
    time_limit: float = 5.0
    max_search_items: int = 2000
    index_ttl: float = 300.0
    index_max_items: int = 20_000
    index_wait: float = 30.0
    threads: int = 4
    default_collection: str | None = "sentinel-2-l2a"
    input_limits: InputLimits = DEFAULT_LIMITS
    max_search_bytes: int | None = 1_000_000

    @classmethod
    def from_settings(cls, settings: Any) -> MosaicConfig:
        """The config of ``settings`` (fields missing there take the defaults above)."""
        defaults = cls()

        def get(name: str, attribute: str) -> Any:
            return getattr(settings, name, getattr(defaults, attribute))

        return cls(
            min_zoom=int(get("mosaic_min_zoom", "min_zoom")),
            max_items_per_tile=int(get("mosaic_max_items_per_tile", "max_items_per_tile")),
            max_items_per_point=int(get("mosaic_max_items_per_point", "max_items_per_point")),
            time_limit=float(get("mosaic_time_limit", "time_limit")),
            max_search_items=int(get("mosaic_max_search_items", "max_search_items")),
            index_ttl=float(get("mosaic_index_ttl", "index_ttl")),
            index_max_items=int(get("mosaic_index_max_items", "index_max_items")),
            index_wait=float(get("mosaic_index_wait", "index_wait")),
            threads=int(get("mosaic_threads", "threads")),
            default_collection=get("collection", "default_collection"),
            input_limits=InputLimits.from_settings(settings),
            max_search_bytes=get("max_search_bytes", "max_search_bytes"),
        )


def reader_options_from_settings(settings: Any) -> dict[str, Any]:
    """``S2STACReader`` options from the settings (allow-list, SCL classes, limits)."""
    return {
        "allowed_sources": list(settings.allowed_prefixes),
        "allow_private": bool(getattr(settings, "allow_private_sources", False)),
        "scl_mask_classes": list(settings.scl_mask_classes),
        "max_pixels": getattr(settings, "max_output_pixels", None),
        "max_tile_size": getattr(settings, "max_tile_size", None),
        "budget": MemoryBudget.from_settings(settings),
    }


def _keep_local_hrefs(item: pystac.Item) -> pystac.Item:
    """The item, its absolute local asset paths kept as paths.

    An item served by a STAC API has an ``http(s)`` self link; pystac then resolves an
    asset href ``/data/cogs/B04.tif`` against it into ``http://api/data/cogs/B04.tif``.
    Such items lose their self link here (their asset hrefs are already absolute).
    """
    self_href = item.get_self_href()
    if not self_href or not self_href.startswith(("http://", "https://")):
        return item
    if any(os.path.isabs(asset.href) and "://" not in asset.href for asset in item.assets.values()):
        item.remove_links(pystac.RelType.SELF)
    return item


class MosaicService:
    """Registered searches and the mosaics of their items.

    Args:
        catalog: where a search's items come from.
        store: where searches persist.
        config: bounds and tuning.
        reader_options: ``S2STACReader`` options (see ``reader_options_from_settings``).
        reader: the item reader class.

    """

    def __init__(
        self,
        catalog: Catalog,
        store: SearchStore,
        config: MosaicConfig | None = None,
        reader_options: dict[str, Any] | None = None,
        reader: type[S2STACReader] = S2STACReader,
    ):
        self.catalog = catalog
        self.store = store
        self.config = config or MosaicConfig()
        self.reader_options = reader_options or {}
        self.reader = reader
        self.indexes = IndexCache(
            ttl=self.config.index_ttl,
            max_items=self.config.index_max_items,
            wait_timeout=self.config.index_wait,
        )
        self._lock = threading.Lock()
        self._records: TTLCache[str, SearchRecord] = TTLCache(
            maxsize=4096, ttl=max(self.config.index_ttl, 1e-3)
        )

    # ------------------------------------------------------------------ registry

    def register(self, search: Any, metadata: Any = None) -> tuple[SearchRecord, int | None]:
        """Register a search (idempotent); return its record and how many items it matches.

        Raises:
            BadRequestError: a bad search or metadata (naming the parameter).
            TooLargeError: the search matches more than ``max_search_items`` items.

        """
        query, canonical = normalize_search(
            search,
            default_collection=self.config.default_collection,
            limits=self.config.input_limits,
            max_bytes=self.config.max_search_bytes,
        )
        meta = normalize_metadata(metadata, self.config.input_limits)
        matched = self._count(query)
        if matched is not None and matched > self.config.max_search_items:
            raise TooLargeError(
                f"search: matches {matched} items, over the limit "
                f"mosaic_max_search_items={self.config.max_search_items}; narrow it "
                "(bbox or intersects, datetime, query, filter)"
            )
        record = self.store.save(search_hash(canonical), canonical, meta)
        # Registering again is also how a client says "the items changed: look again".
        self.indexes.invalidate(record.id)
        with self._lock:
            self._records[record.id] = record
        return record, matched

    def _count(self, query: Any) -> int | None:
        page = self.catalog.search_page(replace(query, limit=1, token=None))
        return page.number_matched

    def get(self, search_id: str) -> SearchRecord:
        """A registered search; ``NotFoundError`` when unknown.

        Found searches are kept in memory for ``index_ttl`` seconds, so a tile costs no
        database query (metadata re-registered on another replica shows up within that
        time; an unknown id is always looked up again).
        """
        if not is_search_id(search_id):
            raise NotFoundError(f"search '{search_id}' not found (not a search id)")
        with self._lock:
            record = self._records.get(search_id)
        if record is None:
            record = self.store.get(search_id)
            with self._lock:
                self._records[search_id] = record
        return record

    def list(self, limit: int = 10, offset: int = 0) -> tuple[list[SearchRecord], int]:
        """A page of registered searches (most recently registered first) and the total."""
        return self.store.list(limit=limit, offset=offset)

    # ------------------------------------------------------------------ index

    def index(self, search_id: str) -> tuple[SearchRecord, FootprintIndex]:
        """The search and its footprint index (built on first use, rebuilt after the TTL)."""
        record = self.get(search_id)
        return record, self.indexes.get(record.id, lambda: self._build_index(record))

    def _build_index(self, record: SearchRecord) -> FootprintIndex:
        query = record.query(self.config.input_limits)
        limit = self.config.max_search_items
        items = [
            _keep_local_hrefs(item) for item in self.catalog.search(query, max_items=limit + 1)
        ]
        if len(items) > limit:
            raise TooLargeError(
                f"search '{record.id}' matches more than mosaic_max_search_items={limit} "
                "items; register a narrower search"
            )
        area = None
        if query.intersects is not None:
            area = shapely.geometry.shape(query.intersects)
        elif query.bbox is not None:
            area = shapely.box(*query.bbox)
        return FootprintIndex(record.id, items, area)

    # ------------------------------------------------------------------ mosaics

    def backend(self, search_id: str, tms: TileMatrixSet = WEB_MERCATOR_TMS) -> SearchBackend:
        """The mosaic of a registered search in ``tms``, to read tiles, crops and points.

        Nothing is looked up yet: the search and its index are resolved on first use (an
        unknown search then raises ``NotFoundError``).
        """
        return SearchBackend(
            search_id,
            tms=tms,
            reader=self.reader,
            reader_options=self.reader_options,
            resolve=self.index,
            config=self.config,
        )
