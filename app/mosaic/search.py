"""Registered searches: a STAC search normalized, hashed into a stable id, with metadata.

A mosaic is named by the search that finds its items. ``normalize_search`` reads a search
body with ``app.catalog.query.search_from_body`` (so a bad search is a 400 naming the
parameter) and writes it back in one canonical form, whose hash is the search id:

- ``limit`` and ``token`` are not part of a mosaic (the whole search is the mosaic): a
  ``limit`` is dropped, a ``token`` is refused;
- no ``collections`` means the configured collection (``settings.collection``);
- ``ids`` and ``collections`` are sets: sorted, duplicates dropped;
- numbers in ``query`` are floats (``{"lt": 20}`` and ``{"lt": 20.0}`` are one search);
- everything else as ``search_to_body`` writes it (UTC datetimes, float bboxes and
  coordinates, cql2-json filters, sortby kept in its order: it matters);
- canonical JSON: sorted keys, no spaces.

Registering the same search twice therefore gives the same id, whatever the key order,
number spelling or datetime form the client used. Metadata (name, description, default
render parameters, zoom range) is not part of the id: registering again with other
metadata updates it.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app.catalog.base import SearchQuery
from app.catalog.query import search_from_body, search_to_body
from app.errors import BadRequestError, TerratilerError, TooLargeError
from app.expressions import get_preset
from app.input_limits import (
    DEFAULT_LIMITS,
    InputLimits,
    check_json_depth,
    check_value_depth,
)
from app.mosaic.reader import PIXEL_SELECTIONS
from app.ordering import ITEM_ORDERS

__all__ = [
    "LAYER_PARAMETERS",
    "RENDER_PARAMETERS",
    "SearchRecord",
    "canonical_json",
    "normalize_metadata",
    "normalize_search",
    "query_pairs",
    "with_defaults",
    "search_hash",
]

#: Length of a search id (hex characters of a SHA-256).
ID_LENGTH = 32
_ID = re.compile(rf"^[0-9a-f]{{{ID_LENGTH}}}$")

#: Query parameters a search's ``metadata.defaults`` may set for its tile/map links.
RENDER_PARAMETERS = frozenset(
    {
        "preset",
        "assets",
        "expression",
        "evalscript",
        "asset_as_band",
        "mask",
        "harmonize",
        "pixel_selection",
        "order",
        "rescale",
        "color_formula",
        "colormap",
        "colormap_name",
        "return_mask",
        "nodata",
        "resampling",
        "reproject",
        "buffer",
        "padding",
        "algorithm",
        "algorithm_params",
        "tilesize",
    }
)
#: Defaults that describe the layer as a whole: a request that names a layer of its own
#: (any of these) takes none of them, since a default ``rescale`` or colormap belongs to
#: the default layer. The other defaults (``mask``, ``pixel_selection`` ...) apply to any
#: request that does not give them.
LAYER_PARAMETERS = frozenset(
    {
        "preset",
        "assets",
        "expression",
        "evalscript",
        "asset_as_band",
        "rescale",
        "color_formula",
        "colormap",
        "colormap_name",
        "algorithm",
        "algorithm_params",
    }
)
_MAX_NAME = 200


@dataclass
class SearchRecord:
    """A registered search as stored.

    Attributes:
        id: the search id (hash of ``search``).
        search: the canonical search body.
        metadata: the metadata of the latest registration.
        created_at: first registration (UTC).
        updated_at: latest registration (UTC).
    """

    id: str
    search: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def query(self, limits: InputLimits = DEFAULT_LIMITS) -> SearchQuery:
        """The search as a ``SearchQuery`` (limit/token unset: the whole search).

        Args:
            limits: The service's input bounds: a search stored before a limit (or under a
                higher one) is refused rather than parsed.

        Raises:
            TooLargeError: Its geometry is over ``limits.max_geometry_vertices`` (413).

        """
        try:
            return search_from_body(self.search, default_limit=1, max_limit=1, limits=limits)
        except TooLargeError as error:
            raise TooLargeError(
                f"search '{self.id}': {error.message}; register it again within the limits"
            ) from None


def canonical_json(value: Any) -> str:
    """Canonical JSON: sorted keys, no whitespace, ASCII."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def search_hash(search: Mapping[str, Any]) -> str:
    """The id of a canonical search body."""
    return hashlib.sha256(canonical_json(search).encode()).hexdigest()[:ID_LENGTH]


def is_search_id(value: str) -> bool:
    """Whether ``value`` has the form of a search id (before any database lookup)."""
    return bool(_ID.match(value))


def _floats(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, list | tuple):
        return [_floats(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _floats(v) for k, v in value.items()}
    return value


def normalize_search(
    body: Any,
    *,
    default_collection: str | None = None,
    limits: InputLimits = DEFAULT_LIMITS,
    max_bytes: int | None = None,
) -> tuple[SearchQuery, dict[str, Any]]:
    """Validate a search body and return it parsed and in canonical form.

    Args:
        body: a STAC item-search body (``collections``, ``ids``, ``bbox`` or ``intersects``,
            ``datetime``, ``query``, ``filter`` with ``filter-lang``, ``sortby``; ``limit``
            is ignored).
        default_collection: the collection of a search that names none.
        limits: bounds on the filter's length and nesting, and on JSON nesting.
        max_bytes: the ``max_search_bytes`` setting: the largest canonical body (None: no
            limit). A registered search is stored, listed and re-read for its mosaic.

    Returns:
        ``(query, canonical_body)``; ``search_hash(canonical_body)`` is the id.

    Raises:
        BadRequestError: naming the offending parameter.
        TooLargeError: a geometry over ``limits.max_geometry_vertices`` or a body over
            ``max_bytes`` (413).

    """
    if not isinstance(body, Mapping):
        raise BadRequestError("search: expected a JSON object (a STAC item search)")
    if body.get("token") or body.get("next"):
        raise BadRequestError(
            "token: a registered search is a whole search, not a page of one; remove it"
        )
    body = {k: v for k, v in body.items() if k not in ("limit", "token", "next")}
    query = search_from_body(body, default_limit=1, max_limit=1, limits=limits)
    if query.ids:
        query.ids = sorted(set(query.ids))
    if query.collections:
        query.collections = sorted(set(query.collections))
    elif default_collection:
        query.collections = [default_collection]
    if query.query:
        query.query = _floats(query.query)
    canonical = search_to_body(query)
    canonical.pop("limit", None)
    canonical.pop("token", None)
    text = canonical_json(canonical)
    if max_bytes is not None and len(text) > max_bytes:
        raise TooLargeError(
            f"search: {len(text)} bytes as stored, over the limit max_search_bytes={max_bytes}; "
            "use fewer ids or a simpler geometry"
        )
    # The stored form must parse back to the same search.
    return query, json.loads(text)


def _zoom(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadRequestError(f"metadata.{name}: expected an integer zoom level")
    if int(value) != value or not 0 <= value <= 30:
        raise BadRequestError(f"metadata.{name}: expected an integer between 0 and 30")
    return int(value)


#: Defaults with a fixed set of values, checked at registration rather than on every tile.
_DEFAULT_CHOICES: dict[str, tuple[str, ...]] = {
    "pixel_selection": PIXEL_SELECTIONS,
    "order": ITEM_ORDERS,
}


def _check_choice(key: str, value: Any) -> None:
    if key == "preset":  # as requests look presets up (case-insensitive)
        try:
            get_preset(value if isinstance(value, str) else repr(value))
        except BadRequestError as error:
            raise BadRequestError(f"metadata.defaults.{error.message}") from None
    choices = _DEFAULT_CHOICES.get(key)
    if choices is not None and value not in choices:
        raise BadRequestError(
            f"metadata.defaults.{key}: must be one of {', '.join(choices)}, not {value!r}"
        )


def _check_evalscript(value: Any) -> None:
    """A default evalscript parses (every tile of the search would refuse it otherwise)."""
    from app.evalscript import EvalscriptLimits, parse_evalscript  # noqa: PLC0415 (esprima)

    if not isinstance(value, str):
        raise BadRequestError("metadata.defaults.evalscript: expected a string (the script)")
    try:
        parse_evalscript(value, EvalscriptLimits.default())
    except TerratilerError as error:
        message = error.message.removeprefix("evalscript: ")
        raise BadRequestError(f"metadata.defaults.evalscript: {message}") from None


def _default_value(key: str, value: Any, limits: InputLimits) -> Any:
    scalar = (str, int, float, bool)
    _check_choice(key, value)
    if key == "evalscript":
        _check_evalscript(value)
    if isinstance(value, str):
        # colormap / algorithm_params text is json.loads'ed by each request it applies to.
        check_json_depth(value, limits.max_json_depth, f"metadata.defaults.{key}")
    if isinstance(value, scalar):
        if isinstance(value, float) and not math.isfinite(value):
            raise BadRequestError(f"metadata.defaults.{key}: not a finite number")
        return value
    if isinstance(value, list) and value and all(isinstance(v, scalar) for v in value):
        return list(value)
    if key in ("colormap", "algorithm_params") and isinstance(value, Mapping):
        check_value_depth(value, limits.max_json_depth, f"metadata.defaults.{key}")
        return json.dumps(value, separators=(",", ":"))
    raise BadRequestError(
        f"metadata.defaults.{key}: expected a string, a number, a boolean or a list of them"
    )


def query_pairs(defaults: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A search's ``metadata.defaults`` as query parameters (lists repeat the key)."""
    pairs: list[tuple[str, str]] = []
    for key, value in defaults.items():
        for item in value if isinstance(value, list) else [value]:
            pairs.append(
                (key, ("true" if item else "false") if isinstance(item, bool) else str(item))
            )
    return pairs


def with_defaults(
    query: Sequence[tuple[str, str]], defaults: Mapping[str, Any] | None
) -> list[tuple[str, str]]:
    """A request's query parameters completed with its search's ``metadata.defaults``.

    A parameter the request gives wins over its default; a request naming a layer of its
    own (any of ``LAYER_PARAMETERS``) takes no layer default (see ``LAYER_PARAMETERS``).
    """
    query = list(query)
    if not defaults:
        return query
    given = {key for key, _ in query}
    own_layer = bool(given & LAYER_PARAMETERS)
    return query + [
        (key, value)
        for key, value in query_pairs(defaults)
        if key not in given and not (own_layer and key in LAYER_PARAMETERS)
    ]


def normalize_metadata(
    metadata: Any, limits: InputLimits = DEFAULT_LIMITS, *, max_bytes: int
) -> dict[str, Any]:
    """Validate a registration's metadata.

    Known keys: ``name`` and ``description`` (strings), ``minzoom``/``maxzoom`` (override
    the zooms derived from the items), ``bounds`` (``[minx, miny, maxx, maxy]``, overrides
    the items' extent in TileJSON), ``defaults`` (query parameters of the search's layer:
    ``preset``, ``assets``, ``expression``, ``mask``, ``pixel_selection``, ``order``,
    ``rescale``, ``colormap_name`` ...; applied to requests as ``with_defaults`` says and
    carried by the links this service returns). Other keys are kept as given.

    Args:
        metadata: The ``metadata`` of a registration (None: none).
        limits: Bounds on the JSON nesting of ``defaults`` values.
        max_bytes: The ``max_search_metadata_bytes`` setting: the largest canonical body.

    Raises:
        BadRequestError: ``metadata.<key>: ...``.

    """
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise BadRequestError("metadata: expected a JSON object")
    result = dict(metadata)
    for key in ("name", "description"):
        if key in result and result[key] is not None:
            if not isinstance(result[key], str):
                raise BadRequestError(f"metadata.{key}: expected a string")
            if key == "name" and len(result[key]) > _MAX_NAME:
                raise BadRequestError(f"metadata.name: longer than {_MAX_NAME} characters")
    minzoom = _zoom("minzoom", result.get("minzoom"))
    maxzoom = _zoom("maxzoom", result.get("maxzoom"))
    if minzoom is not None and maxzoom is not None and minzoom > maxzoom:
        raise BadRequestError(f"metadata.minzoom: {minzoom} is greater than maxzoom {maxzoom}")
    if "bounds" in result and result["bounds"] is not None:
        bounds = result["bounds"]
        if (
            not isinstance(bounds, list)
            or len(bounds) != 4
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in bounds)
            or not all(math.isfinite(v) for v in bounds)
            or not (-180 <= bounds[0] <= bounds[2] <= 180 and -90 <= bounds[1] <= bounds[3] <= 90)
        ):
            raise BadRequestError(
                "metadata.bounds: expected [minx, miny, maxx, maxy] in lon/lat "
                "(-180 <= minx <= maxx <= 180, -90 <= miny <= maxy <= 90)"
            )
        result["bounds"] = [float(v) for v in bounds]
    defaults = result.get("defaults")
    if defaults is not None:
        if not isinstance(defaults, Mapping):
            raise BadRequestError("metadata.defaults: expected an object of query parameters")
        checked = {}
        for key, value in defaults.items():
            if key not in RENDER_PARAMETERS:
                raise BadRequestError(
                    f"metadata.defaults: unknown parameter '{key}' "
                    f"(one of {', '.join(sorted(RENDER_PARAMETERS))})"
                )
            checked[key] = _default_value(key, value, limits)
        if "evalscript" in checked and "expression" in checked:
            raise BadRequestError("metadata.defaults: give `expression` or `evalscript`, not both")
        result["defaults"] = checked
    if len(canonical_json(result)) > max_bytes:
        raise BadRequestError(f"metadata: larger than {max_bytes} bytes")
    return result
