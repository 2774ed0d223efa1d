"""The tiling grids of batch processing: which tiles cover an area, and where each tile lies.

Four grids, as Sentinel Hub's Batch Processing API offers them (see docs/tiling-grids.md):

==  ==================  ==============  =========================
id  name                tile side       resolutions
==  ==================  ==============  =========================
0   UTM 20km grid       20,040 m        10, 20, 60 m
1   UTM 10km grid       10,000 m        10, 20 m
2   UTM 100km grid      100,080 m       60, 120, 240, 360 m
3   WGS84 1 degree      1 degree        0.0001, 0.0002 degree
==  ==================  ==============  =========================

UTM grids are defined per zone and hemisphere (EPSG:326zz north, EPSG:327zz south, the
latter with its 10,000,000 m false northing): tile edges are the multiples of the tile side
in the zone's own coordinates (origin: easting 0, northing 0 of the CRS). Every side is a
multiple of every resolution of its grid, and every side of the 10/20/60 m grids is a
multiple of 20 m (20,040 and 100,080 of 60 m), so tile edges fall on the Sentinel-2 pixel
grid of that zone (Sentinel-2 tile corners are multiples of 60 m): a 10 m tile in a scene's
own zone is the scene's pixels, not a resampling of them. An area crossing zones gets tiles
in each zone's CRS; which tiles of zone Z is decided by the part of the area inside Z's
6 degree longitude strip (and hemisphere). Grid 3 tiles are whole degrees in EPSG:4326.

Names (stable across runs, parseable with ``parse_tile_name``):

- UTM: ``<zone:02d><N|S>_<column:03d>_<row:04d>``, column = floor(easting / side),
  row = floor(northing / side) of the tile's lower-left corner, e.g. ``33N_057_0516`` is
  the grid-1 tile of EPSG:32633 from (570,000, 5,160,000) to (580,000, 5,170,000).
- WGS84: ``<N|S><lat:02d><E|W><lon:03d>`` of the lower-left corner, e.g. ``N46E016``.

The tile of a point is computable from the grid alone (``tile_at``). Antimeridian: areas
are plain EPSG:4326 geometries with longitudes in [-180, 180]; an area that crosses the
antimeridian must be split there (RFC 7946, a MultiPolygon), each part then falls in its
own zones. The UTM grids cover 80 S to 84 N (UTM's own limits) and refuse areas beyond.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import shapely
from affine import Affine
from pyproj import Transformer
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from app.batch.processing.spec import GridTile
from app.errors import BadRequestError, NotFoundError

__all__ = [
    "EXACT_COUNT_LIMIT",
    "GRIDS",
    "TileIndex",
    "TilingGrid",
    "check_grid",
    "count_tiles",
    "grid_description",
    "grid_descriptions",
    "parse_tile_name",
    "tile_at",
    "tile_footprint",
    "tile_from_name",
    "tiles_for",
]

#: UTM's own latitude limits (the polar regions are UPS, which these grids do not cover).
UTM_SOUTH, UTM_NORTH = -80.0, 84.0
#: Longitude/latitude step of the boundaries projected into UTM: 0.01 degree (about 1 km)
#: keeps the chord-versus-curve error of a projected edge at a few centimetres.
_DENSIFY_DEGREES = 0.01
#: ``count_tiles`` tests each candidate tile exactly up to this many candidates per call;
#: beyond it returns the candidate count (an upper bound), already far above any job limit.
EXACT_COUNT_LIMIT = 200_000
#: Relative tolerance when matching a requested resolution to a grid's (10 == 10.0).
_RES_TOLERANCE = 1e-9


@dataclass(frozen=True)
class TilingGrid:
    """One tiling grid.

    Attributes:
        id: The grid id ("0".."3").
        name: Sentinel Hub's name of the grid.
        kind: "utm" (per-zone UTM tiles) or "wgs84" (degree tiles in EPSG:4326).
        tile_size: Tile side in CRS units (metres, or degrees for "wgs84"); an integer.
        resolutions: The pixel sizes the grid offers, in CRS units.
        unit: "METRE" or "DEGREE" (Sentinel Hub's unit names).

    """

    id: str
    name: str
    kind: str
    tile_size: int
    resolutions: tuple[float, ...]
    unit: str

    def pixels(self, resolution: float) -> int:
        """Pixels across one tile (without buffer) at ``resolution`` (one it offers)."""
        return round(self.tile_size / resolution)


GRIDS: dict[str, TilingGrid] = {
    "0": TilingGrid("0", "UTM 20km grid", "utm", 20_040, (10.0, 20.0, 60.0), "METRE"),
    "1": TilingGrid("1", "UTM 10km grid", "utm", 10_000, (10.0, 20.0), "METRE"),
    "2": TilingGrid("2", "UTM 100km grid", "utm", 100_080, (60.0, 120.0, 240.0, 360.0), "METRE"),
    "3": TilingGrid("3", "WGS84 1 degree grid", "wgs84", 1, (0.0001, 0.0002), "DEGREE"),
}


class TileIndex(NamedTuple):
    """What a tile name says: its CRS and the grid cell of its lower-left corner.

    Attributes:
        crs: "EPSG:326zz" / "EPSG:327zz" (UTM) or "EPSG:4326" (WGS84).
        column: floor(easting / side) for UTM; the longitude in whole degrees for WGS84.
        row: floor(northing / side) for UTM; the latitude in whole degrees for WGS84.

    """

    crs: str
    column: int
    row: int


# --- descriptions and checks ------------------------------------------------------------


def _description(grid: TilingGrid) -> dict:
    size: float = grid.tile_size
    resolutions = list(grid.resolutions)
    return {
        # Sentinel Hub answers integer ids; clients (sentinelhub-py) compare them as such.
        "id": int(grid.id),
        "name": grid.name,
        "properties": {
            "tileWidth": size,
            "tileHeight": size,
            "resolutions": resolutions,
            "unit": grid.unit,
        },
    }


def grid_descriptions() -> list[dict]:
    """Every grid in Sentinel Hub's ``/tiling-grids`` shape.

    Returns:
        ``[{"id", "name", "properties": {"tileWidth", "tileHeight", "resolutions",
        "unit"}}, ...]`` ordered by id.

    """
    return [_description(GRIDS[key]) for key in sorted(GRIDS, key=int)]


def grid_description(grid_id: str | int) -> dict:
    """One grid in Sentinel Hub's ``/tiling-grids/{id}`` shape.

    Raises:
        NotFoundError: no grid has that id.

    """
    grid = GRIDS.get(str(grid_id).strip())
    if grid is None:
        raise NotFoundError(f"tiling grid {grid_id!r} not found; grids: {_grid_list()}")
    return _description(grid)


def _grid_list() -> str:
    return ", ".join(f"{g.id} ({g.name})" for g in GRIDS.values())


def _resolution(grid: TilingGrid, resolution: float) -> float:
    """The grid's own resolution equal to ``resolution`` (10 and 10.0 are one)."""
    for offered in grid.resolutions:
        if math.isclose(float(resolution), offered, rel_tol=_RES_TOLERANCE):
            return offered
    offered = ", ".join(f"{r:g}" for r in grid.resolutions)
    raise BadRequestError(
        f"input.resolution: grid {grid.id} ({grid.name}) offers {offered} "
        f"{grid.unit.lower()}s, not {resolution!r}"
    )


def check_grid(grid_id: str | int, resolution: float) -> TilingGrid:
    """The grid ``grid_id``, after checking it offers ``resolution``.

    Args:
        grid_id: "0".."3" (an int is accepted too).
        resolution: The pixel size, in the grid's unit.

    Returns:
        The grid.

    Raises:
        BadRequestError: unknown grid (``input.id``) or a resolution it does not offer
            (``input.resolution``); the message lists what exists.

    """
    grid = GRIDS.get(str(grid_id).strip())
    if grid is None:
        raise BadRequestError(f"input.id: unknown tiling grid {grid_id!r}; grids: {_grid_list()}")
    if isinstance(resolution, bool) or not isinstance(resolution, numbers.Real):
        raise BadRequestError(f"input.resolution: a number, not {resolution!r}")
    _resolution(grid, resolution)
    return grid


def _check_buffer(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadRequestError(f"input.{name}: a whole number of pixels >= 0, not {value!r}")
    return value


# --- UTM helpers --------------------------------------------------------------------------


def _utm_epsg(zone: int, north: bool) -> int:
    return (32600 if north else 32700) + zone


def _zone_of(lon: float) -> int:
    """The UTM zone (1..60) of a longitude; 180 belongs to zone 60."""
    return min(int(math.floor((lon + 180.0) / 6.0)) + 1, 60)


@lru_cache(maxsize=256)
def _to_crs(epsg: int) -> Transformer:
    return Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True)


@lru_cache(maxsize=256)
def _from_crs(epsg: int) -> Transformer:
    return Transformer.from_crs(f"EPSG:{epsg}", "EPSG:4326", always_xy=True)


def _project(geometry: BaseGeometry, transformer: Transformer, step: float) -> BaseGeometry:
    """``geometry`` through ``transformer``, edges first cut into ``step``-long pieces."""
    dense = shapely.segmentize(geometry, step)
    return shapely.transform(
        dense, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1]))
    )


def _polygonal(geometry: BaseGeometry) -> bool:
    return geometry.area > 0


def _check_area(area: BaseGeometry, grid: TilingGrid) -> None:
    if not isinstance(area, BaseGeometry):
        raise BadRequestError("processRequest.input.bounds: a geometry is required")
    if area.is_empty:
        return
    minx, miny, maxx, maxy = area.bounds
    if not all(math.isfinite(v) for v in area.bounds):
        raise BadRequestError("processRequest.input.bounds: coordinates must be finite")
    if minx < -180 or maxx > 180 or miny < -90 or maxy > 90:
        raise BadRequestError(
            "processRequest.input.bounds: longitudes must lie in [-180, 180] and latitudes "
            "in [-90, 90] (EPSG:4326); split an area that crosses the antimeridian there"
        )
    if grid.kind == "utm" and (miny < UTM_SOUTH or maxy > UTM_NORTH):
        raise BadRequestError(
            f"processRequest.input.bounds: grid {grid.id} ({grid.name}) covers latitudes "
            f"{UTM_SOUTH:g} to {UTM_NORTH:g} (UTM); the area reaches {miny:g} to {maxy:g}"
        )


class _Part(NamedTuple):
    """The part of an area in one CRS of the grid, in that CRS, with candidate cells."""

    epsg: int
    zone: int | None  # None for WGS84
    north: bool
    geometry: BaseGeometry  # in the CRS
    columns: range
    rows: range


def _cell_range(low: float, high: float, size: float) -> range:
    """Cells of side ``size`` that may meet [low, high] (one extra each side is harmless)."""
    return range(math.floor(low / size) - 1, math.floor(high / size) + 2)


def _parts(area: BaseGeometry, grid: TilingGrid, step: float) -> list[_Part]:
    """The area cut into the grid's CRSs (UTM zone x hemisphere, or EPSG:4326)."""
    if area.is_empty:
        return []
    polygonal = _polygonal(area)
    if grid.kind == "wgs84":
        minx, miny, maxx, maxy = area.bounds
        return [
            _Part(
                4326,
                None,
                True,
                area,
                _cell_range(minx, maxx, 1),
                _cell_range(miny, maxy, 1),
            )
        ]
    minx, miny, maxx, maxy = area.bounds
    parts = []
    for zone in range(_zone_of(minx), _zone_of(maxx) + 1):
        west = -180.0 + 6.0 * (zone - 1)
        for north, (south, top) in ((True, (0.0, UTM_NORTH)), (False, (UTM_SOUTH, 0.0))):
            strip = box(west, south, west + 6.0, top)
            if not area.intersects(strip):
                continue
            piece = area.intersection(strip)
            # An area that only touches the strip (or the equator) has no tile there.
            if piece.is_empty or (polygonal and piece.area == 0):
                continue
            epsg = _utm_epsg(zone, north)
            projected = _project(piece, _to_crs(epsg), step)
            px0, py0, px1, py1 = projected.bounds
            size = grid.tile_size
            parts.append(
                _Part(
                    epsg,
                    zone,
                    north,
                    projected,
                    _cell_range(px0, px1, size),
                    _cell_range(py0, py1, size),
                )
            )
    return parts


def _hits(part: _Part, grid: TilingGrid, polygonal: bool) -> tuple[np.ndarray, np.ndarray]:
    """(columns, rows) of the cells of ``part`` the area really meets.

    Polygonal areas need a positive overlap (an edge shared with a cell is no overlap);
    points and lines any contact.
    """
    cols, rows = np.meshgrid(
        np.asarray(part.columns, dtype=np.int64), np.asarray(part.rows, dtype=np.int64)
    )
    cols, rows = cols.ravel(), rows.ravel()
    if cols.size == 0:
        return cols, rows
    size = grid.tile_size
    cells = shapely.box(cols * size, rows * size, (cols + 1) * size, (rows + 1) * size)
    geometry = part.geometry
    shapely.prepare(geometry)
    hit = shapely.intersects(geometry, cells)
    if polygonal:
        hit &= ~shapely.touches(geometry, cells)
    if grid.kind == "wgs84":
        # Only real degree cells: -180..179 by -90..89.
        hit &= (cols >= -180) & (cols < 180) & (rows >= -90) & (rows < 90)
    return cols[hit], rows[hit]


# --- names --------------------------------------------------------------------------------

_UTM_NAME = re.compile(r"^(\d{2})([NS])_(\d{3,})_(\d{4,})$")
_WGS84_NAME = re.compile(r"^([NS])(\d{2})([EW])(\d{3})$")


def _utm_name(zone: int, north: bool, column: int, row: int) -> str:
    return f"{zone:02d}{'N' if north else 'S'}_{column:03d}_{row:04d}"


def _wgs84_name(column: int, row: int) -> str:
    return f"{'N' if row >= 0 else 'S'}{abs(row):02d}{'E' if column >= 0 else 'W'}{abs(column):03d}"


def parse_tile_name(name: str) -> TileIndex:
    """What a tile name says: its CRS and grid cell (see the module docstring).

    UTM names do not carry the tile side: the same name is a different square in grid 0
    and grid 1; ``tile_from_name`` rebuilds the tile of a given grid.

    Raises:
        BadRequestError: not a tile name of these grids (names ``tileName``).

    """
    match = _UTM_NAME.match(name)
    if match:
        zone = int(match.group(1))
        if 1 <= zone <= 60:
            epsg = _utm_epsg(zone, match.group(2) == "N")
            return TileIndex(f"EPSG:{epsg}", int(match.group(3)), int(match.group(4)))
    match = _WGS84_NAME.match(name)
    if match:
        lat = int(match.group(2)) * (1 if match.group(1) == "N" else -1)
        lon = int(match.group(4)) * (1 if match.group(3) == "E" else -1)
        if -90 <= lat < 90 and -180 <= lon < 180:
            return TileIndex("EPSG:4326", lon, lat)
    raise BadRequestError(
        f"tileName: {name!r} is not a grid tile name (UTM '33N_057_0516', WGS84 'N46E016')"
    )


# --- tiles ----------------------------------------------------------------------------------


def _make_tile(
    grid: TilingGrid,
    resolution: float,
    epsg: int,
    name: str,
    column: int,
    row: int,
    buffer_x: int,
    buffer_y: int,
) -> GridTile:
    size = grid.tile_size
    pixels = grid.pixels(resolution)
    # Integer corners (metres or whole degrees): the buffer is the only float offset.
    left = column * size - buffer_x * resolution
    top = (row + 1) * size + buffer_y * resolution
    return GridTile(
        grid=grid.id,
        name=name,
        crs=f"EPSG:{epsg}",
        transform=Affine(resolution, 0.0, left, 0.0, -resolution, top),
        width=pixels + 2 * buffer_x,
        height=pixels + 2 * buffer_y,
        resolution=resolution,
    )


def _tile(
    grid: TilingGrid,
    resolution: float,
    epsg: int,
    column: int,
    row: int,
    buffer_x: int,
    buffer_y: int,
) -> GridTile:
    if grid.kind == "wgs84":
        name = _wgs84_name(column, row)
    else:
        name = _utm_name(epsg % 100, epsg < 32700, column, row)
    return _make_tile(grid, resolution, epsg, name, column, row, buffer_x, buffer_y)


def tiles_for(
    area: BaseGeometry,
    grid_id: str | int,
    resolution: float,
    buffer_x: int = 0,
    buffer_y: int = 0,
) -> list[GridTile]:
    """The tiles of a grid that cover an area.

    Args:
        area: A shapely geometry in EPSG:4326 (lon, lat); split at the antimeridian.
        grid_id: "0".."3".
        resolution: One of the grid's resolutions (its unit).
        buffer_x: Pixels added on the left and on the right of every tile.
        buffer_y: Pixels added above and below every tile.

    Returns:
        The tiles whose (unbuffered) square overlaps the area, sorted by name (UTM: zone,
        hemisphere, column, row); an area across zones gets tiles in each zone's CRS.

    Raises:
        BadRequestError: unknown grid, resolution, buffer or an area outside the grid.

    """
    grid = check_grid(grid_id, resolution)
    resolution = _resolution(grid, resolution)
    buffer_x = _check_buffer(buffer_x, "bufferX")
    buffer_y = _check_buffer(buffer_y, "bufferY")
    _check_area(area, grid)
    polygonal = not area.is_empty and _polygonal(area)
    tiles = []
    for part in _parts(area, grid, _DENSIFY_DEGREES):
        cols, rows = _hits(part, grid, polygonal)
        for column, row in zip(cols.tolist(), rows.tolist(), strict=True):
            tiles.append(_tile(grid, resolution, part.epsg, column, row, buffer_x, buffer_y))
    return sorted(tiles, key=lambda t: t.name)


def count_tiles(area: BaseGeometry, grid_id: str | int, resolution: float) -> int:
    """How many tiles ``tiles_for`` lists for an area, without listing them.

    Per CRS of the grid, the area's part is projected once and its bounds give the
    candidate cells (arithmetic); up to ``EXACT_COUNT_LIMIT`` candidates in all they are
    tested at once (vectorized, no tile objects) and the count equals
    ``len(tiles_for(...))``; beyond, the candidate count is returned: an upper bound,
    already far more tiles than a job may have, found in milliseconds (a continent).

    Raises:
        BadRequestError: as ``tiles_for``.

    """
    grid = check_grid(grid_id, resolution)
    _check_area(area, grid)
    if area.is_empty:
        return 0
    # A coarse projection first: enough for the candidate bounds (one spare cell per side).
    coarse = _parts(area, grid, 1.0)
    candidates = sum(len(p.columns) * len(p.rows) for p in coarse)
    if candidates > EXACT_COUNT_LIMIT:
        return candidates
    polygonal = _polygonal(area)
    return sum(
        int(_hits(part, grid, polygonal)[0].size) for part in _parts(area, grid, _DENSIFY_DEGREES)
    )


def tile_at(grid_id: str | int, resolution: float, lon: float, lat: float) -> GridTile:
    """The tile of a grid holding a point, from the grid alone (no area needed).

    UTM grids: the point's zone (``floor((lon + 180) / 6) + 1``; 180 is zone 60) and
    hemisphere (north from latitude 0), then ``floor(x / side)``, ``floor(y / side)``
    of its projected coordinates. WGS84: ``floor(lon)``, ``floor(lat)``.

    Raises:
        BadRequestError: unknown grid or resolution, or a point outside the grid.

    """
    grid = check_grid(grid_id, resolution)
    resolution = _resolution(grid, resolution)
    if not (math.isfinite(lon) and math.isfinite(lat) and -180 <= lon <= 180 and -90 <= lat <= 90):
        raise BadRequestError(f"point ({lon}, {lat}) is outside [-180, 180] x [-90, 90]")
    if grid.kind == "wgs84":
        column = min(math.floor(lon), 179)
        row = min(math.floor(lat), 89)
        return _tile(grid, resolution, 4326, column, row, 0, 0)
    if not UTM_SOUTH <= lat <= UTM_NORTH:
        raise BadRequestError(
            f"point latitude {lat} is outside grid {grid.id} ({UTM_SOUTH:g} to {UTM_NORTH:g})"
        )
    epsg = _utm_epsg(_zone_of(lon), lat >= 0)
    x, y = _to_crs(epsg).transform(lon, lat)
    size = grid.tile_size
    return _tile(grid, resolution, epsg, math.floor(x / size), math.floor(y / size), 0, 0)


def tile_from_name(
    grid_id: str | int, resolution: float, name: str, buffer_x: int = 0, buffer_y: int = 0
) -> GridTile:
    """Rebuild the tile ``name`` of a grid (the same tile ``tiles_for`` gives).

    Raises:
        BadRequestError: unknown grid or resolution, or a name of another kind of grid.

    """
    grid = check_grid(grid_id, resolution)
    resolution = _resolution(grid, resolution)
    index = parse_tile_name(name)
    if (grid.kind == "wgs84") != (index.crs == "EPSG:4326"):
        raise BadRequestError(f"tileName: {name!r} is not a tile of grid {grid.id}")
    epsg = int(index.crs.split(":")[1])
    return _tile(
        grid,
        resolution,
        epsg,
        index.column,
        index.row,
        _check_buffer(buffer_x, "bufferX"),
        _check_buffer(buffer_y, "bufferY"),
    )


def tile_footprint(tile: GridTile) -> shapely.Polygon:
    """The tile's square (buffer included) as a polygon in EPSG:4326.

    UTM tiles: the edges are densified before reprojection, so the polygon follows the
    (slightly curved) tile edges in longitude/latitude.
    """
    minx, miny, maxx, maxy = tile.bounds
    square = box(minx, miny, maxx, maxy)
    if tile.crs.upper() == "EPSG:4326":
        return square
    epsg = int(tile.crs.split(":")[1])
    # About 1 km steps along the edges: centimetre-close to the true curved edges.
    return _project(square, _from_crs(epsg), 1_000.0)
