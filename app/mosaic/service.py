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
from collections.abc import Sequence
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
from app.evalscript import EvalscriptLimits
from app.input_limits import InputLimits
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
from app.settings import Settings

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
        max_search_bytes: canonical JSON bytes of a registered search (None: no limit).
        max_metadata_bytes: canonical JSON bytes of a registered search's metadata.
    """

    min_zoom: int
    max_items_per_tile: int
    max_items_per_point: int
    time_limit: float
    max_search_items: int
    index_ttl: float
    index_max_items: int
    index_wait: float
    threads: int
    default_collection: str | None
    input_limits: InputLimits
    max_search_bytes: int | None
    max_metadata_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> MosaicConfig:
        """The config of ``settings`` (its ``mosaic_*`` fields and search bounds)."""
        return cls(
            min_zoom=settings.mosaic_min_zoom,
            max_items_per_tile=settings.mosaic_max_items_per_tile,
            max_items_per_point=settings.mosaic_max_items_per_point,
            time_limit=settings.mosaic_time_limit,
            max_search_items=settings.mosaic_max_search_items,
            index_ttl=settings.mosaic_index_ttl,
            index_max_items=settings.mosaic_index_max_items,
            index_wait=settings.mosaic_index_wait,
            threads=settings.mosaic_threads,
            default_collection=settings.collection,
            input_limits=InputLimits.from_settings(settings),
            max_search_bytes=settings.max_search_bytes,
            max_metadata_bytes=settings.max_search_metadata_bytes,
        )


def reader_options_from_settings(settings: Settings) -> dict[str, Any]:
    """``S2STACReader`` options from the settings (allow-list, SCL classes, limits)."""
    return {
        "allowed_sources": list(settings.allowed_prefixes),
        "allow_private": settings.allow_private_sources,
        "scl_mask_classes": list(settings.scl_mask_classes),
        "max_pixels": settings.max_output_pixels,
        "max_tile_size": settings.max_tile_size,
        "budget": MemoryBudget.from_settings(settings),
        "evalscript_limits": EvalscriptLimits.from_settings(settings),
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
        config: MosaicConfig,
        reader_options: dict[str, Any] | None = None,
        reader: type[S2STACReader] = S2STACReader,
    ):
        self.catalog = catalog
        self.store = store
        self.config = config
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
        meta = normalize_metadata(
            metadata, self.config.input_limits, max_bytes=self.config.max_metadata_bytes
        )
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

    def items_backend(
        self, items: Sequence[pystac.Item], tms: TileMatrixSet = WEB_MERCATOR_TMS
    ) -> SearchBackend:
        """The mosaic of a list of items, read as a registered search's (not stored).

        Its "search" is ``{"ids": [...]}`` (no area, no sortby: ``mostRecent`` order), its
        footprint index built here, for this request only.
        """
        kept = [_keep_local_hrefs(item) for item in items]
        ids = [item.id for item in kept]
        record = SearchRecord(id="items", search={"ids": ids})
        index = FootprintIndex(record.id, kept)
        return SearchBackend(
            record.id,
            tms=tms,
            reader=self.reader,
            reader_options=self.reader_options,
            resolve=lambda _: (record, index),
            config=self.config,
        )
