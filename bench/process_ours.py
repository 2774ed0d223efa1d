"""terratiler's side of bench/process.py: the median composite of every tile on Dask.

Started by bench/process.py with the project's interpreter::

    python bench/process_ours.py JOB.json

``JOB.json`` as for bench/process_stackstac.py, plus ``"catalog"`` (the demo folder),
``"mode"`` and, for ``mode == "job"``, ``"aoi"`` (the area, a GeoJSON geometry in
EPSG:4326), ``"grid"``, ``"time_range"`` and ``"data_dir"``.

- ``mode == "engine"``: a LocalCluster of ``workers`` processes (1 thread each), one task
  per tile: the tile's scenes from the catalog, ``engine.process_tile`` (median, NDVI,
  ``scl-clear``) and ``cog.write_cog``;
- ``mode == "job"``: a batch process job through ``BatchService`` (``create_process``,
  ``analyse``, ``start``, ``wait``) with ``batch_workers = workers``: the whole job kind
  (analysis, job store, leases, markers, the STAC collection of the results).

Prints one JSON line: the CPU seconds (user+sys, psutil over this process and all its
descendants: the cluster) and wall seconds of the work (the cluster started and its
workers' imports done before the clock starts), and where each tile's COG is.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

OUTPUT_ID = "ndvi"
EXPRESSION = "(nir-red)/(nir+red)"


def tree_cpu() -> float:
    """user+sys CPU seconds of this process and all its descendants (the cluster)."""
    total = 0.0
    me = psutil.Process()
    for proc in [me, *me.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def _warm() -> None:
    """Imports on a worker before the clock starts (the peers' workers get the same)."""
    import rasterio  # noqa: F401

    import app.batch.processing.engine  # noqa: F401


def _grid_tile(tile: dict) -> Any:
    from affine import Affine

    from app.batch.processing.spec import GridTile

    res = tile["resolution"]
    minx, _, _, maxy = tile["bounds"]
    return GridTile(
        grid=tile.get("grid", "1"),
        name=tile["name"],
        crs=f"EPSG:{tile['epsg']}",
        transform=Affine(res, 0.0, minx, 0.0, -res, maxy),
        width=tile["width"],
        height=tile["height"],
        resolution=res,
    )


def recipe() -> Any:
    """The job's recipe: NDVI, float32, NaN nodata, median of the SCL-clear pixels."""
    from app.batch.processing.spec import OutputSpec, TileRecipe

    return TileRecipe(
        outputs=(
            OutputSpec(
                id=OUTPUT_ID,
                expression=EXPRESSION,
                data_type="float32",
                nodata=float("nan"),
                composite="median",
                mask="scl-clear",
            ),
        ),
    )


def run_tile(job: dict, tile: dict) -> tuple[str, float]:
    """One tile on a worker: its scenes, ``process_tile``, ``write_cog``.

    Returns:
        The COG's path and the CPU seconds the task took on its worker.

    """
    started = time.process_time()
    from app.batch.processing.cog import write_cog
    from app.batch.processing.engine import process_tile
    from app.batch.storage import Storage
    from app.catalog.base import SearchQuery
    from app.services import catalog_factory
    from app.settings import Settings

    settings = Settings(catalog=job["catalog"])
    catalog = _catalogs.get(job["catalog"])
    if catalog is None:
        catalog = _catalogs[job["catalog"]] = catalog_factory(settings)()
    start, end = job["datetime"].split("/")
    items = list(
        catalog.search(
            SearchQuery(
                collections=[job["collection"]],
                bbox=tuple(tile["bbox4326"]),
                datetime=(_parse(start), _parse(end)),
            )
        )
    )
    grid_tile = _grid_tile(tile)
    rasters = process_tile(grid_tile, items, recipe(), settings)
    url = str(Path(job["out"]) / f"{tile['name']}.tif")
    write_cog(Storage.for_url(url), url, rasters[OUTPUT_ID], grid_tile, "float32")
    return url, time.process_time() - started


_catalogs: dict[str, Any] = {}


def _parse(text: str) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def engine_mode(job: dict) -> dict:
    """One Dask task per tile on a LocalCluster: ``process_tile`` + ``write_cog``."""
    from distributed import Client, LocalCluster

    Path(job["out"]).mkdir(parents=True, exist_ok=True)
    with (
        LocalCluster(
            n_workers=job["workers"],
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            memory_limit=0,
        ) as cluster,
        Client(cluster) as client,
    ):
        client.run(_warm)
        cpu0, wall0 = tree_cpu(), time.perf_counter()
        futures = client.map(run_tile, [job] * len(job["tiles"]), job["tiles"], pure=False)
        done = client.gather(futures)
        cpu, wall = tree_cpu() - cpu0, time.perf_counter() - wall0
    names = [tile["name"] for tile in job["tiles"]]
    return {
        "cpu": cpu,
        "wall": wall,
        "tiles": len(names),
        "paths": {name: path for name, (path, _) in zip(names, done, strict=True)},
        "task_cpu": sum(task for _, task in done),
    }


def main() -> int:
    job = json.loads(Path(sys.argv[1]).read_text())
    if job.get("mode", "engine") == "engine":
        result = engine_mode(job)
    else:
        from bench.process_job import job_mode

        result = job_mode(job)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    # Through the module, so Dask pickles ``run_tile`` by reference (workers import it and
    # keep their catalog between tiles) rather than by value from ``__main__``.
    from bench import process_ours

    sys.exit(process_ours.main())
