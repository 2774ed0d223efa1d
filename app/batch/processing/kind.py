"""The ``process`` job kind: one unit per tile, COGs or Zarr, a STAC collection at the end.

See ``app.batch.kinds`` for what a kind supplies. A processing job's record keeps its
path template and Zarr group in ``source`` (``{"kind": "process", "template", "zarr"}``);
its tiles are staged by the analysis (``_batch/tiles.json``), unit ``n`` being tile ``n``.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from app.batch.analysis import Analysis
from app.batch.processing.analysis import analyse_job, check_request, load_tiles, tile_from_json
from app.batch.processing.models import BatchProcessRequest, TilingGridInput
from app.batch.processing.paths import output_url, template_prefix
from app.batch.processing.spec import GridTile
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

    def files(self, job: JobRecord) -> JobFiles:
        """Bookkeeping inside the job folder, ``<root>/_batch`` (removed with the job)."""
        return JobFiles(job.root)

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
            job.source.get("features"),
        )

    def tasks(
        self, job: JobRecord, context: DriverContext
    ) -> tuple[Callable[[Any], dict[str, Any]], Callable[[UnitRecord], TileTask]]:
        """``run_tile`` and each tile's task (the Zarr group created first)."""
        request = BatchProcessRequest.model_validate(job.request)
        storage = Storage.for_url(job.root, context.config.storage_options)
        staged = load_tiles(storage, job.root)
        tiles = [tile_from_json(entry) for entry in staged["tiles"]]
        plan = check_request(request, context.settings, tiles=_own(request, tiles))
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
                output_folder=template_prefix(job.source["template"]),
            )

        return run_tile, task

    def finish(self, job: JobRecord, context: DriverContext) -> None:
        """Sweep stale temporaries, write the STAC collection; register it if asked.

        Raster output: one Item per finished tile. Zarr output: one collection-level asset,
        the group (``createCollection`` is refused for Zarr at creation: the tiler reads
        COGs).
        """
        from app.batch.processing.results import (
            TileRecord,
            write_collection,
            write_zarr_collection,
        )

        request = BatchProcessRequest.model_validate(job.request)
        storage = Storage.for_url(job.root, context.config.storage_options)
        staged = load_tiles(storage, job.root)
        tiles = [tile_from_json(entry) for entry in staged["tiles"]]
        plan = check_request(request, context.settings, tiles=_own(request, tiles))
        # Every tile is recorded and this driver holds the lease: no writer is left, so a
        # temporary here is one a killed COG write (or consolidation) left behind.
        removed = storage.remove_temporaries(_folders(job, request, tiles))
        if removed:
            logger.info("batch job %s: removed %d stale temporaries", job.id, len(removed))
        name = collection_id(job) or f"batch-{job.id}"
        title = request.description or f"Batch processing job {job.id}"
        done = [
            tiles[unit.unit]
            for unit in context.store.units(job.id)
            if unit.state == "done" and not (unit.failures and unit.failures.get("failed"))
        ]
        if request.output.type == "zarr":
            from app.batch.processing.zarr_store import zarr_layout

            dates = staged.get("stackDates")
            layout = zarr_layout(tiles, plan.recipe.outputs, dates)
            write_zarr_collection(
                storage, job.root, name, title, layout, job.source["zarr"], done, plan.time_range
            )
            return
        dates = staged.get("stackDates") or []
        bands = {
            spec.id: list(dates)
            for spec in plan.recipe.outputs
            if spec.composite == "stack" and dates
        }
        # The Items' time range is the data's (the job's timeRange), not when the tile ran.
        records = [
            TileRecord(
                tile=tile, outputs=tile_outputs(job, request, tile.name), status="done", bands=bands
            )
            for tile in done
        ]
        href = write_collection(
            storage, job.root, name, title, plan.recipe.outputs, records, plan.time_range
        )
        if collection_id(job) is not None:
            from app.catalog.layered import register_collection

            register_collection(context.store.engine, name, href)
            # This replica serves the results at once; others re-read the registry within
            # result_collections_refresh_seconds.
            refresh = getattr(context.catalog, "refresh", None)
            if refresh is not None:
                refresh()

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


def _own(request: BatchProcessRequest, tiles: list[GridTile]) -> list[GridTile] | None:
    """The staged tiles when they are the user's own (their area when no bounds are given)."""
    return None if isinstance(request.input, TilingGridInput) else tiles


def _folders(job: JobRecord, request: BatchProcessRequest, tiles: list[GridTile]) -> list[str]:
    """Every folder the job writes files in (its bookkeeping, the items, the tiles')."""
    folders = [*JobFiles(job.root).folders, join(job.root, "items")]
    for tile in tiles:
        folders.extend(
            posixpath.dirname(url) for url in tile_outputs(job, request, tile.name).values()
        )
    return list(dict.fromkeys(folders))
