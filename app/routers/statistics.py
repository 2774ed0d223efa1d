"""``POST /statistics``: the Statistical API, in Sentinel Hub's request and response shape."""

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from app.catalog import Catalog
from app.dependencies import GeometryBody, SettingsDep, get_catalog
from app.stats import StatisticalRequest, StatisticalResponse, compute_statistics

router = APIRouter()

DESCRIPTION = """
Per-interval statistics of band-math outputs over one geometry, as Sentinel Hub's
Statistical API computes them; code written for its responses works on these unchanged.

**Request.** `input.bounds`: a GeoJSON `geometry` and/or a `bbox` (both: their intersection)
in `properties.crs` (EPSG code, OGC URL or URN; default WGS84 lon/lat). `input.data[0].type`:
the collection id (`sentinel-2-l2a`); `dataFilter.maxCloudCoverage` (percent) and
`dataFilter.mosaickingOrder` (`mostRecent` default, `leastRecent`, `leastCC`).
`aggregation.timeRange` `[from, to)`, cut into `aggregationInterval.of` (ISO 8601: P1D, P5D,
P1W, P1M, P1Y ...) from `from`; a last partial interval is dropped (`SKIP`, default), ends at
`to` (`SHORTEN`) or keeps its length (`EXTEND`). `aggregation.evalscript`: Sentinel Hub's
V3 evalscript as sentinelhub-py sends it (every output of its setup() but `dataMask` is an
output, bands `B0`, `B1` ...; a `dataMask` output excludes the pixels where it is 0), or in
its place `aggregation.outputs` names band math per output (`{"ndvi": {"expression":
"(nir-red)/(nir+red)"}}`, `;` separates bands `B0`, `B1` ...; assets by common or ESA name),
evaluated on reflectance (DN x scale + offset, Sentinel-2 baseline offsets handled).
`aggregation.mask`: `scl-clear` (default; SCL nodata, saturated, cloud shadow, clouds,
cirrus and snow are no data), `none`, or a boolean expression (true = valid).
`calculations`: per output (or `default`) and band (or `default`), `statistics.percentiles.k`
(0-100) with an optional `interpolation` (`linear`, the default, `lower`, `higher`, `nearest`,
`midpoint`: numpy.percentile's methods; others are a 400) and `histograms` as `bins` edges,
`nBins` or `binWidth` (with `lowEdge`/`highEdge`, default the values' min/max).

**Pixels.** Statistics are computed in the scene's native UTM grid (10 m for B04/B08); the
geometry is reprojected, never the raster. `resx`/`resy` (request CRS units; degrees are
converted at the geometry's centre) set another grid aligned to the scene's corner, every
asset sampled nearest-neighbour. 20 m assets and SCL land on the 10 m grid nearest-neighbour.
`aggregation.pixelRule`:
- `exact` (default): each pixel weighted by the fraction of its area inside the geometry
  (exactextract's definitions): mean = sum(w v) / sum(w); stDev = population
  sqrt(sum(w (v - mean)^2) / sum(w)); min/max over pixels with w > 0; percentiles by
  exactextract's weighted quantile (linear interpolation, type 7 when weights are equal);
- `center`: pixels whose centre is inside (GDAL / `rasterio.features.geometry_mask`),
  unweighted; percentiles numpy `linear`;
- `all_touched`: every pixel the geometry touches (rasterstats `all_touched=True`),
  unweighted.

**Mosaic.** Within an interval, scenes in mosaicking order; each pixel takes the first
valid value (inside the scene, not nodata, not masked, finite).

**Response.** `data`: one entry per interval that has scenes (others are omitted), with
`outputs.<name>.bands.<band>.stats` = `min`, `max`, `mean`, `stDev`, `sampleCount` (pixels
the geometry covers under the pixel rule), `noDataCount` (those without a valid value),
`percentiles` (`{"50.0": ...}`) and `histogram` (`bins` of `{lowEdge, highEdge, count}` with
`[low, high)` bins, the last closed; counts are valid pixels; `overflowCount`,
`underflowCount`). An interval without any valid pixel has `"NaN"` (a string, as Sentinel Hub
sends it) for min, max, mean, stDev and percentiles. An interval whose scenes cannot be read
is `{"interval", "error": {"type": "EXECUTION_ERROR", "message"}}`; `status` is `OK`,
`PARTIAL` (some intervals failed) or `FAILED`.

**Errors.** 400 for invalid requests (unknown output band or asset, empty geometry, reversed
time range, bad duration, geometry outside every scene, unknown collection) and for limits
(`stats_max_pixels` pixels of the geometry's bounding box, `stats_max_intervals`,
`stats_max_outputs`, `stats_max_scenes`), the message naming the field or limit; 413 for a
geometry over `max_geometry_vertices` (counted before the body is parsed); 422 for a body
that does not fit the schema.
"""


@router.post(
    "/statistics",
    response_model=StatisticalResponse,
    summary="Statistical API: per-interval statistics of band math over a geometry",
    description=DESCRIPTION,
    dependencies=[Depends(GeometryBody("input.bounds.geometry"))],
)
def statistics(
    body: StatisticalRequest,
    catalog: Annotated[Catalog, Depends(get_catalog)],
    settings: SettingsDep,
) -> JSONResponse:
    """Compute the statistics of ``body`` over the configured catalog."""
    # The engine returns JSON-ready data ("NaN" strings included): sent as is.
    content = compute_statistics(body, catalog, settings)
    return JSONResponse(content)
