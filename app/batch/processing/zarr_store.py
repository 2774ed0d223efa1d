"""Zarr output of a processing job: one group per job, one array per output.

The layout is decided once, when every tile of the job is known (analysis), and the group
is created then with its coordinates, CRS and empty arrays (``create_zarr``); each tile
task then only writes its own pixels (``write_zarr_tile``). Concurrent tiles never share
a chunk: the chunks are the tiles (``chunks = (1, tile height, tile width)``), so tile
writes need no lock, and a tile written twice (a retried task) writes the same chunks.

What a reader sees (``xarray.open_zarr(url)``, Zarr format 3)::

    <url>/                 one CRS: the group is the dataset
        x, y               pixel-centre coordinates in the CRS (y descending: north up)
        time | band        the stack dates (``composite: stack``) or band numbers (1..)
        spatial_ref        CF grid_mapping: crs_wkt, spatial_ref, GeoTransform
        <outputId>         (time|band, y, x), chunks = tiles, fill value = nodata

    <url>/EPSG_32633/      tiles in several CRSs (an area across UTM zones): one such
    <url>/EPSG_32634/      dataset per CRS (``xarray.open_zarr(url, group="EPSG_32633")``)

The coordinates and grid mapping follow the conventions xarray and rioxarray write
(CF ``grid_mapping`` with ``crs_wkt``/``spatial_ref`` and ``GeoTransform``; written with
zarr alone, the service does not need xarray), so ``ds.rio.crs`` and
``ds.rio.transform()`` read them back. Tiles of one CRS must lie on one lattice (same size and resolution, the
offsets between them whole tiles): true of the tiling grids; other tiles are refused.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import struct
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from affine import Affine
from pyproj import CRS

from app.batch.processing.spec import GridTile, OutputRaster, OutputSpec

__all__ = ["ZarrGrid", "ZarrLayout", "create_zarr", "group_name", "write_zarr_tile", "zarr_layout"]

# The group attribute holding the layout's fingerprint (create_zarr is idempotent by it).
_LAYOUT_ATTRIBUTE = "terratiler:layout"
# Offsets closer than this (in pixels) to a whole number are that number (float origins).
_PIXEL_TOLERANCE = 1e-6


@dataclass(frozen=True)
class ZarrGrid:
    """The raster of one CRS: where its arrays sit and how they are chunked.

    Attributes:
        crs: The CRS ("EPSG:32633").
        group: The group path inside the job's group ("" when the job has one CRS).
        x0: Left edge of the raster (CRS units).
        y0: Top edge of the raster.
        xres: Pixel width (positive).
        yres: Pixel height (positive; rows go south).
        width: Pixels across the whole raster.
        height: Pixels down.
        chunk_width: Pixels across one chunk (a tile).
        chunk_height: Pixels down one chunk.

    """

    crs: str
    group: str
    x0: float
    y0: float
    xres: float
    yres: float
    width: int
    height: int
    chunk_width: int
    chunk_height: int

    @property
    def transform(self) -> Affine:
        """The raster's affine (upper-left corner)."""
        return Affine(self.xres, 0.0, self.x0, 0.0, -self.yres, self.y0)

    def offset(self, tile: GridTile) -> tuple[int, int]:
        """(row, column) of ``tile``'s upper-left pixel in this raster.

        Raises:
            ValueError: The tile is not one of this raster's chunks.

        """
        t = tile.transform
        if (tile.crs, tile.width, tile.height) != (self.crs, self.chunk_width, self.chunk_height):
            raise ValueError(f"tile '{tile.name}' is not a tile of the Zarr raster in {self.crs}")
        if not (math.isclose(t.a, self.xres) and math.isclose(-t.e, self.yres)):
            raise ValueError(f"tile '{tile.name}': resolution differs from the Zarr raster's")
        column = _whole((t.c - self.x0) / self.xres, tile.name)
        row = _whole((self.y0 - t.f) / self.yres, tile.name)
        if column % self.chunk_width or row % self.chunk_height:
            raise ValueError(f"tile '{tile.name}' is not aligned on the Zarr raster's chunks")
        if not (0 <= column < self.width and 0 <= row < self.height):
            raise ValueError(f"tile '{tile.name}' is outside the Zarr raster")
        return row, column


@dataclass(frozen=True)
class ZarrLayout:
    """Everything ``create_zarr`` and ``write_zarr_tile`` need (picklable: sent to workers).

    Attributes:
        grids: One raster per CRS, in CRS order.
        outputs: The job's outputs (one array each, in every raster).
        dates: The stack dates ("YYYY-MM-DD"), the ``time`` coordinate of ``stack``
            outputs; None when no output is a stack.

    """

    grids: tuple[ZarrGrid, ...]
    outputs: tuple[OutputSpec, ...]
    dates: tuple[str, ...] | None = None

    def grid(self, crs: str) -> ZarrGrid:
        """The raster of ``crs`` (``ValueError`` when the job has no tile in it)."""
        for grid in self.grids:
            if grid.crs == crs:
                return grid
        raise ValueError(f"the Zarr output has no raster in {crs}")

    def bands(self, output: OutputSpec) -> int:
        """How many bands ``output``'s array has (dates of a stack, else 1)."""
        return len(self.dates or ()) if output.composite == "stack" else 1

    @property
    def fingerprint(self) -> str:
        """A digest of the layout: a group created for another layout is not reused."""
        text = json.dumps(asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()


def group_name(crs: str) -> str:
    """The subgroup of a CRS when a job spans several ("EPSG:32633" -> "EPSG_32633")."""
    return "".join(c if c.isalnum() else "_" for c in crs)


def zarr_layout(
    tiles: Sequence[GridTile],
    outputs: Sequence[OutputSpec],
    dates: Sequence[str] | None = None,
) -> ZarrLayout:
    """The Zarr layout of a job's tiles: one raster per CRS covering its tiles.

    Args:
        tiles: Every tile of the job (buffers must be 0: chunks are the tiles).
        outputs: The job's outputs.
        dates: The job-wide stack dates (needed when an output is a ``stack``).

    Returns:
        The layout (its rasters start at the tiles' upper-left-most corner).

    Raises:
        ValueError: No tile; tiles of one CRS with different sizes or resolutions or off
            one lattice; a stack output without dates.

    """
    if not tiles:
        raise ValueError("a Zarr output needs at least one tile")
    if any(output.composite == "stack" for output in outputs) and not dates:
        raise ValueError("a stack output needs its dates for the Zarr time coordinate")
    by_crs: dict[str, list[GridTile]] = {}
    for tile in tiles:
        by_crs.setdefault(tile.crs, []).append(tile)
    several = len(by_crs) > 1
    grids = []
    for crs in sorted(by_crs):
        members = by_crs[crs]
        first = members[0]
        xres, yres = first.transform.a, -first.transform.e
        for tile in members:
            t = tile.transform
            same = (tile.width, tile.height) == (first.width, first.height)
            if not same or not (math.isclose(t.a, xres) and math.isclose(-t.e, yres)):
                raise ValueError(
                    f"tiles '{first.name}' and '{tile.name}' differ in size or resolution: "
                    "a Zarr output needs tiles of one grid"
                )
        x0 = min(tile.transform.c for tile in members)
        y0 = max(tile.transform.f for tile in members)
        columns = [_whole((tile.transform.c - x0) / xres, tile.name) for tile in members]
        rows = [_whole((y0 - tile.transform.f) / yres, tile.name) for tile in members]
        if any(c % first.width for c in columns) or any(r % first.height for r in rows):
            raise ValueError("the tiles are not on one lattice: a Zarr output needs grid tiles")
        grids.append(
            ZarrGrid(
                crs=crs,
                group=group_name(crs) if several else "",
                x0=float(x0),
                y0=float(y0),
                xres=float(xres),
                yres=float(yres),
                width=max(columns) + first.width,
                height=max(rows) + first.height,
                chunk_width=first.width,
                chunk_height=first.height,
            )
        )
    has_stack = any(output.composite == "stack" for output in outputs)
    return ZarrLayout(
        grids=tuple(grids),
        outputs=tuple(outputs),
        dates=tuple(dates) if dates and has_stack else None,
    )


def create_zarr(
    url: str,
    storage_options: Mapping[str, Any] | None,
    layout: ZarrLayout,
    *,
    overwrite: bool = False,
) -> None:
    """Create the job's group: coordinates, grid mappings and empty arrays (no pixels).

    Idempotent: a group already created for this layout is left as it is (its tiles
    kept). A group of another layout is replaced only with ``overwrite``.

    Args:
        url: The group's URL (a local folder or ``s3://bucket/prefix``).
        storage_options: fsspec options of ``s3://`` URLs (endpoint, credentials).
        layout: The layout from ``zarr_layout``.
        overwrite: Replace a group of another layout (its data is lost).

    Raises:
        FileExistsError: A group of another layout is there and ``overwrite`` is false.

    """
    import zarr

    existing = _existing_fingerprint(url, storage_options)
    if existing == layout.fingerprint:
        return
    if existing is not None and not overwrite:
        raise FileExistsError(f"{url} holds a Zarr group of another job layout")
    options = _options(url, storage_options)
    # mode "w" clears what was there (an interrupted creation, another layout).
    root = zarr.open_group(url, mode="w", storage_options=options, zarr_format=3)
    for grid in layout.grids:
        _create_dataset(root.require_group(grid.group) if grid.group else root, grid, layout)
    # Written last: a group without it (creation interrupted) is created again. The
    # metadata never changes after this (tiles only add chunks), so it is consolidated:
    # xarray.open_zarr reads one document instead of one per array.
    root.attrs[_LAYOUT_ATTRIBUTE] = layout.fingerprint
    with warnings.catch_warnings():
        # "not part of the Zarr 3 specification": zarr-python and xarray read it, others
        # read the per-array metadata that stays beside it.
        warnings.simplefilter("ignore", category=UserWarning)
        zarr.consolidate_metadata(root.store)


def write_zarr_tile(
    url: str,
    storage_options: Mapping[str, Any] | None,
    layout: ZarrLayout,
    tile: GridTile,
    rasters: Mapping[str, OutputRaster],
) -> None:
    """Write one tile's outputs into their arrays: exactly the tile's chunks.

    Args:
        url: The job's group (created by ``create_zarr``).
        storage_options: fsspec options of ``s3://`` URLs.
        layout: The job's layout.
        tile: The tile (one of the layout's chunks).
        rasters: The tile's outputs by output id (every output of the layout).

    Raises:
        ValueError: The tile is not one of the layout's, an output is missing, or a
            raster's shape is not (bands, tile height, tile width).

    """
    import zarr

    grid = layout.grid(tile.crs)
    row, column = grid.offset(tile)
    missing = [output.id for output in layout.outputs if output.id not in rasters]
    if missing:
        raise ValueError(f"tile '{tile.name}': no raster for output(s) {', '.join(missing)}")
    options = _options(url, storage_options)
    group = zarr.open_group(url, mode="r+", storage_options=options, zarr_format=3)
    if grid.group:
        group = group[grid.group]
    for output in layout.outputs:
        data = np.asarray(rasters[output.id].data)
        expected = (layout.bands(output), tile.height, tile.width)
        if data.shape != expected:
            raise ValueError(
                f"tile '{tile.name}', output '{output.id}': shape {data.shape}, expected {expected}"
            )
        array = group[output.id]
        array[:, row : row + tile.height, column : column + tile.width] = data.astype(
            array.dtype, copy=False
        )


# ---------------------------------------------------------------------- helpers


def _whole(value: float, name: str) -> int:
    rounded = round(value)
    if abs(value - rounded) > _PIXEL_TOLERANCE:
        raise ValueError(f"tile '{name}' is not on whole pixels of the Zarr raster")
    return int(rounded)


def _options(url: str, storage_options: Mapping[str, Any] | None) -> dict[str, Any] | None:
    # zarr refuses storage options for a local path (it is no fsspec store then).
    if "://" in url and not url.startswith("file://"):
        return dict(storage_options or {})
    return None


def _fill_value(output: OutputSpec) -> float | int:
    if output.nodata is not None:
        return output.nodata
    return float("nan") if output.data_type == "float32" else 0


def _existing_fingerprint(url: str, storage_options: Mapping[str, Any] | None) -> str | None:
    import zarr

    try:
        group = zarr.open_group(url, mode="r", storage_options=_options(url, storage_options))
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError):
        return None
    except Exception:  # an array, or zarr v2 metadata: not ours either way
        return ""
    return str(group.attrs.get(_LAYOUT_ATTRIBUTE, ""))


def _create_dataset(group: Any, grid: ZarrGrid, layout: ZarrLayout) -> None:
    """Coordinates, grid mapping and empty output arrays of one CRS, in xarray's encoding.

    Written with zarr itself (the service needs no xarray): the attributes are those
    ``xarray.Dataset.to_zarr`` writes for a dataset that rioxarray's ``write_crs`` and
    ``write_transform`` prepared (the tests open the result with both).
    """
    x = grid.x0 + (np.arange(grid.width) + 0.5) * grid.xres
    y = grid.y0 - (np.arange(grid.height) + 0.5) * grid.yres
    geographic = CRS.from_user_input(grid.crs).is_geographic
    _coordinate(group, "x", x, {"axis": "X", "units": "degrees_east" if geographic else "m"})
    _coordinate(group, "y", y, {"axis": "Y", "units": "degrees_north" if geographic else "m"})
    dims = {"stack": "time", "other": "band"}
    if layout.dates:
        days = np.array(layout.dates, dtype="datetime64[D]").astype(np.int64)
        _coordinate(
            group,
            "time",
            days,
            {"units": "days since 1970-01-01", "calendar": "proleptic_gregorian"},
        )
    if any(output.composite != "stack" for output in layout.outputs):
        _coordinate(group, "band", np.arange(1, 2, dtype=np.int64), {})
    mapping = group.create_array(
        "spatial_ref", shape=(), dtype="int64", fill_value=0, dimension_names=()
    )
    mapping[...] = 0
    mapping.attrs.update(_grid_mapping(grid))
    for output in layout.outputs:
        dtype = np.dtype(output.data_type)
        fill = _fill_value(output)
        dim = dims["stack" if output.composite == "stack" else "other"]
        array = group.create_array(
            output.id,
            shape=(layout.bands(output), grid.height, grid.width),
            chunks=(1, grid.chunk_height, grid.chunk_width),
            dtype=dtype,
            fill_value=fill,
            dimension_names=(dim, "y", "x"),
        )
        attrs: dict[str, Any] = {
            "long_name": output.id,
            "grid_mapping": "spatial_ref",
            "coordinates": "spatial_ref",
        }
        if output.nodata is not None or dtype.kind == "f":
            # CF's _FillValue as xarray encodes it in Zarr 3 attributes (floats as the
            # base64 of a little-endian double, so NaN survives JSON).
            attrs["_FillValue"] = (
                base64.standard_b64encode(struct.pack("<d", float(fill))).decode()
                if dtype.kind == "f"
                else int(fill)
            )
        array.attrs.update(attrs)


def _coordinate(group: Any, name: str, values: np.ndarray, attrs: dict[str, Any]) -> None:
    array = group.create_array(
        name, shape=values.shape, dtype=values.dtype, dimension_names=(name,), fill_value=0
    )
    array[...] = values
    array.attrs.update(attrs)


def _grid_mapping(grid: ZarrGrid) -> dict[str, Any]:
    """The CF grid_mapping attributes rioxarray writes (and reads: CRS and transform)."""
    from rasterio.crs import CRS as RasterioCRS

    wkt = RasterioCRS.from_user_input(grid.crs).to_wkt()
    attrs = {key: value for key, value in CRS.from_user_input(grid.crs).to_cf().items()}
    t = grid.transform
    attrs.update(
        crs_wkt=wkt,
        spatial_ref=wkt,
        GeoTransform=" ".join(str(float(v)) for v in (t.c, t.a, t.b, t.f, t.d, t.e)),
    )
    return attrs
