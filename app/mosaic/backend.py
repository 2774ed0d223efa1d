"""A registered search's mosaic as a rio-tiler backend: which items, and how they are read.

``SearchBackend`` is rio-tiler's ``BaseBackend`` (``rio_tiler/mosaic/backend.py``) over one
registered search: ``assets_for_tile`` / ``assets_for_bbox`` / ``assets_for_point`` answer
from the search's in-memory footprint index (``app.mosaic.index``), never from the catalog,
and every item is read by ``S2STACReader`` exactly as the single-item endpoints read it
(same aliases, expressions, harmonization and ``mask=scl-clear``). What it adds to rio-tiler's
loop is the read policy of a service (``app.mosaic.reader``): items read in order a few at a
time, ``first`` stopping once every pixel it can fill is clear, at most
``mosaic_max_items_per_tile`` items and ``mosaic_time_limit`` seconds, unreadable items
skipped, and pixels outside the search's own area (its ``bbox`` / ``intersects``) masked.

Its read methods keep rio-tiler's names and arguments (plus ``order`` and
``pixel_selection``) but say how the mosaic was made, as a service must tell its clients
(``X-Mosaic-Items``, ``X-Mosaic-Partial``): ``tile`` / ``part`` / ``feature`` answer a
``MosaicRead`` (the image, the items used, how many intersect, why it is partial) where
rio-tiler answers ``(image, assets)``; ``point`` answers the time series with its pixel
selection (``PointSeries``); ``feature_statistics`` the per-feature statistics.

What a request gets:

- outside every item of the search, or outside the search's area: ``NotFoundError`` (404);
- inside the area, every item masked there (clouds everywhere): an empty (fully masked,
  transparent) image;
- a tile below ``mosaic_min_zoom`` (in WebMercatorQuad levels; other TileMatrixSets are
  compared by tile width): ``BadRequestError`` (400) naming the setting;
- no item read within the time limit: ``UpstreamTimeoutError`` (504).

The search is looked up on first use, after the request's own checks: a bad bbox is a 400
even for an unknown search, as it was before the search had a backend.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Any

import attr
import morecantile
import numpy as np
import pyproj
import shapely
import shapely.geometry
from morecantile import TileMatrixSet
from rasterio.crs import CRS
from rasterio.features import rasterize
from rasterio.transform import from_bounds
from rasterio.warp import transform_bounds, transform_geom
from rio_tiler.constants import WEB_MERCATOR_TMS, WGS84_CRS
from rio_tiler.errors import TileOutsideBounds
from rio_tiler.models import ImageData, PointData
from rio_tiler.mosaic.backend import BaseBackend

from app.budget import MemoryBudget
from app.errors import BadRequestError, NotFoundError, TooLargeError, UpstreamTimeoutError
from app.mosaic.index import FootprintIndex, IndexedItem
from app.mosaic.reader import (
    PARTIAL_TIME,
    PIXEL_SELECTIONS,
    MosaicRead,
    read_all,
    read_mosaic,
    select_point,
)
from app.mosaic.search import SearchRecord
from app.ordering import DEFAULT_ORDER, SEARCH_ORDER, check_item_order
from app.readers import S2STACReader, tile_output_pixels
from app.request_checks import (
    check_bbox,
    check_output_pixels,
    check_point,
    check_tile_size,
    shape_bounds,
)

if TYPE_CHECKING:
    from app.mosaic.service import MosaicConfig

__all__ = ["FeatureStatistics", "PointSeries", "SearchBackend", "min_zoom_of"]

#: Width of a WebMercatorQuad zoom-0 tile, metres.
_WEB_MERCATOR_WIDTH = 2 * math.pi * 6378137.0

#: A search id to its record and footprint index (``MosaicService.index``).
SearchResolver = Callable[[str], tuple[SearchRecord, FootprintIndex]]


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


@dataclass
class FeatureStatistics:
    """Statistics of a mosaic over GeoJSON features.

    Attributes:
        features: each feature as given, with ``properties.statistics`` (per band, as
            TiTiler's ``/statistics``) and ``properties.mosaic`` (``items`` used,
            ``intersecting`` count, ``partial`` reasons).
        partial: why any feature's mosaic is partial (sorted, each reason once).
    """

    features: list[dict[str, Any]]
    partial: list[str]


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


def _lonlat_box(bbox: Sequence[float], crs: CRS) -> shapely.Geometry:
    if crs != WGS84_CRS:
        return shapely.box(*transform_bounds(crs, WGS84_CRS, *bbox, densify_pts=21))
    return shapely.box(*bbox)


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


@attr.s
class SearchBackend(BaseBackend):
    """The mosaic of one registered search, in one TileMatrixSet.

    Cheap to build (one per request): the search's record and footprint index come from
    ``resolve`` (the service's cache) on first use, and item readers are built once per
    index and TileMatrixSet, then shared by every request (``IndexedItem.readers``).

    Attributes:
        input: the search id.
        tms: the TileMatrixSet of tiles (and of the item readers).
        reader: the item reader class.
        reader_options: ``S2STACReader`` options (allow-list, SCL classes, limits, budget).
        resolve: a search id to its record and footprint index.
        config: bounds and tuning of mosaics (``MosaicConfig``).

    """

    input: str = attr.ib()
    tms: TileMatrixSet = attr.ib(default=WEB_MERCATOR_TMS)
    reader: type[S2STACReader] = attr.ib(default=S2STACReader)
    reader_options: dict[str, Any] = attr.ib(factory=dict)
    resolve: SearchResolver = attr.ib(kw_only=True)
    config: MosaicConfig = attr.ib(kw_only=True)
    # The footprint index and the bounds are in lon/lat.
    crs: CRS = attr.ib(init=False, default=WGS84_CRS)

    # ------------------------------------------------------------------ the search

    @cached_property
    def _search(self) -> tuple[SearchRecord, FootprintIndex]:
        return self.resolve(self.input)

    @property
    def record(self) -> SearchRecord:
        """The registered search (``NotFoundError`` when unknown)."""
        return self._search[0]

    @property
    def index(self) -> FootprintIndex:
        """The search's footprint index (built on first use, rebuilt after the TTL)."""
        return self._search[1]

    @property
    def default_order(self) -> str:
        """``search`` (catalog order) when the search has a sortby, else ``mostRecent``."""
        return SEARCH_ORDER if self.record.search.get("sortby") else DEFAULT_ORDER

    def order(self, order: str | None = None) -> str:
        """``order``, checked; by default the search's own (``default_order``)."""
        if order is None:
            return self.default_order
        return check_item_order(order)

    def asset_name(self, asset: IndexedItem) -> str:
        """The item id."""
        return asset.id

    # ------------------------------------------------------------------ extent

    @cached_property
    def bounds(self) -> tuple[float, float, float, float]:  # type: ignore[override]
        """Lon/lat bounds: the metadata's, else the items' within the search's area."""
        bounds = self.record.metadata.get("bounds") or self.index.bounds
        if bounds is None:
            area = self.index.area
            bounds = area.bounds if area is not None else (-180, -90, 180, 90)
        minx, miny, maxx, maxy = (float(v) for v in bounds)
        return minx, miny, maxx, maxy

    @cached_property
    def _zooms(self) -> tuple[int, int]:
        meta = self.record.metadata
        index = self.index
        minzoom, maxzoom = index.zoom_range(self.tms.id, lambda: self._item_zooms(index))
        if meta.get("minzoom") is not None:
            minzoom = meta["minzoom"]
        if meta.get("maxzoom") is not None:
            maxzoom = meta["maxzoom"]
        minzoom = max(minzoom, min_zoom_of(self.tms, self.config.min_zoom))
        return int(minzoom), int(max(maxzoom, minzoom))

    @property
    def minzoom(self) -> int:  # type: ignore[override]
        """The metadata's minzoom, else the items'; never below ``mosaic_min_zoom``."""
        return self._zooms[0]

    @property
    def maxzoom(self) -> int:  # type: ignore[override]
        """The metadata's maxzoom, else the items' (at least ``minzoom``)."""
        return self._zooms[1]

    def _item_zooms(self, index: FootprintIndex) -> tuple[int, int]:
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
            return self.tms.minzoom, self.tms.maxzoom
        minzooms, maxzooms = [], []
        for entry in seen.values():
            with self.reader(entry.item, tms=self.tms, **self.reader_options) as src:
                minzooms.append(src.minzoom)
                maxzooms.append(src.maxzoom)
        return min(minzooms), max(maxzooms)

    def check_zoom(self, z: int) -> None:
        """Refuse a tile below the minimum mosaic zoom (400 naming the setting)."""
        floor = min_zoom_of(self.tms, self.config.min_zoom)
        if z < floor:
            raise BadRequestError(
                f"zoom {z}: mosaic tiles of {self.tms.id} start at zoom {floor} "
                f"(mosaic_min_zoom={self.config.min_zoom}), below it a tile would read "
                "too many scenes; zoom in, or ask /bbox for an overview at a coarse size"
            )

    # ------------------------------------------------------------------ which items

    def _tile_area(self, x: int, y: int, z: int) -> tuple[str, shapely.Geometry]:
        """How a tile is named in messages, and its lon/lat box (404 for no such tile)."""
        tile = morecantile.Tile(x, y, z)
        if not self.tms.is_valid(tile):
            raise NotFoundError(f"tile {self.tms.id}/{z}/{x}/{y} does not exist")
        what = f"tile {self.tms.id}/{z}/{x}/{y}"
        bounds = self.tms.bounds(tile)
        if not (bounds.left < bounds.right and bounds.bottom < bounds.top):
            # Far outside a projection's domain, a tile's lon/lat corners come back
            # folded over (CanadianNAD83_LCC 7/1/1: top below bottom).
            raise NotFoundError(f"{what} has no extent in longitude/latitude")
        if self.tms.rasterio_geographic_crs != WGS84_CRS:
            bounds = transform_bounds(self.tms.rasterio_geographic_crs, WGS84_CRS, *bounds)
        return what, shapely.box(*bounds)

    def assets_for_tile(
        self, x: int, y: int, z: int, order: str | None = None, **kwargs: Any
    ) -> list[IndexedItem]:
        """The items intersecting a tile, in ``order``."""
        return self.index.intersecting(self._tile_area(x, y, z)[1], self.order(order))

    def assets_for_bbox(
        self,
        xmin: float,
        ymin: float,
        xmax: float,
        ymax: float,
        coord_crs: CRS = WGS84_CRS,
        order: str | None = None,
        **kwargs: Any,
    ) -> list[IndexedItem]:
        """The items intersecting a bbox given in ``coord_crs``, in ``order``."""
        request = _lonlat_box((xmin, ymin, xmax, ymax), coord_crs)
        return self.index.intersecting(request, self.order(order))

    def assets_for_point(
        self,
        lng: float,
        lat: float,
        coord_crs: CRS = WGS84_CRS,
        order: str | None = None,
        **kwargs: Any,
    ) -> list[IndexedItem]:
        """The items whose footprint holds a point given in ``coord_crs``, in ``order``."""
        location = _to_lonlat({"type": "Point", "coordinates": [lng, lat]}, coord_crs)
        return self.index.intersecting(location, self.order(order))

    # ------------------------------------------------------------------ reading

    def _open(self, entry: IndexedItem) -> S2STACReader:
        """The item's reader for ``tms``, built once per index and then shared.

        A reader holds no open dataset (every asset read opens its own) and its read
        methods do not change it, so threads share it; building one parses the item's
        assets and projection (milliseconds per item, per tile, otherwise).
        """
        reader = entry.readers.get(self.tms.id)
        if reader is None:
            # Zooms given: rio-tiler would otherwise compute them for every reader.
            reader = entry.readers[self.tms.id] = self.reader(
                entry.item,
                tms=self.tms,
                minzoom=self.tms.minzoom,
                maxzoom=self.tms.maxzoom,
                **self.reader_options,
            )
        return reader

    def check_layer(self, **options: Any) -> None:
        """Refuse a layer the search's items cannot read (400 / 413), reading nothing.

        Checked against the first item of each collection of the search (its items share
        their collection's assets), as each item's read checks it
        (``S2STACReader.check_layer``). A search without items has nothing to check.
        """
        checked: set[str | None] = set()
        for entry in self.index.items:
            if entry.collection not in checked:
                checked.add(entry.collection)
                self._open(entry).check_layer(**options)

    def _read_window(
        self,
        items: Sequence[IndexedItem],
        pixels: int,
        options: Mapping[str, Any],
        pixel_selection: str,
        what: str,
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
        cost = self._open(items[0]).request_cost(pixels, **options)
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
        what: str,
        shape: tuple[dict[str, Any], CRS] | None = None,
        window: int | None = None,
    ) -> MosaicRead:
        """Read the mosaic of ``items`` over ``request`` (lon/lat), clipped to the search area.

        Pixels outside the search's own bbox/intersects are masked, like the pixels no
        item covers, so the mosaic is the search's region and not the whole scenes that
        touch it. ``window``: reads in flight at most (default ``threads``).
        """
        area = self.index.area
        clip = None if area is None or area.covers(request) else area
        result = read_mosaic(
            items,
            read,
            pixel_selection,
            max_items=self.config.max_items_per_tile,
            time_limit=self.config.time_limit,
            max_window=window or self.config.threads,
            outside=_outside(items, request, shape, clip),
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

    def _bbox_items(
        self, bbox: Sequence[float], bounds_crs: CRS, order: str | None
    ) -> tuple[Sequence[float], Any, list[IndexedItem], str]:
        """A crop's bbox checked, its lon/lat box, its items in ``order`` (404: none), its name."""
        bbox = check_bbox(bbox, bounds_crs)
        request = _lonlat_box(bbox, bounds_crs)
        items = self.assets_for_bbox(*bbox, coord_crs=bounds_crs, order=self.order(order))
        what = "bbox " + ",".join(f"{v:g}" for v in bbox)
        self._require_items(what, items)
        return bbox, request, items, what

    def _require_items(self, what: str, items: Sequence[IndexedItem]) -> None:
        if not items:
            raise NotFoundError(f"{what} is outside search '{self.input}' (no item there)")

    def tile(  # type: ignore[override]
        self,
        tile_x: int,
        tile_y: int,
        tile_z: int,
        *,
        order: str | None = None,
        pixel_selection: str = "first",
        **kwargs: Any,
    ) -> MosaicRead:
        """One map tile of the mosaic.

        Args:
            tile_x: tile column.
            tile_y: tile row.
            tile_z: zoom level.
            order: mostRecent, leastRecent, leastCC or search (default: ``order()``).
            pixel_selection: first, highest, lowest, mean, median, stdev, count.
            kwargs: what ``S2STACReader.tile`` reads (tilesize, assets/expression, mask,
                harmonize, buffer, padding, nodata, resampling ...).

        """
        self.check_zoom(tile_z)
        order = self.order(order)
        what, request = self._tile_area(tile_x, tile_y, tile_z)
        items = self.assets_for_tile(tile_x, tile_y, tile_z, order=order)
        self._require_items(what, items)
        tilesize = kwargs.get("tilesize")
        check_tile_size(tilesize, self.reader_options.get("max_tile_size"))
        pixels = tile_output_pixels(
            self.tms, tile_z, tilesize, kwargs.get("buffer"), self.reader_options.get("max_pixels")
        )
        window = self._read_window(items, pixels, kwargs, pixel_selection, what)

        def read(entry: IndexedItem) -> ImageData:
            return self._open(entry).tile(tile_x, tile_y, tile_z, **kwargs)

        return self._mosaic(items, read, pixel_selection, request, what, window=window)

    def _crop(
        self,
        items: Sequence[IndexedItem],
        request: shapely.Geometry,
        what: str,
        grid: tuple[Sequence[float], CRS, CRS],
        size: tuple[int | None, int | None, int | None],
        read: Callable[[S2STACReader, int, int], ImageData],
        pixel_selection: str,
        options: Mapping[str, Any],
        shape: tuple[dict[str, Any], CRS] | None = None,
    ) -> MosaicRead:
        """The mosaic of ``items``, each read by ``read(reader, width, height)`` on one grid.

        ``grid`` is ``(bbox, its CRS, the output CRS)``; ``size`` the caller's ``(width,
        height, max_size)``: without width and height the grid is at the finest native
        resolution of what the first item reads.
        """
        width, height = self._output_size(items[0], *grid, size, options)
        pixels = check_output_pixels(width, height, None, self.reader_options.get("max_pixels"))
        window = self._read_window(items, pixels or 1, options, pixel_selection, what)
        return self._mosaic(
            items,
            lambda entry: read(self._open(entry), width, height),
            pixel_selection,
            request,
            what,
            shape,
            window=window,
        )

    def _output_size(
        self,
        entry: IndexedItem,
        bbox: Sequence[float],
        bounds_crs: CRS,
        dst_crs: CRS,
        size: tuple[int | None, int | None, int | None],
        options: Mapping[str, Any],
    ) -> tuple[int, int]:
        """One output grid for every item: the caller's size, else the native resolution."""
        width, height, max_size = size
        if width and height:
            return int(width), int(height)
        src = self._open(entry)
        native_w, native_h = src.native_size(
            tuple(bbox),
            bounds_crs,
            dst_crs,
            options.get("assets"),
            options.get("expression"),
            options.get("evalscript"),
        )
        if width:
            return int(width), max(1, round(width * native_h / native_w))
        if height:
            return max(1, round(height * native_w / native_h)), int(height)
        if max_size and max(native_w, native_h) > max_size:
            ratio = max_size / max(native_w, native_h)
            return max(1, round(native_w * ratio)), max(1, round(native_h * ratio))
        return native_w, native_h

    def part(  # type: ignore[override]
        self,
        bbox: Sequence[float],
        bounds_crs: CRS = WGS84_CRS,
        dst_crs: CRS | None = None,
        width: int | None = None,
        height: int | None = None,
        max_size: int | None = None,
        *,
        order: str | None = None,
        pixel_selection: str = "first",
        **kwargs: Any,
    ) -> MosaicRead:
        """A bbox crop of the mosaic (default: the finest native resolution of what is read).

        ``dst_crs`` defaults to ``bounds_crs``, as for single items; ``kwargs`` are what
        ``S2STACReader.part`` reads (assets/expression, mask, harmonize, nodata ...).
        """
        bbox, request, items, what = self._bbox_items(bbox, bounds_crs, order)
        dst_crs = dst_crs or bounds_crs
        return self._crop(
            items,
            request,
            what,
            (bbox, bounds_crs, dst_crs),
            (width, height, max_size),
            lambda src, width, height: src.part(
                bbox, bounds_crs=bounds_crs, dst_crs=dst_crs, width=width, height=height, **kwargs
            ),
            pixel_selection,
            kwargs,
        )

    def part_frames(
        self,
        bbox: Sequence[float],
        frames: Callable[[list[IndexedItem]], Sequence[Sequence[IndexedItem]]],
        bounds_crs: CRS = WGS84_CRS,
        dst_crs: CRS | None = None,
        width: int | None = None,
        height: int | None = None,
        *,
        order: str | None = None,
        pixel_selection: str = "first",
        max_frames: int | None = None,
        max_pixels: int | None = None,
        time_limit: float | None = None,
        **kwargs: Any,
    ) -> list[MosaicRead | None]:
        """Several bbox crops on one grid, each the mosaic of its own items (an animation).

        ``frames`` groups the items intersecting the bbox (in ``order``) into frames; each
        frame is what ``part`` answers for its items alone (same grid, pixel selection and
        clip to the search area). Every item of every frame is read at once on the shared
        read threads (``mosaic_threads`` in flight), then each frame's images are combined.

        Args:
            bbox: the bbox, in ``bounds_crs``.
            frames: the items intersecting the bbox, in ``order`` -> the items of each frame.
            bounds_crs: the bbox's CRS.
            dst_crs: the output CRS (default ``bounds_crs``).
            width: output width (default: from the first item's native resolution).
            height: output height (likewise).
            order: item order within a frame.
            pixel_selection: how a frame's items combine.
            max_frames: frames at most (400 naming ``animation_max_frames``).
            max_pixels: output pixels over every frame at most (413 naming
                ``animation_max_pixels``).
            time_limit: seconds every read waits at most (default ``mosaic_time_limit``).
            kwargs: what ``S2STACReader.part`` reads.

        Returns:
            One ``MosaicRead`` per frame, None where none of its items had data.

        """
        bbox, request, items, what = self._bbox_items(bbox, bounds_crs, order)
        groups = [list(group) for group in frames(items) if group]
        if max_frames is not None and len(groups) > max_frames:
            raise BadRequestError(
                f"{what}: {len(groups)} frames, over the limit animation_max_frames="
                f"{max_frames}; use a longer interval, a shorter search or fewer items"
            )
        dst_crs = dst_crs or bounds_crs
        width, height = self._output_size(
            items[0], bbox, bounds_crs, dst_crs, (width, height, None), kwargs
        )
        pixels = check_output_pixels(width, height, None, self.reader_options.get("max_pixels"))
        pixels = pixels or 1
        if max_pixels is not None and pixels * len(groups) > max_pixels:
            raise TooLargeError(
                f"{what}: {len(groups)} frames of {width}x{height} are "
                f"{pixels * len(groups)} pixels, over the limit animation_max_pixels="
                f"{max_pixels}; ask for fewer frames or a smaller size"
            )
        # What ``read_mosaic`` reads of each frame: its first ``mosaic_max_items_per_tile``.
        wanted = [entry for group in groups for entry in group[: self.config.max_items_per_tile]]
        window = self._frames_window(wanted, pixels, kwargs, what)

        def read(entry: IndexedItem) -> ImageData:
            return self._open(entry).part(
                bbox, bounds_crs=bounds_crs, dst_crs=dst_crs, width=width, height=height, **kwargs
            )

        limit = self.config.time_limit if time_limit is None else time_limit
        results, partial = read_all(
            wanted, read, max_items=len(wanted), time_limit=limit, max_window=window
        )
        if not results and PARTIAL_TIME in partial:
            # Not "no data": nothing was read in time (a slow source, a busy service).
            setting = "mosaic_time_limit" if time_limit is None else "animation_time_limit"
            raise UpstreamTimeoutError(
                f"{what}: no item could be read within {setting}={limit:g} s"
            )
        images = {entry.position: image for entry, image in results}

        def lookup(entry: IndexedItem) -> ImageData:
            image = images.get(entry.position)
            if image is None:  # outside its bounds, unreadable or not read in time
                raise TileOutsideBounds(f"item '{entry.id}' has no data there")
            return image

        reads: list[MosaicRead | None] = []
        for group in groups:
            try:
                result = self._mosaic(group, lookup, pixel_selection, request, what, window=1)
            except NotFoundError:
                result = None
            else:
                result.partial = sorted(set(result.partial) | set(partial))
            reads.append(result)
        return reads

    def _frames_window(
        self, items: Sequence[IndexedItem], pixels: int, options: Mapping[str, Any], what: str
    ) -> int:
        """Reads in flight for ``part_frames``, every image it reads held until the end.

        413 (``max_request_bytes``) when the images of every item, and the reads in flight,
        do not fit the memory budget.
        """
        threads = max(1, self.config.threads)
        budget: MemoryBudget | None = self.reader_options.get("budget")
        if budget is None:
            return threads
        cost = self._open(items[0]).request_cost(pixels, **options)
        budget.check(cost, what)
        if budget.max_request_bytes is None:
            return threads
        kept_bytes = len(items) * cost.pixels * cost.output_bytes_per_pixel
        window = min(threads, len(items), (budget.max_request_bytes - kept_bytes) // cost.total)
        budget.check_bytes(
            kept_bytes + max(window, 1) * cost.total,
            f"animation of {len(items)} item reads kept, {max(window, 1)} read in flight of "
            f"{cost.describe()}",
            what,
        )
        return max(window, 1)

    def feature(  # type: ignore[override]
        self,
        shape: Mapping[str, Any],
        shape_crs: CRS = WGS84_CRS,
        dst_crs: CRS | None = None,
        width: int | None = None,
        height: int | None = None,
        max_size: int | None = None,
        *,
        order: str | None = None,
        pixel_selection: str = "first",
        **kwargs: Any,
    ) -> MosaicRead:
        """The mosaic over a GeoJSON geometry or feature (pixels outside it masked).

        ``dst_crs`` defaults to the native CRS of the first item (statistics are computed on
        the scenes' own grid, never in Web Mercator).
        """
        shape_bounds(dict(shape), shape_crs)  # a polygon, finite, on Earth: as single items
        order = self.order(order)
        geometry = _geometry_of(shape)
        try:
            request = _to_lonlat(geometry, shape_crs)
        except Exception as error:  # shapely / rasterio on a malformed geometry
            raise BadRequestError(f"geometry: not a valid GeoJSON geometry ({error})") from None
        if request.is_empty:
            raise BadRequestError("geometry: empty")
        # BaseBackend has no assets_for_shape: the index answers for any geometry.
        items = self.index.intersecting(request, order)
        what = "geometry"
        self._require_items(what, items)
        if dst_crs is None:
            dst_crs = self._open(items[0]).crs or WGS84_CRS
        return self._crop(
            items,
            request,
            what,
            (shapely.geometry.shape(geometry).bounds, shape_crs, dst_crs),
            (width, height, max_size),
            lambda src, width, height: src.feature(
                geometry, shape_crs=shape_crs, dst_crs=dst_crs, width=width, height=height, **kwargs
            ),
            pixel_selection,
            kwargs,
            shape=(geometry, shape_crs),
        )

    def feature_statistics(
        self,
        shapes: Sequence[Mapping[str, Any]],
        shape_crs: CRS = WGS84_CRS,
        *,
        cover_scale: int = 10,
        statistics_options: Mapping[str, Any] | None = None,
        histogram_options: Mapping[str, Any] | None = None,
        post_process: Callable[[ImageData], ImageData] | None = None,
        **kwargs: Any,
    ) -> FeatureStatistics:
        """Per-feature statistics of the mosaic, coverage-weighted, on the scenes' grid.

        Each feature is read as ``feature`` reads it (one mosaic per feature), then
        ``post_process`` (an algorithm) is applied and rio-tiler's statistics computed with
        each pixel weighted by the fraction of it inside the feature (``cover_scale``).

        Args:
            shapes: GeoJSON features.
            shape_crs: their CRS.
            cover_scale: the coverage's sub-pixel resolution.
            statistics_options: ``ImageData.statistics`` options (categorical, percentiles).
            histogram_options: numpy histogram options (bins, range).
            post_process: applied to each feature's image before its statistics.
            kwargs: what ``feature`` takes (dst_crs, width, height, max_size, order,
                pixel_selection, and the item read options).

        """
        partial: set[str] = set()
        features = []
        for shape in shapes:
            result = self.feature(shape, shape_crs=shape_crs, **kwargs)
            image = result.image
            assert image is not None
            coverage = image.get_coverage_array(
                dict(shape), shape_crs=shape_crs, cover_scale=cover_scale
            )
            if post_process:
                image = post_process(image)
            stats = image.statistics(
                **(statistics_options or {}),
                hist_options=dict(histogram_options or {}),
                coverage=coverage,
            )
            partial.update(result.partial)
            document = dict(shape)
            document["properties"] = {
                **(shape.get("properties") or {}),
                "statistics": {band: value.model_dump() for band, value in stats.items()},
                "mosaic": {
                    "items": [self.asset_name(entry) for entry in result.used],
                    "intersecting": result.candidates,
                    "partial": result.partial,
                },
            }
            features.append(document)
        return FeatureStatistics(features=features, partial=sorted(partial))

    def point(  # type: ignore[override]
        self,
        lon: float,
        lat: float,
        coord_crs: CRS = WGS84_CRS,
        *,
        order: str | None = None,
        pixel_selection: str = "first",
        **kwargs: Any,
    ) -> PointSeries:
        """The time series of every item at a point, and its pixel-selected value.

        Items are read oldest first (the series); the pixel selection takes them in
        ``order``. ``kwargs`` are what ``S2STACReader.point`` reads.
        """
        check_point(lon, lat, coord_crs)
        order = self.order(order)
        items = self.assets_for_point(lon, lat, coord_crs, order="leastRecent")
        if not items:
            raise NotFoundError(
                f"point ({lon:g}, {lat:g}) is outside search '{self.input}' (no item there)"
            )
        budget: MemoryBudget | None = self.reader_options.get("budget")
        if budget is not None:
            # A point is one pixel, but its counts (assets, bands, outputs) are bounded.
            budget.check(self._open(items[0]).request_cost(1, **kwargs), "point")

        def read(entry: IndexedItem) -> PointData:
            return self._open(entry).point(lon, lat, coord_crs=coord_crs, **kwargs)

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
        ranked = {
            entry.position: i
            for i, entry in enumerate(self.assets_for_point(lon, lat, coord_crs, order=order))
        }
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
