"""A validated Statistical API request, as plain data the engine (and Dask workers) run.

``make_plan`` checks everything that can be checked without reading a pixel: the time range
and intervals, the outputs' band math and the asset names it uses, the mask, the
calculations (unknown output or band names), the limits. Every problem is a
``BadRequestError`` whose message starts with the request field at fault.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app import sentinel2
from app.band_math import BandMath
from app.catalog.query import format_datetime, parse_rfc3339
from app.crs_input import EPSG_4326
from app.errors import BadRequestError, TerratilerError, TooLargeError
from app.evalscript import (
    DATA_MASK,
    Evalscript,
    EvalscriptBandMath,
    EvalscriptLimits,
    parse_evalscript,
)
from app.expressions import Expression, parse_expression, resolve_names
from app.ordering import MosaickingOrder
from app.sentinel2 import MASK_NONE, MASK_SCL_CLEAR, SCL_ASSET
from app.settings import Settings
from app.stats.coverage import PixelRule
from app.stats.intervals import parse_duration, split_time_range
from app.stats.models import (
    Aggregation,
    HistogramDefinition,
    OutputCalculations,
    StatisticalRequest,
)
from app.stats.summary import PERCENTILE_METHODS, HistogramSpec

# The single-band assets band math may name (Earth-Search v1 keys; ESA band names resolve
# to them). ``visual`` is a 3-band RGB image, not a measurement.
BAND_MATH_ASSETS: frozenset[str] = sentinel2.REFLECTANCE_ASSETS | {SCL_ASSET, "aot", "wvp"}
# Sentinel Hub's collection ids for Sentinel-2 L2A.
COLLECTION_ALIASES = {"S2L2A": "sentinel-2-l2a", "sentinel-2-l2a": "sentinel-2-l2a"}


@dataclass(frozen=True)
class BandPlan:
    """What to compute for one output band."""

    name: str
    percentiles: tuple[float, ...] | None = None
    histogram: HistogramSpec | None = None
    interpolation: str = "linear"


@dataclass(frozen=True)
class OutputPlan:
    """One output: its band math (over asset keys) and its bands."""

    name: str
    expression: BandMath
    bands: tuple[BandPlan, ...]


@dataclass(frozen=True)
class Plan:
    """Everything the engine needs from a request, validated.

    Attributes:
        collection: Collection id.
        intervals: (start, end) of every interval, in time order.
        outputs: The outputs, in request order.
        mask: ``scl-clear``, ``none``, or a boolean Expression over asset keys.
        pixel_rule: ``exact``, ``center`` or ``all_touched``.
        mosaicking_order: ``mostRecent``, ``leastRecent`` or ``leastCC``.
        max_cloud_coverage: Largest ``eo:cloud_cover`` accepted (None: no filter).
        resolution: (resx, resy) in ``crs`` units, or None for the native resolution.
        crs: CRS of the request's geometries.
        assets: Every asset key read (outputs, mask, SCL).

    """

    collection: str
    intervals: tuple[tuple[datetime, datetime], ...]
    outputs: tuple[OutputPlan, ...]
    mask: str | Expression
    pixel_rule: PixelRule
    mosaicking_order: MosaickingOrder
    max_cloud_coverage: float | None
    resolution: tuple[float, float] | None
    crs: str
    assets: tuple[str, ...] = field(default=())

    @property
    def time_range(self) -> tuple[datetime, datetime]:
        """From the first interval's start to the last one's end."""
        return self.intervals[0][0], self.intervals[-1][1]


def band_math_assets(catalog: Any, collection_id: str, settings: Settings) -> frozenset[str]:
    """The asset names band math may use in a collection.

    Sentinel-2 L2A (the service's collection, and its aliases): its bands, SCL, AOT and
    WVP. Another collection of the catalog (a batch processing job's results, registered
    with ``createCollection``) names its own: the ``data`` assets of its ``item_assets``.

    Args:
        catalog: The catalog (anything without ``get_collection``, e.g. a list of items,
            gets Sentinel-2's names).
        collection_id: The requested collection.
        settings: The service settings (``collection``).

    Returns:
        The asset names.

    """
    collection_id = COLLECTION_ALIASES.get(collection_id, collection_id)
    lookup = getattr(catalog, "get_collection", None)
    if lookup is None or collection_id in (settings.collection, *COLLECTION_ALIASES.values()):
        return BAND_MATH_ASSETS
    try:
        collection = lookup(collection_id)
    except TerratilerError:  # unknown here: the search reports it
        return BAND_MATH_ASSETS
    definitions = getattr(collection, "item_assets", None) or {}
    own = frozenset(
        key
        for key, definition in definitions.items()
        if "data" in (getattr(definition, "roles", None) or ["data"])
    )
    return own or BAND_MATH_ASSETS


def _field_error(
    error: TerratilerError, field_name: str, assets: frozenset[str]
) -> TerratilerError:
    """``error`` (of its own class: 400, 408, 413) naming ``field_name``."""
    message = error.message.removeprefix("evalscript: ")
    known = ", ".join(sorted(assets))
    esa = ", or ESA band names B01..B12, B8A, SCL" if assets is BAND_MATH_ASSETS else ""
    hint = f" (assets: {known}{esa})" if "unknown band" in message else ""
    return type(error)(f"{field_name}: {message}{hint}")


def _parsed(text: str, field_name: str) -> Expression:
    """Band math as written (names not resolved yet), errors naming the field."""
    try:
        return parse_expression(text)
    except BadRequestError as error:
        raise _field_error(error, field_name, BAND_MATH_ASSETS) from None


def _resolved(band_math: BandMath, field_name: str, assets: frozenset[str]) -> BandMath:
    """Band math with its names resolved to asset keys (``B04`` -> ``red``)."""
    try:
        return resolve_names(band_math, lambda name: sentinel2.resolve_asset(name, assets))
    except BadRequestError as error:
        raise _field_error(error, field_name, assets) from None


def _band_math(text: str, field_name: str, assets: frozenset[str] = BAND_MATH_ASSETS) -> Expression:
    """Parse band math and resolve its names to asset keys (``B04`` -> ``red``)."""
    resolved = _resolved(_parsed(text, field_name), field_name, assets)
    assert isinstance(resolved, Expression)
    return resolved


def _evalscript(text: str, settings: Settings, field_name: str) -> Evalscript:
    """The evalscript of a request, parsed under the settings' limits (errors name the field)."""
    try:
        return parse_evalscript(text, EvalscriptLimits.from_settings(settings))
    except TerratilerError as error:
        raise _field_error(error, field_name, BAND_MATH_ASSETS) from None


def _outputs(
    aggregation: Aggregation, settings: Settings, band_assets: frozenset[str]
) -> list[tuple[str, BandMath, list[str]]]:
    """Each output's name, band math over asset keys and band names.

    They come from ``aggregation.outputs`` (band math), or from an evalscript's setup():
    every output but ``dataMask``, which masks the others, as in Sentinel Hub.
    """
    definitions: list[tuple[str, BandMath, list[str] | None]]
    if aggregation.evalscript is not None:
        if aggregation.outputs:
            raise BadRequestError(
                "aggregation.outputs: give outputs or an evalscript (its setup() names them)"
            )
        field_name = "aggregation.evalscript"
        script = _evalscript(aggregation.evalscript, settings, field_name)
        declared = [output for output in script.outputs if output.id != DATA_MASK]
        if not declared:
            raise BadRequestError(f"{field_name}: setup() declares no output besides dataMask")
        definitions = [
            (output.id, EvalscriptBandMath(script, output.id), None) for output in declared
        ]
    else:
        if not aggregation.outputs:
            raise BadRequestError(
                "aggregation.outputs: give at least one output (or aggregation.evalscript)"
            )
        field_name = "aggregation.outputs"
        definitions = [
            (name, _parsed(output.expression, f"{field_name}.{name}.expression"), output.bands)
            for name, output in aggregation.outputs.items()
        ]
    max_outputs = settings.stats_max_outputs
    if len(definitions) > max_outputs:
        raise BadRequestError(
            f"{field_name}: {len(definitions)} outputs, over the limit "
            f"stats_max_outputs={max_outputs}"
        )
    result = []
    for name, band_math, given_names in definitions:
        where = field_name if aggregation.evalscript else f"{field_name}.{name}.expression"
        resolved = _resolved(band_math, where, band_assets)
        count = len(resolved.outputs)
        max_bands = settings.max_expression_outputs
        if count > max_bands:
            what = (
                f"output {name} has {count}" if aggregation.evalscript else f"{count} ';'-separated"
            )
            raise TooLargeError(
                f"{where}: {what} bands, over the limit max_expression_outputs={max_bands}"
            )
        band_names = given_names or [f"B{i}" for i in range(count)]
        if len(band_names) != count or len(set(band_names)) != count:
            raise BadRequestError(
                f"{field_name}.{name}.bands: {count} distinct band name(s) needed, "
                f"one per ';'-separated expression"
            )
        result.append((name, resolved, list(band_names)))
    return result


def _time(value: str, field_name: str) -> datetime:
    try:
        return parse_rfc3339(value)
    except ValueError as error:
        raise BadRequestError(f"{field_name}: {error}") from None


def _histogram(definition: HistogramDefinition, where: str, max_bins: int) -> HistogramSpec:
    spec = HistogramSpec(
        bins=tuple(definition.bins) if definition.bins is not None else None,
        n_bins=definition.nBins,
        bin_width=definition.binWidth,
        low_edge=definition.lowEdge,
        high_edge=definition.highEdge,
        max_bins=max_bins,
        field=where,
    )
    # Edges known now are checked now; binWidth over the data's range when it is read.
    spec.check_bins()
    return spec


def _check_keys(keys: Mapping[str, Any] | None, known: list[str], where: str, what: str) -> None:
    for key in keys or {}:
        if key != "default" and key not in known:
            raise BadRequestError(
                f"{where}: unknown {what} '{key}'; {what}s are {', '.join(known)} (or 'default')"
            )


def _interpolation(stats: Any, statistics: Mapping[str, Any], band: str, where: str) -> str:
    """The percentile method of a band: Sentinel Hub's ``interpolation``, default linear."""
    method = stats.percentiles.interpolation if stats and stats.percentiles else None
    if method is None:
        return "linear"
    if method not in PERCENTILE_METHODS:
        key = band if band in statistics else "default"
        raise BadRequestError(
            f"{where}.statistics.{key}.percentiles.interpolation: '{method}' is not supported; "
            f"use one of {', '.join(PERCENTILE_METHODS)}"
        )
    return method


def _bands(
    output: str,
    names: list[str],
    calculations: Mapping[str, OutputCalculations] | None,
    max_bins: int,
) -> tuple[BandPlan, ...]:
    """Resolve Sentinel Hub's ``default`` keys into what each band of an output computes."""
    calc = None
    if calculations:
        calc = calculations.get(output, calculations.get("default"))
    statistics = (calc.statistics if calc else None) or {}
    histograms = (calc.histograms if calc else None) or {}
    where = f"calculations.{output if calculations and output in calculations else 'default'}"
    _check_keys(statistics, names, f"{where}.statistics", "band")
    _check_keys(histograms, names, f"{where}.histograms", "band")
    bands = []
    for name in names:
        stats = statistics.get(name, statistics.get("default"))
        hist = histograms.get(name, histograms.get("default"))
        ks = tuple(stats.percentiles.k) if stats and stats.percentiles else None
        spec = _histogram(hist, f"{where}.histograms.{name}", max_bins) if hist else None
        method = _interpolation(stats, statistics, name, where)
        bands.append(BandPlan(name, ks, spec, method))
    return tuple(bands)


def make_plan(
    request: StatisticalRequest,
    settings: Settings,
    band_assets: frozenset[str] = BAND_MATH_ASSETS,
) -> Plan:
    """Validate a request into a Plan.

    Args:
        request: The parsed request.
        settings: Service settings (the ``stats_max_*``, ``max_expression_outputs`` and
            ``max_histogram_bins`` limits).
        band_assets: The asset names band math may use (``band_math_assets``).

    Returns:
        The plan.

    Raises:
        BadRequestError: Anything invalid, naming the field (and the limit, for limits).

    """
    aggregation = request.aggregation
    if aggregation.width is not None or aggregation.height is not None:
        raise BadRequestError("aggregation.width/height: not supported; give resx and resy")
    if (aggregation.resx is None) != (aggregation.resy is None):
        raise BadRequestError("aggregation.resx/resy: give both or neither")
    if len(request.input.data) != 1:
        raise BadRequestError("input.data: exactly one data collection is supported")
    data = request.input.data[0]

    start = _time(aggregation.timeRange.from_, "aggregation.timeRange.from")
    end = _time(aggregation.timeRange.to, "aggregation.timeRange.to")
    duration = parse_duration(
        aggregation.aggregationInterval.of, field="aggregation.aggregationInterval.of"
    )
    intervals = split_time_range(
        start,
        end,
        duration,
        aggregation.aggregationInterval.lastIntervalBehavior,
        max_intervals=settings.stats_max_intervals,
    )

    outputs = []
    assets: list[str] = []
    for name, band_math, band_names in _outputs(aggregation, settings, band_assets):
        bands = _bands(name, band_names, request.calculations, settings.max_histogram_bins)
        outputs.append(OutputPlan(name, band_math, bands))
        assets.extend(band_math.names)
    _check_keys(request.calculations, [output.name for output in outputs], "calculations", "output")
    mask: str | Expression
    requested = aggregation.mask
    if requested is None:
        # A collection without a scene classification (a batch processing result: its
        # outputs were masked when they were made) has nothing to mask by default; an
        # evalscript masks what its dataMask output says, as in Sentinel Hub.
        scl = SCL_ASSET in band_assets and aggregation.evalscript is None
        requested = MASK_SCL_CLEAR if scl else MASK_NONE
    if requested == MASK_SCL_CLEAR:
        mask = MASK_SCL_CLEAR
        assets.append(SCL_ASSET)
    elif requested in (MASK_NONE, ""):
        mask = MASK_NONE
    else:
        mask = _band_math(requested, "aggregation.mask", band_assets)
        if len(mask.outputs) != 1:
            raise BadRequestError("aggregation.mask: one boolean expression, without ';'")
        assets.extend(mask.names)

    cloud = data.dataFilter.maxCloudCoverage
    bounds = request.input.bounds
    crs = bounds.properties.crs if bounds is not None else EPSG_4326
    resolution = None
    if aggregation.resx is not None and aggregation.resy is not None:
        resolution = (aggregation.resx, aggregation.resy)
    collection = COLLECTION_ALIASES.get(data.collection_id, data.collection_id)
    return Plan(
        collection=collection,
        intervals=tuple(intervals),
        outputs=tuple(outputs),
        mask=mask,
        pixel_rule=aggregation.pixelRule,
        mosaicking_order=data.dataFilter.mosaickingOrder,
        max_cloud_coverage=cloud if cloud < 100 else None,
        resolution=resolution,
        crs=crs,
        assets=tuple(dict.fromkeys(assets)),
    )


def format_interval(interval: tuple[datetime, datetime]) -> dict[str, str]:
    """Return the response's ``{"from", "to"}`` of an interval."""
    return {"from": format_datetime(interval[0]), "to": format_datetime(interval[1])}
