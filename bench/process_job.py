"""terratiler's side of bench/process.py as a batch process job (``BatchService``).

``job_mode(job)`` is called by bench/process_ours.py (``"mode": "job"``): the request a user
sends to ``POST /batch/process`` (the demo area, grid 1 at 10 m, median NDVI of the
SCL-clear pixels, float32), through ``BatchService.create_process``, ``analyse`` and
``start``, on the service's own LocalCluster (``batch_workers`` worker processes, 1 thread
each), until DONE. Everything the job does is measured: creation, analysis (tiles and
scenes per tile), one Dask task per tile (``engine.process_tile``, ``cog.write_cog``,
markers), the STAC collection of the results.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.process_ours import EXPRESSION, OUTPUT_ID, _warm, tree_cpu


def request_body(job: dict) -> dict[str, Any]:
    """The batch process request of the benchmark."""
    start, end = job["datetime"].split("/")
    return {
        "processRequest": {
            "input": {
                "bounds": {"geometry": job["aoi"]},
                "data": [
                    {
                        "type": job["collection"],
                        "dataFilter": {"timeRange": {"from": start, "to": end}},
                    }
                ],
            },
            "outputs": {
                OUTPUT_ID: {
                    "expression": EXPRESSION,
                    "dataType": "float32",
                    "composite": "median",
                    "mask": "scl-clear",
                }
            },
        },
        "input": {"type": "tiling-grid", "id": job["tiles"][0]["grid"], "resolution": 10},
        "output": {"type": "raster", "path": job["out"]},
    }


def job_mode(job: dict) -> dict:
    """Create, analyse and start the job; CPU and wall from creation to DONE."""
    from app.batch import BatchService
    from app.batch.processing.models import BatchProcessRequest
    from app.services import catalog_factory
    from app.settings import Settings

    Path(job["out"]).mkdir(parents=True, exist_ok=True)
    settings = Settings(
        catalog=job["catalog"],
        data_dir=Path(job["data_dir"]),
        batch_workers=job["workers"],
        batch_threads_per_worker=1,
        batch_outputs=[job["out"]],
    )
    service = BatchService(settings, catalog_factory(settings), check_sources=False, takeover=False)
    try:
        # The cluster up and the workers' imports done before the clock starts (the peers
        # get the same); the service's catalog opened (a long-lived service has it).
        service.executor.client.run(_warm)
        service.catalog  # noqa: B018
        cpu0, wall0 = tree_cpu(), time.perf_counter()
        created = service.create_process(BatchProcessRequest.model_validate(request_body(job)))
        job_id = created["id"]
        service.analyse(job_id)
        analysed = service.wait(job_id, timeout=1800)
        if analysed["status"] != "ANALYSIS_DONE":
            raise RuntimeError(f"analysis ended {analysed['status']}: {analysed}")
        service.start(job_id)
        # Poll the state alone: a full view per poll would take CPU from the workers.
        while service.store.get(job_id).state in ("PROCESSING", "ANALYSIS_DONE"):
            time.sleep(0.05)
        cpu, wall = tree_cpu() - cpu0, time.perf_counter() - wall0
        done = service.get(job_id)
        if done["status"] != "DONE":
            raise RuntimeError(f"job ended {done['status']}: {done}")
        tiles = service.tiles(job_id, limit=10_000, offset=0)
    finally:
        service.close()
    paths = {}
    for feature in tiles["features"]:
        href = feature["properties"]["outputs"][OUTPUT_ID]
        paths[feature["properties"]["name"]] = href.removeprefix("file://")
    return {"cpu": cpu, "wall": wall, "tiles": len(paths), "paths": paths, "job": job_id}
