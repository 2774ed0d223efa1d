"""Independent reads of the demo catalog that the tiler tests compare the service with.

Plain rasterio and numpy on the demo's files and item JSON, never the service's code.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio


def items(demo_dir: Path) -> list[dict]:
    """The demo's item JSON documents, sorted by file name."""
    return [json.loads(p.read_text()) for p in sorted((demo_dir / "items").glob("*.json"))]


def href(demo_dir: Path, item: dict, asset: str) -> Path:
    """The local file of an item's asset."""
    return (demo_dir / "items" / item["assets"][asset]["href"]).resolve()


def scale_offset(item: dict, asset: str) -> tuple[float, float]:
    """Earth-Search's rule, written independently of app.sentinel2: the DN of an item with
    ``earthsearch:boa_offset_applied`` no longer carry +1000, whatever raster:bands says."""
    band = item["assets"][asset]["raster:bands"][0]
    applied = item["properties"]["earthsearch:boa_offset_applied"]
    return band["scale"], 0.0 if applied else band["offset"]


def swath_edge_item(demo_dir: Path) -> dict:
    """The demo scene cut by the swath edge: red DN 0 (nodata) beside valid pixels."""
    for item in items(demo_dir):
        with rasterio.open(href(demo_dir, item, "red")) as src:
            if (src.read(1) == 0).any():
                return item
    raise AssertionError("the demo has no scene with a nodata edge")


def valid(mask: np.ndarray) -> np.ndarray:
    """The valid pixels of a titiler ``.npy`` / ``.tif`` mask band (its last band).

    titiler scales the 0/255 mask to the data's dtype: the dtype's maximum where valid,
    its minimum where masked (0 for uint16, -3.4e38 for float32).
    """
    limits = np.finfo(mask.dtype) if mask.dtype.kind == "f" else np.iinfo(mask.dtype)
    assert np.isin(mask, [limits.min, limits.max]).all()
    return mask == limits.max
