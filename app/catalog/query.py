"""STAC API item-search parameters to a validated ``SearchQuery``, and back.

Two entry points read a search as it arrives (``search_from_get`` for the query string of
``GET /search``, ``search_from_body`` for the JSON body of ``POST /search``); two write one
out (``search_to_body`` for ``next`` links and upstream POSTs, ``search_to_get_params``
for GET links). Every problem raises ``BadRequestError`` whose message starts with the
parameter's name (``"bbox: ..."``), so a client knows what to fix.

Normalisation, so that ``search_from_body(search_to_body(q)) == q`` for any parsed ``q``:

- empty ``ids`` / ``collections`` lists are dropped (no constraint), not "match nothing";
- datetimes are timezone-aware UTC; a timestamp without offset is taken as UTC; a bare
  date ``YYYY-MM-DD`` means the whole (UTC) day;
- a 6-number bbox keeps its 2D part; a bbox crossing the antimeridian is refused;
- ``filter`` is stored as cql2-json (what ``cql2.Expr.to_json`` returns, numbers as floats);
- ``intersects`` is stored as plain GeoJSON (lists, floats);
- ``sortby`` fields are kept as given (``properties.`` prefix or not), because upstream
  APIs differ in which form they accept.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, time
from typing import Any

import cql2
import shapely
import shapely.geometry
from shapely.errors import GEOSException

from app.catalog.base import SearchQuery, SortField
from app.crs_input import OGC_CRS84
from app.errors import BadRequestError
from app.geometry_limits import check_geometry, check_wkt
from app.input_limits import (
    DEFAULT_LIMITS,
    InputLimits,
    check_filter,
    check_filter_length,
    check_json_depth,
    check_list_length,
    check_value_depth,
)
from app.settings import default_settings

__all__ = [
    "CQL2_OPERATORS",
    "QUERYABLE_PROPERTIES",
    "QUERY_OPERATORS",
    "format_datetime",
    "format_datetime_interval",
    "parse_datetime_interval",
    "parse_rfc3339",
    "search_from_body",
    "search_from_get",
    "search_to_body",
    "search_to_get_params",
    "typed_query_operands",
]

# The ``default_search_limit`` / ``max_search_limit`` settings' defaults are the parsers'.
_DEFAULTS = default_settings()

#: Operators of the STAC API ``query`` extension this service understands.
QUERY_OPERATORS = (
    "eq",
    "neq",
    "lt",
    "lte",
    "gt",
    "gte",
    "in",
    "startsWith",
    "endsWith",
    "contains",
)

#: Properties worth filtering Sentinel-2 L2A items on (Earth-Search v1 names). Any other
#: item property is queryable too (``additionalProperties``).
QUERYABLE_PROPERTIES: dict[str, dict[str, Any]] = {
    "id": {"title": "Item ID", "type": "string"},
    "collection": {"title": "Collection ID", "type": "string"},
    "geometry": {"title": "Footprint", "$ref": "https://geojson.org/schema/Geometry.json"},
    "datetime": {"title": "Acquisition time", "type": "string", "format": "date-time"},
    "eo:cloud_cover": {"title": "Cloud cover (%)", "type": "number", "minimum": 0, "maximum": 100},
    "platform": {"title": "Platform", "type": "string"},
    "constellation": {"title": "Constellation", "type": "string"},
    "instruments": {"title": "Instruments", "type": "array", "items": {"type": "string"}},
    "grid:code": {"title": "MGRS grid code, e.g. MGRS-32TNS", "type": "string"},
    "mgrs:utm_zone": {"title": "UTM zone", "type": "integer"},
    "mgrs:latitude_band": {"title": "MGRS latitude band", "type": "string"},
    "mgrs:grid_square": {"title": "MGRS grid square", "type": "string"},
    "proj:epsg": {"title": "EPSG code", "type": "integer"},
    "view:sun_elevation": {"title": "Sun elevation (deg)", "type": "number"},
    "view:sun_azimuth": {"title": "Sun azimuth (deg)", "type": "number"},
    "s2:processing_baseline": {"title": "Processing baseline", "type": "string"},
    "s2:nodata_pixel_percentage": {"title": "No-data pixels (%)", "type": "number"},
    "s2:vegetation_percentage": {"title": "Vegetation (%)", "type": "number"},
    "s2:water_percentage": {"title": "Water (%)", "type": "number"},
    "s2:snow_ice_percentage": {"title": "Snow and ice (%)", "type": "number"},
}

#: CQL2 operators and functions (lower case) of the standard's conformance classes that
#: the cql2 library evaluates. Anything else is a custom function nobody here implements:
#: ``cql2`` would parse and even validate it, then never match, so it is refused up front.
CQL2_OPERATORS = frozenset(
    {
        "and", "or", "not",
        "=", "<>", "<", "<=", ">", ">=",
        "like", "between", "in", "isnull", "casei", "accenti",
        "+", "-", "*", "/", "%", "^", "div",
        "s_intersects", "s_equals", "s_disjoint", "s_touches", "s_within", "s_overlaps",
        "s_crosses", "s_contains",
        "t_after", "t_before", "t_contains", "t_disjoint", "t_during", "t_equals",
        "t_finishedby", "t_finishes", "t_intersects", "t_meets", "t_metby",
        "t_overlappedby", "t_overlaps", "t_startedby", "t_starts",
        "a_equals", "a_contains", "a_containedby", "a_overlaps",
    }
)  # fmt: skip

FILTER_LANGS = ("cql2-text", "cql2-json")
_CRS84_ALIASES = {OGC_CRS84, "https://www.opengis.net/def/crs/OGC/1.3/CRS84", "OGC:CRS84"}

GEOMETRY_TYPES = (
    "Point",
    "MultiPoint",
    "LineString",
    "MultiLineString",
    "Polygon",
    "MultiPolygon",
    "GeometryCollection",
)

# RFC 3339 date-time (offset optional: naive means UTC) or a bare full-date. Checked
# before datetime.fromisoformat, which also takes ISO 8601 forms RFC 3339 does not
# ("2023-W40", "2023-10-08T18").
_RFC3339 = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?:[Tt ](?P<time>\d{2}:\d{2}:\d{2})(?P<frac>\.\d+)?(?P<tz>[Zz]|[+-]\d{2}:\d{2})?)?$"
)
_SORT_FIELD = re.compile(r"^[A-Za-z0-9_:.\-]+$")
_OPEN = ("", "..")


# --------------------------------------------------------------------------- datetime


def parse_rfc3339(value: str, *, end_of_day: bool = False, strict: bool = False) -> datetime:
    """Parse an RFC 3339 timestamp into a timezone-aware UTC datetime.

    Args:
        value: ``2023-10-08T18:02:55.276Z``, ``...+02:00``, ``...`` without offset (taken
            as UTC) or a bare date ``2023-10-08``.
        end_of_day: for a bare date, return its last microsecond instead of midnight.
        strict: accept only a full date-time with its offset (RFC 3339's ``date-time``, as
            the STAC API requires): no bare date, no missing offset.

    Returns:
        The instant, in UTC.

    Raises:
        ValueError: when ``value`` is not such a timestamp or names no real instant.

    """
    match = _RFC3339.match(value.strip())
    if match is None:
        raise ValueError(f"'{value}' is not an RFC 3339 date-time")
    date_part, time_part, frac, tz = match.group("date", "time", "frac", "tz")
    if strict and (time_part is None or tz is None):
        missing = "time" if time_part is None else "offset (Z or +hh:mm)"
        raise ValueError(f"'{value}' is not an RFC 3339 date-time (no {missing})")
    try:
        if time_part is None:
            day = datetime.fromisoformat(date_part)
            moment = time.max if end_of_day else time.min
            return datetime.combine(day.date(), moment, tzinfo=UTC)
        # fromisoformat takes at most microseconds: drop nanosecond digits rather than fail.
        frac = (frac or "")[:7]
        tz = "+00:00" if tz is None or tz in "Zz" else tz
        return datetime.fromisoformat(f"{date_part}T{time_part}{frac}{tz}").astimezone(UTC)
    except ValueError as error:  # e.g. month 13, hour 24, leap second 60
        raise ValueError(f"'{value}' is not a valid date-time ({error})") from None


def format_datetime(value: datetime) -> str:
    """Format a datetime as RFC 3339 in UTC with a ``Z`` suffix (naive means UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_datetime_interval(
    value: str, *, strict: bool = False
) -> tuple[datetime | None, datetime | None]:
    """Parse the STAC ``datetime`` parameter into ``(start, end)``.

    Args:
        value: an instant, a closed range ``a/b``, or a half-open one ``../b``, ``/b``,
            ``a/..`` or ``a/``. A bare date as an instant means that whole day.
        strict: only full date-times with offsets (``parse_rfc3339``'s ``strict``).

    Returns:
        ``(start, end)`` as UTC datetimes, ``None`` for an open end; an instant is ``(t, t)``.

    Raises:
        BadRequestError: ``"datetime: ..."`` when it does not parse, both ends are open or
            the start is after the end.

    """
    text = value.strip()
    if not text:
        raise BadRequestError("datetime: empty value")
    parts = text.split("/")
    if len(parts) > 2:
        raise BadRequestError(f"datetime: expected an instant or 'start/end', got '{value}'")
    try:
        if len(parts) == 1:
            # An instant is (t, t); a bare date stretches to its whole day.
            return (
                parse_rfc3339(text, strict=strict),
                parse_rfc3339(text, end_of_day=True, strict=strict),
            )
        first, second = (part.strip() for part in parts)
        if first in _OPEN and second in _OPEN:
            raise BadRequestError("datetime: both ends of the range are open")
        start = None if first in _OPEN else parse_rfc3339(first, strict=strict)
        end = None if second in _OPEN else parse_rfc3339(second, end_of_day=True, strict=strict)
    except ValueError as error:
        raise BadRequestError(f"datetime: {error}") from None
    if start is not None and end is not None and start > end:
        raise BadRequestError(
            f"datetime: start {format_datetime(start)} is after end {format_datetime(end)}"
        )
    return start, end


def format_datetime_interval(interval: tuple[datetime | None, datetime | None]) -> str:
    """Format ``(start, end)`` as the STAC ``datetime`` parameter (``..`` for open ends)."""
    start, end = interval
    if start is not None and start == end:
        return format_datetime(start)
    return "/".join(".." if part is None else format_datetime(part) for part in (start, end))


# --------------------------------------------------------------------------- validators


def _string_list(name: str, value: Any) -> list[str] | None:
    """Read a list of strings from a list or a comma-separated string; None if empty."""
    if value is None:
        return None
    if isinstance(value, str):
        items = [part.strip() for part in value.split(",")]
    elif isinstance(value, Sequence) and all(isinstance(part, str) for part in value):
        items = [part.strip() for part in value]
    else:
        raise BadRequestError(f"{name}: expected a list of strings")
    items = [item for item in items if item]
    return items or None


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise BadRequestError(f"{name}: {value!r} is not a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BadRequestError(f"{name}: {value!r} is not a number") from None
    if not math.isfinite(number):
        raise BadRequestError(f"{name}: {value!r} is not a finite number")
    return number


def _bbox(value: Any) -> tuple[float, float, float, float] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, Sequence):
        raise BadRequestError("bbox: expected 4 or 6 numbers")
    if len(value) not in (4, 6):
        raise BadRequestError(f"bbox: expected 4 or 6 numbers, got {len(value)}")
    numbers = [_number("bbox", part.strip() if isinstance(part, str) else part) for part in value]
    if len(numbers) == 6:
        # (minx, miny, minz, maxx, maxy, maxz): items are searched in 2D.
        numbers = [numbers[0], numbers[1], numbers[3], numbers[4]]
    minx, miny, maxx, maxy = numbers
    if not (-180 <= minx <= 180 and -180 <= maxx <= 180):
        raise BadRequestError("bbox: longitudes must be within [-180, 180]")
    if not (-90 <= miny <= 90 and -90 <= maxy <= 90):
        raise BadRequestError("bbox: latitudes must be within [-90, 90]")
    if miny > maxy:
        raise BadRequestError(f"bbox: miny {miny} is greater than maxy {maxy}")
    if minx > maxx:
        raise BadRequestError(
            f"bbox: minx {minx} is greater than maxx {maxx}; a bbox crossing the "
            "antimeridian is not supported, split it in two searches"
        )
    return minx, miny, maxx, maxy


def _plain(value: Any) -> Any:
    """Tuples to lists, ints to floats: the JSON shape shapely's ``mapping`` would give."""
    if isinstance(value, list | tuple):
        return [_plain(part) for part in value]
    if isinstance(value, dict):
        return {key: _plain(part) for key, part in value.items()}
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _intersects(value: Any, limits: InputLimits) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise BadRequestError("intersects: expected a GeoJSON geometry object")
    # shapely and _plain recurse on nested coordinates.
    check_value_depth(value, limits.max_json_depth, "intersects")
    kind = value.get("type")
    if kind not in GEOMETRY_TYPES:
        raise BadRequestError(
            f"intersects: expected a GeoJSON geometry ({', '.join(GEOMETRY_TYPES)}), "
            f"got type {kind!r}"
        )
    try:
        geometry = shapely.geometry.shape(value)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, GEOSException) as error:
        raise BadRequestError(f"intersects: invalid {kind} coordinates ({error})") from None
    if geometry.is_empty:
        raise BadRequestError(f"intersects: empty {kind}")
    minx, miny, maxx, maxy = geometry.bounds
    if not all(math.isfinite(v) for v in (minx, miny, maxx, maxy)):
        raise BadRequestError("intersects: coordinates must be finite numbers")
    if not (-180 <= minx and maxx <= 180 and -90 <= miny and maxy <= 90):
        raise BadRequestError("intersects: coordinates must be longitude/latitude (EPSG:4326)")
    if not geometry.is_valid:
        raise BadRequestError(f"intersects: invalid {kind}: {shapely.is_valid_reason(geometry)}")
    if kind == "GeometryCollection":
        return {"type": kind, "geometries": _plain(value["geometries"])}
    return {"type": kind, "coordinates": _plain(value["coordinates"])}


def _query(value: Any, limits: InputLimits) -> dict[str, dict[str, Any]] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise BadRequestError('query: expected an object like {"eo:cloud_cover": {"lt": 10}}')
    check_value_depth(value, limits.max_json_depth, "query")
    result: dict[str, dict[str, Any]] = {}
    for prop, ops in value.items():
        if not isinstance(ops, Mapping) or not ops:
            raise BadRequestError(
                f"query: '{prop}' needs an object of operators, e.g. {{'lt': 10}}"
            )
        for op, operand in ops.items():
            if op not in QUERY_OPERATORS:
                raise BadRequestError(
                    f"query: unknown operator '{op}' for '{prop}' "
                    f"(expected one of {', '.join(QUERY_OPERATORS)})"
                )
            _check_query_operand(prop, op, operand)
        result[str(prop)] = dict(ops)
    return result or None


def _check_query_operand(prop: str, op: str, operand: Any) -> None:
    scalar = (str, int, float, bool)
    if op == "in":
        if not isinstance(operand, list) or not operand:
            raise BadRequestError(f"query: '{prop}' 'in' needs a non-empty list")
        if not all(isinstance(v, scalar) for v in operand):
            raise BadRequestError(f"query: '{prop}' 'in' takes strings and numbers")
    elif op in ("startsWith", "endsWith"):
        if not isinstance(operand, str):
            raise BadRequestError(f"query: '{prop}' '{op}' needs a string")
    elif op in ("lt", "lte", "gt", "gte"):
        if isinstance(operand, bool) or not isinstance(operand, str | int | float):
            raise BadRequestError(f"query: '{prop}' '{op}' needs a number or a string")
    elif not isinstance(operand, scalar):
        raise BadRequestError(f"query: '{prop}' '{op}' needs a string, a number or a boolean")


def _as_number(value: Any, integer: bool) -> Any:
    if not isinstance(value, str):
        return value
    try:
        number = float(value)
    except ValueError:
        return value
    if not math.isfinite(number):
        return value
    return int(number) if integer and number.is_integer() else number


def typed_query_operands(query: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """``query`` with numeric strings made numbers for the numeric ``QUERYABLE_PROPERTIES``.

    pystac-client's string form (``["eo:cloud_cover<10"]``) sends ``{"lt": "10"}``; an
    upstream API may compare that string as text (``"9" > "10"``) or not at all. Only
    properties this service knows to be numeric are changed (the local catalog reads each
    operand against the item's own value instead).

    Args:
        query: a parsed ``query`` (property -> operator -> operand).

    Returns:
        A new mapping; other properties and non-numeric strings are left as they are.
    """
    typed: dict[str, dict[str, Any]] = {}
    for prop, ops in query.items():
        kind = QUERYABLE_PROPERTIES.get(prop.removeprefix("properties."), {}).get("type")
        if kind not in ("number", "integer"):
            typed[prop] = dict(ops)
            continue
        integer = kind == "integer"
        typed[prop] = {
            op: [_as_number(v, integer) for v in operand]
            if isinstance(operand, list)
            else _as_number(operand, integer)
            for op, operand in ops.items()
        }
    return typed


def _json_param(name: str, text: str | None, limits: InputLimits) -> Any:
    """Decode a GET parameter that carries JSON (``intersects``, ``query``)."""
    if text is None:
        return None
    check_json_depth(text, limits.max_json_depth, name)
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        raise BadRequestError(f"{name}: not valid JSON ({error})") from None


def _cql2_error(error: Exception) -> str:
    """Condense the cql2 parser's multi-line, caret-drawing error message to one line."""
    message = str(error)
    where = re.search(r"-->\s*(\d+):(\d+)", message)
    expected = re.search(r"=\s*(expected .*)", message)
    if where and expected:
        return f"at line {where.group(1)} column {where.group(2)}: {expected.group(1).strip()}"
    return "(" + " ".join(message.split()) + ")"


def _check_operators(node: Any) -> None:
    if isinstance(node, Mapping):
        op = node.get("op")
        if isinstance(op, str) and op.lower() not in CQL2_OPERATORS:
            raise BadRequestError(f"filter: unknown operator or function '{op}'")
        for child in node.values():
            _check_operators(child)
    elif isinstance(node, list):
        for child in node:
            _check_operators(child)


def _between_bounds(node: Any) -> Any:
    """CQL2 drafts' ``between`` with its bounds as one array, as CQL2 1.0 writes it.

    ``{"op": "between", "args": [x, [lo, hi]]}`` (what stac-api-validator and older clients
    send) becomes ``{"op": "between", "args": [x, lo, hi]}``; everything else is unchanged.
    """
    if isinstance(node, Mapping):
        node = {key: _between_bounds(child) for key, child in node.items()}
        args = node.get("args")
        if (
            str(node.get("op", "")).lower() == "between"
            and isinstance(args, list)
            and len(args) == 2
            and isinstance(args[1], list)
            and len(args[1]) == 2
        ):
            node["args"] = [args[0], *args[1]]
        return node
    if isinstance(node, list):
        return [_between_bounds(child) for child in node]
    return node


def _filter(
    value: Any, lang: str | None, crs: Any = None, limits: InputLimits = DEFAULT_LIMITS
) -> dict[str, Any] | None:
    if lang is not None and lang not in FILTER_LANGS:
        raise BadRequestError(
            f"filter-lang: must be one of {', '.join(FILTER_LANGS)}, got '{lang}'"
        )
    if crs is not None and (not isinstance(crs, str) or crs not in _CRS84_ALIASES):
        raise BadRequestError(f"filter-crs: only {OGC_CRS84} is supported, got '{crs}'")
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str) and lang == "cql2-json":
        check_filter_length(value, limits)
        check_json_depth(value, limits.max_json_depth, "filter")
        try:
            value = json.loads(value)
        except (json.JSONDecodeError, RecursionError) as error:
            raise BadRequestError(f"filter: not valid cql2-json ({error})") from None
    if not isinstance(value, str | Mapping | bool):
        raise BadRequestError("filter: expected a cql2-json object or a cql2-text string")
    # Before cql2 sees it: its parser overflows the stack (a segfault) on deep nesting.
    check_filter(value, limits)
    if isinstance(value, Mapping):
        value = _between_bounds(value)
    form = "cql2-text" if isinstance(value, str) else "cql2-json"
    # Geometry literals (s_intersects ...) count like intersects, before cql2 parses them.
    if isinstance(value, str):
        check_wkt(value, "filter", limits.max_geometry_vertices)
    else:
        check_geometry(value, "filter", limits.max_geometry_vertices)
    try:
        expr = cql2.Expr(dict(value) if isinstance(value, Mapping) else value)
    except Exception as error:  # cql2 raises a bare Exception on parse errors
        raise BadRequestError(f"filter: not valid {form} {_cql2_error(error)}") from None
    try:
        expr.validate()
    except Exception as error:
        raise BadRequestError(f"filter: not a valid CQL2 boolean expression ({error})") from None
    result = expr.to_json()
    if form == "cql2-text":  # its WKT geometries are GeoJSON now
        check_geometry(result, "filter", limits.max_geometry_vertices)
    _check_operators(result)
    if not isinstance(result, dict):
        # A bare "true" / "false" is valid CQL2 whose cql2-json is a bare boolean; store it
        # as the equivalent comparison so SearchQuery.filter is always an object.
        return {"op": "=", "args": [bool(result), True]}
    return result


def _sortby(value: Any) -> list[SortField]:
    if value is None:
        return []
    entries: list[tuple[str, str]] = []
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, Sequence):
        raise BadRequestError("sortby: expected a list of {field, direction} objects")
    for entry in value:
        if isinstance(entry, str):
            text = entry.strip()  # a "+" in a URL arrives as a space: stripped, asc
            if not text:
                continue
            direction = "desc" if text.startswith("-") else "asc"
            entries.append((text.lstrip("+-").strip(), direction))
        elif isinstance(entry, Mapping):
            name = entry.get("field")
            direction = entry.get("direction", "asc")
            if not isinstance(name, str):
                raise BadRequestError("sortby: each entry needs a string 'field'")
            if not isinstance(direction, str) or direction.lower() not in ("asc", "desc"):
                raise BadRequestError(
                    f"sortby: direction must be 'asc' or 'desc', got {direction!r}"
                )
            entries.append((name.strip(), direction.lower()))
        else:
            raise BadRequestError("sortby: expected a list of {field, direction} objects")
    fields: list[SortField] = []
    seen: set[str] = set()
    for name, direction in entries:
        if not _SORT_FIELD.match(name):
            raise BadRequestError(f"sortby: invalid field name '{name}'")
        key = name.removeprefix("properties.")
        if key in seen:
            raise BadRequestError(f"sortby: field '{key}' given twice")
        seen.add(key)
        fields.append(SortField(field=name, direction=direction))
    return fields


def _limit(value: Any, default_limit: int, max_limit: int) -> int:
    if value is None or (isinstance(value, str) and not value.strip()):
        return default_limit
    if isinstance(value, bool):
        raise BadRequestError(f"limit: must be an integer between 1 and {max_limit}")
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise BadRequestError(
                f"limit: must be an integer between 1 and {max_limit}, got '{value}'"
            ) from None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise BadRequestError(f"limit: must be an integer between 1 and {max_limit}")
    if value < 1:
        raise BadRequestError(f"limit: must be between 1 and {max_limit} (got {value})")
    # OGC API - Features (Part 1, /req/core/fc-limit-response-1): a limit above the
    # maximum is served as the maximum, not refused (pystac-client sends limit=2000).
    return min(value, max_limit)


def _token(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadRequestError("token: expected a string")
    return value


def _datetime(value: Any, strict: bool) -> tuple[datetime | None, datetime | None] | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise BadRequestError("datetime: expected a string like '2023-01-01T00:00:00Z/..'")
    return parse_datetime_interval(value, strict=strict)


def _build(
    *,
    ids: Any,
    collections: Any,
    bbox: Any,
    intersects: Any,
    datetime_: Any,
    query: Any,
    filter_: Any,
    filter_lang: Any,
    filter_crs: Any,
    sortby: Any,
    limit: Any,
    token: Any,
    default_limit: int,
    max_limit: int,
    limits: InputLimits,
    strict: bool,
) -> SearchQuery:
    for name, value in (("ids", ids), ("collections", collections), ("sortby", sortby)):
        check_list_length(name, value, limits)
    parsed_bbox = _bbox(bbox)
    # Counted on the raw JSON, before shapely parses it.
    check_geometry(intersects, "intersects", limits.max_geometry_vertices)
    parsed_intersects = _intersects(intersects, limits)
    if parsed_bbox is not None and parsed_intersects is not None:
        raise BadRequestError("intersects: cannot be combined with bbox, give only one")
    return SearchQuery(
        ids=_string_list("ids", ids),
        collections=_string_list("collections", collections),
        bbox=parsed_bbox,
        intersects=parsed_intersects,
        datetime=_datetime(datetime_, strict),
        query=_query(query, limits),
        filter=_filter(filter_, filter_lang, filter_crs, limits),
        sortby=_sortby(sortby),
        limit=_limit(limit, default_limit, max_limit),
        token=_token(token),
    )


# --------------------------------------------------------------------------- public API


def search_from_get(
    params: Mapping[str, str],
    *,
    default_limit: int = _DEFAULTS.default_search_limit,
    max_limit: int = _DEFAULTS.max_search_limit,
    limits: InputLimits = DEFAULT_LIMITS,
    strict: bool = False,
) -> SearchQuery:
    """Read a search from ``GET /search`` query parameters.

    Args:
        params: ``ids`` and ``collections`` (comma-separated), ``bbox`` (``"a,b,c,d"``, 4
            or 6 numbers), ``intersects`` (GeoJSON geometry as a JSON string),
            ``datetime``, ``query`` (JSON string), ``filter`` with ``filter-lang``
            (``cql2-text``, the default, or ``cql2-json``) and ``filter-crs``, ``sortby``
            (``"-eo:cloud_cover,+datetime"``), ``limit``, ``token`` (or ``next``). Other
            parameters are ignored; an empty value counts as absent.
        default_limit: page size when ``limit`` is absent.
        max_limit: the largest page size; a larger ``limit`` is served as this one.
        limits: bounds on the length and nesting of ``filter``, ``intersects``, ``query``,
            and on the vertices of ``intersects`` and of each filter geometry.
        strict: what the STAC API requires, as ``/catalog`` serves it: ``datetime`` only as
            full RFC 3339 date-times with offsets (else bare dates are whole days, no
            offset is UTC).

    Returns:
        The validated search.

    Raises:
        BadRequestError: naming the offending parameter.
        TooLargeError: a geometry over ``limits.max_geometry_vertices`` (413).

    """

    def get(name: str) -> str | None:
        value = params.get(name)
        return value if value is not None and value.strip() else None

    return _build(
        ids=get("ids"),
        collections=get("collections"),
        bbox=get("bbox"),
        intersects=_json_param("intersects", get("intersects"), limits),
        datetime_=get("datetime"),
        query=_json_param("query", get("query"), limits),
        filter_=get("filter"),
        filter_lang=get("filter-lang") or "cql2-text",
        filter_crs=get("filter-crs"),
        sortby=get("sortby"),
        limit=get("limit"),
        token=get("token") or get("next"),
        default_limit=default_limit,
        max_limit=max_limit,
        limits=limits,
        strict=strict,
    )


def search_from_body(
    body: Mapping[str, Any],
    *,
    default_limit: int = _DEFAULTS.default_search_limit,
    max_limit: int = _DEFAULTS.max_search_limit,
    limits: InputLimits = DEFAULT_LIMITS,
    strict: bool = False,
) -> SearchQuery:
    """Read a search from a ``POST /search`` JSON body.

    Args:
        body: ``ids`` / ``collections`` (lists of strings), ``bbox`` (4 or 6 numbers),
            ``intersects`` (GeoJSON geometry), ``datetime`` (string), ``query`` (object),
            ``filter`` (cql2-json object, or a cql2-text string), ``filter-lang``,
            ``filter-crs``, ``sortby`` (list of ``{"field", "direction"}``; the GET string
            form is accepted too), ``limit``, ``token`` (or ``next``). Other keys are
            ignored.
        default_limit: page size when ``limit`` is absent.
        max_limit: the largest page size; a larger ``limit`` is served as this one.
        limits: bounds on the length and nesting of ``filter``, ``intersects``, ``query``,
            and on the vertices of ``intersects`` and of each filter geometry.
        strict: what the STAC API requires, as ``/catalog`` serves it: ``datetime`` only as
            full RFC 3339 date-times with offsets (else bare dates are whole days, no
            offset is UTC), and ``bbox`` only as a JSON array (not the GET form's string).

    Returns:
        The validated search.

    Raises:
        BadRequestError: naming the offending parameter.
        TooLargeError: a geometry over ``limits.max_geometry_vertices`` (413).

    """
    if not isinstance(body, Mapping):
        raise BadRequestError("body: expected a JSON object")
    if strict and isinstance(body.get("bbox"), str):
        raise BadRequestError("bbox: expected an array of 4 or 6 numbers in a POST body")
    filter_lang = body.get("filter-lang", body.get("filter_lang"))
    return _build(
        ids=body.get("ids"),
        collections=body.get("collections"),
        bbox=body.get("bbox"),
        intersects=body.get("intersects"),
        datetime_=body.get("datetime"),
        query=body.get("query"),
        filter_=body.get("filter"),
        filter_lang=filter_lang,
        filter_crs=body.get("filter-crs", body.get("filter_crs")),
        sortby=body.get("sortby"),
        limit=body.get("limit"),
        token=body.get("token") or body.get("next"),
        default_limit=default_limit,
        max_limit=max_limit,
        limits=limits,
        strict=strict,
    )


def search_to_body(query: SearchQuery) -> dict[str, Any]:
    """Write ``query`` as a ``POST /search`` body (absent parts left out, ``limit`` always in).

    The page token goes in ``token``; ``filter`` is cql2-json with ``filter-lang``.
    """
    body: dict[str, Any] = {}
    if query.ids:
        body["ids"] = list(query.ids)
    if query.collections:
        body["collections"] = list(query.collections)
    if query.bbox is not None:
        body["bbox"] = list(query.bbox)
    if query.intersects is not None:
        body["intersects"] = query.intersects
    if query.datetime is not None:
        body["datetime"] = format_datetime_interval(query.datetime)
    if query.query:
        body["query"] = query.query
    if query.filter is not None:
        body["filter"] = query.filter
        body["filter-lang"] = "cql2-json"
    if query.sortby:
        body["sortby"] = [{"field": s.field, "direction": s.direction} for s in query.sortby]
    body["limit"] = query.limit
    if query.token:
        body["token"] = query.token
    return body


def _format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def search_to_get_params(query: SearchQuery) -> dict[str, str]:
    """Write ``query`` as ``GET /search`` query parameters (the caller URL-encodes them).

    ``filter`` is written as cql2-text when that text reads back to the same expression
    (it does for everything we have seen), else as cql2-json with ``filter-lang``.
    """
    params: dict[str, str] = {}
    if query.ids:
        params["ids"] = ",".join(query.ids)
    if query.collections:
        params["collections"] = ",".join(query.collections)
    if query.bbox is not None:
        params["bbox"] = ",".join(_format_number(v) for v in query.bbox)
    if query.intersects is not None:
        params["intersects"] = json.dumps(query.intersects, separators=(",", ":"))
    if query.datetime is not None:
        params["datetime"] = format_datetime_interval(query.datetime)
    if query.query:
        params["query"] = json.dumps(query.query, separators=(",", ":"))
    if query.filter is not None:
        text = cql2.Expr(query.filter).to_text()
        if cql2.Expr(text).to_json() == query.filter:
            params["filter"] = text
            params["filter-lang"] = "cql2-text"
        else:
            params["filter"] = json.dumps(query.filter, separators=(",", ":"))
            params["filter-lang"] = "cql2-json"
    if query.sortby:
        # No "+" for ascending: unencoded it would arrive as a space.
        params["sortby"] = ",".join(
            ("-" if s.direction == "desc" else "") + s.field for s in query.sortby
        )
    params["limit"] = str(query.limit)
    if query.token:
        params["token"] = query.token
    return params
