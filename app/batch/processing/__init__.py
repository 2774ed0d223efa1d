"""Batch processing: large areas cut along tiling grids, one Dask task per tile.

The second batch job kind (``app.batch`` runs both: one job store, states, leases,
executor and fsspec storage). ``spec`` holds the plain data the parts exchange:

- ``grids``: the tiling grids (0/1/2 UTM per zone, 3 WGS84 degrees) and the tiles that
  intersect an area;
- ``engine``: one tile's outputs from the scenes over it (reads, masks, composites);
- ``cog`` / ``zarr``: writing a tile's outputs;
- ``results``: the STAC collection of a job's tiles (and ``createCollection``);
- ``models`` / ``analysis`` / ``worker``: the job kind itself.
"""
