"""One tile of a processing job, as a Dask worker runs it: find scenes, compute, write.

``run_tile`` is idempotent: it (re)writes the same files for the same tile, each written
atomically (a temporary, then a move; one PUT on ``s3://``), and writes the tile's marker
last, so a tile interrupted anywhere (worker killed, service restarted, job stopped) is
simply run again, and a tile whose marker exists is finished (the driver records it from
the marker: ``app.batch.runner``). A tile whose reads fail (``engine.TileReadError``) is
finished too, as failed with its error: the job ends PARTIAL and ``retry-failed`` runs
exactly those tiles again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from app.batch.processing.analysis import find_items
from app.batch.processing.spec import GridTile, TileRecipe
from app.batch.storage import JobFiles, Storage
from app.batch.worker import configure_worker, worker_catalog
from app.catalog import Catalog
from app.errors import BadRequestError
from app.settings import Settings

__all__ = ["TileTask", "run_tile"]


@dataclass(frozen=True)
class TileTask:
    """What a worker needs to compute one tile (plain data: it crosses to Dask).

    Attributes:
        job_id: The job.
        unit: The tile's unit number (its position in the staged tiles).
        generation: 0 for the first run, +1 per retry-failed; written into the marker.
        root: The job's folder (its marker goes to ``<root>/_batch/units/<unit>.json``).
        tile: The tile.
        recipe: What the tile computes.
        settings: The service settings (catalog, allow-list, GDAL options).
        open_catalog: Builds the catalog (picklable: ``app.services.catalog_factory``).
        collection: The collection searched.
        time_range: [from, to).
        max_cloud_coverage: Largest ``eo:cloud_cover`` (None: no filter).
        stack_dates: The job's dates for ``stack`` outputs (None: no stack output).
        output_type: ``raster`` or ``zarr``.
        outputs: Output id -> the COG's URL (raster output).
        cog_parameters: Sentinel Hub's ``cogParameters`` (raster output).
        skip_existing: Skip the tile when all its COGs exist already.
        zarr_url: The job's Zarr group (zarr output).
        zarr_layout: Its layout (``zarr_store.zarr_layout``).
        storage_options: fsspec options of ``s3://`` URLs.

    """

    job_id: str
    unit: int
    generation: int
    root: str
    tile: GridTile
    recipe: TileRecipe
    settings: Settings
    open_catalog: Callable[[], Catalog]
    collection: str
    time_range: tuple[datetime, datetime]
    max_cloud_coverage: float | None = None
    stack_dates: tuple[str, ...] | None = None
    output_type: str = "raster"
    outputs: dict[str, str] = field(default_factory=dict)
    cog_parameters: dict[str, Any] | None = None
    skip_existing: bool = False
    zarr_url: str | None = None
    zarr_layout: Any = None
    storage_options: dict[str, Any] = field(default_factory=dict)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _write(task: TileTask, rasters: dict[str, Any]) -> None:
    if task.output_type == "zarr":
        from app.batch.processing.zarr_store import write_zarr_tile

        write_zarr_tile(task.zarr_url, task.storage_options, task.zarr_layout, task.tile, rasters)
        return
    from app.batch.processing.cog import write_cog

    for spec in task.recipe.outputs:
        url = task.outputs[spec.id]
        storage = Storage.for_url(url, task.storage_options)
        write_cog(storage, url, rasters[spec.id], task.tile, spec.data_type, task.cog_parameters)


def _all_exist(task: TileTask) -> bool:
    if task.output_type != "raster" or not task.outputs:
        return False
    return all(
        Storage.for_url(url, task.storage_options).exists(url) for url in task.outputs.values()
    )


def run_tile(task: TileTask) -> dict[str, Any]:
    """Compute one tile and write its outputs; return its marker.

    Returns:
        The marker: ``{"unit", "generation", "features": 1, "done": 1 | 0, "failed":
        [{"id", "identifier", "error"}] (the tile number and name), "invalid": [],
        "tile", "scenes", "skipped", "start", "end", "seconds"}``.

    """
    from app.batch.processing.engine import TileReadError, process_tile

    started = time.perf_counter()
    start = datetime.now(UTC)
    configure_worker(task.settings)
    marker: dict[str, Any] = {"failed": [], "invalid": [], "skipped": False, "scenes": None}
    if task.skip_existing and _all_exist(task):
        marker["skipped"] = True
    else:
        from app.batch.processing.grids import tile_footprint

        try:
            catalog = worker_catalog(task.settings, task.open_catalog)
            items = find_items(
                catalog,
                task.collection,
                task.time_range,
                task.max_cloud_coverage,
                tile_footprint(task.tile),
            )
            marker["scenes"] = len(items)
            rasters = process_tile(
                task.tile, items, task.recipe, task.settings, stack_dates=task.stack_dates
            )
        except (TileReadError, BadRequestError) as error:
            message = getattr(error, "message", None) or str(error)
            marker["failed"].append(
                {"id": task.unit, "identifier": task.tile.name, "error": message}
            )
        else:
            _write(task, rasters)
    marker.update(
        unit=task.unit,
        generation=task.generation,
        features=1,
        done=0 if marker["failed"] else 1,
        tile=task.tile.name,
        start=_iso(start),
        end=_iso(datetime.now(UTC)),
        seconds=round(time.perf_counter() - started, 4),
    )
    files = JobFiles(task.root)
    Storage.for_url(task.root, task.storage_options).write(
        files.marker(task.unit), json.dumps(marker).encode()
    )
    return marker
