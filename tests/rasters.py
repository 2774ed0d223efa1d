"""Small GeoTIFF and VRT files for tests of sources, security checks and the dataset pool."""

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine


def write_tif(path: Path, size: int = 64, value: int | None = None) -> Path:
    """A tiled one-band uint16 GeoTIFF: values 1..5000 in a ramp, or all ``value``."""
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 1,
        "dtype": "uint16",
        "crs": "EPSG:32613",
        "transform": Affine(10, 0, 400000, 0, -10, 4900000),
        "nodata": 0,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as dst:
        if value is None:
            data = (np.arange(size * size, dtype=np.uint16).reshape(1, size, size) % 5000) + 1
        else:
            data = np.full((1, size, size), value, dtype=np.uint16)
        dst.write(data)
    return path


def write_vrt(path: Path, target: Path) -> Path:
    """A VRT document (under any name) that reads `target`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        '<VRTDataset rasterXSize="64" rasterYSize="64"><VRTRasterBand dataType="UInt16" band="1">'
        f'<SimpleSource><SourceFilename relativeToVRT="0">{target}</SourceFilename>'
        "<SourceBand>1</SourceBand></SimpleSource></VRTRasterBand></VRTDataset>\n"
    )
    return path
