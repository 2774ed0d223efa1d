"""terratiler: a self-hosted STAC + COG tiling and statistics service."""

from app.gdal_env import configure_gdal

__version__ = "0.1.0"

# GDAL_SKIP only counts if set before GDAL registers its drivers (the first dataset the
# process opens), so the defaults go in at import; create_app applies the settings.
configure_gdal()
