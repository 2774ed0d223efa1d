"""One bound on every geometry a request brings in, counted on the raw JSON.

Geometries arrive in many places: the Statistical API's ``input.bounds.geometry``, the
tiler's ``feature`` and ``statistics`` bodies, STAC search ``intersects`` and CQL2 filter
literals, registered searches, mosaic statistics. Each one was parsed by geojson-pydantic,
shapely or GEOS before anything looked at its size: a 10^6-vertex body took 7.4 s to refuse,
and a registered 10^6-vertex search slowed every tile of its mosaic past the time limit.

``check_geometry`` walks the decoded JSON (dicts and lists, as ``json.loads`` gives them)
and stops as soon as the count passes the limit, so refusing costs at most about as much
as walking ``max_geometry_vertices`` positions (about 10 ms for 100 000), whatever the
body holds; no shapely, GEOS or pydantic object is built. It imports nothing heavier than
``app.errors``, so engine packages and routers alike can call it.
"""

import re
import sys
from collections.abc import Mapping
from itertools import islice
from typing import Any

from app.errors import TooLargeError

#: The setting every vertex count is checked against (named in every refusal).
VERTICES_SETTING = "max_geometry_vertices"
#: The setting bounding the features of a FeatureCollection.
FEATURES_SETTING = "max_geometry_features"

_SEQUENCES = (list, tuple)
#: A WKT position: two numbers apart by blanks only (``1.5 -2``). Elsewhere in cql2-text,
#: numbers are apart by commas, operators or keywords, so each match is one vertex.
_WKT_POSITION = re.compile(r"[-+]?\.?\d[\d.eE+-]*\s+[-+]?\.?\d")


def _is_position(value: Any) -> bool:
    # A position is a list of numbers: its first element is not itself a list. An empty
    # list is no position (and no vertex shapely would make).
    return isinstance(value, _SEQUENCES) and bool(value) and not isinstance(value[0], _SEQUENCES)


def _count_positions(coordinates: Any, budget: int) -> int:
    """Positions in nested coordinate lists; stops once more than ``budget`` are seen.

    An empty list (an empty ring, polygon or geometry) counts as one: a million of them
    cost shapely as much to build as a million vertices.
    """
    count = 0
    stack = [coordinates]
    while stack:
        node = stack.pop()
        if not isinstance(node, _SEQUENCES):
            continue
        if not node or not isinstance(node[0], _SEQUENCES):
            count += 1  # a position, or an empty part
        elif all(_is_position(part) for part in islice(node, min(len(node), budget - count + 1))):
            # A ring or a line: counted without a push per vertex; past the budget, the
            # positions beyond it need no look.
            count += len(node) if len(node) <= budget - count else budget + 1 - count
        else:
            stack.extend(node)
        if count > budget:
            break
    return count


def check_geometry(
    value: Any, what: str, max_vertices: int | None, max_features: int | None = None
) -> int:
    """Refuse GeoJSON with more than ``max_vertices`` vertices or ``max_features`` features.

    Call it on the decoded JSON before shapely, GEOS or pydantic parse it: the count stops
    at the limit, so a huge geometry costs no more to refuse than one at the limit. Every
    ``coordinates`` member anywhere in ``value`` counts (Geometries, Features,
    FeatureCollections, GeometryCollections, geometries inside a CQL2 filter), all
    together; ``bbox`` members do not.

    Args:
        value: Decoded JSON: dicts, lists (or tuples, as shapely's ``mapping`` gives).
        what: The request field named in the message (``intersects``, ``body`` ...).
        max_vertices: The ``max_geometry_vertices`` setting (None: no limit).
        max_features: The ``max_geometry_features`` setting (None: no limit): the most
            features one FeatureCollection may have.

    Returns:
        The number of vertices.

    Raises:
        TooLargeError: Over a limit (413), naming the field and the setting.

    """
    vertices = 0
    budget = max_vertices if max_vertices is not None else sys.maxsize
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, Mapping):
            features = node.get("features")
            if (
                max_features is not None
                and node.get("type") == "FeatureCollection"
                and isinstance(features, _SEQUENCES)
                and len(features) > max_features
            ):
                raise TooLargeError(
                    f"{what}: {len(features)} features, over the limit "
                    f"{FEATURES_SETTING}={max_features}"
                )
            for key, part in node.items():
                if key == "coordinates":
                    vertices += _count_positions(part, budget - vertices)
                    if vertices > budget:
                        raise TooLargeError(
                            f"{what}: more than {max_vertices} vertices, over the limit "
                            f"{VERTICES_SETTING}={max_vertices}"
                        )
                elif key != "bbox" and isinstance(part, Mapping | list | tuple):
                    stack.append(part)
        elif isinstance(node, _SEQUENCES):
            stack.extend(part for part in node if isinstance(part, Mapping | list | tuple))
    return vertices


def check_wkt(text: str, what: str, max_vertices: int | None) -> None:
    """Refuse WKT (a cql2-text filter's geometries) with more than ``max_vertices`` vertices.

    The count is a scan of the text for positions, before the cql2 parser spends its time
    (13 s for a 10^6-vertex polygon) on it.

    Raises:
        TooLargeError: Over the limit (413), naming the field and the setting.

    """
    if max_vertices is None:
        return
    positions = _WKT_POSITION.finditer(text)
    if next(islice(positions, max_vertices, None), None) is not None:
        raise TooLargeError(
            f"{what}: more than {max_vertices} vertices, over the limit "
            f"{VERTICES_SETTING}={max_vertices}"
        )
