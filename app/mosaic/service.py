"""Mosaics of registered searches: register, resolve, and read tiles, crops, points, features.

``MosaicService`` ties the parts together: the search store (database), the footprint
index cache (one catalog search per search id per TTL), and ``read_mosaic`` over
``S2STACReader`` (every item is read exactly as the single-item endpoints read it: same
aliases, expressions, harmonization and ``mask=scl-clear``).

Requests and what they answer:

- a tile (or crop, feature, point) that no item of the search intersects, or that lies
  outside the search's own area (its ``bbox`` / ``intersects``): ``NotFoundError`` (404);
- a tile inside the area whose items are all masked there (clouds everywhere): an empty
  (fully masked, transparent) image, 200;
- a tile below the minimum zoom (``mosaic_min_zoom``, in WebMercatorQuad levels; other
  TileMatrixSets are compared by tile size): ``BadRequestError`` (400) naming the setting;
- an unknown search id: ``NotFoundError`` (404).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import morecantile
import numpy as np
import pyproj
import pystac
import shapely
import shapely.geometry
from cachetools import TTLCache
from morecantile import TileMatrixSet
from rasterio.crs import CRS
from rasterio.features import rasterize
from rasterio.transform import from_bounds
from rasterio.warp import transform_bounds, transform_geom
from rio_tiler.constants import WGS84_CRS
from rio_tiler.models import ImageData

from app.budget import MemoryBudget
from app.catalog.base import Catalog
from app.errors import BadRequestError, NotFoundError, TooLargeError, UpstreamTimeoutError
from app.input_limits import InputLimits
from app.mosaic.index import FootprintIndex, IndexCache, IndexedItem
from app.mosaic.reader import (
    PARTIAL_TIME,
    PIXEL_SELECTIONS,
    MosaicRead,
    read_all,
    read_mosaic,
    select_point,
)
from app.mosaic.search import (
    SearchRecord,
    is_search_id,
    normalize_metadata,
    normalize_search,
    search_hash,
)
from app.mosaic.store import SearchStore
from app.ordering import DEFAULT_ORDER, SEARCH_ORDER, check_item_order
from app.readers import S2STACReader, tile_output_pixels
from app.request_checks import (
    check_bbox,
    check_output_pixels,
    check_point,
    check_tile_size,
    shape_bounds,
)
from app.settings import Settings

__all__ = [
    "MosaicConfig",
    "MosaicItemReader",
    "MosaicService",
    "PointSeries",
    "reader_options_from_settings",
]

#: Width of a WebMercatorQuad zoom-0 tile, metres.
_WEB_MERCATOR_WIDTH = 2 * math.pi * 6378137.0


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
    }


class MosaicItemReader(S2STACReader):
    """``S2STACReader`` as the mosaic uses it.

    Works around ``S2STACReader._read_scl`` returning a numpy scalar for a point when SCL
    is read on its own (``point`` + ``mask=scl-clear`` + an expression without ``scl``),
    which then fails on ``.filled``: the SCL value comes back as a 1-element masked
    array, like the point's bands. (To be fixed in ``app.readers``; harmless after.)
    """

    def _read_scl(self, *args: Any, **kwargs: Any) -> np.ma.MaskedArray:
        scl = super()._read_scl(*args, **kwargs)
        if np.ndim(scl) == 0:
            return np.ma.MaskedArray(
                [0 if scl is np.ma.masked else scl], mask=[scl is np.ma.masked]
            )
        return scl


@dataclass
class PointSeries:
    """A point of a mosaic: the value of each item there, and the pixel-selected value.

    Attributes:
        coordinates: ``[x, y]`` as asked (in ``coord_crs``).
        band_names: output band names.
        values: the pixel selection over the items (None where every item is masked).
        series: one entry per item, oldest first: ``{"id", "collection", "datetime",
            "values"}`` (masked values are None).
        partial: why the series is incomplete, if it is.
        candidates: how many items intersect the point.
    """

    coordinates: list[float]
    band_names: list[str]
    values: list[float | None]
    series: list[dict[str, Any]]
    partial: list[str]
    candidates: int = 0


def _plain(value: Any) -> float | None:
    if value is np.ma.masked or value is None:
        return None
    number = value.item() if hasattr(value, "item") else value
    if isinstance(number, float) and not math.isfinite(number):
        return None
    return number


@lru_cache(maxsize=64)
def _meters_per_unit(tms_id: str, crs_wkt: str) -> float:
    return float(morecantile.utils.meters_per_unit(pyproj.CRS.from_wkt(crs_wkt)))


def zoom_equivalent(tms: TileMatrixSet, z: int) -> float:
    """The WebMercatorQuad zoom whose tiles are as wide as ``tms``'s tiles at ``z``."""
    matrix = tms.matrix(z)
    width = matrix.cellSize * matrix.tileWidth * _meters_per_unit(tms.id, tms.rasterio_crs.to_wkt())
    return math.log2(_WEB_MERCATOR_WIDTH / width)


def min_zoom_of(tms: TileMatrixSet, min_zoom: int) -> int:
    """The lowest zoom of ``tms`` whose tiles are no wider than WebMercatorQuad ``min_zoom``."""
    for z in range(tms.minzoom, tms.maxzoom + 1):
        if zoom_equivalent(tms, z) >= min_zoom - 0.05:
            return z
    return tms.maxzoom


def _to_lonlat(geometry: dict[str, Any], crs: CRS) -> shapely.Geometry:
    if crs != WGS84_CRS:
        geometry = transform_geom(crs, WGS84_CRS, geometry)
    return shapely.geometry.shape(geometry)


def _geometry_of(shape: Mapping[str, Any]) -> dict[str, Any]:
    if shape.get("type") == "Feature":
        geometry = shape.get("geometry")
        if not isinstance(geometry, Mapping):
            raise BadRequestError("geometry: the feature has no geometry")
        return dict(geometry)
    return dict(shape)


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
        reader: type[S2STACReader] = MosaicItemReader,
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

    def default_order(self, record: SearchRecord) -> str:
        """``search`` (catalog order) when the search has a sortby, else ``mostRecent``."""
        return SEARCH_ORDER if record.search.get("sortby") else DEFAULT_ORDER

    def _order(self, record: SearchRecord, order: str | None) -> str:
        if order is None:
            return self.default_order(record)
        return check_item_order(order)

    # ------------------------------------------------------------------ zooms / extent

    def check_zoom(self, tms: TileMatrixSet, z: int) -> None:
        """Refuse a tile below the minimum mosaic zoom (400 naming the setting)."""
        floor = min_zoom_of(tms, self.config.min_zoom)
        if z < floor:
            raise BadRequestError(
                f"zoom {z}: mosaic tiles of {tms.id} start at zoom {floor} "
                f"(mosaic_min_zoom={self.config.min_zoom}), below it a tile would read "
                "too many scenes; zoom in, or ask /bbox for an overview at a coarse size"
            )

    def tile_info(self, search_id: str, tms: TileMatrixSet) -> dict[str, Any]:
        """Bounds and zoom range of a search's mosaic in ``tms`` (for TileJSON)."""
        record, index = self.index(search_id)
        meta = record.metadata
        floor = min_zoom_of(tms, self.config.min_zoom)
        bounds = meta.get("bounds") or index.bounds
        if bounds is None:
            bounds = list(index.area.bounds) if index.area is not None else [-180, -90, 180, 90]
        minzoom, maxzoom = index.zoom_range(tms.id, lambda: self._item_zooms(index, tms))
        if meta.get("minzoom") is not None:
            minzoom = meta["minzoom"]
        if meta.get("maxzoom") is not None:
            maxzoom = meta["maxzoom"]
        minzoom = max(minzoom, floor)
        maxzoom = max(maxzoom, minzoom)
        return {
            "bounds": [float(v) for v in bounds],
            "minzoom": int(minzoom),
            "maxzoom": int(maxzoom),
            "items": len(index),
            "name": meta.get("name"),
            "description": meta.get("description"),
        }

    def _item_zooms(self, index: FootprintIndex, tms: TileMatrixSet) -> tuple[int, int]:
        # One reader per distinct projection: S2 scenes share resolutions, zones differ.
        seen: dict[Any, IndexedItem] = {}
        for entry in index.items:
            props = entry.item.properties
            key = props.get("proj:code") or props.get("proj:epsg")
            if key not in seen:
                seen[key] = entry
            if len(seen) >= 8:
                break
        if not seen:
            return tms.minzoom, tms.maxzoom
        minzooms, maxzooms = [], []
        for entry in seen.values():
            with self.reader(entry.item, tms=tms, **self.reader_options) as src:
                minzooms.append(src.minzoom)
                maxzooms.append(src.maxzoom)
        return min(minzooms), max(maxzooms)

    # ------------------------------------------------------------------ reading

    def _open(self, entry: IndexedItem, tms: TileMatrixSet | None = None) -> S2STACReader:
        """The item's reader for ``tms``, built once per index and then shared.

        A reader holds no open dataset (every asset read opens its own) and its read
        methods do not change it, so threads share it; building one parses the item's
        assets and projection (milliseconds per item, per tile, otherwise).
        """
        if tms is None:
            tms = morecantile.tms.get("WebMercatorQuad")
        reader = entry.readers.get(tms.id)
        if reader is None:
            # Zooms given: rio-tiler would otherwise compute them for every reader.
            reader = entry.readers[tms.id] = self.reader(
                entry.item,
                tms=tms,
                minzoom=tms.minzoom,
                maxzoom=tms.maxzoom,
                **self.reader_options,
            )
        return reader

    def _read_window(
        self,
        items: Sequence[IndexedItem],
        pixels: int,
        options: Mapping[str, Any],
        pixel_selection: str,
        what: str,
        tms: TileMatrixSet | None = None,
    ) -> int:
        """Item reads in flight that fit ``max_request_bytes`` (413 when not even one).

        What a mosaic holds at once: its reads in flight (each the cost of one item's read,
        which its reader checks too), and the pixel selection's arrays: one output for
        first / highest / lowest / count, the stack of every item fed (and its stacked
        copy) for mean / median / stdev. Fewer reads in flight (down to one) keep a big
        read within the budget; only what does not fit with one is refused. Computed from
        the first item's metadata, before any item is read.
        """
        threads = max(1, self.config.threads)
        budget: MemoryBudget | None = self.reader_options.get("budget")
        if budget is None:
            return threads
        cost = self._open(items[0], tms).request_cost(pixels, **options)
        budget.check(cost, what)
        if pixel_selection not in PIXEL_SELECTIONS or budget.max_request_bytes is None:
            return threads  # read_mosaic names the choices (400)
        count = min(len(items), self.config.max_items_per_tile)
        kept = 1 if pixel_selection in ("first", "highest", "lowest", "count") else 2 * count
        kept_bytes = kept * cost.pixels * cost.output_bytes_per_pixel
        window = min(threads, count, (budget.max_request_bytes - kept_bytes) // cost.total)
        budget.check_bytes(
            kept_bytes + max(window, 1) * cost.total,
            f"mosaic of {count} items by {pixel_selection}: {max(window, 1)} item read in "
            f"flight of {cost.describe()}, and {kept} layers of {cost.output_bytes_per_pixel} "
            "bytes per pixel kept by the pixel selection",
            what,
        )
        return window

    def _mosaic(
        self,
        items: Sequence[IndexedItem],
        read: Callable[[IndexedItem], ImageData],
        pixel_selection: str,
        request: shapely.Geometry,
        area: shapely.Geometry | None,
        what: str,
        shape: tuple[dict[str, Any], CRS] | None = None,
        window: int | None = None,
    ) -> MosaicRead:
        """Read the mosaic of ``items`` over ``request`` (lon/lat), clipped to ``area``.

        ``area`` is the search's own bbox/intersects: pixels outside it are masked, like
        the pixels no item covers, so the mosaic is the search's region and not the whole
        scenes that touch it. ``window``: reads in flight at most (default ``threads``).
        """
        clip = None if area is None or area.covers(request) else area
        result = read_mosaic(
            items,
            read,
            pixel_selection,
            max_items=self.config.max_items_per_tile,
            time_limit=self.config.time_limit,
            max_window=window or self.config.threads,
            outside=self._outside(items, request, shape, clip),
        )
        if result.image is None:
            if PARTIAL_TIME in result.partial:
                raise UpstreamTimeoutError(
                    f"{what}: no item could be read within "
                    f"mosaic_time_limit={self.config.time_limit:g} s"
                )
            raise NotFoundError(f"{what}: no item of the search has data there")
        if clip is not None:
            image = result.image
            outside = ~_inside(clip, WGS84_CRS, image, all_touched=False)
            image.array = np.ma.MaskedArray(
                image.array.data,
                mask=np.ma.getmaskarray(image.array) | outside[np.newaxis],
            )
        return result

    @staticmethod
    def _outside(
        items: Sequence[IndexedItem],
        request: shapely.Geometry,
        shape: tuple[dict[str, Any], CRS] | None = None,
        clip: shapely.Geometry | None = None,
    ) -> Callable[[ImageData], np.ndarray | None]:
        """Pixels ``first`` need not fill: outside the items' footprints, shape or clip."""
        union = shapely.union_all([entry.geometry for entry in items])
        covered = union.covers(request)

        def outside(image: ImageData) -> np.ndarray | None:
            if covered and shape is None and clip is None:
                return None
            transform = from_bounds(*image.bounds, image.width, image.height)
            inside = np.ones((image.height, image.width), dtype=bool)
            if not covered:
                # Pixels whose centre lies at least one pixel inside the union of the
                # footprints: the warp fills those from an item that has data there. The
                # outer one-pixel band of the whole search's data (edge resampling may
                # leave it empty) does not keep `first` reading every item.
                geometry = shapely.geometry.shape(
                    transform_geom(WGS84_CRS, image.crs, shapely.geometry.mapping(union))
                ).buffer(-max(abs(transform.a), abs(transform.e)))
                if not geometry.is_empty:
                    inside &= _rasterize(geometry, image, all_touched=False)
                else:
                    inside[:] = False
            if shape is not None:
                inside &= _inside(shape[0], shape[1], image, all_touched=True)
            if clip is not None:
                inside &= _inside(clip, WGS84_CRS, image, all_touched=False)
            return ~inside

        return outside

    def tile(
        self,
        search_id: str,
        tms: TileMatrixSet,
        x: int,
        y: int,
        z: int,
        *,
        tilesize: int | None = None,
        options: Mapping[str, Any] | None = None,
        pixel_selection: str = "first",
        order: str | None = None,
    ) -> MosaicRead:
        """One map tile of the search's mosaic.

        Args:
            search_id: the registered search.
            tms: the TileMatrixSet.
            x: tile column.
            y: tile row.
            z: zoom level.
            tilesize: output size in pixels (default the TMS's).
            options: what ``S2STACReader.tile`` reads (assets/expression, mask, harmonize,
                buffer, padding, nodata, resampling ...).
            pixel_selection: first, highest, lowest, mean, median, stdev, count.
            order: mostRecent, leastRecent, leastCC or search.

        """
        self.check_zoom(tms, z)
        record, index = self.index(search_id)
        order = self._order(record, order)
        tile = morecantile.Tile(x, y, z)
        if not tms.is_valid(tile):
            raise NotFoundError(f"tile {tms.id}/{z}/{x}/{y} does not exist")
        what = f"tile {tms.id}/{z}/{x}/{y}"
        bounds = tms.bounds(tile)
        if not (bounds.left < bounds.right and bounds.bottom < bounds.top):
            # Far outside a projection's domain, a tile's lon/lat corners come back
            # folded over (CanadianNAD83_LCC 7/1/1: top below bottom).
            raise NotFoundError(f"{what} has no extent in longitude/latitude")
        if tms.rasterio_geographic_crs != WGS84_CRS:
            bounds = transform_bounds(tms.rasterio_geographic_crs, WGS84_CRS, *bounds)
        request = shapely.box(*bounds)
        items = index.intersecting(request, order)
        if not items:
            raise NotFoundError(f"{what} is outside search '{search_id}' (no item there)")
        options = dict(options or {})
        check_tile_size(tilesize, self.reader_options.get("max_tile_size"))
        pixels = tile_output_pixels(
            tms, z, tilesize, options.get("buffer"), self.reader_options.get("max_pixels")
        )
        window = self._read_window(items, pixels, options, pixel_selection, what, tms)

        def read(entry: IndexedItem) -> ImageData:
            return self._open(entry, tms).tile(x, y, z, tilesize=tilesize, **options)

        return self._mosaic(items, read, pixel_selection, request, index.area, what, window=window)

    def _output_size(
        self,
        entry: IndexedItem,
        bbox: Sequence[float],
        bounds_crs: CRS,
        dst_crs: CRS,
        width: int | None,
        height: int | None,
        max_size: int | None,
        options: Mapping[str, Any],
    ) -> tuple[int, int]:
        """One output grid for every item: the caller's size, else the native resolution."""
        if width and height:
            return int(width), int(height)
        src = self._open(entry)
        native_w, native_h = src.native_size(
            tuple(bbox), bounds_crs, dst_crs, options.get("assets"), options.get("expression")
        )
        if width:
            return int(width), max(1, round(width * native_h / native_w))
        if height:
            return max(1, round(height * native_w / native_h)), int(height)
        if max_size and max(native_w, native_h) > max_size:
            ratio = max_size / max(native_w, native_h)
            return max(1, round(native_w * ratio)), max(1, round(native_h * ratio))
        return native_w, native_h

    def part(
        self,
        search_id: str,
        bbox: Sequence[float],
        *,
        bounds_crs: CRS = WGS84_CRS,
        dst_crs: CRS | None = None,
        width: int | None = None,
        height: int | None = None,
        max_size: int | None = None,
        options: Mapping[str, Any] | None = None,
        pixel_selection: str = "first",
        order: str | None = None,
    ) -> MosaicRead:
        """A bbox crop of the mosaic (default: the finest native resolution of what is read).

        ``dst_crs`` defaults to ``bounds_crs``, as for single items.
        """
        bbox = check_bbox(bbox, bounds_crs)
        record, index = self.index(search_id)
        order = self._order(record, order)
        lonlat = (
            transform_bounds(bounds_crs, WGS84_CRS, *bbox, densify_pts=21)
            if bounds_crs != WGS84_CRS
            else tuple(bbox)
        )
        request = shapely.box(*lonlat)
        items = index.intersecting(request, order)
        what = "bbox " + ",".join(f"{v:g}" for v in bbox)
        if not items:
            raise NotFoundError(f"{what} is outside search '{search_id}' (no item there)")
        dst_crs = dst_crs or bounds_crs
        options = dict(options or {})
        width, height = self._output_size(
            items[0], bbox, bounds_crs, dst_crs, width, height, max_size, options
        )
        pixels = check_output_pixels(width, height, None, self.reader_options.get("max_pixels"))
        window = self._read_window(items, pixels or 1, options, pixel_selection, what)

        def read(entry: IndexedItem) -> ImageData:
            src = self._open(entry)
            return src.part(
                tuple(bbox),
                bounds_crs=bounds_crs,
                dst_crs=dst_crs,
                width=width,
                height=height,
                **options,
            )

        return self._mosaic(items, read, pixel_selection, request, index.area, what, window=window)

    def feature(
        self,
        search_id: str,
        shape: Mapping[str, Any],
        *,
        shape_crs: CRS = WGS84_CRS,
        dst_crs: CRS | None = None,
        width: int | None = None,
        height: int | None = None,
        max_size: int | None = None,
        options: Mapping[str, Any] | None = None,
        pixel_selection: str = "first",
        order: str | None = None,
    ) -> MosaicRead:
        """The mosaic over a GeoJSON geometry (pixels outside it masked).

        ``dst_crs`` defaults to the native CRS of the first item (statistics are computed on
        the scenes' own grid, never in Web Mercator).
        """
        shape_bounds(dict(shape), shape_crs)  # a polygon, finite, on Earth: as single items
        record, index = self.index(search_id)
        order = self._order(record, order)
        geometry = _geometry_of(shape)
        try:
            request = _to_lonlat(geometry, shape_crs)
        except Exception as error:  # shapely / rasterio on a malformed geometry
            raise BadRequestError(f"geometry: not a valid GeoJSON geometry ({error})") from None
        if request.is_empty:
            raise BadRequestError("geometry: empty")
        items = index.intersecting(request, order)
        what = "geometry"
        if not items:
            raise NotFoundError(f"{what} is outside search '{search_id}' (no item there)")
        options = dict(options or {})
        if dst_crs is None:
            src = self._open(items[0])
            dst_crs = src.crs or WGS84_CRS
        bbox = shapely.geometry.shape(geometry).bounds
        width, height = self._output_size(
            items[0], bbox, shape_crs, dst_crs, width, height, max_size, options
        )
        pixels = check_output_pixels(width, height, None, self.reader_options.get("max_pixels"))
        window = self._read_window(items, pixels or 1, options, pixel_selection, what)

        def read(entry: IndexedItem) -> ImageData:
            src = self._open(entry)
            return src.feature(
                geometry,
                shape_crs=shape_crs,
                dst_crs=dst_crs,
                width=width,
                height=height,
                **options,
            )

        return self._mosaic(
            items,
            read,
            pixel_selection,
            request,
            index.area,
            what,
            (geometry, shape_crs),
            window=window,
        )

    def point(
        self,
        search_id: str,
        lon: float,
        lat: float,
        *,
        coord_crs: CRS = WGS84_CRS,
        options: Mapping[str, Any] | None = None,
        pixel_selection: str = "first",
        order: str | None = None,
    ) -> PointSeries:
        """The time series of every item at a point, and its pixel-selected value."""
        check_point(lon, lat, coord_crs)
        record, index = self.index(search_id)
        order = self._order(record, order)
        location = _to_lonlat({"type": "Point", "coordinates": [lon, lat]}, coord_crs)
        items = index.intersecting(location, "leastRecent")
        if not items:
            raise NotFoundError(
                f"point ({lon:g}, {lat:g}) is outside search '{search_id}' (no item there)"
            )
        options = dict(options or {})
        budget: MemoryBudget | None = self.reader_options.get("budget")
        if budget is not None:
            # A point is one pixel, but its counts (assets, bands, outputs) are bounded.
            budget.check(self._open(items[0]).request_cost(1, **options), "point")

        def read(entry: IndexedItem) -> Any:
            src = self._open(entry)
            return src.point(lon, lat, coord_crs=coord_crs, **options)

        results, partial = read_all(
            items,
            read,
            max_items=self.config.max_items_per_point,
            time_limit=self.config.time_limit,
            max_window=self.config.threads,
        )
        if not results:
            if PARTIAL_TIME in partial:
                raise UpstreamTimeoutError(
                    "point: no item could be read within "
                    f"mosaic_time_limit={self.config.time_limit:g} s"
                )
            raise NotFoundError(f"point ({lon:g}, {lat:g}): no item of the search has data there")
        band_names = list(results[0][1].band_names)
        series = [
            {
                "id": entry.id,
                "collection": entry.collection,
                "datetime": entry.item.properties.get("datetime"),
                "values": [_plain(v) for v in np.ma.atleast_1d(point.array)],
            }
            for entry, point in results
        ]
        ranked = {entry.position: i for i, entry in enumerate(index.intersecting(location, order))}
        ordered = sorted(results, key=lambda pair: ranked.get(pair[0].position, 0))
        selected = select_point([point for _, point in ordered], pixel_selection)
        values = [None] * len(band_names) if selected is None else [_plain(v) for v in selected]
        if len(values) != len(band_names):  # count: one value
            band_names = ["count"] if pixel_selection == "count" else band_names
        return PointSeries(
            coordinates=[lon, lat],
            band_names=band_names,
            values=values,
            series=series,
            partial=partial,
            candidates=len(items),
        )


def _rasterize(geometry: shapely.Geometry, image: ImageData, all_touched: bool) -> np.ndarray:
    """Pixels of ``image``'s grid inside ``geometry`` (in the image's CRS)."""
    return rasterize(
        [geometry],
        out_shape=(image.height, image.width),
        transform=from_bounds(*image.bounds, image.width, image.height),
        all_touched=all_touched,
        fill=0,
        default_value=1,
        dtype="uint8",
    ).astype(bool)


def _inside(
    geometry: shapely.Geometry | Mapping[str, Any],
    crs: CRS,
    image: ImageData,
    all_touched: bool,
) -> np.ndarray:
    """Pixels of ``image``'s grid inside ``geometry`` given in ``crs``."""
    mapping = (
        shapely.geometry.mapping(geometry) if isinstance(geometry, shapely.Geometry) else geometry
    )
    if crs != image.crs:
        mapping = transform_geom(crs, image.crs, mapping)
    return _rasterize(shapely.geometry.shape(mapping), image, all_touched)
