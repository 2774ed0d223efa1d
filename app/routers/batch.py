"""``/batch/statistics``: batch statistics jobs (thin: parse, call ``BatchService``, shape).

The service (``get_batch``) starts with the app (``app.services.Services``): its
supervisor resumes jobs a previous run (or a replica that died) left ANALYSING /
PROCESSING, and on shutdown this replica leaves its jobs for the next one; its Dask
cluster starts with the first job. When ``api_keys`` is set every endpoint needs one, as
``X-API-Key: <key>`` or ``Authorization: Bearer <key>``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError

from app.batch import BatchService, BatchStatisticalRequest
from app.dependencies import SettingsDep, get_batch, require_api_key
from app.errors import BadRequestError
from app.input_limits import parse_json

router = APIRouter(dependencies=[Depends(require_api_key)])

Service = Annotated[BatchService, Depends(get_batch)]
# These routes see batch statistics jobs only (a batch processing job id is a 404 here).
KIND = "statistics"
JobId = Annotated[str, Path(description="The job id.")]
M = TypeVar("M", bound=BaseModel)


def inline_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON schema with its ``$defs`` references inlined (for ``openapi_extra``)."""
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(definitions[ref.rsplit("/", 1)[1]])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    return resolve(schema)


CREATE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": inline_schema(BatchStatisticalRequest.model_json_schema())
            },
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["request", "features"],
                    "properties": {
                        "request": {
                            "type": "string",
                            "description": "The job request as JSON (input.features omitted).",
                        },
                        "features": {
                            "type": "string",
                            "format": "binary",
                            "description": "GeoPackage, GeoJSON or GeoParquet file.",
                        },
                    },
                }
            },
        },
    }
}

CREATE_DESCRIPTION = """
Create a batch statistics job (state `CREATED`): the `POST /statistics` request without
`input.bounds`, plus `input.features` and `output`.

- `input.features`: a path under the allowed sources, an `s3://` or `https://` URL (also
  `{"href", "layer"}` or Sentinel Hub's `{"s3": {"url"}}`), or an inline GeoJSON
  FeatureCollection; or send `multipart/form-data` with the request as the `request` field
  and the file as `features`. GeoPackage, GeoJSON or GeoParquet, any CRS; an `identifier`
  column is carried into the outputs. Feature ids are the file's FIDs (row numbers when
  they are not unique integers).
- `output`: a folder or `s3://` prefix under `batch_outputs` (default: the service's batch
  folder). Results go to `<output>/<job_id>/`: `<id>.json` per feature
  (`{"id", "identifier", "response": {"data", "status"}}` or `{"id", "identifier", "error"}`)
  and `results.parquet` (one row per feature x interval x output x band, the statistics as
  columns).

Then `analyse` (optional) and `start`; `GET` the job for its progress.
"""


JOB_DESCRIPTION = """
A job: `status`, `analysis` (feature, valid/invalid, scene and interval counts, work units,
estimated seconds), `completionPercentage` (features with a result, statistics or error),
`progress` (units; features done / failed / invalid), `estimatedSecondsRemaining` and
`eta` (from this run's pace; the analysis' estimate before the first unit), and the
`failedFeatures` / `invalidFeatures` (`{id, identifier, error}`, up to 1000 of each).

States: `CREATED` -> (`analyse`) `ANALYSING` -> `ANALYSIS_DONE` -> (`start`) `PROCESSING` ->
`DONE` (every feature has statistics), `PARTIAL` (some features failed: reads of an
interval failed, or an invalid / empty geometry) or `FAILED` (the job itself could not
run: unreadable features, an upstream failure). `stop`: `PROCESSING` -> `STOPPED`;
`start` resumes it. `retry-failed`: `PARTIAL` / `FAILED` -> `PROCESSING`, recomputing exactly
the failed features (invalid geometries are not retried). An action in another state
answers 409 naming the current state. Work already written is never redone: a killed
worker, a restarted service or a stop / start loses and duplicates nothing.
"""


def validated(model: type[M], body: Any) -> M:
    """``body`` validated as ``model``; its errors are a 422 located in the body."""
    try:
        return model.model_validate(body)
    except ValidationError as error:
        errors = error.errors(include_url=False)
        for entry in errors:
            entry["loc"] = ("body", *entry.get("loc", ()))
        raise RequestValidationError(errors) from None


@router.post(
    "/batch/statistics",
    status_code=201,
    summary="Create a batch statistics job",
    description=CREATE_DESCRIPTION,
    openapi_extra=CREATE_BODY,
)
async def create_job(request: Request, service: Service, settings: SettingsDep) -> JSONResponse:
    """Create a job from a JSON request, or a multipart request with the features file."""
    content_type = request.headers.get("content-type", "")
    upload = name = None
    # Bodies are bounded by app.request_limits while they stream in: batch_max_upload_mb
    # for a multipart upload, batch_max_geojson_mb for any other (JSON) body.
    if content_type.startswith("multipart/form-data"):
        form = await request.form()
        text, file = form.get("request"), form.get("features")
        if not isinstance(text, str):
            raise BadRequestError("request: send the job request as the form field `request`")
        if file is None or isinstance(file, str):
            raise BadRequestError("features: send the features file as the form field `features`")
        # A form field is at most 1 MB (Starlette's max_part_size): within every JSON bound.
        body = parse_json(text, settings.max_json_depth, "request")
        upload, name = await file.read(), file.filename
    else:
        raw = await request.body()
        # Off the event loop: up to batch_max_geojson_mb of JSON takes a while.
        body = await run_in_threadpool(parse_json, raw, settings.max_json_depth)
    model = validated(BatchStatisticalRequest, body)
    view = await run_in_threadpool(service.create, model, upload, name)
    return JSONResponse(view, status_code=201)


@router.get("/batch/statistics", summary="List batch statistics jobs")
def list_jobs(
    service: Service,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
    status: Annotated[str | None, Query(description="Only jobs in this state.")] = None,
) -> dict[str, Any]:
    """Jobs, newest first."""
    return service.list(limit=limit, offset=offset, state=status, kind=KIND)


@router.get(
    "/batch/statistics/{job_id}",
    summary="A batch statistics job and its progress",
    description=JOB_DESCRIPTION,
)
def get_job(job_id: JobId, service: Service) -> dict[str, Any]:
    """The job: status, analysis, completionPercentage, counts, ETA, failed features."""
    return service.get(job_id, kind=KIND)


@router.post(
    "/batch/statistics/{job_id}/analyse",
    status_code=202,
    summary="Analyse a job: validate, count features, scenes and intervals, plan units",
)
def analyse_job(job_id: JobId, service: Service) -> dict[str, Any]:
    """CREATED -> ANALYSING -> ANALYSIS_DONE (409 in any other state)."""
    return service.analyse(job_id, kind=KIND)


@router.post(
    "/batch/statistics/{job_id}/start",
    status_code=202,
    summary="Start (or resume) a job",
)
def start_job(job_id: JobId, service: Service) -> dict[str, Any]:
    """Analyse first if needed, then PROCESSING; a STOPPED job resumes where it stopped."""
    return service.start(job_id, kind=KIND)


@router.post("/batch/statistics/{job_id}/stop", summary="Stop a job")
def stop_job(job_id: JobId, service: Service) -> dict[str, Any]:
    """PROCESSING -> STOPPED; `start` resumes it without redoing finished work."""
    return service.stop(job_id, kind=KIND)


@router.post(
    "/batch/statistics/{job_id}/retry-failed",
    status_code=202,
    summary="Recompute exactly the features that failed",
)
def retry_failed(job_id: JobId, service: Service) -> dict[str, Any]:
    """PARTIAL | FAILED -> PROCESSING, recomputing the failed features only."""
    return service.retry_failed(job_id, kind=KIND)


@router.get(
    "/batch/statistics/{job_id}/results",
    summary="Download a job's results as Parquet, CSV or GeoJSON",
    response_class=StreamingResponse,
)
def job_results(
    job_id: JobId,
    service: Service,
    format: Annotated[
        Literal["parquet", "csv", "geojson"],
        Query(description="`parquet` (the table as written), `csv`, or `geojson` (WGS84)."),
    ] = "parquet",
) -> StreamingResponse:
    """The consolidated table (DONE or PARTIAL jobs; 409 before)."""
    chunks, media_type, filename = service.results(job_id, format)
    return StreamingResponse(
        chunks,
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.delete(
    "/batch/statistics/{job_id}",
    status_code=204,
    summary="Delete a job (not while it runs)",
    response_class=Response,
)
def delete_job(job_id: JobId, service: Service) -> Response:
    """Forget the job and its bookkeeping (`<output>/_batch/<id>`); its results stay.

    409 while ANALYSING or PROCESSING: stop it first.
    """
    service.delete(job_id, kind=KIND)
    return Response(status_code=204)
