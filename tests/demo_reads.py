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


def items_by_id(demo_dir: Path) -> dict[str, dict]:
    """The demo's item JSON documents by id, in file-name order."""
    return {item["id"]: item for item in items(demo_dir)}


def href(demo_dir: Path, item: dict, asset: str) -> Path:
    """The local file of an item's asset."""
    return (demo_dir / "items" / item["assets"][asset]["href"]).resolve()


def read(demo_dir: Path, item: dict, asset: str) -> np.ndarray:
    """Band 1 of an item's asset as stored (DN, 0 is nodata)."""
    with rasterio.open(href(demo_dir, item, asset)) as src:
        return src.read(1)


def scale_offset(item: dict, asset: str) -> tuple[float, float]:
    """Earth-Search's rule, written independently of app.sentinel2: the DN of an item with
    ``earthsearch:boa_offset_applied`` no longer carry +1000, whatever raster:bands says."""
    band = item["assets"][asset]["raster:bands"][0]
    applied = item["properties"]["earthsearch:boa_offset_applied"]
    return band["scale"], 0.0 if applied else band["offset"]


def reflectance(demo_dir: Path, item: dict, asset: str) -> np.ma.MaskedArray:
    """Harmonized reflectance of a whole band, float64: DN * scale + offset, DN 0 masked."""
    scale, offset = scale_offset(item, asset)
    dn = read(demo_dir, item, asset)
    return np.ma.MaskedArray(dn.astype("float64") * scale + offset, mask=dn == 0)


def scl_on_10m(demo_dir: Path, item: dict, shape: tuple[int, int]) -> np.ndarray:
    """The item's 20 m SCL band, nearest-neighbour onto the 10 m grid of ``shape``."""
    scl = read(demo_dir, item, "scl")
    return np.repeat(np.repeat(scl, 2, axis=0), 2, axis=1)[: shape[0], : shape[1]]


def scl_invalid(
    demo_dir: Path, item: dict, classes: list[int], shape: tuple[int, int]
) -> np.ndarray:
    """Where the SCL, on the 10 m grid of ``shape``, holds one of ``classes`` (to mask)."""
    return np.isin(scl_on_10m(demo_dir, item, shape), classes)


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
