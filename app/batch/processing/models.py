"""The batch processing request: Sentinel Hub Batch Processing v2's shape, band math outputs.

::

    {
      "processRequest": {
        "input": {
          "bounds": {"geometry": {...} | "bbox": [...], "properties": {"crs": "EPSG:32633"}},
          "data": [{"type": "sentinel-2-l2a", "dataFilter": {
            "timeRange": {"from": "2023-06-01T00:00:00Z", "to": "2023-09-01T00:00:00Z"},
            "maxCloudCoverage": 60, "mosaickingOrder": "leastCC"}}]
        },
        "outputs": {"ndvi": {"expression": "(nir-red)/(nir+red)", "dataType": "float32",
                             "composite": "median", "mask": "scl-clear"}},
        "composite": "first", "mask": "scl-clear", "resampling": "nearest"
      },
      "input": {"type": "tiling-grid", "id": 1, "resolution": 10, "bufferX": 0, "bufferY": 0},
      "output": {"type": "raster", "delivery": {"s3": {"url": "s3://bucket/out"}},
                 "overwrite": false, "skipExisting": false, "cogParameters": {...}},
      "createCollection": true,
      "description": "NDVI median, summer 2023"
    }

Outputs are band math (``expression``, over asset names or ESA band names, as the tiler
and the Statistical API take it) or a one-band ``preset`` (``ndvi``, ``ndwi``, ``ndmi``),
one band each; or the outputs of a Sentinel Hub evalscript (``processRequest.evalscript``,
every band of each of its setup()'s outputs). ``composite``, ``mask`` and the data type
are per output, with request-wide defaults.

``recipe()`` turns the outputs into the engine's ``TileRecipe``; every other check of the
request (area, grid, limits) is ``app.batch.processing.analysis.check_request``.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from app import sentinel2
from app.batch.processing.paths import JOB_ID
from app.batch.processing.spec import (
    COMPOSITES,
    DATA_TYPES,
    OutputSpec,
    TileRecipe,
)
from app.errors import BadRequestError, TerratilerError
from app.evalscript import DATA_MASK, SAMPLE_DTYPES, EvalscriptLimits, parse_evalscript
from app.expressions import get_preset, parse_expression, resolve_names
from app.ordering import DEFAULT_ORDER, MosaickingOrder
from app.sentinel2 import MASK_NONE, MASK_SCL_CLEAR
from app.stats.models import Bounds, TimeRange
from app.stats.plan import BAND_MATH_ASSETS, COLLECTION_ALIASES

__all__ = [
    "RESAMPLINGS",
    "BatchProcessRequest",
    "GeopackageInput",
    "OutputTarget",
    "ProcessOutput",
    "ProcessRequest",
    "TilingGridInput",
]

#: Resampling of assets onto a tile grid when their grids differ (rasterio names).
RESAMPLINGS = ("nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average", "mode")
#: Masks an output may ask for.
MASKS = (MASK_SCL_CLEAR, MASK_NONE)
# Output ids name files (``<outputId>``), Zarr arrays and STAC assets.
_MAX_OUTPUT_ID = 64
_OUTPUT_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")
_INTEGER_RANGES = {"uint8": (0, 255), "uint16": (0, 65535)}
_FLOAT32_MAX = float(np.finfo(np.float32).max)


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class ProcessDataFilter(_Model):
    """Which scenes take part, and in which order."""

    timeRange: TimeRange = Field(description="[from, to) in RFC 3339.")
    maxCloudCoverage: float = Field(
        default=100.0, ge=0, le=100, description="Largest `eo:cloud_cover` (percent) accepted."
    )
    mosaickingOrder: MosaickingOrder = Field(
        default=DEFAULT_ORDER,
        description="Order of the scenes: `first` takes each pixel from the first clear one.",
    )


class ProcessData(_Model):
    """The collection (``type``; ``collection`` accepted too) and its filter."""

    type: str | None = Field(default=None, description="Collection id, e.g. `sentinel-2-l2a`.")
    collection: str | None = Field(default=None, description="Alias of `type`.")
    dataFilter: ProcessDataFilter

    @property
    def collection_id(self) -> str:
        """The collection id (Sentinel Hub's ``S2L2A`` too)."""
        name = self.type or self.collection or ""
        return COLLECTION_ALIASES.get(name, name)


class ProcessInput(_Model):
    """The area and the data."""

    bounds: Bounds | None = Field(
        default=None,
        description="The area: a geometry and/or bbox in `properties.crs` (required with a "
        "tiling grid; with own tiles (geopackage) optional: the tiles are the area).",
    )
    data: list[ProcessData] = Field(min_length=1, max_length=1)


class ProcessOutput(_Model):
    """One output: one band of band math, its data type, composite and mask."""

    expression: str | None = Field(default=None, description="One band of band math.")
    preset: str | None = Field(default=None, description="A one-band preset: ndvi, ndwi, ndmi.")
    dataType: str = Field(default="float32", description="uint8, uint16 or float32.")
    nodata: float | None = Field(default=None, description="Nodata value of the output.")
    rescale: list[float] | None = Field(
        default=None, description="[min, max] mapped onto the data type's range."
    )
    mask: str | None = Field(default=None, description="`scl-clear` or `none`.")
    composite: str | None = Field(default=None, description="first, median, mean, max, min, stack.")


class ProcessRequest(_Model):
    """What each tile computes (Sentinel Hub's process request, band math for evalscript)."""

    input: ProcessInput
    outputs: dict[str, ProcessOutput] | None = Field(
        default=None,
        description="Output id -> band math; with an evalscript, its setup()'s output id -> "
        "options of that output (dataType, nodata, rescale, composite, mask).",
    )
    composite: str = Field(default="first", description="Default composite of the outputs.")
    mask: str | None = Field(default=None, description="Default mask of the outputs.")
    resampling: str = Field(default="nearest", description="Assets onto a tile's grid.")
    evalscript: str | None = Field(
        default=None,
        description="A Sentinel Hub V3 evalscript: every output of its setup() but "
        "`dataMask` is an output (all its bands); `dataMask` masks them.",
    )


class TilingGridInput(_Model):
    """A predefined tiling grid (``GET /batch/process/tiling-grids``)."""

    type: Literal["tiling-grid"] = "tiling-grid"
    id: str = Field(description="Grid id: 0, 1, 2, 3.")
    resolution: float = Field(description="Pixel size, one the grid offers.")
    bufferX: int = Field(default=0, ge=0, description="Pixels added left and right.")
    bufferY: int = Field(default=0, ge=0, description="Pixels added above and below.")

    @field_validator("id", mode="before")
    @classmethod
    def _id(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value


class GeopackageInput(_Model):
    """The user's own tiles: polygons with ``id``, ``identifier``, a size or resolution."""

    type: Literal["geopackage"] = "geopackage"
    features: str | dict[str, Any] = Field(
        description="Path or URL (s3://, http(s)://) of a GeoPackage (or GeoJSON, GeoParquet) "
        "of polygons with `id`, `identifier` and `width`/`height` or `resolution`; or "
        "{href, layer} / {s3: {url}}."
    )


class OutputTarget(_Model):
    """Where and how the tiles are written."""

    type: Literal["raster", "zarr"] = "raster"
    delivery: dict[str, Any] | None = Field(
        default=None,
        description="{s3: {url}} or {path}: a folder, or a path template with <requestId>, "
        "<tileName>, <outputId>, <format>.",
    )
    path: str | None = Field(default=None, description="Same as delivery.path.")
    overwrite: bool = Field(default=False, description="Replace existing output files.")
    skipExisting: bool = Field(
        default=False, description="Skip tiles whose outputs all exist already."
    )
    cogParameters: dict[str, Any] | None = Field(
        default=None, description="overviewLevels, overviewMinSize, resamplingAlgorithm, ..."
    )

    @property
    def url(self) -> str | None:
        """The folder or template given (None: the service's batch folder)."""
        delivery = self.delivery or {}
        s3 = delivery.get("s3")
        if isinstance(s3, dict) and s3.get("url"):
            return str(s3["url"])
        return delivery.get("path") or delivery.get("url") or self.path


class BatchProcessRequest(_Model):
    """A batch processing job."""

    processRequest: ProcessRequest
    input: Annotated[TilingGridInput | GeopackageInput, Field(discriminator="type")]
    output: OutputTarget = Field(default_factory=OutputTarget)
    createCollection: bool | str = Field(
        default=False,
        description="Also serve the results as a collection of this service (true: id "
        "`batch-<job id>`; a string: that id).",
    )
    description: str | None = Field(default=None, max_length=2000)

    def recipe(self, limits: EvalscriptLimits | None = None) -> TileRecipe:
        """The outputs as the engine takes them (presets expanded, defaults applied).

        Args:
            limits: The evalscript limits (the settings' defaults when omitted).

        Raises:
            BadRequestError: No outputs, band math or an evalscript that does not parse or
                names an unknown band, an unknown preset, a bad data type, composite, mask,
                rescale or resampling (each naming its field).

        """
        request = self.processRequest
        _check(request.composite, COMPOSITES, "processRequest.composite")
        if request.mask is not None:
            _check(request.mask, MASKS, "processRequest.mask")
        _check(request.resampling, RESAMPLINGS, "processRequest.resampling")
        if request.evalscript is not None:
            outputs = _script_outputs(request, limits or EvalscriptLimits.default())
        elif not request.outputs:
            raise BadRequestError(
                "processRequest.outputs: give at least one output (or processRequest.evalscript)"
            )
        else:
            outputs = tuple(
                _output(name, output, request.composite, request.mask)
                for name, output in request.outputs.items()
            )
        order = request.input.data[0].dataFilter.mosaickingOrder
        return TileRecipe(outputs=outputs, resampling=request.resampling, order=order)


def _check(value: str, allowed: tuple[str, ...], field: str) -> None:
    if value not in allowed:
        raise BadRequestError(f"{field}: '{value}' is not one of {', '.join(allowed)}")


def _band_math(text: str, field: str) -> str:
    """One band of band math over asset keys (``B04`` -> ``red``)."""
    try:
        expression = parse_expression(text)
        expression = resolve_names(
            expression, lambda name: sentinel2.resolve_asset(name, BAND_MATH_ASSETS)
        )
    except BadRequestError as error:
        known = ", ".join(sorted(BAND_MATH_ASSETS))
        hint = f" (assets: {known}, or ESA band names B01..B12, B8A, SCL)"
        suffix = hint if "unknown band" in error.message else ""
        raise BadRequestError(f"{field}: {error.message}{suffix}") from None
    if len(expression.outputs) != 1:
        raise BadRequestError(
            f"{field}: {len(expression.outputs)} ';'-separated bands; an output is one band "
            "(give each band its own output)"
        )
    return expression.text


def _script_outputs(request: ProcessRequest, limits: EvalscriptLimits) -> tuple[OutputSpec, ...]:
    """One output per output of the evalscript's setup() but ``dataMask``.

    ``processRequest.outputs`` may give each its options (no band math: the script is it);
    the data type defaults to the output's ``sampleType`` (AUTO and UINT8: uint8).
    """
    field = "processRequest.evalscript"
    try:
        script = parse_evalscript(request.evalscript or "", limits)
    except TerratilerError as error:
        raise type(error)(f"{field}: {error.message.removeprefix('evalscript: ')}") from None
    declared = [output for output in script.outputs if output.id != DATA_MASK]
    if not declared:
        raise BadRequestError(f"{field}: setup() declares no output besides dataMask")
    options = request.outputs or {}
    unknown = sorted(set(options) - {output.id for output in declared})
    if unknown:
        raise BadRequestError(
            f"processRequest.outputs.{unknown[0][:_MAX_OUTPUT_ID]}: the evalscript has no such "
            f"output; its outputs: {', '.join(output.id for output in declared)}"
        )
    specs = []
    for output in declared:
        given = options.get(output.id) or ProcessOutput()
        where = f"processRequest.outputs.{output.id[:_MAX_OUTPUT_ID]}"
        if given.expression is not None or given.preset is not None:
            raise BadRequestError(f"{where}: the evalscript computes it (no expression or preset)")
        if "dataType" not in given.model_fields_set:
            given = given.model_copy(update={"dataType": SAMPLE_DTYPES[output.sample_type.upper()]})
        spec = _output(output.id, given, request.composite, request.mask, script_text=script.text)
        specs.append(replace(spec, bands=output.bands))
    return tuple(specs)


def _output(
    name: str,
    output: ProcessOutput,
    composite: str,
    mask: str | None,
    *,
    script_text: str | None = None,
) -> OutputSpec:
    where = f"processRequest.outputs.{name[:_MAX_OUTPUT_ID]}"
    if not _OUTPUT_ID.match(name) or JOB_ID.match(name):
        raise BadRequestError(
            f"{where}: an output id names files: letters, digits, '.', '_', '-' (not first: "
            f"'.' or '-'; at most {_MAX_OUTPUT_ID}), not shaped like a job id"
        )
    if script_text is not None:
        expression = ""
    elif (output.expression is None) == (output.preset is None):
        raise BadRequestError(f"{where}: give an expression or a preset (one of them)")
    elif output.preset is not None:
        try:
            preset = get_preset(output.preset)
        except BadRequestError as error:
            raise BadRequestError(f"{where}.preset: {error.message}") from None
        if preset.expression is None:
            raise BadRequestError(
                f"{where}.preset: '{output.preset}' is not one band of band math "
                "(one-band presets: ndvi, ndwi, ndmi)"
            )
        expression = _band_math(preset.expression, f"{where}.preset")
    else:
        expression = _band_math(output.expression or "", f"{where}.expression")
    data_type = output.dataType.lower()
    _check(data_type, DATA_TYPES, f"{where}.dataType")
    chosen = output.composite or composite
    _check(chosen, COMPOSITES, f"{where}.composite")
    chosen_mask = output.mask if output.mask is not None else mask
    if chosen_mask is not None:
        _check(chosen_mask, MASKS, f"{where}.mask")
    rescale = None
    if output.rescale is not None:
        low_high = output.rescale
        if (
            len(low_high) != 2
            or not all(math.isfinite(v) for v in low_high)
            or not low_high[0] < low_high[1]
        ):
            raise BadRequestError(f"{where}.rescale: give [min, max], finite, with min < max")
        rescale = (float(low_high[0]), float(low_high[1]))
    _check_nodata(output.nodata, data_type, f"{where}.nodata")
    return OutputSpec(
        id=name,
        expression=expression,
        data_type=data_type,
        nodata=output.nodata,
        rescale=rescale,
        composite=chosen,
        mask=None if chosen_mask in (None, MASK_NONE) else chosen_mask,
        evalscript=script_text,
    )


def _check_nodata(nodata: float | None, data_type: str, field: str) -> None:
    """A nodata value the data type can hold exactly (GDAL would write another one)."""
    if nodata is None:
        return
    if not math.isfinite(nodata):
        hint = " (float32 outputs without a nodata have NaN: leave it out)"
        raise BadRequestError(f"{field}: {nodata} is not a finite number{hint}")
    if data_type in _INTEGER_RANGES:
        low, high = _INTEGER_RANGES[data_type]
        if nodata != int(nodata) or not low <= nodata <= high:
            raise BadRequestError(
                f"{field}: {nodata:g} is not a {data_type} value (a whole number from {low} "
                f"to {high})"
            )
    elif abs(nodata) > _FLOAT32_MAX:
        raise BadRequestError(f"{field}: {nodata:g} is out of the float32 range")
