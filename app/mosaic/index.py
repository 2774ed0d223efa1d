"""The footprint index of a search: its items, resolved once, in an STRtree.

A tile, crop, point or statistics request asks the index which items intersect it; the
catalog (a STAC API, or the local folder) is asked once per search and again only after
``ttl`` seconds, never once per tile. While an expired index is being rebuilt in the
background, requests keep being served from it (stale-while-revalidate); if the rebuild
fails (upstream down), the old index keeps serving and the rebuild is retried later.

The items of a request come in its ``order=`` (``app.ordering``: mostRecent, leastRecent,
leastCC, or search, the catalog's own order). Ties keep the catalog's order, so every
order is deterministic.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pystac
import shapely
import shapely.geometry
from shapely.strtree import STRtree

from app.errors import BadRequestError, UpstreamTimeoutError
from app.ordering import (
    DEFAULT_ORDER,
    MOSAICKING_ORDERS,
    SEARCH_ORDER,
    ItemOrder,
    check_item_order,
    order_key,
)
from app.settings import default_settings
from app.stac_fields import item_datetime

__all__ = ["FootprintIndex", "IndexCache", "IndexedItem"]

logger = logging.getLogger(__name__)

_DEFAULTS = default_settings()


@dataclass(frozen=True)
class IndexedItem:
    """One item of a search, with what the mosaic needs to pick and order it."""

    item: pystac.Item
    position: int
    geometry: shapely.Geometry
    datetime: datetime | None
    cloud_cover: float | None
    #: Readers of this item by TileMatrixSet id, built once per index (see MosaicService).
    readers: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def id(self) -> str:
        """The item id."""
        return self.item.id

    @property
    def collection(self) -> str | None:
        """The item's collection id."""
        return self.item.collection_id


def _rank(order: np.ndarray) -> np.ndarray:
    """The rank of each item, given the items in order."""
    rank = np.empty(len(order), dtype="int64")
    rank[order] = np.arange(len(order))
    return rank


def _footprint(item: pystac.Item) -> shapely.Geometry:
    geometry = None
    if item.geometry:
        try:
            geometry = shapely.geometry.shape(item.geometry)
        except (ValueError, TypeError, AttributeError, KeyError):
            geometry = None
        if geometry is not None and not geometry.is_valid:
            geometry = shapely.make_valid(geometry)
    if (geometry is None or geometry.is_empty) and item.bbox:
        bbox = list(item.bbox)
        if len(bbox) == 6:
            bbox = [bbox[0], bbox[1], bbox[3], bbox[4]]
        geometry = shapely.box(*bbox)
    if geometry is None or geometry.is_empty:
        raise BadRequestError(f"item '{item.id}' has neither a geometry nor a bbox")
    return geometry


def _cloud_cover(item: pystac.Item) -> float | None:
    value = item.properties.get("eo:cloud_cover")
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return None
    return float(value)


class FootprintIndex:
    """The items of one search in memory, with an STRtree of their footprints (EPSG:4326).

    Args:
        search_id: the search's id.
        items: the search's items in catalog order.
        area: the search's own area (its bbox or intersects geometry), None for anywhere.

    """

    def __init__(
        self,
        search_id: str,
        items: Sequence[pystac.Item],
        area: shapely.Geometry | None = None,
    ):
        self.search_id = search_id
        self.built_at = time.monotonic()
        self.area = area
        if area is not None:
            shapely.prepare(area)
        self.items = [
            IndexedItem(
                item=item,
                position=position,
                geometry=_footprint(item),
                datetime=item_datetime(item),
                cloud_cover=_cloud_cover(item),
            )
            for position, item in enumerate(items)
        ]
        self._tree = STRtree([entry.geometry for entry in self.items])
        self._ranks = self._order_ranks()
        # Per-TileMatrixSet zoom ranges, filled by the service on first use.
        self.zooms: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.items)

    # ------------------------------------------------------------------ extent

    @property
    def bounds(self) -> tuple[float, float, float, float] | None:
        """The lon/lat bounds of what the mosaic serves: the items, within the search area."""
        if not self.items:
            return None
        minx, miny, maxx, maxy = shapely.total_bounds([e.geometry for e in self.items])
        if self.area is not None:
            aminx, aminy, amaxx, amaxy = self.area.bounds
            minx, miny = max(minx, aminx), max(miny, aminy)
            maxx, maxy = min(maxx, amaxx), min(maxy, amaxy)
            if minx > maxx or miny > maxy:
                return None
        return float(minx), float(miny), float(maxx), float(maxy)

    # ------------------------------------------------------------------ queries

    def _order_ranks(self) -> dict[str, np.ndarray]:
        count = len(self.items)
        positions = np.arange(count)
        ranks: dict[str, np.ndarray] = {}
        for name in MOSAICKING_ORDERS:
            keys = [order_key(name, e.datetime, e.cloud_cover) for e in self.items]
            # np.lexsort sorts by its last key first: the order's keys, then catalog order.
            columns = list(zip(*keys, strict=True))[::-1]
            ranks[name] = _rank(np.lexsort((positions, *columns))) if count else positions
        ranks[SEARCH_ORDER] = positions
        return ranks

    def covers(self, geometry: shapely.Geometry) -> bool:
        """Whether ``geometry`` (lon/lat) touches the search area at all."""
        return self.area is None or self.area.intersects(geometry)

    def intersecting(
        self, geometry: shapely.Geometry, order: ItemOrder = DEFAULT_ORDER
    ) -> list[IndexedItem]:
        """The items whose footprint intersects ``geometry`` (lon/lat), in ``order``.

        Nothing when ``geometry`` lies outside the search's own area.
        """
        rank = self._ranks[check_item_order(order)]
        if not self.items or not self.covers(geometry):
            return []
        hits = self._tree.query(geometry, predicate="intersects")
        if len(hits) == 0:
            return []
        hits = hits[np.argsort(rank[hits], kind="stable")]
        return [self.items[i] for i in hits]

    def ordered(self, order: ItemOrder = DEFAULT_ORDER) -> list[IndexedItem]:
        """Every item, in ``order``."""
        rank = self._ranks[check_item_order(order)]
        return [self.items[i] for i in np.argsort(rank, kind="stable")]

    def zoom_range(self, key: str, compute: Callable[[], tuple[int, int]]) -> tuple[int, int]:
        """A memoized per-TileMatrixSet zoom range."""
        with self._lock:
            if key not in self.zooms:
                self.zooms[key] = compute()
            return self.zooms[key]


@dataclass
class _Entry:
    index: FootprintIndex
    refreshing: bool = False
    failed_at: float | None = None


@dataclass
class _Build:
    done: threading.Event = field(default_factory=threading.Event)
    index: FootprintIndex | None = None
    error: BaseException | None = None


class IndexCache:
    """Footprint indexes by search id: built once, rebuilt after ``ttl`` seconds.

    Args:
        ttl: seconds an index is fresh; after that the next request triggers a background
            rebuild and is answered from the old index meanwhile.
        max_items: items held over all cached indexes; least recently used indexes are
            dropped past it (the one just built always stays).
        retry_after: seconds before a failed background rebuild is tried again.
        wait_timeout: seconds a request waits for another request's first build of the
            same index (None: as long as the build takes); then a 504. The build itself
            goes on; each of its upstream requests is bounded by the catalog.

    Concurrent first requests for one search wait for a single build (no stampede on
    the catalog), but not without bound: a slow upstream STAC API would otherwise hold one
    server thread per waiting tile for the whole build (pages x the upstream deadline).
    """

    def __init__(
        self,
        *,
        ttl: float = _DEFAULTS.mosaic_index_ttl,
        max_items: int = _DEFAULTS.mosaic_index_max_items,
        retry_after: float = 30.0,
        wait_timeout: float | None = None,
    ):
        self.ttl = ttl
        self.wait_timeout = wait_timeout
        self.max_items = max_items
        self.retry_after = retry_after
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._builds: dict[str, _Build] = {}
        self._lock = threading.Lock()
        #: Number of builds started (first builds and refreshes), for metrics and tests.
        self.builds = 0

    def get(self, search_id: str, build: Callable[[], FootprintIndex]) -> FootprintIndex:
        """The index of ``search_id``, building it with ``build()`` when missing."""
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(search_id)
            if entry is not None:
                self._entries.move_to_end(search_id)
                if now - entry.index.built_at < self.ttl:
                    return entry.index
                retry_ok = entry.failed_at is None or now - entry.failed_at >= self.retry_after
                if not entry.refreshing and retry_ok:
                    entry.refreshing = True
                    self.builds += 1
                    threading.Thread(
                        target=self._refresh,
                        args=(search_id, build),
                        name=f"mosaic-index-{search_id[:8]}",
                        daemon=True,
                    ).start()
                return entry.index
            pending = self._builds.get(search_id)
            owner = pending is None
            if owner:
                pending = self._builds[search_id] = _Build()
                self.builds += 1
        assert pending is not None
        if not owner:
            if not pending.done.wait(self.wait_timeout):
                raise UpstreamTimeoutError(
                    f"search '{search_id}': its item index is still being built after "
                    f"{self.wait_timeout:g} s (mosaic_index_wait); try again shortly"
                )
            if pending.error is not None:
                raise pending.error
            assert pending.index is not None
            return pending.index
        try:
            index = build()
        except BaseException as error:
            pending.error = error
            with self._lock:
                self._builds.pop(search_id, None)
            pending.done.set()
            raise
        pending.index = index
        with self._lock:
            self._store(search_id, index)
            self._builds.pop(search_id, None)
        pending.done.set()
        return index

    def _refresh(self, search_id: str, build: Callable[[], FootprintIndex]) -> None:
        try:
            index = build()
        except Exception as error:  # keep serving the old index
            logger.warning("refreshing the index of search %s failed: %s", search_id, error)
            with self._lock:
                entry = self._entries.get(search_id)
                if entry is not None:
                    entry.refreshing = False
                    entry.failed_at = time.monotonic()
            return
        with self._lock:
            self._store(search_id, index)

    def _store(self, search_id: str, index: FootprintIndex) -> None:
        self._entries[search_id] = _Entry(index)
        self._entries.move_to_end(search_id)
        total = sum(len(e.index) for e in self._entries.values())
        while total > self.max_items and len(self._entries) > 1:
            old_id, old = next(iter(self._entries.items()))
            if old_id == search_id:
                break
            del self._entries[old_id]
            total -= len(old.index)

    def invalidate(self, search_id: str | None = None) -> None:
        """Forget one search's index (or all): the next request rebuilds it."""
        with self._lock:
            if search_id is None:
                self._entries.clear()
            else:
                self._entries.pop(search_id, None)

    def info(self) -> dict[str, Any]:
        """What the cache holds (for metrics)."""
        with self._lock:
            return {
                "searches": len(self._entries),
                "items": sum(len(e.index) for e in self._entries.values()),
                "builds": self.builds,
            }
