"""Image encoding options of every rendered tile, crop and preview.

rio-tiler and titiler take the GDAL creation options of each output format from one
registry (``rio_tiler.profiles.img_profiles``); terratiler sets PNG's there, once per
process, from the settings.

PNG's zlib level is a CPU/size trade: on Sentinel-2 tiles (noisy 10 m reflectance,
256 px RGBA) level 6, GDAL's and titiler's default, takes about three times as long to
encode as level 1 for a file about 10 % smaller (measured: BENCHMARKS.md, Tiles). A tile
service spends its CPU on encoding; terratiler defaults to level 1.
"""

from rio_tiler.profiles import PNGProfile, img_profiles

DEFAULT_PNG_ZLEVEL = 1


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
