"""The ``process`` job kind: one unit per tile, COGs or Zarr, a STAC collection at the end.

See ``app.batch.kinds`` for what a kind supplies. A processing job's record keeps its
path template and Zarr group in ``source`` (``{"kind": "process", "template", "zarr"}``);
its tiles are staged by the analysis (``_batch/tiles.json``), unit ``n`` being tile ``n``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from app.batch.analysis import Analysis
from app.batch.processing.analysis import analyse_job, check_request, load_tiles, tile_from_json
from app.batch.processing.models import BatchProcessRequest
from app.batch.processing.paths import output_url
from app.batch.processing.worker import TileTask, run_tile
from app.batch.states import JobState
from app.batch.storage import JobFiles, Storage, join
from app.batch.store import JobRecord, JobStore, Progress, UnitRecord

if TYPE_CHECKING:
    from app.batch.runner import DriverContext

__all__ = ["ProcessKind", "collection_id", "tile_outputs"]

logger = logging.getLogger(__name__)


def collection_id(job: JobRecord) -> str | None:
    """The id the results are served under (``createCollection``), or None."""
    create = job.request.get("createCollection", False)
    if create is False or create is None:
        return None
    return create if isinstance(create, str) else f"batch-{job.id}"


def tile_outputs(job: JobRecord, request: BatchProcessRequest, tile_name: str) -> dict[str, str]:
    """Output id -> where the tile's COG is (raster output; {} for Zarr)."""
    if request.output.type != "raster":
        return {}
    template = job.source["template"]
    return {
        output_id: output_url(template, job.id, tile_name, output_id)
        for output_id in request.processRequest.outputs
    }


class ProcessKind:
    """Batch processing: one tile per unit."""

    name = "process"
    total_key = "tileCount"

    def analyse(self, job: JobRecord, context: DriverContext, parallelism: int) -> Analysis:
        """Tiles, scenes per tile, estimates; the tiles staged in the job folder."""
        request = BatchProcessRequest.model_validate(job.request)
        return analyse_job(
            request,
            job.id,
            job.root,
            job.source["template"],
            Storage.for_url(job.root, context.config.storage_options),
            context.catalog,
            context.settings,
            parallelism,
        )

    def tasks(
        self, job: JobRecord, context: DriverContext
    ) -> tuple[Callable[[Any], dict[str, Any]], Callable[[UnitRecord], TileTask]]:
        """``run_tile`` and each tile's task (the Zarr group created first)."""
        request = BatchProcessRequest.model_validate(job.request)
        plan = check_request(request, context.settings)
        storage = Storage.for_url(job.root, context.config.storage_options)
        staged = load_tiles(storage, job.root)
        tiles = [tile_from_json(entry) for entry in staged["tiles"]]
        dates = staged.get("stackDates")
        options = context.config.storage_options
        layout = None
        zarr = job.source.get("zarr")
        if request.output.type == "zarr":
            from app.batch.processing.zarr_store import create_zarr, zarr_layout

            layout = zarr_layout(tiles, plan.recipe.outputs, dates)
            create_zarr(zarr, options, layout)  # idempotent: a resumed job finds it there
        data = request.processRequest.input.data[0]
        cloud = data.dataFilter.maxCloudCoverage

        def task(unit: UnitRecord) -> TileTask:
            tile = tiles[unit.unit]
            return TileTask(
                job_id=job.id,
                unit=unit.unit,
                generation=unit.generation,
                root=job.root,
                tile=tile,
                recipe=plan.recipe,
                settings=context.settings,
                open_catalog=context.open_catalog,
                collection=plan.collection,
                time_range=plan.time_range,
                max_cloud_coverage=cloud if cloud < 100 else None,
                stack_dates=tuple(dates) if dates is not None else None,
                output_type=request.output.type,
                outputs=tile_outputs(job, request, tile.name),
                cog_parameters=request.output.cogParameters,
                skip_existing=request.output.skipExisting,
                zarr_url=zarr,
                zarr_layout=layout,
                storage_options=options,
            )

        return run_tile, task

    def finish(self, job: JobRecord, context: DriverContext) -> None:
        """Write the STAC collection of the tiles (raster output); register it if asked."""
        request = BatchProcessRequest.model_validate(job.request)
        if request.output.type != "raster":
            return
        from app.batch.processing.results import TileRecord, write_collection

        storage = Storage.for_url(job.root, context.config.storage_options)
        staged = load_tiles(storage, job.root)
        plan = check_request(request, context.settings)
        markers = _markers(storage, job.root)
        records = []
        for unit in context.store.units(job.id):
            if unit.state != "done" or unit.failures and unit.failures.get("failed"):
                continue
            tile = tile_from_json(staged["tiles"][unit.unit])
            marker = markers.get(unit.unit, {})
            records.append(
                TileRecord(
                    tile=tile,
                    outputs=tile_outputs(job, request, tile.name),
                    status="done",
                    start_datetime=marker.get("start"),
                    end_datetime=marker.get("end"),
                )
            )
        name = collection_id(job) or f"batch-{job.id}"
        title = request.description or f"Batch processing job {job.id}"
        href = write_collection(
            storage, job.root, name, title, plan.recipe.outputs, records, plan.time_range
        )
        if collection_id(job) is not None:
            from app.catalog.layered import register_collection

            register_collection(context.store.engine, name, href)

    def progress_view(self, progress: Progress, total: int) -> dict[str, Any]:
        """``tiles``: total, done, failed."""
        return {"tiles": {"total": total, "done": progress.done, "failed": progress.failed}}

    def results_view(self, job: JobRecord) -> dict[str, Any] | None:
        """The job folder, the STAC collection (raster) or the Zarr group."""
        if job.state not in (JobState.DONE, JobState.PARTIAL):
            return None
        zarr = job.source.get("zarr")
        if job.request.get("output", {}).get("type") == "zarr":
            return {"folder": job.root, "zarr": zarr}
        return {
            "folder": job.root,
            "collection": join(job.root, "collection.json"),
            "collectionId": collection_id(job),
        }

    def details_view(self, store: JobStore, job: JobRecord) -> dict[str, Any]:
        """Failed tiles (number, name, error) and tiles whose task kept failing."""
        failures = store.failures(job.id)
        failed = [
            {"id": entry["id"], "name": entry.get("identifier"), "error": entry.get("error")}
            for entry in failures["failed"]
        ]
        return {"failedTiles": failed, "failedUnits": failures["units"]}


def _markers(storage: Storage, root: str) -> dict[int, dict[str, Any]]:
    import json

    files = JobFiles(root)
    found = {}
    for name in storage.names(files.units):
        if name.endswith(".json") and name[:-5].isdigit():
            found[int(name[:-5])] = json.loads(storage.read(join(files.units, name)))
    return found
