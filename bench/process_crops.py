"""The crop-loop peer of bench/process.py: the service's own endpoints, a median per tile.

What a user of the service does without batch processing, started by bench/process.py::

    python bench/process_crops.py JOB.json

``JOB.json`` as for bench/process_stackstac.py, plus ``"service"`` (the service's base URL)
and ``"item_prefix"`` (``/collections/{collection}/items``). For each tile (``workers``
tiles at a time, one thread each): search the service's STAC API for the scenes over the
tile, fetch each scene's NDVI crop of the tile as GeoTIFF
(``/collections/{c}/items/{id}/bbox/{tile bounds}/{w}x{h}.tif?coord_crs&dst_crs&
expression=(nir-red)/(nir+red)&mask=scl-clear``: harmonized, SCL-masked, on the tile's
grid; its second band is the validity mask), ``numpy.nanmedian`` over the scenes, and
write the tile as a COG (float32, NaN nodata, DEFLATE). Prints one JSON line with the
client's CPU seconds (user+sys of this process) and wall seconds.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import rasterio
from rasterio.io import MemoryFile

EXPRESSION = "(nir-red)/(nir+red)"


def crop(http: httpx.Client, job: dict, item_id: str, tile: dict) -> np.ndarray:
    """One scene's NDVI over the tile, NaN where masked."""
    minx, miny, maxx, maxy = tile["bounds"]
    crs = f"epsg:{tile['epsg']}"
    url = (
        f"{job['item_prefix']}/{item_id}/bbox/{minx:g},{miny:g},{maxx:g},{maxy:g}/"
        f"{tile['width']}x{tile['height']}.tif"
    )
    params = {"coord_crs": crs, "dst_crs": crs, "expression": EXPRESSION, "mask": "scl-clear"}
    response = http.get(url, params=params)
    response.raise_for_status()
    with MemoryFile(response.content) as memory, memory.open() as src:
        data = src.read()
    ndvi = data[0]
    ndvi[data[1] <= 0] = np.nan  # the second band: the validity mask (0 where masked)
    return ndvi


def process(http: httpx.Client, job: dict, tile: dict, out: Path) -> None:
    """Search, crop every scene, median, write: one tile."""
    search = http.get(
        "/catalog/search",
        params={
            "collections": job["collection"],
            "bbox": ",".join(f"{v:.9f}" for v in tile["bbox4326"]),
            "datetime": job["datetime"],
            "limit": 100,
        },
    )
    search.raise_for_status()
    ids = [feature["id"] for feature in search.json()["features"]]
    stack = np.stack([crop(http, job, item_id, tile) for item_id in ids])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels: NaN, as meant
        median = np.nanmedian(stack, axis=0).astype(np.float32)
    minx, _, _, maxy = tile["bounds"]
    res = tile["resolution"]
    profile = {
        "driver": "COG",
        "width": tile["width"],
        "height": tile["height"],
        "count": 1,
        "dtype": "float32",
        "crs": f"EPSG:{tile['epsg']}",
        "transform": rasterio.transform.from_origin(minx, maxy, res, res),
        "nodata": float("nan"),
        "compress": "DEFLATE",
    }
    with rasterio.open(out / f"{tile['name']}.tif", "w", **profile) as dst:
        dst.write(median, 1)


def main() -> int:
    job = json.loads(Path(sys.argv[1]).read_text())
    out = Path(job["out"])
    out.mkdir(parents=True, exist_ok=True)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    limits = httpx.Limits(max_connections=job["workers"])
    with (
        httpx.Client(base_url=job["service"], timeout=300, trust_env=False, limits=limits) as http,
        ThreadPoolExecutor(job["workers"]) as pool,
    ):
        list(pool.map(lambda tile: process(http, job, tile, out), job["tiles"]))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    print(json.dumps({"cpu": cpu, "wall": wall, "tiles": len(job["tiles"])}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
