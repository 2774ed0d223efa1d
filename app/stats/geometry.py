"""Request geometries: parsed, validated, counted and reprojected (vectors only, never rasters).

Coordinates are always (x, y) = (easting, northing) or (lon, lat), as in GeoJSON and in
Sentinel Hub requests, whatever axis order the CRS officially has.
"""

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import shapely
import shapely.geometry
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError

from app.crs_input import crs_text_error
from app.errors import BadRequestError, TooLargeError
from app.geometry_limits import VERTICES_SETTING, check_geometry
from app.stats.models import Bounds

# Edges in degrees are split below this length before reprojection (see ``reproject``).
_MAX_DEGREE_SEGMENT = 0.01


@lru_cache(maxsize=64)
def parse_crs(text: str) -> CRS:
    """Parse an EPSG code, OGC URL (``http://www.opengis.net/def/crs/EPSG/0/32633``) or URN.

    Raises:
        BadRequestError: Not a CRS pyproj knows.

    """
    refusal = crs_text_error(text) if isinstance(text, str) else None
    if refusal is not None:
        # PROJ opens the grid and init files a CRS names (+nadgrids=/any/file).
        raise BadRequestError(f"input.bounds.properties.crs: '{text}' refused: {refusal}")
    try:
        return CRS.from_user_input(text)
    except (CRSError, TypeError) as error:
        raise BadRequestError(
            f"input.bounds.properties.crs: unknown CRS '{text}' ({error})"
        ) from None


@lru_cache(maxsize=256)
def _transformer(source: str, target: str) -> Transformer:
    return Transformer.from_crs(parse_crs(source), parse_crs(target), always_xy=True)


@lru_cache(maxsize=256)
def same_crs(source: str, target: str) -> bool:
    """Whether two CRS names denote the same CRS."""
    return source == target or parse_crs(source) == parse_crs(target)


def reproject(
    geometries: Sequence[shapely.Geometry], source: str, target: str
) -> list[shapely.Geometry]:
    """Reproject geometries' vertices from ``source`` to ``target`` CRS, all at once.

    Edges of geometries in a geographic CRS are first split below 0.01 degree, so that a
    long edge follows its course in the source CRS; field-sized edges stay as they are.

    Args:
        geometries: Geometries in ``source`` coordinates.
        source: Source CRS name.
        target: Target CRS name.

    Returns:
        The geometries in ``target`` coordinates (the same objects when the CRS are equal).

    """
    if same_crs(source, target):
        return list(geometries)
    array = np.asarray(geometries, dtype=object)
    if parse_crs(source).is_geographic:
        array = shapely.segmentize(array, _MAX_DEGREE_SEGMENT)
    transformer = _transformer(source, target)

    def project(xy: np.ndarray) -> np.ndarray:
        x, y = transformer.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    return list(shapely.transform(array, project))


def pixel_size_in(
    resolution: tuple[float, float], source: str, target: str, at: tuple[float, float]
) -> tuple[float, float]:
    """Convert a pixel size given in ``source`` CRS units into ``target`` CRS units.

    Measured locally at point ``at`` (in ``source`` coordinates): resx degrees of
    longitude at latitude 46 become about resx * 77 km in UTM metres.

    Returns:
        (resx, resy) in ``target`` units.

    """
    resx, resy = resolution
    if same_crs(source, target):
        return resx, resy
    transformer = _transformer(source, target)
    x, y = at
    xs, ys = transformer.transform([x, x + resx, x], [y, y, y + resy])
    return (
        float(np.hypot(xs[1] - xs[0], ys[1] - ys[0])),
        float(np.hypot(xs[2] - xs[0], ys[2] - ys[0])),
    )


def non_finite(geometries: Sequence[shapely.Geometry]) -> np.ndarray:
    """Which geometries have a coordinate that is not a finite number (boolean array).

    A reprojection gives infinite coordinates where the target CRS is not defined (a
    transverse Mercator zone 90 degrees from its meridian, say).
    """
    array = np.asarray(geometries, dtype=object)
    coordinates, index = shapely.get_coordinates(array, return_index=True)
    bad = np.zeros(len(array), dtype=bool)
    bad[index[~np.isfinite(coordinates).all(axis=1)]] = True
    return bad


def check_coordinates(geometry: shapely.Geometry, field: str, crs: str | None = None) -> None:
    """Refuse non-finite coordinates, and lon/lat outside [-180, 180] x [-90, 90].

    Args:
        geometry: The geometry, in ``crs`` coordinates.
        field: Request field named in error messages.
        crs: The geometry's CRS; when geographic, its coordinates are checked against the
            range of longitudes and latitudes (a projected CRS's domain is checked when the
            geometry is reprojected: see ``non_finite``).

    Raises:
        BadRequestError: What is wrong with the coordinates.

    """
    if non_finite([geometry])[0]:
        raise BadRequestError(f"{field}: coordinates must be finite numbers")
    if crs is not None and parse_crs(crs).is_geographic:
        minx, miny, maxx, maxy = geometry.bounds
        if minx < -180 or maxx > 180 or miny < -90 or maxy > 90:
            raise BadRequestError(
                f"{field}: coordinates outside the range of {crs} (longitude -180 to 180, "
                f"latitude -90 to 90): bounds {minx:g}, {miny:g}, {maxx:g}, {maxy:g}"
            )


def polygonal(
    value: Mapping[str, Any] | shapely.Geometry,
    field: str,
    max_vertices: int | None = None,
    crs: str | None = None,
) -> shapely.Geometry:
    """Turn GeoJSON (or a shapely geometry) into a valid, non-empty (multi)polygon.

    Invalid polygons (self-intersecting rings ...) are repaired with ``make_valid``; only
    their polygonal parts count.

    Args:
        value: A GeoJSON Polygon / MultiPolygon (a Feature's geometry) or shapely geometry.
        field: Request field named in error messages.
        max_vertices: Refuse geometries with more vertices (the ``max_geometry_vertices``
            limit), counted on GeoJSON before shapely parses it.
        crs: The geometry's CRS, for ``check_coordinates``.

    Returns:
        A Polygon or MultiPolygon with positive area.

    Raises:
        BadRequestError: Not GeoJSON, not polygonal, empty, over ``max_vertices``, or with
            coordinates ``check_coordinates`` refuses.

    """
    if isinstance(value, shapely.Geometry):
        geometry = value
        if max_vertices is not None and vertex_count(geometry) > max_vertices:
            raise BadRequestError(
                f"{field}: {vertex_count(geometry)} vertices, over the limit "
                f"{VERTICES_SETTING}={max_vertices}"
            )
    else:
        try:
            check_geometry(value, field, max_vertices)
        except TooLargeError as error:
            # A 400 like every other refusal of one feature (compute_many keeps going).
            raise BadRequestError(error.message) from None
        try:
            geometry = shapely.geometry.shape(value)
        except Exception as error:  # shapely raises several types for bad GeoJSON
            raise BadRequestError(f"{field}: invalid GeoJSON geometry ({error})") from None
    if geometry.geom_type not in ("Polygon", "MultiPolygon", "GeometryCollection"):
        raise BadRequestError(
            f"{field}: a {geometry.geom_type} has no area; give a Polygon or MultiPolygon"
        )
    check_coordinates(geometry, field, crs)
    if geometry.geom_type == "GeometryCollection" or not geometry.is_valid:
        geometry = shapely.make_valid(geometry)
        parts = [
            p for p in shapely.get_parts(geometry) if p.geom_type in ("Polygon", "MultiPolygon")
        ]
        geometry = shapely.union_all(parts) if parts else shapely.Polygon()
    if geometry.is_empty or geometry.area <= 0:
        raise BadRequestError(f"{field}: the geometry is empty (no area)")
    return geometry


def bounds_geometry(bounds: Bounds, max_vertices: int | None = None) -> shapely.Geometry:
    """The request's area: its geometry, its bbox, or their intersection when both are given.

    Raises:
        BadRequestError: Neither given, or the area is empty.

    """
    crs = bounds.properties.crs
    parse_crs(crs)
    geometry = None
    if bounds.geometry is not None:
        geometry = polygonal(bounds.geometry, "input.bounds.geometry", max_vertices, crs)
    if bounds.bbox is not None:
        minx, miny, maxx, maxy = bounds.bbox
        if not np.isfinite(bounds.bbox).all():
            raise BadRequestError("input.bounds.bbox: coordinates must be finite numbers")
        if not (minx < maxx and miny < maxy):
            raise BadRequestError("input.bounds.bbox: the bbox is empty (min must be below max)")
        box = shapely.box(minx, miny, maxx, maxy)
        check_coordinates(box, "input.bounds.bbox", crs)
        geometry = (
            box if geometry is None else polygonal(geometry.intersection(box), "input.bounds")
        )
    if geometry is None:
        raise BadRequestError("input.bounds: give a geometry or a bbox")
    return geometry


def vertex_count(geometry: shapely.Geometry) -> int:
    """Return the number of coordinates of a geometry."""
    return int(shapely.get_num_coordinates(geometry))
