"""The Statistical API request and response, in Sentinel Hub's shape.

The request is Sentinel Hub's: its JavaScript evalscript (``aggregation.evalscript``,
``app.evalscript``), or named band-math outputs in its place (``aggregation.outputs``); a
mask (``aggregation.mask``) and an explicit pixel rule (``aggregation.pixelRule``). Fields Sentinel Hub accepts that have no meaning here
(``processing``, ``previewMode`` ...) are accepted and ignored.

The response models document the JSON the engine returns: the engine itself returns plain
dicts (picklable, ready for ``json.dumps``) in which statistics of intervals without valid
pixels are the string ``"NaN"``, as Sentinel Hub sends them.
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.crs_input import OGC_CRS84
from app.ordering import DEFAULT_ORDER, MosaickingOrder
from app.stats.coverage import PixelRule
from app.stats.intervals import LastIntervalBehavior


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class BoundsProperties(_Model):
    """CRS of ``bounds``: an EPSG code, OGC URL or URN."""

    crs: str = Field(
        default=OGC_CRS84,
        description="CRS of the geometry / bbox, e.g. `http://www.opengis.net/def/crs/EPSG/0/32633`"
        ", `EPSG:32633` or `urn:ogc:def:crs:EPSG::4326`. Default: WGS84 (lon, lat).",
    )


class Bounds(_Model):
    """The area: a GeoJSON (multi)polygon, a bbox, or both (their intersection)."""

    bbox: list[float] | None = Field(
        default=None, description="[minx, miny, maxx, maxy] in `properties.crs`."
    )
    geometry: dict[str, Any] | None = Field(
        default=None, description="A GeoJSON Polygon or MultiPolygon in `properties.crs`."
    )
    properties: BoundsProperties = Field(default_factory=BoundsProperties)

    @field_validator("bbox")
    @classmethod
    def _bbox(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and len(value) != 4:
            raise ValueError("bbox must have 4 numbers: minx, miny, maxx, maxy")
        return value


class TimeRange(_Model):
    """A time range ``[from, to)`` (RFC 3339; a bare date is its midnight UTC)."""

    from_: str = Field(alias="from")
    to: str


class DataFilter(_Model):
    """Which scenes of the collection take part."""

    maxCloudCoverage: float = Field(
        default=100.0, ge=0, le=100, description="Largest `eo:cloud_cover` (percent) accepted."
    )
    mosaickingOrder: MosaickingOrder = Field(
        default=DEFAULT_ORDER,
        description="Order in which an interval's scenes are mosaicked: each pixel takes the "
        "first valid value (after the mask). `leastCC`: least cloudy first, then most recent.",
    )


class DataInput(_Model):
    """The collection: ``type`` is its id (``sentinel-2-l2a``; ``collection`` accepted too)."""

    type: str | None = Field(default=None, description="Collection id, e.g. `sentinel-2-l2a`.")
    collection: str | None = Field(default=None, description="Alias of `type`.")
    dataFilter: DataFilter = Field(default_factory=DataFilter)

    @model_validator(mode="after")
    def _collection(self) -> "DataInput":
        if not (self.type or self.collection):
            raise ValueError("give the collection id as `type` (or `collection`)")
        return self

    @property
    def collection_id(self) -> str:
        """The collection id, whichever field gave it."""
        return self.type or self.collection or ""


class RequestInput(_Model):
    """Where and what: bounds and the data collection."""

    bounds: Bounds | None = Field(
        default=None,
        description="The area. Required for POST /statistics; many-geometry callers "
        "(batch) give the geometries separately.",
    )
    data: list[DataInput] = Field(min_length=1)


class AggregationInterval(_Model):
    """Interval length (ISO 8601 duration) and what happens to a last partial interval."""

    of: str = Field(description="ISO 8601 duration: P1D, P5D, P1W, P1M, P1Y, PT12H ...")
    lastIntervalBehavior: LastIntervalBehavior = Field(
        default="SKIP",
        description="SKIP: drop a last partial interval; SHORTEN: end it at `timeRange.to`; "
        "EXTEND: keep its full length.",
    )


class OutputDefinition(_Model):
    """One output: band math over the scene's assets (``;`` separates its bands)."""

    expression: str = Field(
        description="e.g. `(nir-red)/(nir+red)` or `(B08-B04)/(B08+B04)`; evaluated on "
        "reflectance (DN * scale + offset)."
    )
    bands: list[str] | None = Field(
        default=None,
        description="Names of the output's bands; default B0, B1, ... (Sentinel Hub's).",
    )


class Aggregation(_Model):
    """When and how: time range, intervals, resolution, outputs, mask, pixel rule."""

    timeRange: TimeRange
    aggregationInterval: AggregationInterval
    outputs: dict[str, OutputDefinition] | None = Field(
        default=None,
        description="Output name -> band math; or give `evalscript` instead (its setup() "
        "names the outputs).",
    )
    mask: str | None = Field(
        default=None,
        description="`scl-clear` (SCL classes nodata, saturated, cloud shadow, clouds, cirrus, "
        "snow are no data), `none`, or a boolean expression over assets (true = valid), "
        "e.g. `(scl == 4) | (scl == 5)`. Default: `scl-clear` for Sentinel-2 band math, `none` "
        "with an evalscript (its dataMask output says which pixels count, as in Sentinel "
        "Hub) and for a collection without a scene classification (a batch processing "
        "result).",
    )
    pixelRule: PixelRule = Field(
        default="exact",
        description="`exact`: coverage-weighted (exactextract); `center`: pixel centres inside; "
        "`all_touched`: every pixel touched.",
    )
    resx: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="Pixel width, in bounds CRS units."
    )
    resy: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="Pixel height, in bounds CRS units."
    )
    width: int | None = Field(default=None, description="Not supported: use resx/resy.")
    height: int | None = Field(default=None, description="Not supported: use resx/resy.")
    evalscript: str | None = Field(
        default=None,
        description="A Sentinel Hub V3 evalscript, as sentinelhub-py sends it: each output of "
        "its setup() but `dataMask` is an output of the response; a `dataMask` output "
        "excludes the pixels where it is 0 (README: Evalscripts).",
    )


class Percentiles(_Model):
    """Percentiles to compute, 0-100 (``[50]`` gives the key ``"50.0"``)."""

    k: list[float] = Field(min_length=1)
    # Checked in plan.py, where the error can name the whole field path (400, not 422).
    interpolation: str | None = Field(
        default=None,
        description="Between two values: `linear` (default), `lower`, `higher`, `nearest` or "
        "`midpoint`, as numpy.percentile's methods of those names.",
    )

    @field_validator("k")
    @classmethod
    def _range(cls, value: list[float]) -> list[float]:
        if any(not 0 <= k <= 100 for k in value):
            raise ValueError("percentiles must be between 0 and 100")
        return value


class StatisticsDefinition(_Model):
    """Extra statistics of a band."""

    percentiles: Percentiles | None = None


class HistogramDefinition(_Model):
    """A histogram: explicit ``bins`` edges, or ``nBins``, or ``binWidth``."""

    bins: list[Annotated[float, Field(allow_inf_nan=False)]] | None = Field(
        default=None, description="Edges: [e0, e1) ... [en-1, en]."
    )
    nBins: int | None = Field(default=None, gt=0)
    binWidth: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    lowEdge: float | None = Field(
        default=None, allow_inf_nan=False, description="Default: the smallest value."
    )
    highEdge: float | None = Field(
        default=None, allow_inf_nan=False, description="Default: the largest value."
    )

    @model_validator(mode="after")
    def _one_form(self) -> "HistogramDefinition":
        forms = [self.bins is not None, self.nBins is not None, self.binWidth is not None]
        if sum(forms) != 1:
            raise ValueError("give exactly one of bins, nBins, binWidth")
        if self.bins is not None:
            edges = self.bins
            if len(edges) < 2 or any(
                high <= low for low, high in zip(edges[:-1], edges[1:], strict=True)
            ):
                raise ValueError("bins must be at least 2 increasing edges")
        if self.lowEdge is not None and self.highEdge is not None and self.highEdge < self.lowEdge:
            raise ValueError("highEdge must not be below lowEdge")
        return self


class OutputCalculations(_Model):
    """Per band (or ``default``) statistics and histograms of one output."""

    statistics: dict[str, StatisticsDefinition] | None = None
    histograms: dict[str, HistogramDefinition] | None = None


class StatisticalRequest(_Model):
    """A Statistical API request (Sentinel Hub's shape: an evalscript, or band-math outputs)."""

    input: RequestInput
    aggregation: Aggregation
    calculations: dict[str, OutputCalculations] | None = Field(
        default=None,
        description="Output name (or `default`) -> statistics / histograms per band name "
        "(or `default`).",
    )


# --------------------------------------------------------------------------- response

NumberOrNaN = float | Literal["NaN"]


class Interval(BaseModel):
    """An interval ``[from, to)``."""

    model_config = ConfigDict(populate_by_name=True)

    from_: str = Field(alias="from")
    to: str


class Stats(BaseModel):
    """Statistics of one band over one interval."""

    min: NumberOrNaN
    max: NumberOrNaN
    mean: NumberOrNaN
    stDev: NumberOrNaN
    sampleCount: int = Field(description="Pixels the geometry covers (under the pixel rule).")
    noDataCount: int = Field(description="Of those, pixels without a valid value.")
    percentiles: dict[str, NumberOrNaN] | None = None


class HistogramBin(BaseModel):
    """One bin ``[lowEdge, highEdge)`` (the last one closed)."""

    lowEdge: float
    highEdge: float
    count: int


class Histogram(BaseModel):
    """Counts of valid pixels per bin."""

    bins: list[HistogramBin]
    overflowCount: int
    underflowCount: int


class BandResult(BaseModel):
    """Statistics (and histogram) of one output band."""

    stats: Stats
    histogram: Histogram | None = None


class OutputResult(BaseModel):
    """Results of one output, per band (``B0`` ...)."""

    bands: dict[str, BandResult]


class IntervalError(BaseModel):
    """Why an interval could not be computed."""

    type: Literal["BAD_REQUEST", "EXECUTION_ERROR", "TIMEOUT"]
    message: str


class IntervalResult(BaseModel):
    """One interval: its outputs, or an error."""

    interval: Interval
    outputs: dict[str, OutputResult] | None = None
    error: IntervalError | None = None


class StatisticalResponse(BaseModel):
    """The response: intervals with data, and the overall status."""

    data: list[IntervalResult]
    status: Literal["OK", "PARTIAL", "FAILED"]
