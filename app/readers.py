"""rio-tiler readers that know Sentinel-2 and never read outside the allow-list.

``S2STACReader`` extends rio-tiler's ``STACReader``: assets may be named by common name or
band name (``B04`` is ``red``), expressions name assets directly and are evaluated by
``app.expressions`` (never by numexpr on user text), reflectance is harmonized from
``raster:bands`` scale/offset, and ``mask="scl-clear"`` turns the configured SCL classes
into nodata, SCL being read nearest-neighbour onto the bands' grid.

``SafeCOGReader`` is rio-tiler's ``Reader`` with the same expression evaluator, for
``b1``-style band math on a single COG.
"""

import math
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import attr
import numpy as np
import pystac
from rasterio.crs import CRS
from rasterio.errors import RasterioIOError
from rasterio.warp import transform_bounds
from rio_tiler.constants import WGS84_CRS as WGS84
from rio_tiler.errors import InvalidAssetName
from rio_tiler.io import Reader, STACReader
from rio_tiler.models import BandStatistics, ImageData, PointData
from rio_tiler.utils import get_vrt_transform

from app import reprojection, sentinel2
from app.budget import MemoryBudget, RequestCost, read_cost
from app.datasets import dataset_pool, is_remote, reader_executor
from app.errors import BadRequestError
from app.expressions import Expression, parse_expression
from app.redirects import resolve_redirects
from app.request_checks import (
    check_bbox,
    check_indexes,
    check_nodata,
    check_output_pixels,
    check_point,
    check_tile,
    check_tile_size,
    shape_bounds,
    tile_pixels,
)
from app.security import check_source, redact_source, shown_source
from app.sentinel2 import MASK_NONE, MASK_SCL_CLEAR, SCL_ASSET
from app.stac_item import fetch_item

# rio-tiler recomputes a dataset's whole reprojected grid for every tile: cache it.
reprojection.install()

Layer = ImageData | PointData

# rio-tiler's default decimation of statistics (``Reader.statistics(max_size=1024)``).
STATISTICS_MAX_SIZE = 1024
# rio-tiler's default size of previews (``Reader.preview(max_size=1024)``).
PREVIEW_MAX_SIZE = 1024
# Bytes per sample assumed for an asset whose item does not give its data type.
UNKNOWN_ITEMSIZE = 8


def _masked(values: np.ndarray, invalid: np.ndarray) -> np.ma.MaskedArray:
    return np.ma.MaskedArray(values, mask=np.ma.getmaskarray(values) | invalid)


def _bounds_in(bbox, bounds_crs: CRS, crs: CRS) -> tuple[float, float, float, float]:
    """``bbox`` (in ``bounds_crs``) in ``crs``; a 400 when it has no extent there."""
    bounds = transform_bounds(bounds_crs, crs, *bbox, densify_pts=21)
    minx, miny, maxx, maxy = bounds
    if not all(math.isfinite(v) for v in bounds) or minx >= maxx or miny >= maxy:
        # PROJ answers inf for what has no place in the target CRS (a bbox of a whole
        # hemisphere in a UTM zone).
        raise BadRequestError(f"bbox: {list(bbox)} has no extent in the CRS {crs}")
    return bounds


def _native_pixels(bbox, bounds_crs: CRS, crs: CRS, resolution: float) -> tuple[int, int]:
    """Width/height of ``bbox`` (in ``bounds_crs``) on a grid of ``resolution`` in ``crs``."""
    minx, miny, maxx, maxy = _bounds_in(bbox, bounds_crs, crs)
    return max(1, round((maxx - minx) / resolution)), max(1, round((maxy - miny) / resolution))


def _aspect(bbox, bounds_crs: CRS, crs: CRS) -> Callable[[], float]:
    """Height / width of ``bbox`` laid out in ``crs``, computed when asked."""

    def aspect() -> float:
        minx, miny, maxx, maxy = _bounds_in(bbox, bounds_crs, crs)
        return (maxy - miny) / (maxx - minx)

    return aspect


def tile_output_pixels(
    tms: Any, tile_z: int, tilesize: int | None, buffer: float | None, limit: int | None
) -> int:
    """Output pixels of a tile: ``tilesize`` (default: the matrix's) plus its buffer."""
    if not tilesize:
        matrix = tms.matrix(tile_z)
        tilesize = max(matrix.tileWidth, matrix.tileHeight)
    return tile_pixels(tilesize, buffer, limit)


def _itemsize(dtype: str | None) -> int:
    try:
        return np.dtype(dtype).itemsize if dtype else UNKNOWN_ITEMSIZE
    except TypeError:
        return UNKNOWN_ITEMSIZE


def _scl_reads_with_bands(kwargs: dict[str, Any]) -> bool:
    """Whether the SCL can be read with the bands, with the same options.

    Only when they resample and reproject nearest-neighbour (the default) and no
    ``nodata`` overrides the bands' (a uint16 nodata is no uint8 SCL value).
    """
    return (
        kwargs.get("resampling_method") in (None, "nearest")
        and kwargs.get("reproject_method") in (None, "nearest")
        and kwargs.get("nodata") is None
    )


def _bands(layer: Layer, names: Sequence[str]) -> dict[str, np.ma.MaskedArray]:
    """The layer's bands by name; a point's values as 1-element arrays, like pixels."""
    if isinstance(layer, PointData):
        return {name: layer.array[i : i + 1] for i, name in enumerate(names)}
    return {name: layer.array[i] for i, name in enumerate(names)}


@attr.s
class GTiffReader(Reader):
    """rio-tiler's Reader over a dataset lent by the process's ``DatasetPool``.

    Sources are opened with the GeoTIFF driver only: a remote "COG" that is really a VRT,
    WMS or other indirection document cannot be sniffed before opening; restricting the
    driver means GDAL never interprets it. The dataset goes back to the pool when the
    reader closes (closed instead when the ``with`` block raised).
    """

    # Who the dataset is, for "read failed" messages: the item's asset key, and the
    # allow-list whose folders are hidden from them (no absolute paths of this machine).
    asset: str | None = attr.ib(default=None, kw_only=True)
    allowed_sources: Sequence[str] = attr.ib(factory=tuple, kw_only=True)
    # max_output_pixels: also the most source pixels a padded tile may warp (_padding).
    max_pixels: int | None = attr.ib(default=None, kw_only=True)

    def __attrs_post_init__(self):
        """Borrow the dataset, then let rio-tiler read its metadata."""
        if not self.dataset:
            with self._read_errors():
                self.dataset = self._ctx_stack.enter_context(dataset_pool().open(self.input))
        super().__attrs_post_init__()

    @contextmanager
    def _read_errors(self) -> Iterator[None]:
        """GDAL's open/read failures as a 502 naming the asset, its path made relative."""
        try:
            yield
        except RasterioIOError as error:
            shown = shown_source(self.input, self.allowed_sources)
            what = f"asset '{self.asset}' ({shown})" if self.asset else f"'{shown}'"
            reason = redact_source(str(error), self.input, self.allowed_sources)
            # Still a RasterioIOError (502, "unreadable" to mosaics), with a safe message.
            raise RasterioIOError(f"read failed: {what}: {reason}") from None

    def __exit__(self, exc_type, exc_value, traceback):
        """Close, telling the pool whether the reads failed."""
        self._ctx_stack.__exit__(exc_type, exc_value, traceback)

    # Every read of one GeoTIFF checks the options that must fit the data type: tiles and
    # features go through part; previews and statistics (per asset too) through read.
    def part(self, *args: Any, **kwargs: Any) -> ImageData:
        """Read a bbox (rio-tiler's ``Reader.part``)."""
        check_nodata(kwargs.get("nodata"), self.dataset.dtypes[0])
        if kwargs.get("padding"):
            kwargs["padding"] = self._padding(args[0], kwargs)
        with self._read_errors():
            return super().part(*args, **kwargs)

    def _padding(self, bbox: Sequence[float], kwargs: dict[str, Any]) -> int:
        """``padding``, or 0 where honouring it would warp over ``max_pixels`` source pixels.

        rio-tiler reads a padded, reprojected tile through a WarpedVRT window at the
        dataset's own resolution, so GDAL cannot use overviews: a padded zoom-0 tile of a
        60 m band took 25-67 s (unpadded: 0.2 s). Tiles that far from the data's
        resolution show no edge effect to pad against, so they are read without it.
        """
        padding = int(kwargs["padding"])
        dst_crs = kwargs.get("dst_crs") or self.dataset.crs
        if self.max_pixels is None:
            return padding
        if dst_crs == self.dataset.crs:
            # No VRT: the padded window is read with overviews, but into one array of the
            # padded output size: padding=20000 on a 256 px tile was a 1.6 G pixel array.
            width, height = kwargs.get("width"), kwargs.get("height")
            if width and height:
                padded = (int(width) + 2 * padding) * (int(height) + 2 * padding)
                return padding if padded <= self.max_pixels else 0
            return padding
        bounds = bbox
        bounds_crs = kwargs.get("bounds_crs")
        if bounds_crs and bounds_crs != dst_crs:
            bounds = transform_bounds(bounds_crs, dst_crs, *bbox, densify_pts=21)
        _, width, height = get_vrt_transform(
            self.dataset, bounds, kwargs.get("height"), kwargs.get("width"), dst_crs=dst_crs
        )
        return padding if (width + 2 * padding) * (height + 2 * padding) <= self.max_pixels else 0

    def read(self, *args: Any, **kwargs: Any) -> ImageData:
        """Read the whole dataset, maybe decimated (rio-tiler's ``Reader.read``)."""
        check_nodata(kwargs.get("nodata"), self.dataset.dtypes[0])
        with self._read_errors():
            return super().read(*args, **kwargs)

    def point(self, *args: Any, **kwargs: Any) -> PointData:
        """Read a point (rio-tiler's ``Reader.point``)."""
        check_nodata(kwargs.get("nodata"), self.dataset.dtypes[0])
        with self._read_errors():
            return super().point(*args, **kwargs)


@attr.s
class SafeCOGReader(GTiffReader):
    """rio-tiler's COG reader with band math by ``app.expressions`` (``b1``, ``b2``...)."""

    max_tile_size: int | None = attr.ib(default=None, kw_only=True)
    budget: MemoryBudget | None = attr.ib(default=None, kw_only=True)

    def _check_budget(
        self, pixels: int | None, indexes: int | Sequence[int] | None, outputs: int | None
    ) -> None:
        """Refuse (413) a read of ``indexes`` (None: every band) over the memory budget."""
        if self.budget is None:
            return
        if isinstance(indexes, int):
            indexes = [indexes]
        bands = list(indexes) if indexes else list(range(1, self.dataset.count + 1))
        itemsizes = [_itemsize(self.dataset.dtypes[index - 1]) for index in bands]
        if outputs is None:
            cost = read_cost(pixels or 1, itemsizes)
        else:
            self.budget.check_outputs(outputs)
            cost = read_cost(pixels or 1, itemsizes, math_inputs=len(bands), outputs=outputs)
        self.budget.check(cost)

    def _with_expression(
        self,
        read: Callable[..., Layer],
        expression: str | None,
        pixels: int | None,
        **kwargs: Any,
    ) -> Layer:
        """``read`` the bands (or the inputs of ``expression``) of ``pixels`` output pixels.

        Checked before anything is read: band indexes, the expression and the request's
        memory (``app.budget``).
        """
        check_indexes(kwargs.get("indexes"), self.dataset.count)
        if not expression:
            self._check_budget(pixels, kwargs.get("indexes"), None)
            return read(**kwargs)
        expr = parse_expression(expression)
        count = self.dataset.count
        indexes: list[int] = []
        for name in expr.names:
            if not (name.startswith("b") and name[1:].isdigit()):
                raise BadRequestError(
                    f"expression: unknown band '{name}'; a COG's bands are b1..b{count}"
                )
            index = int(name[1:])
            if not 1 <= index <= count:
                raise BadRequestError(
                    f"expression: band '{name}' out of range; this COG has {count} bands"
                )
            indexes.append(index)
        kwargs.pop("indexes", None)
        self._check_budget(pixels, indexes, len(expr.outputs))
        layer = read(indexes=indexes, **kwargs)
        return _replace_bands(layer, expr.evaluate(_bands(layer, expr.names)), list(expr.outputs))

    def tile(self, *args: Any, expression: str | None = None, **kwargs: Any) -> ImageData:
        """Read a map tile; ``expression`` evaluated by ``app.expressions``."""
        check_tile(self.tms, *args[:3])
        check_tile_size(kwargs.get("tilesize"), self.max_tile_size)
        pixels = tile_output_pixels(
            self.tms, args[2], kwargs.get("tilesize"), kwargs.get("buffer"), self.max_pixels
        )
        return self._with_expression(
            lambda **kw: super(SafeCOGReader, self).tile(*args, **kw),
            expression,
            pixels,
            **kwargs,
        )

    def part(self, *args: Any, expression: str | None = None, **kwargs: Any) -> ImageData:
        """Read a bbox; ``expression`` evaluated by ``app.expressions``."""
        bounds_crs = kwargs.get("bounds_crs") or WGS84
        check_bbox(args[0], bounds_crs)
        width, height, max_size = (kwargs.get(k) for k in ("width", "height", "max_size"))
        if not (width or height or max_size):
            width, height = _native_pixels(args[0], bounds_crs, self.crs, min(self.dataset.res))
        aspect = _aspect(args[0], bounds_crs, kwargs.get("dst_crs") or bounds_crs)
        pixels = check_output_pixels(width, height, max_size, self.max_pixels, aspect)
        return self._with_expression(
            lambda **kw: super(SafeCOGReader, self).part(*args, **kw),
            expression,
            pixels,
            **kwargs,
        )

    def preview(self, *args: Any, expression: str | None = None, **kwargs: Any) -> ImageData:
        """Read a decimated preview; ``expression`` evaluated by ``app.expressions``."""
        pixels = check_output_pixels(
            kwargs.get("width"),
            kwargs.get("height"),
            kwargs.get("max_size", PREVIEW_MAX_SIZE),
            self.max_pixels,
            lambda: self.dataset.height / self.dataset.width,
        )
        return self._with_expression(
            lambda **kw: super(SafeCOGReader, self).preview(*args, **kw),
            expression,
            pixels,
            **kwargs,
        )

    def point(self, *args: Any, expression: str | None = None, **kwargs: Any) -> PointData:
        """Read a point; ``expression`` evaluated by ``app.expressions``."""
        check_point(args[0], args[1], kwargs.get("coord_crs") or WGS84)
        return self._with_expression(
            lambda **kw: super(SafeCOGReader, self).point(*args, **kw), expression, 1, **kwargs
        )

    def feature(self, *args: Any, expression: str | None = None, **kwargs: Any) -> ImageData:
        """Read a GeoJSON feature; ``expression`` evaluated by ``app.expressions``.

        Without ``dst_crs`` the pixels are the COG's own, in its CRS (titiler would
        resample them onto the feature's CRS). Without a size, the read is at native
        resolution over the feature's bounds: that is what is checked against the limit.
        """
        shape_crs = kwargs.get("shape_crs") or WGS84
        bounds = shape_bounds(args[0], shape_crs)
        kwargs["dst_crs"] = kwargs.get("dst_crs") or self.crs or shape_crs
        width, height, max_size = (kwargs.get(k) for k in ("width", "height", "max_size"))
        if not (width or height or max_size):
            width, height = _native_pixels(bounds, shape_crs, self.crs, min(self.dataset.res))
        aspect = _aspect(bounds, shape_crs, kwargs["dst_crs"])
        pixels = check_output_pixels(width, height, max_size, self.max_pixels, aspect)
        return self._with_expression(
            lambda **kw: super(SafeCOGReader, self).feature(*args, **kw),
            expression,
            pixels,
            **kwargs,
        )


def _read_assets(
    read: Callable[..., Layer], assets: Sequence[Any], parallel: bool, **kwargs: Any
) -> Layer:
    """``read(assets=...)``, one asset at a time, on the process's reader threads if ``parallel``.

    Remote assets are read in parallel: each read mostly waits on the network. Local
    (page-cached) reads are CPU work: under load the requests already fill the cores, and
    handing assets to other threads only adds thread switches and GIL hand-offs (measured:
    ~5 ms more CPU for a two-asset tile), so they are read one after another in the
    calling thread. rio-tiler's own threads are never used (a pool per call).
    """
    if len(assets) == 1 or not parallel:
        parts = [read(assets=[asset], threads=0, **kwargs) for asset in assets]
    else:
        executor = reader_executor()
        futures = [executor.submit(read, assets=[asset], threads=0, **kwargs) for asset in assets]
        parts = [future.result() for future in futures]
    if len(parts) == 1:
        return parts[0]
    layer = type(parts[0]).create_from_list(parts)
    layer.band_names = [f"b{index + 1}" for index in range(layer.count)]
    return layer


def _replace_bands(layer: Layer, data: np.ma.MaskedArray, names: list[str]) -> Layer:
    """The same layer (grid, CRS, metadata) with new bands."""
    count = data.shape[0]
    if isinstance(layer, PointData):
        return PointData(
            data.reshape(count),
            band_names=names,
            band_descriptions=names,
            coordinates=layer.coordinates,
            crs=layer.crs,
            assets=layer.assets,
            metadata=layer.metadata,
            pixel_location=layer.pixel_location,
            scales=[1.0] * count,
            offsets=[0.0] * count,
        )
    return ImageData(
        data,
        assets=layer.assets,
        bounds=layer.bounds,
        crs=layer.crs,
        metadata=layer.metadata,
        band_names=names,
        band_descriptions=names,
        scales=[1.0] * count,
        offsets=[0.0] * count,
    )


# What rio-tiler's STACReader derives from an item (asset list, projection, zooms: the
# zooms cost a reprojection each), kept per item object: catalog items come from the
# item cache as the same object on every request.
_DERIVED_FIELDS = ("assets", "height", "width", "bounds", "transform", "crs", "minzoom", "maxzoom")
_derived: weakref.WeakKeyDictionary[pystac.Item, dict[tuple, dict[str, Any]]] = (
    weakref.WeakKeyDictionary()
)
_derived_lock = threading.Lock()


def _derived_fields(item: pystac.Item, key: tuple) -> dict[str, Any] | None:
    with _derived_lock:
        return _derived.get(item, {}).get(key)


def _keep_derived_fields(item: pystac.Item, key: tuple, reader: STACReader) -> None:
    fields = {name: getattr(reader, name, None) for name in _DERIVED_FIELDS}
    fields["assets"] = tuple(fields["assets"])
    with _derived_lock:
        _derived.setdefault(item, {})[key] = fields


class _ReadPlan(NamedTuple):
    """What a Sentinel-2 read reads, derived from the request and the item alone.

    Attributes:
        expression: The parsed expression, or None.
        harmonize: Whether bands become reflectance.
        scl_mask: The SCL classes ``mask`` turns into nodata, or None.
        keys: The asset key of each band (of each expression name).
        assets: What to read: the expression's assets once each, or the assets as given.
    """

    expression: Expression | None
    harmonize: bool
    scl_mask: frozenset[int] | None
    keys: list[str]
    assets: list[Any]


@attr.s
class S2STACReader(STACReader):
    """A Sentinel-2 aware STAC item reader.

    ``input`` is a STAC item URL/path (checked against ``allowed_sources``) or a
    ``pystac.Item`` already resolved through the catalog. Every asset href is checked
    against ``allowed_sources`` before GDAL opens it.
    """

    reader: type[Reader] = attr.ib(default=GTiffReader)
    allowed_sources: Sequence[str] = attr.ib(factory=list, kw_only=True)
    allow_private: bool = attr.ib(default=False, kw_only=True)
    scl_mask_classes: frozenset[int] = attr.ib(
        default=sentinel2.DEFAULT_SCL_MASK, converter=frozenset, kw_only=True
    )
    max_pixels: int | None = attr.ib(default=None, kw_only=True)
    max_tile_size: int | None = attr.ib(default=None, kw_only=True)
    budget: MemoryBudget | None = attr.ib(default=None, kw_only=True)

    def __attrs_post_init__(self):
        """Resolve the item (checking its URL) before rio-tiler looks at its assets."""
        if isinstance(self.input, pystac.Item):
            self.item, self.input = self.input, self.input.get_self_href()
        elif self.item is None:
            source = self._checked(self.input)
            self.item = fetch_item(source, self.input, **self.fetch_options)
        key = (
            self.tms.id,
            self.minzoom,
            self.maxzoom,
            *(
                tuple(value) if value else None
                for value in (
                    self.include_assets,
                    self.exclude_assets,
                    self.include_asset_types,
                    self.exclude_asset_types,
                )
            ),
        )
        derived = _derived_fields(self.item, key)
        if derived is None:
            try:
                super().__attrs_post_init__()
            except (TypeError, ValueError, KeyError, IndexError, ArithmeticError) as error:
                # rio-tiler derives the grid from proj:* fields as they are: a transform
                # that is a string, a shape of 0 pixels ...
                raise BadRequestError(
                    f"item '{self.item.id}': its proj:* fields cannot be used "
                    f"({type(error).__name__}: {error})"
                ) from None
            _keep_derived_fields(self.item, key, self)
        else:
            for name, value in derived.items():
                setattr(self, name, value)
            self.assets = list(self.assets)

    # --- assets -------------------------------------------------------------------------

    @property
    def _parallel(self) -> bool:
        """Whether to read assets in parallel: when any of the item's assets is remote."""
        return any(is_remote(asset.href) for asset in self.item.assets.values())

    def resolve_asset_name(self, name: str) -> str:
        """The item's asset key for a common name or band name (``B04`` -> ``red``)."""
        key = sentinel2.resolve_asset(name, self.assets)
        if key is None:
            raise InvalidAssetName(f"'{name}' is not valid, should be one of {self.assets}")
        return key

    def _get_asset_info(self, asset: Any) -> Any:
        if isinstance(asset, str):
            asset = self.resolve_asset_name(asset)
        elif isinstance(asset, dict) and asset.get("name"):
            asset = {**asset, "name": self.resolve_asset_name(asset["name"])}
        try:
            info = super()._get_asset_info(asset)
        except (TypeError, ValueError, KeyError, AttributeError) as error:
            # rio-tiler reads raster:bands / statistics fields as it finds them.
            raise BadRequestError(
                f"item '{self.item.id}': asset {asset!r} has fields that cannot be used "
                f"({type(error).__name__}: {error})"
            ) from None
        href = self.item.assets[info["name"]].href
        if href.startswith("/") or "://" in href:
            # Already absolute: pystac would join a local path onto an http self link
            # (items of a STAC API whose assets are files on this machine).
            info["url"] = href
        info["url"] = self._checked(info["url"])
        info["reader_options"] = {
            **info.get("reader_options", {}),
            "asset": info["name"],
            "allowed_sources": self.allowed_sources,
            "max_pixels": self.max_pixels,
        }
        return info

    def _checked(self, source: str) -> str:
        """``source`` checked against the allow-list, its redirects followed and checked."""
        checked = check_source(source, self.allowed_sources, allow_private=self.allow_private)
        return resolve_redirects(checked, self.allowed_sources, allow_private=self.allow_private)

    def scale_offset(self, asset: str) -> tuple[float, float]:
        """Reflectance scale and offset of an asset (see ``app.sentinel2.scale_offset``)."""
        return sentinel2.scale_offset(self.item, asset)

    def info(self, assets: Sequence[Any] | str | None = None, **kwargs: Any) -> Any:
        """Per-asset info, keyed by asset key whatever name the caller used."""
        if isinstance(assets, str):
            assets = [assets]
        if assets:
            assets = [self.resolve_asset_name(a) if isinstance(a, str) else a for a in assets]
        return super().info(assets=assets, **kwargs)

    # --- band math, harmonization, SCL mask ---------------------------------------------

    def _plan(
        self,
        assets: Sequence[Any] | str | None,
        expression: str | None,
        mask: str | None,
        harmonize: bool | None,
    ) -> _ReadPlan:
        """What a read of ``assets`` / ``expression`` reads, from the item alone."""
        expr: Expression | None = parse_expression(expression) if expression else None
        if harmonize is None:
            harmonize = expr is not None
        scl_mask = self._mask_classes(mask)
        if expr is not None:
            keys = [self._expression_asset(name) for name in expr.names]
            return _ReadPlan(expr, harmonize, scl_mask, keys, list(dict.fromkeys(keys)))
        if isinstance(assets, str):
            assets = [assets]
        if not assets:
            if self.default_assets:
                assets = list(self.default_assets)
            else:
                raise BadRequestError("assets: give `assets`, `expression` or `preset`")
        keys = [self.resolve_asset_name(a) if isinstance(a, str) else a["name"] for a in assets]
        return _ReadPlan(None, harmonize, scl_mask, keys, list(assets))

    def _asset_itemsizes(self, asset: Any) -> list[int]:
        """Bytes per sample of each band an asset read gives (its ``raster:bands``)."""
        key = self.resolve_asset_name(asset) if isinstance(asset, str) else asset["name"]
        fields = self.item.assets[key].extra_fields if key in self.item.assets else {}
        bands = fields.get("raster:bands") or fields.get("eo:bands") or [{}]
        indexes = asset.get("indexes") if isinstance(asset, dict) else None
        if indexes:
            # asset|bidx=1,1,1: what is read is the indexes, repeats counted.
            bands = [bands[(i - 1) % len(bands)] for i in indexes]
        return [_itemsize(band.get("data_type")) for band in bands]

    def request_cost(
        self,
        pixels: int,
        assets: Sequence[Any] | str | None = None,
        expression: str | None = None,
        mask: str | None = None,
        harmonize: bool | None = None,
        **kwargs: Any,
    ) -> RequestCost:
        """The memory a read of ``pixels`` output pixels holds (``app.budget``).

        Computed from the item's metadata, without reading; the counts that no size makes
        reasonable (assets, expression outputs) are refused here (413). ``kwargs``: the
        read's other options, which do not change its size.
        """
        return self._cost(pixels, self._plan(assets, expression, mask, harmonize))

    def _cost(self, pixels: int, plan: _ReadPlan) -> RequestCost:
        expr, harmonize, scl_mask, keys, read_assets = plan
        budget = self.budget or MemoryBudget()
        budget.check_assets(len(keys))
        if expr is not None:
            budget.check_outputs(len(expr.outputs))
        if scl_mask is not None and SCL_ASSET not in keys:
            read_assets = [*read_assets, SCL_ASSET]
        itemsizes = [size for asset in read_assets for size in self._asset_itemsizes(asset)]
        harmonized = 0
        if harmonize:
            harmonized = sum(
                1 for key in dict.fromkeys(keys) if self.scale_offset(key) != (1.0, 0.0)
            )
        if expr is None:
            return read_cost(pixels, itemsizes, harmonized=harmonized)
        return read_cost(
            pixels,
            itemsizes,
            harmonized=harmonized,
            math_inputs=len(expr.names),
            outputs=len(expr.outputs),
        )

    def _layer(
        self,
        read: Callable[..., Layer],
        assets: Sequence[Any] | str | None,
        expression: str | None,
        mask: str | None,
        harmonize: bool | None,
        asset_as_band: bool,
        *,
        pixels: int,
        sized: bool = True,
        **kwargs: Any,
    ) -> Layer:
        """Read what the caller asked for, harmonized and masked as asked.

        ``read(assets=..., **kw)`` is one of rio-tiler's MultiBaseReader methods, bound
        to the request's geometry (tile, bbox, point ...), of ``pixels`` output pixels:
        the request's memory is checked against the budget before anything is read.
        ``sized``: ``read`` takes ``width``/``height``/``max_size`` in ``kw`` (bbox,
        preview, feature; not tiles).
        """
        plan = self._plan(assets, expression, mask, harmonize)
        cost = self._cost(pixels, plan)
        if self.budget is not None:
            self.budget.check(cost)
        expr, harmonize, scl_mask, keys, assets = plan
        read_keys = list(dict.fromkeys(keys)) if expr is not None else keys

        if expr is None and not harmonize and scl_mask is None:
            # Nothing of ours to do: rio-tiler's own reading (multi-band assets, options).
            return _read_assets(read, assets, self._parallel, asset_as_band=asset_as_band, **kwargs)

        if scl_mask is not None and _scl_reads_with_bands(kwargs) and SCL_ASSET not in read_keys:
            # Nearest-neighbour reads: SCL comes with the bands, in the same parallel read.
            read_keys = [*read_keys, SCL_ASSET]
        layer = _read_assets(read, read_keys, self._parallel, asset_as_band=True, **kwargs)
        bands = _bands(layer, read_keys)
        if harmonize:
            for key, values in bands.items():
                scale, offset = self.scale_offset(key)
                if (scale, offset) != (1.0, 0.0):
                    bands[key] = sentinel2.harmonize(values, scale, offset)

        invalid = None
        if scl_mask is not None:
            scl = self._read_scl(read, read_keys, bands, kwargs, sized)
            invalid = sentinel2.scl_invalid(scl.filled(0), scl_mask) | np.ma.getmaskarray(scl)

        if expr is not None:
            data = expr.evaluate(
                {name: bands[key] for name, key in zip(expr.names, keys, strict=True)}
            )
            names = list(expr.outputs)
        else:
            data = np.ma.stack([bands[key] for key in keys])
            if harmonize:
                # Reflectance is float32 already: no second copy of the stack.
                data = data.astype("float32", copy=False)
            names = list(keys)
        if invalid is not None:
            data = _masked(data, np.broadcast_to(invalid, data.shape))
        return _replace_bands(layer, data, names)

    def _mask_classes(self, mask: str | None) -> frozenset[int] | None:
        if mask in (None, "", MASK_NONE):
            return None
        if mask == MASK_SCL_CLEAR:
            if SCL_ASSET not in self.assets:
                raise BadRequestError("mask: scl-clear needs an 'scl' asset; this item has none")
            return self.scl_mask_classes
        raise BadRequestError(f"mask: unknown mask '{mask}'; use '{MASK_SCL_CLEAR}' or 'none'")

    def _expression_asset(self, name: str) -> str:
        key = sentinel2.resolve_asset(name, self.assets)
        if key is None:
            raise BadRequestError(
                f"expression: unknown asset '{name}'; this item has {sorted(self.assets)}"
            )
        return key

    def _read_scl(
        self,
        read: Callable[..., Layer],
        read_keys: list[str],
        bands: dict[str, np.ma.MaskedArray],
        kwargs: dict[str, Any],
        sized: bool,
    ) -> np.ma.MaskedArray:
        # SCL is a class map at 20 m: read it on its own, always nearest-neighbour, onto
        # the same output grid as the bands (same tile, or the bands' width/height).
        if SCL_ASSET in read_keys and _scl_reads_with_bands(kwargs):
            return bands[SCL_ASSET]
        nearest = {**kwargs, "resampling_method": "nearest", "reproject_method": "nearest"}
        nearest.pop("nodata", None)  # the bands' nodata; SCL's own (class 0) is a class
        if sized:
            # Sized by max_size alone (preview, statistics), each asset is read at its own
            # grid's size: 20 m SCL would come out half the size of 10 m bands.
            nearest.pop("max_size", None)
            nearest["height"], nearest["width"] = next(iter(bands.values())).shape[-2:]
        layer = _read_assets(read, [SCL_ASSET], False, asset_as_band=True, **nearest)
        return _bands(layer, [SCL_ASSET])[SCL_ASSET]

    # --- rio-tiler entry points ---------------------------------------------------------

    def tile(
        self,
        tile_x: int,
        tile_y: int,
        tile_z: int,
        assets: Sequence[Any] | str | None = None,
        expression: str | None = None,
        asset_as_band: bool = False,
        mask: str | None = None,
        harmonize: bool | None = None,
        **kwargs: Any,
    ) -> ImageData:
        """Read a map tile (see the class docstring for the Sentinel-2 options)."""
        check_tile(self.tms, tile_x, tile_y, tile_z)
        check_tile_size(kwargs.get("tilesize"), self.max_tile_size)
        pixels = tile_output_pixels(
            self.tms, tile_z, kwargs.get("tilesize"), kwargs.get("buffer"), self.max_pixels
        )
        return self._layer(
            lambda **kw: super(S2STACReader, self).tile(tile_x, tile_y, tile_z, **kw),
            assets,
            expression,
            mask,
            harmonize,
            asset_as_band,
            pixels=pixels,
            sized=False,
            **kwargs,
        )

    def part(
        self,
        bbox: tuple[float, float, float, float],
        assets: Sequence[Any] | str | None = None,
        expression: str | None = None,
        asset_as_band: bool = False,
        mask: str | None = None,
        harmonize: bool | None = None,
        dst_crs: CRS | None = None,
        bounds_crs: CRS = WGS84,
        max_size: int | None = None,
        height: int | None = None,
        width: int | None = None,
        **kwargs: Any,
    ) -> ImageData:
        """Read a bbox. Without a size, at the finest native resolution of what is read."""
        check_bbox(bbox, bounds_crs)
        dst_crs = dst_crs or bounds_crs
        if not (max_size or height or width):
            width, height = self._native_size(bbox, bounds_crs, dst_crs, assets, expression)
        aspect = _aspect(bbox, bounds_crs, dst_crs)
        pixels = check_output_pixels(width, height, max_size, self.max_pixels, aspect)
        return self._layer(
            lambda **kw: super(S2STACReader, self).part(
                bbox, dst_crs=dst_crs, bounds_crs=bounds_crs, **kw
            ),
            assets,
            expression,
            mask,
            harmonize,
            asset_as_band,
            pixels=pixels or 1,
            max_size=max_size,
            height=height,
            width=width,
            **kwargs,
        )

    def preview(
        self,
        assets: Sequence[Any] | str | None = None,
        expression: str | None = None,
        asset_as_band: bool = False,
        mask: str | None = None,
        harmonize: bool | None = None,
        **kwargs: Any,
    ) -> ImageData:
        """Read a decimated view of the whole item."""
        pixels = check_output_pixels(
            kwargs.get("width"),
            kwargs.get("height"),
            kwargs.get("max_size", PREVIEW_MAX_SIZE),
            self.max_pixels,
            self._grid_aspect,
        )
        return self._layer(
            lambda **kw: super(S2STACReader, self).preview(**kw),
            assets,
            expression,
            mask,
            harmonize,
            asset_as_band,
            pixels=pixels or 1,
            **kwargs,
        )

    def point(
        self,
        lon: float,
        lat: float,
        assets: Sequence[Any] | str | None = None,
        expression: str | None = None,
        asset_as_band: bool = False,
        mask: str | None = None,
        harmonize: bool | None = None,
        **kwargs: Any,
    ) -> PointData:
        """Read the values at a point."""
        check_point(lon, lat, kwargs.get("coord_crs") or WGS84)
        return self._layer(
            lambda **kw: super(S2STACReader, self).point(lon, lat, **kw),
            assets,
            expression,
            mask,
            harmonize,
            asset_as_band,
            pixels=1,
            sized=False,
            **kwargs,
        )

    def feature(
        self,
        shape: dict,
        assets: Sequence[Any] | str | None = None,
        expression: str | None = None,
        asset_as_band: bool = False,
        mask: str | None = None,
        harmonize: bool | None = None,
        **kwargs: Any,
    ) -> ImageData:
        """Read the pixels of a GeoJSON feature.

        Without ``dst_crs`` the pixels are in the scene's own CRS (its UTM zone), so that
        statistics of a lon/lat polygon are computed on the native grid, as Sentinel-2
        statistics should be, not on pixels resampled onto lon/lat (titiler's default).
        Without a size, the read is at the finest native resolution of what is read over
        the feature's bounds: that is what is checked against the output limit.
        """
        shape_crs = kwargs.get("shape_crs") or WGS84
        bounds = shape_bounds(shape, shape_crs)
        kwargs["dst_crs"] = kwargs.get("dst_crs") or self.crs or shape_crs
        width, height, max_size = (kwargs.get(k) for k in ("width", "height", "max_size"))
        if not (width or height or max_size):
            width, height = self._native_size(
                bounds, shape_crs, kwargs["dst_crs"], assets, expression
            )
        aspect = _aspect(bounds, shape_crs, kwargs["dst_crs"])
        pixels = check_output_pixels(width, height, max_size, self.max_pixels, aspect)
        return self._layer(
            lambda **kw: super(S2STACReader, self).feature(shape, **kw),
            assets,
            expression,
            mask,
            harmonize,
            asset_as_band,
            pixels=pixels or 1,
            **kwargs,
        )

    def statistics(self, *args: Any, **kwargs: Any) -> dict[str, dict[str, BandStatistics]]:
        """Per-asset statistics of a decimated read of each asset, its size and memory bounded.

        rio-tiler reads the assets in parallel: their reads are held together.
        """
        pixels = check_output_pixels(
            kwargs.get("width"),
            kwargs.get("height"),
            kwargs.get("max_size", STATISTICS_MAX_SIZE),
            self.max_pixels,
            self._grid_aspect,
        )
        if self.budget is not None:
            assets = args[0] if args else kwargs.get("assets")
            self.budget.check(self.request_cost(pixels or 1, assets or list(self.assets)))
        return super().statistics(*args, **kwargs)

    # --- sizes and limits ---------------------------------------------------------------

    def _grid_aspect(self) -> float:
        """Height / width of the item's grid (square when its items do not say)."""
        return self.height / self.width if self.height and self.width else 1.0

    def _native_size(
        self,
        bbox: tuple[float, float, float, float],
        bounds_crs: CRS,
        dst_crs: CRS,
        assets: Sequence[Any] | str | None,
        expression: str | None,
    ) -> tuple[int, int]:
        """Output width/height of ``bbox`` at the finest resolution of the read assets."""
        if expression:
            names = [self._expression_asset(n) for n in parse_expression(expression).names]
        elif isinstance(assets, str):
            names = [self.resolve_asset_name(assets)]
        else:
            names = [
                self.resolve_asset_name(a if isinstance(a, str) else a["name"])
                for a in assets or []
            ]
        resolutions = [
            abs(t[0])
            for t in (self.item.assets[n].extra_fields.get("proj:transform") for n in names)
            if t
        ]
        if not resolutions or self.crs is None:
            raise BadRequestError("bbox: give width/height or max_size for this item")
        width, height = _native_pixels(bbox, bounds_crs, self.crs, min(resolutions))
        if dst_crs != self.crs:
            # Same pixel count as the native read, laid out in the output CRS.
            dminx, dminy, dmaxx, dmaxy = transform_bounds(bounds_crs, dst_crs, *bbox)
            aspect = (dmaxx - dminx) / (dmaxy - dminy) if dmaxy > dminy else 1.0
            side = (width * height) ** 0.5
            width, height = max(1, round(side * aspect**0.5)), max(1, round(side / aspect**0.5))
        return width, height
