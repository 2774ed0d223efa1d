"""The Sentinel-2 STAC item reader: assets by any name, band math, reflectance, SCL masks.

``S2STACReader`` extends rio-tiler's ``STACReader``: assets may be named by common name or
band name (``B04`` is ``red``), expressions name assets directly and are evaluated by
``app.expressions`` (never by numexpr on user text), reflectance is harmonized from
``raster:bands`` scale/offset, and ``mask="scl-clear"`` turns the configured SCL classes
into nodata, SCL being read nearest-neighbour onto the bands' grid. Each asset is read by
``GTiffReader`` (the pooled dataset), its href checked against the allow-list first.
"""

import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import attr
import numpy as np
import pystac
from rasterio.crs import CRS
from rio_tiler.errors import InvalidAssetName
from rio_tiler.io import Reader, STACReader
from rio_tiler.models import BandStatistics

from app import sentinel2
from app.band_math import BandMath, parse_band_math
from app.budget import MemoryBudget, RequestCost, read_cost
from app.datasets import is_remote, reader_executor
from app.errors import BadRequestError
from app.evalscript import EvalscriptBandMath, EvalscriptLimits
from app.readers.derived import derived_fields, keep_derived_fields
from app.readers.gtiff import GTiffReader
from app.readers.layers import ALPHA_BAND, Layer, bands_by_name, masked, replace_bands
from app.readers.sizing import (
    STATISTICS_MAX_SIZE,
    Bounds,
    itemsize,
    laid_out_in,
    native_pixels,
)
from app.readers.template import SizedReads
from app.redirects import resolve_redirects
from app.security import check_source
from app.sentinel2 import MASK_NONE, MASK_SCL_CLEAR, SCL_ASSET
from app.stac_item import fetch_item

#: titiler's name of an asset's band in an expression: ``{asset}_b{n}`` (``nir_b1``).
_ASSET_BAND = re.compile(r"^(?P<asset>[A-Za-z][A-Za-z0-9_]*?)_[bB](?P<band>\d+)$")


# rio-tiler's STACReader warns "Some statistics data in STAC are invalid" on every asset
# read whose ``raster:bands`` has no ``statistics`` (minimum/maximum): Earth Search's items
# (and the demo's, shaped like them) publish nodata/scale/offset there but no statistics.
# Nothing is invalid: the statistics are absent, and rio-tiler goes on without them either
# way. So this one warning of that one module is ignored (app.services.configure_process
# sets it, with the rest of the process state), rather than repeated on every tile.
def ignore_absent_statistics_warning() -> None:
    """Ignore rio-tiler's "statistics data in STAC are invalid" warning (idempotent)."""
    warnings.filterwarnings(
        "ignore",
        message="Some statistics data in STAC are invalid",
        category=UserWarning,
        module=r"rio_tiler\.io\.stac",
    )


def _scl_reads_with_bands(kwargs: Mapping[str, Any]) -> bool:
    """Whether the SCL can be read with the bands, with the same options.

    Only when they resample and reproject nearest-neighbour (the default) and no
    ``nodata`` overrides the bands' (a uint16 nodata is no uint8 SCL value).
    """
    return (
        kwargs.get("resampling_method") in (None, "nearest")
        and kwargs.get("reproject_method") in (None, "nearest")
        and kwargs.get("nodata") is None
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


class ReadPlan(NamedTuple):
    """What a Sentinel-2 read reads, derived from the request and the item alone.

    Attributes:
        expression: The parsed band math (an expression or an evalscript), or None.
        harmonize: Whether bands become reflectance.
        scl_mask: The SCL classes ``mask`` turns into nodata, or None.
        keys: The asset key of each band (of each expression name).
        assets: What to read: the expression's assets once each, or the assets as given.
    """

    expression: BandMath | None
    harmonize: bool
    scl_mask: frozenset[int] | None
    keys: list[str]
    assets: list[Any]


@attr.s
class S2STACReader(SizedReads, STACReader):
    """A Sentinel-2 aware STAC item reader.

    ``input`` is a STAC item URL/path (checked against ``allowed_sources``) or a
    ``pystac.Item`` already resolved through the catalog. Every asset href is checked
    against ``allowed_sources`` before GDAL opens it.

    Its reads (tile, part, preview, point, feature) take, beside rio-tiler's options,
    ``assets`` (any name), ``expression`` (over asset names), ``mask`` (``scl-clear`` or
    ``none``), ``harmonize`` (reflectance; default: with an expression) and
    ``asset_as_band``. They are checked and sized by ``SizedReads``; an unsized crop is read
    at the finest native resolution of what it reads, every asset onto that one grid.
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
    evalscript_limits: EvalscriptLimits | None = attr.ib(default=None, kw_only=True)

    explicit_grid = True

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
        derived = derived_fields(self.item, key)
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
            keep_derived_fields(self.item, key, self)
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

    # --- what a read reads, and its memory ----------------------------------------------

    def _plan(
        self,
        assets: Sequence[Any] | str | None,
        expression: str | None,
        mask: str | None,
        harmonize: bool | None,
        evalscript: str | None = None,
    ) -> ReadPlan:
        """What a read of ``assets`` / ``expression`` / ``evalscript`` reads, from the item alone."""
        expr = parse_band_math(expression, evalscript, self.evalscript_limits)
        if isinstance(expr, EvalscriptBandMath):
            # An evalscript reads reflectance; its setup's `units` says what it sees.
            if harmonize is False:
                raise BadRequestError(
                    "harmonize: an evalscript reads reflectance (units REFLECTANCE) or "
                    "reflectance x 10000 (units DN); set `units` in its setup() instead"
                )
            if assets:
                raise BadRequestError(
                    "assets: an evalscript reads the bands its setup() names; give `assets` "
                    "or `evalscript`, not both"
                )
            harmonize = True
        if harmonize is None:
            harmonize = expr is not None
        scl_mask = self._mask_classes(mask)
        if expr is not None:
            keys = [self._expression_asset(name) for name in expr.names]
            return ReadPlan(expr, harmonize, scl_mask, keys, list(dict.fromkeys(keys)))
        if isinstance(assets, str):
            assets = [assets]
        if not assets:
            if self.default_assets:
                assets = list(self.default_assets)
            else:
                raise BadRequestError("assets: give `assets`, `expression` or `preset`")
        keys = [self.resolve_asset_name(a) if isinstance(a, str) else a["name"] for a in assets]
        return ReadPlan(None, harmonize, scl_mask, keys, list(assets))

    def _mask_classes(self, mask: str | None) -> frozenset[int] | None:
        if mask in (None, "", MASK_NONE):
            return None
        if mask == MASK_SCL_CLEAR:
            if SCL_ASSET not in self.assets:
                raise BadRequestError("mask: scl-clear needs an 'scl' asset; this item has none")
            return self.scl_mask_classes
        raise BadRequestError(f"mask: unknown mask '{mask}'; use '{MASK_SCL_CLEAR}' or 'none'")

    def _expression_asset(self, name: str) -> str:
        """The asset an expression name reads: an asset (any name), or ``{asset}_b{n}``.

        ``{asset}_b1`` is titiler's name of an asset's first band; band math reads
        one-band assets, so any other band index is a 400.
        """
        key = sentinel2.resolve_asset(name, self.assets)
        if key is not None:
            return key
        match = _ASSET_BAND.match(name)
        key = sentinel2.resolve_asset(match["asset"], self.assets) if match else None
        if match is None or key is None:
            raise BadRequestError(
                f"expression: unknown asset '{name}'; this item has {sorted(self.assets)}"
            )
        count = self._band_count(key)
        band = int(match["band"])
        if count != 1 or band != 1:
            raise BadRequestError(
                f"expression: '{name}' names band {band} of asset '{key}', which has "
                f"{count} band(s); band math reads one-band assets (`{key}` or `{key}_b1`)"
            )
        return key

    def _band_count(self, key: str) -> int:
        """The bands of an asset, as its ``raster:bands`` / ``eo:bands`` list them (else 1)."""
        fields = self.item.assets[key].extra_fields if key in self.item.assets else {}
        bands = fields.get("raster:bands") or fields.get("eo:bands")
        return len(bands) if isinstance(bands, list) and bands else 1

    def check_layer(
        self,
        assets: Sequence[Any] | str | None = None,
        expression: str | None = None,
        mask: str | None = None,
        harmonize: bool | None = None,
        evalscript: str | None = None,
        **kwargs: Any,
    ) -> None:
        """Refuse a layer this item cannot read, as a read of it would (400 / 413).

        What a TileJSON, WMTS or map document checks before it lists tiles: the assets and
        the expression's (or evalscript's) names resolve, the mask applies, the counts are
        within the budget. Nothing is read. ``kwargs``: the read's other options (not
        checked here).
        """
        self._cost(1, self._plan(assets, expression, mask, harmonize, evalscript))

    def _asset_itemsizes(self, asset: Any) -> list[int]:
        """Bytes per sample of each band an asset read gives (its ``raster:bands``)."""
        key = self.resolve_asset_name(asset) if isinstance(asset, str) else asset["name"]
        fields = self.item.assets[key].extra_fields if key in self.item.assets else {}
        bands = fields.get("raster:bands") or fields.get("eo:bands") or [{}]
        indexes = asset.get("indexes") if isinstance(asset, dict) else None
        try:
            if indexes:
                # asset|bidx=1,1,1: what is read is the indexes, repeats counted.
                bands = [bands[(i - 1) % len(bands)] for i in indexes]
            return [itemsize(band.get("data_type")) for band in bands]
        except (TypeError, ValueError, KeyError, AttributeError, ArithmeticError) as error:
            # raster:bands as the item has it: a string, a list of strings ...
            raise BadRequestError(
                f"item '{self.item.id}': asset {key!r} has fields that cannot be used "
                f"({type(error).__name__}: {error})"
            ) from None

    def request_cost(
        self,
        pixels: int,
        assets: Sequence[Any] | str | None = None,
        expression: str | None = None,
        mask: str | None = None,
        harmonize: bool | None = None,
        evalscript: str | None = None,
        **kwargs: Any,
    ) -> RequestCost:
        """The memory a read of ``pixels`` output pixels holds (``app.budget``).

        Computed from the item's metadata, without reading; the counts that no size makes
        reasonable (assets, expression outputs) are refused here (413). ``kwargs``: the
        read's other options, which do not change its size.
        """
        return self._cost(pixels, self._plan(assets, expression, mask, harmonize, evalscript))

    def _cost(self, pixels: int, plan: ReadPlan) -> RequestCost:
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

    # --- sizes ----------------------------------------------------------------------------

    def native_size(
        self,
        bbox: Bounds,
        bounds_crs: CRS,
        dst_crs: CRS,
        assets: Sequence[Any] | str | None = None,
        expression: str | None = None,
        evalscript: str | None = None,
    ) -> tuple[int, int]:
        """Output width/height of ``bbox`` at the finest native resolution of what is read.

        Args:
            bbox: The area, in ``bounds_crs``.
            bounds_crs: The CRS of ``bbox``.
            dst_crs: The output's CRS: the native pixel count is laid out in it.
            assets: The assets read (any name), when no ``expression``.
            expression: The expression read (its assets set the resolution).
            evalscript: The evalscript read, likewise.

        Returns:
            ``(width, height)``; a 400 when the item does not record its assets' grids.

        """
        math = parse_band_math(expression, evalscript, self.evalscript_limits)
        if math is not None:
            names = [self._expression_asset(n) for n in math.names]
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
        width, height = native_pixels(bbox, bounds_crs, self.crs, min(resolutions))
        if dst_crs != self.crs:
            width, height = laid_out_in(width, height, bbox, bounds_crs, dst_crs)
        return width, height

    def _native_output_size(
        self, bbox: Bounds, bounds_crs: CRS, dst_crs: CRS, options: Mapping[str, Any]
    ) -> tuple[int, int]:
        return self.native_size(
            bbox,
            bounds_crs,
            dst_crs,
            options.get("assets"),
            options.get("expression"),
            options.get("evalscript"),
        )

    def _grid_aspect(self) -> float:
        """Height / width of the item's grid (square when its items do not say)."""
        return self.height / self.width if self.height and self.width else 1.0

    # --- reading: band math, harmonization, SCL mask ------------------------------------

    def _read_layer(
        self,
        read: Callable[..., Layer],
        pixels: int,
        sized: bool,
        assets: Sequence[Any] | str | None = None,
        expression: str | None = None,
        mask: str | None = None,
        harmonize: bool | None = None,
        asset_as_band: bool = False,
        evalscript: str | None = None,
        **kwargs: Any,
    ) -> Layer:
        """Read what the caller asked for, harmonized and masked as asked.

        ``read(assets=..., **kw)`` is one of rio-tiler's MultiBaseReader methods, bound
        to the request's geometry (tile, bbox, point ...), of ``pixels`` output pixels:
        the request's memory is checked against the budget before anything is read.
        """
        plan = self._plan(assets, expression, mask, harmonize, evalscript)
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
        bands = bands_by_name(layer, read_keys)
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
            inputs = {name: bands[key] for name, key in zip(expr.names, keys, strict=True)}
            if invalid is not None and isinstance(expr, EvalscriptBandMath):
                # The script's dataMask is 0 where the service masks (SCL classes too).
                inputs = {name: masked(values, invalid) for name, values in inputs.items()}
            data = expr.evaluate(inputs)
            names = list(expr.outputs)
            if isinstance(expr, EvalscriptBandMath):
                # Values are the output's sampleType already (AUTO: 0..255): its data type.
                data = data.astype(expr.dtype)
                if len(names) == 4:
                    # RGBA, as Sentinel Hub renders a 4-band output: 0 alpha is no data.
                    transparent = np.ma.getdata(data[3]) == 0
                    data = masked(data, np.broadcast_to(transparent, data.shape))
                    names[3] = ALPHA_BAND
        else:
            data = np.ma.stack([bands[key] for key in keys])
            if harmonize:
                # Reflectance is float32 already: no second copy of the stack.
                data = data.astype("float32", copy=False)
            names = list(keys)
        if invalid is not None:
            data = masked(data, np.broadcast_to(invalid, data.shape))
        return replace_bands(layer, data, names)

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
        return bands_by_name(layer, [SCL_ASSET])[SCL_ASSET]

    def statistics(self, *args: Any, **kwargs: Any) -> dict[str, dict[str, BandStatistics]]:
        """Per-asset statistics of a decimated read of each asset, its size and memory bounded.

        rio-tiler reads the assets in parallel (each asset reader's own ``statistics``, not
        ``preview``): their reads are held together.
        """
        pixels = self._whole_read_pixels(kwargs, STATISTICS_MAX_SIZE)
        if self.budget is not None:
            assets = args[0] if args else kwargs.get("assets")
            self.budget.check(self.request_cost(pixels or 1, assets or list(self.assets)))
        return super().statistics(*args, **kwargs)
