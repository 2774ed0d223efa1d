"""terratiler: a self-hosted STAC + COG tiling and statistics service.

Importing the package (or any module of it) changes no process-wide state: GDAL's
environment and the libraries' registries are set by whoever starts the process
(``app.services.configure_process``, called by ``create_app``).
"""

__version__ = "0.1.0"
