"""The stackstac peer of bench/process.py: pystac-client -> stackstac -> dask median -> to_raster.

Run by ``.venv-stackstac/bin/python`` (stackstac, rioxarray, pystac-client, dask and
distributed only; nothing of terratiler is importable there), started by bench/process.py::

    .venv-stackstac/bin/python bench/process_stackstac.py JOB.json

``JOB.json``: ``{"stac": STAC API root, "collection", "datetime", "workers", "out",
"tiles": [{"name", "epsg", "bounds": [minx, miny, maxx, maxy], "bbox4326", "resolution"}]}``.

The recipe Element 84 describes for seasonal composites, on a LocalCluster of ``workers``
processes (1 thread each): for each tile, search the STAC API for the scenes over it, stack
red, nir and SCL on the tile's grid (its CRS, bounds and resolution; ``xy_coords="center"``
so rioxarray writes the right transform), harmonize reflectance as Earth-Search asks
(``raster:bands`` scale, and the -0.1 offset only where ``earthsearch:boa_offset_applied``
is false), NDVI, SCL-clear mask, median over time; the tiles' medians are computed
together (``dask.compute``) and each is written with ``rio.to_raster`` as a COG
(float32, NaN nodata, DEFLATE). ``"malloc_trim_threshold"``: the workers' glibc
``MALLOC_TRIM_THRESHOLD_``, ``"dask"`` (Dask's 65536, the default) or null (unset, as
terratiler's workers). Prints one JSON line: CPU seconds of this process and its
cluster (user+sys, psutil over the process tree) during the work, and wall seconds.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import dask
import numpy as np
import psutil
import pystac_client
import rioxarray  # noqa: F401 (registers the .rio accessor)
import stackstac
from distributed import Client, LocalCluster

# SCL classes masked by "scl-clear": nodata, saturated, cloud shadow, clouds, cirrus, snow.
SCL_MASKED = [0, 1, 3, 8, 9, 10, 11]


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


def median_ndvi(catalog: pystac_client.Client, job: dict, tile: dict):
    """The lazy median NDVI of one tile (an xarray DataArray on the tile's grid)."""
    items = catalog.search(
        collections=[job["collection"]],
        bbox=tile["bbox4326"],
        datetime=job["datetime"],
    ).item_collection()
    stack = stackstac.stack(
        items,
        assets=["red", "nir", "scl"],
        epsg=tile["epsg"],
        resolution=tile["resolution"],
        bounds=tuple(tile["bounds"]),
        dtype="float32",
        fill_value=np.float32(np.nan),
        rescale=False,
        xy_coords="center",
    )
    # Earth-Search harmonization: DN * scale + offset, the offset being -0.1 only for the
    # scenes whose COGs still carry ESA's +1000 (boa_offset_applied false).
    applied = stack["earthsearch:boa_offset_applied"].astype(bool)
    offset = xr_where(applied, 0.0, -0.1)
    red = stack.sel(band="red")
    nir = stack.sel(band="nir")
    scl = stack.sel(band="scl")
    red_r = red * np.float32(1e-4) + offset
    nir_r = nir * np.float32(1e-4) + offset
    ndvi = (nir_r - red_r) / (nir_r + red_r)
    valid = (red > 0) & (nir > 0) & scl.notnull() & ~scl.isin(SCL_MASKED)
    ndvi = ndvi.where(valid)
    return ndvi.chunk({"time": -1}).median("time", skipna=True).astype("float32")


def xr_where(cond, yes: float, no: float):
    """``yes`` where ``cond`` else ``no``, as float32 (per time step)."""
    import xarray as xr

    return xr.where(cond, np.float32(yes), np.float32(no)).astype("float32")


def main() -> int:
    job = json.loads(Path(sys.argv[1]).read_text())
    out = Path(job["out"])
    out.mkdir(parents=True, exist_ok=True)
    # The cluster's workers: Dask's MALLOC_TRIM_THRESHOLD_=65536 ("dask"), or unset (None),
    # like terratiler's LocalCluster (batch_malloc_trim_threshold) for a like-for-like run.
    trim = job.get("malloc_trim_threshold", "dask")
    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ"))
    if trim != "dask":
        environ["MALLOC_TRIM_THRESHOLD_"] = trim
    with (
        dask.config.set({"distributed.nanny.pre-spawn-environ": environ}),
        LocalCluster(
            n_workers=job["workers"],
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            memory_limit=0,
        ) as cluster,
        Client(cluster) as client,
    ):
        # Imports on the workers before the clock starts (ours get the same).
        client.run(lambda: __import__("stackstac") and __import__("rasterio") and None)
        cpu0, wall0 = tree_cpu(), time.perf_counter()
        catalog = pystac_client.Client.open(job["stac"])
        medians = [median_ndvi(catalog, job, tile) for tile in job["tiles"]]
        computed = dask.compute(*medians)
        for tile, median in zip(job["tiles"], computed, strict=True):
            median = median.rio.write_crs(f"EPSG:{tile['epsg']}")
            median = median.rio.write_nodata(np.float32(np.nan), encoded=False)
            median.rio.to_raster(out / f"{tile['name']}.tif", driver="COG", compress="DEFLATE")
        cpu, wall = tree_cpu() - cpu0, time.perf_counter() - wall0
    print(json.dumps({"cpu": cpu, "wall": wall, "tiles": len(job["tiles"])}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
