"""Image encoding options of every rendered tile, crop and preview.

rio-tiler and titiler take the GDAL creation options of each output format from one
registry (``rio_tiler.profiles.img_profiles``); terratiler sets PNG's there, once per
process, from the settings.

PNG's zlib level is a CPU/size trade: on Sentinel-2 tiles (noisy 10 m reflectance,
256 px RGBA) level 6, GDAL's and titiler's default, takes about three times as long to
encode as level 1 for a file about 10 % smaller (measured: BENCHMARKS.md, Tiles). A tile
service spends its CPU on encoding; terratiler defaults to level 1.
"""

from typing import Any

from rio_tiler.profiles import PNGProfile, img_profiles
from titiler.core.utils import render_image

DEFAULT_PNG_ZLEVEL = 1

# titiler names the media type of ``.jpg`` outputs ``image/jpg``, which is not registered
# (IANA: image/jpeg); browsers guess, strict clients (and caches keyed on type) do not.
_MEDIA_TYPES = {"image/jpg": "image/jpeg"}


def configure_rendering(png_zlevel: int = DEFAULT_PNG_ZLEVEL) -> None:
    """Set the zlib level of rendered PNGs (1 fastest ... 9 smallest).

    Args:
        png_zlevel: The ``png_zlevel`` setting.

    Raises:
        ValueError: For a level outside 1..9.

    """
    if not 1 <= png_zlevel <= 9:
        raise ValueError(f"png_zlevel must be 1..9, not {png_zlevel}")
    img_profiles.data["png"] = PNGProfile(zlevel=png_zlevel)


def render(*args: Any, **kwargs: Any) -> tuple[bytes, str]:
    """Render like titiler's ``render_image``, answering with registered media types.

    Args:
        args: Positional arguments of ``titiler.core.utils.render_image``.
        kwargs: Keyword arguments of ``titiler.core.utils.render_image``.

    Returns:
        The encoded image and its media type (``image/jpeg`` for ``.jpg`` too).

    """
    content, media_type = render_image(*args, **kwargs)
    return content, _MEDIA_TYPES.get(media_type, media_type)
