"""What a read gives back, as the readers reshape it: bands by name, new bands, masks."""

from collections.abc import Sequence

import numpy as np
from rio_tiler.models import ImageData, PointData

Layer = ImageData | PointData

#: The name of a band that is an image's alpha (an evalscript's 4th output band): its
#: zeros are the image's mask already, and an image format takes it as transparency.
ALPHA_BAND = "alpha"


def bands_by_name(layer: Layer, names: Sequence[str]) -> dict[str, np.ma.MaskedArray]:
    """The layer's bands by name; a point's values as 1-element arrays, like pixels."""
    if isinstance(layer, PointData):
        return {name: layer.array[i : i + 1] for i, name in enumerate(names)}
    return {name: layer.array[i] for i, name in enumerate(names)}


def replace_bands(layer: Layer, data: np.ma.MaskedArray, names: list[str]) -> Layer:
    """The same layer (grid, CRS, metadata) with new bands, named ``names``."""
    count = data.shape[0]
    if isinstance(layer, PointData):
        return PointData(
            data.reshape(count),
            band_names=names,
            band_descriptions=names,
            coordinates=layer.coordinates,
            crs=layer.crs,
            assets=layer.assets,
            metadata=layer.metadata,
            pixel_location=layer.pixel_location,
            scales=[1.0] * count,
            offsets=[0.0] * count,
        )
    return ImageData(
        data,
        assets=layer.assets,
        bounds=layer.bounds,
        crs=layer.crs,
        metadata=layer.metadata,
        band_names=names,
        band_descriptions=names,
        scales=[1.0] * count,
        offsets=[0.0] * count,
    )


def masked(values: np.ndarray, invalid: np.ndarray) -> np.ma.MaskedArray:
    """``values`` with ``invalid`` masked too."""
    return np.ma.MaskedArray(values, mask=np.ma.getmaskarray(values) | invalid)
