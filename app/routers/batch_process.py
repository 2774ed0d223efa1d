"""``/batch/process``: batch processing jobs along tiling grids (thin: parse, call, shape).

Sentinel Hub Batch Processing v2's shape: a process request (area, scenes, band-math
outputs, a composite) cut along a tiling grid, one Dask task per tile, one COG per tile and
output (or one Zarr group). The jobs are a second kind of the batch statistics jobs: the
same ``BatchService``, job store, states, leases and actions; a job id of the other kind
is a 404 here (and a processing job's id one under ``/batch/statistics``). When
``api_keys`` is set every endpoint needs one, as ``X-API-Key: <key>`` or
``Authorization: Bearer <key>``, as for batch statistics.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from app.batch import BatchService
from app.batch.processing.grids import grid_description, grid_descriptions
from app.batch.processing.models import BatchProcessRequest
from app.dependencies import SettingsDep, get_batch, require_api_key
from app.input_limits import parse_json
from app.routers.batch import inline_schema, validated

router = APIRouter(dependencies=[Depends(require_api_key)])

#: The job kind of this router's jobs, as the job store records it.
KIND = "process"
PREFIX = "/batch/process"

Service = Annotated[BatchService, Depends(get_batch)]
JobId = Annotated[str, Path(description="The job id (a processing job's).")]

EXAMPLE = {
    "processRequest": {
        "input": {
            "bounds": {"bbox": [16.08, 46.62, 16.14, 46.66], "properties": {"crs": "EPSG:4326"}},
            "data": [
                {
                    "type": "sentinel-2-l2a",
                    "dataFilter": {
                        "timeRange": {"from": "2023-06-01T00:00:00Z", "to": "2023-08-31T23:59:59Z"},
                        "maxCloudCoverage": 80,
                        "mosaickingOrder": "leastCC",
                    },
                }
            ],
        },
        "outputs": {
            "ndvi": {"preset": "ndvi", "dataType": "float32"},
            "red": {
                "expression": "red",
                "dataType": "uint16",
                "nodata": 0,
                "rescale": [0, 0.3],
            },
        },
        "composite": "median",
        "mask": "scl-clear",
    },
    "input": {"type": "tiling-grid", "id": 1, "resolution": 10},
    "output": {"type": "raster"},
    "createCollection": True,
    "description": "Summer 2023 NDVI median",
}

CREATE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": inline_schema(BatchProcessRequest.model_json_schema()),
                "example": EXAMPLE,
            }
        },
    }
}

CREATE_DESCRIPTION = """
Create a batch processing job (state `CREATED`), Sentinel Hub Batch Processing v2's shape:

- `processRequest`: `input.bounds` (a GeoJSON `geometry` or a `bbox`, any CRS in
  `properties.crs`) and `input.data[0]` (`type` = the collection, `dataFilter`: `timeRange`,
  `maxCloudCoverage`, `mosaickingOrder` mostRecent | leastRecent | leastCC); `outputs`:
  output id -> `expression` or `preset` (as the tiler accepts them), `dataType` (uint8,
  uint16, float32), `nodata`, `rescale`, and per output or for all: `mask` (`scl-clear`),
  `composite` (`first` = the first clear pixel in mosaicking order, `median`, `mean`, `max`,
  `min`, or `stack` = one band per scene date); `resampling`.
- `input`: a tiling grid `{"type": "tiling-grid", "id", "resolution", "bufferX", "bufferY"}`
  (see `GET /batch/process/tiling-grids`) or your own tiles `{"type": "geopackage",
  "features"}`.
- `output`: `{"type": "raster" | "zarr", "delivery": {"s3": {"url"}} | {"path"},
  "overwrite", "skipExisting", "cogParameters"}`; a folder or `s3://` prefix under
  `batch_outputs`. Raster paths follow the templates `<requestId>`, `<tileName>`,
  `<outputId>`, `<format>` (default `<output>/<requestId>/<tileName>/<outputId>.tif`); a
  STAC collection of the results (one item per tile) is written beside them.
- `createCollection`: also serve the results as a collection of this service's catalog
  (tiles, `/searches`, `/statistics` on them) when the job ends.

Bad input (an empty area, an unknown grid or a resolution it does not offer, too many
tiles, an output expression that does not parse, an unknown preset) is a 4xx naming the
parameter, before anything is created. Then `analyse` (optional) and `start`; `GET` the
job for its progress, `GET .../tiles` for the tiles and their status.
"""

JOB_DESCRIPTION = """
A job: `status`, `request`, `output`, `analysis` (tile and scene counts, estimated bytes
and seconds), `completionPercentage` (tiles done or failed), `progress.tiles`
(`total`, `done`, `failed`), `estimatedSecondsRemaining` and `eta`.

States: `CREATED` -> (`analyse`) `ANALYSING` -> `ANALYSIS_DONE` -> (`start`) `PROCESSING` ->
`DONE` (every tile written), `PARTIAL` (some tiles failed: their reads failed) or `FAILED`
(the job itself could not run). `stop`: `PROCESSING` -> `STOPPED`; `start` resumes it.
`retry-failed`: `PARTIAL` / `FAILED` -> `PROCESSING`, redoing exactly the failed tiles. An
action in another state answers 409 naming the current state. A tile already written is
never redone: a killed worker, a restarted service or a stop / start loses and duplicates
nothing.
"""

GRID_EXAMPLE = {
    "id": 1,
    "name": "UTM 10km grid",
    "properties": {
        "tileWidth": 10000,
        "tileHeight": 10000,
        "resolutions": [10.0, 20.0],
        "unit": "METRE",
    },
}

TILES_EXAMPLE = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
            "id": "33N_058_0516",
            "geometry": {"type": "Polygon", "coordinates": [[[16.04, 46.66], "..."]]},
            "properties": {"name": "33N_058_0516", "status": "PROCESSED", "error": None},
        }
    ],
    "numberMatched": 4,
    "numberReturned": 1,
}


# ------------------------------------------------------------------------ tiling grids
# Declared before ``/batch/process/{job_id}``, which would take "tiling-grids" for an id.


@router.get(
    f"{PREFIX}/tiling-grids",
    summary="The tiling grids jobs cut areas along",
    responses={200: {"content": {"application/json": {"example": {"data": [GRID_EXAMPLE]}}}}},
)
def tiling_grids() -> dict[str, Any]:
    """Every grid: id, name, tile size and the resolutions it offers (Sentinel Hub's shape).

    `0` UTM 20 km (20,040 m; 10, 20, 60 m), `1` UTM 10 km (10,000 m; 10, 20 m), `2` UTM
    100 km (100,080 m; 60, 120, 240, 360 m), `3` WGS84 1 degree (0.0001, 0.0002 degree).
    The UTM grids are per zone, their tile edges on the Sentinel-2 pixel grid; an area
    across zones gets tiles in each zone's CRS. See docs/tiling-grids.md.
    """
    return {"data": grid_descriptions()}


@router.get(
    f"{PREFIX}/tiling-grids/{{grid_id}}",
    summary="One tiling grid",
    responses={200: {"content": {"application/json": {"example": GRID_EXAMPLE}}}},
)
def tiling_grid(
    grid_id: Annotated[str, Path(description="The grid id (`0`..`3`).")],
) -> dict[str, Any]:
    """The grid's id, name, tile size, resolutions and unit (404 when unknown)."""
    return grid_description(grid_id)


# ---------------------------------------------------------------------------- jobs


@router.post(
    PREFIX,
    status_code=201,
    summary="Create a batch processing job",
    description=CREATE_DESCRIPTION,
    openapi_extra=CREATE_BODY,
)
async def create_job(request: Request, service: Service, settings: SettingsDep) -> JSONResponse:
    """Create a job from a JSON request (state CREATED)."""
    # The body is bounded by app.request_limits while it streams in (batch_max_geojson_mb).
    raw = await request.body()
    # Off the event loop: an area's GeoJSON can be large.
    body = await run_in_threadpool(parse_json, raw, settings.max_json_depth)
    model = validated(BatchProcessRequest, body)
    view = await run_in_threadpool(service.create_process, model)
    return JSONResponse(view, status_code=201)


@router.get(PREFIX, summary="List batch processing jobs")
def list_jobs(
    service: Service,
    limit: Annotated[int, Query(ge=1, le=1000, description="Jobs per page.")] = 100,
    offset: Annotated[int, Query(ge=0, description="Jobs to skip.")] = 0,
    status: Annotated[str | None, Query(description="Only jobs in this state.")] = None,
) -> dict[str, Any]:
    """Processing jobs, newest first: `{"data": [...], "total": n}`."""
    return service.list(limit=limit, offset=offset, state=status, kind=KIND)


@router.get(
    f"{PREFIX}/{{job_id}}",
    summary="A batch processing job and its progress",
    description=JOB_DESCRIPTION,
)
def get_job(job_id: JobId, service: Service) -> dict[str, Any]:
    """The job: status, analysis, completionPercentage, tile counts, ETA."""
    return service.get(job_id, kind=KIND)


@router.post(
    f"{PREFIX}/{{job_id}}/analyse",
    status_code=202,
    summary="Analyse a job: list its tiles, count scenes, estimate bytes and time",
)
def analyse_job(job_id: JobId, service: Service) -> dict[str, Any]:
    """CREATED -> ANALYSING -> ANALYSIS_DONE (409 in any other state)."""
    return service.analyse(job_id, kind=KIND)


@router.post(f"{PREFIX}/{{job_id}}/start", status_code=202, summary="Start (or resume) a job")
def start_job(job_id: JobId, service: Service) -> dict[str, Any]:
    """Analyse first if needed, then PROCESSING; a STOPPED job resumes where it stopped."""
    return service.start(job_id, kind=KIND)


@router.post(f"{PREFIX}/{{job_id}}/stop", summary="Stop a job")
def stop_job(job_id: JobId, service: Service) -> dict[str, Any]:
    """PROCESSING -> STOPPED; tiles being written finish, `start` resumes the rest."""
    return service.stop(job_id, kind=KIND)


@router.post(
    f"{PREFIX}/{{job_id}}/retry-failed",
    status_code=202,
    summary="Redo exactly the tiles that failed",
)
def retry_failed(job_id: JobId, service: Service) -> dict[str, Any]:
    """PARTIAL | FAILED -> PROCESSING, redoing the failed tiles only."""
    return service.retry_failed(job_id, kind=KIND)


@router.get(
    f"{PREFIX}/{{job_id}}/tiles",
    summary="A job's tiles with their status, as GeoJSON",
    response_class=JSONResponse,
    responses={200: {"content": {"application/geo+json": {"example": TILES_EXAMPLE}}}},
)
def job_tiles(
    job_id: JobId,
    service: Service,
    limit: Annotated[int, Query(ge=1, le=10000, description="Tiles per page.")] = 1000,
    offset: Annotated[int, Query(ge=0, description="Tiles to skip.")] = 0,
    status: Annotated[
        str | None,
        Query(description="Only tiles in this status: `PENDING`, `PROCESSED` or `FAILED`."),
    ] = None,
) -> JSONResponse:
    """The tiles listed by the analysis (409 before it): a FeatureCollection in WGS84.

    Each feature is a tile's footprint with its `name`, `status`, `error` and `outputs`
    (output id -> where it is written); `numberMatched` counts the tiles of the filter.
    """
    collection = service.tiles(job_id, limit=limit, offset=offset, status=status)
    return JSONResponse(collection, media_type="application/geo+json")


@router.delete(
    f"{PREFIX}/{{job_id}}",
    status_code=204,
    summary="Delete a job (not while it runs)",
    response_class=Response,
)
def delete_job(job_id: JobId, service: Service) -> Response:
    """Forget the job (409 while ANALYSING or PROCESSING: stop it first); outputs stay."""
    service.delete(job_id, kind=KIND)
    return Response(status_code=204)
