"""terratiler: a self-hosted STAC + COG tiling and statistics service."""

__version__ = "0.1.0"
