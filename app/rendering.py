"""Rendering of every tile, crop and preview: titiler's, with terratiler's encoding options.

``render`` also does titiler's 8-bit rescale of data a format cannot hold, with each
pixel's own mask (see ``_fit_to_format``).

rio-tiler and titiler take the GDAL creation options of each output format from one
registry (``rio_tiler.profiles.img_profiles``); terratiler sets PNG's there, once per
process, from the settings.

PNG's zlib level is a CPU/size trade: on Sentinel-2 tiles (noisy 10 m reflectance,
256 px RGBA) level 6, GDAL's and titiler's default, takes about three times as long to
encode as level 1 for a file about 10 % smaller (measured: BENCHMARKS.md, Tiles). A tile
service spends its CPU on encoding; terratiler defaults to level 1.
"""

from typing import Any

import attr
import numpy as np
from rasterio.dtypes import dtype_ranges
from rio_tiler.models import ImageData
from rio_tiler.profiles import PNGProfile, img_profiles
from titiler.core.resources.enums import ImageType
from titiler.core.utils import render_image, rescale_array

from app.errors import BadRequestError
from app.readers.layers import ALPHA_BAND

# titiler names the media type of ``.jpg`` outputs ``image/jpg``, which is not registered
# (IANA: image/jpeg); browsers guess, strict clients (and caches keyed on type) do not.
_MEDIA_TYPES = {"image/jpg": "image/jpeg"}


def configure_rendering(png_zlevel: int) -> None:
    """Set the zlib level of rendered PNGs (1 fastest ... 9 smallest).

    Args:
        png_zlevel: The ``png_zlevel`` setting.

    Raises:
        ValueError: For a level outside 1..9.

    """
    if not 1 <= png_zlevel <= 9:
        raise ValueError(f"png_zlevel must be 1..9, not {png_zlevel}")
    img_profiles.data["png"] = PNGProfile(zlevel=png_zlevel)


# The data types each format holds (titiler's table); a format not listed takes any. An
# image rendered without a format becomes a PNG or a JPEG, 8 bits either way.
_FORMAT_DTYPES: dict[ImageType | None, tuple[str, ...]] = {
    None: ("uint8",),
    ImageType.png: ("uint8", "uint16"),
    ImageType.jpeg: ("uint8",),
    ImageType.jpg: ("uint8",),
    ImageType.webp: ("uint8",),
    ImageType.jp2: ("uint8", "int16", "uint16"),
}


def _fit_to_format(image: ImageData, output_format: ImageType | None, colormap: Any) -> ImageData:
    """``image`` rescaled to 8 bits when ``output_format`` cannot hold its data type.

    titiler does this rescale itself (by ``dataset_statistics`` or the data type's range),
    but with the 2-D mask indexed per band: band b takes row b of the mask, so a masked
    pixel zeroes its whole column in that band, and more bands than rows is an IndexError
    (titiler.core 2.4.0). Done here, each pixel keeps its own mask, and titiler, seeing
    8-bit data, leaves it as it is.
    """
    dtype = str(image.data.dtype)
    allowed = _FORMAT_DTYPES.get(output_format)
    if colormap or allowed is None or dtype in allowed or dtype not in dtype_ranges:
        return image
    in_range = image.dataset_statistics or (dtype_ranges[dtype],)
    mask = np.broadcast_to(image.mask, image.data.shape)
    data = rescale_array(image.data.copy(), mask, in_range=in_range)
    array = np.ma.MaskedArray(data, mask=np.ma.getmaskarray(image.array))
    return attr.evolve(image, array=array, dataset_statistics=None)


# Formats that keep every band as data (no alpha channel of their own).
_RAW = (ImageType.npy, ImageType.tif, ImageType.tiff)


def _without_alpha(image: ImageData) -> ImageData:
    """``image`` without its last band, the alpha (already its mask)."""
    count = image.count - 1
    return attr.evolve(
        image,
        array=image.array[:count],
        band_names=image.band_names[:count],
        band_descriptions=image.band_descriptions[:count] if image.band_descriptions else None,
        scales=image.scales[:count] if image.scales else None,
        offsets=image.offsets[:count] if image.offsets else None,
    )


#: Formats that show an image: 1 band grey, 3 RGB (an alpha band is the mask's).
_PICTURES = (ImageType.png, ImageType.jpeg, ImageType.jpg, ImageType.webp)


def _check_band_count(image: ImageData, output_format: ImageType | None, colormap: Any) -> None:
    """A 400 for a band count a picture cannot show (2 bands were RGB with the mask blue)."""
    if colormap or image.count in (1, 3):
        return
    if output_format is not None and output_format not in _PICTURES:
        return
    name = output_format.value if output_format is not None else "image"
    raise BadRequestError(
        f"{name}: the image has {image.count} bands; PNG, JPEG and WebP take "
        "1, 3 or 4 (an evalscript's alpha) bands: choose bands, or ask for .tif or .npy"
    )


def render(
    image: ImageData,
    *,
    output_format: ImageType | None = None,
    colormap: Any = None,
    rescale: Any = None,
    color_formula: str | None = None,
    **kwargs: Any,
) -> tuple[bytes, str]:
    """Render like titiler's ``render_image``, answering with registered media types.

    Args:
        image: The image.
        output_format: The format (None: PNG when some pixel is masked, else JPEG).
        colormap: A colormap, applied by titiler.
        rescale: Input ranges to stretch onto 0..255, band by band.
        color_formula: A rio-color formula.
        kwargs: Other keyword arguments of ``titiler.core.utils.render_image``.

    Returns:
        The encoded image and its media type (``image/jpeg`` for ``.jpg`` too).

    """
    if image.band_names and image.band_names[-1] == ALPHA_BAND and output_format not in _RAW:
        # The mask carries it: PNG/WebP write the mask as alpha (a 5th band would fail).
        image = _without_alpha(image)
    _check_band_count(image, output_format, colormap)
    # In titiler's order: rescale and color formula first, then fit to the format.
    if rescale:
        image.rescale(rescale)
    if color_formula:
        image.apply_color_formula(color_formula)
    image = _fit_to_format(image, output_format, colormap)
    content, media_type = render_image(
        image, output_format=output_format, colormap=colormap, **kwargs
    )
    return content, _MEDIA_TYPES.get(media_type, media_type)
