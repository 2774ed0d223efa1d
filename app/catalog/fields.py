"""The STAC API Fields extension: which fields of each Item a search response carries.

Spec: https://github.com/stac-api-extensions/fields (v1.0.0, "Include/Exclude Semantics").
The selection is applied to the Item JSON the ``/catalog`` router shapes, after the
catalog answered, so it works alike for every backend (``LocalCatalog``, and
``StacApiCatalog``, which does not forward ``fields`` upstream: it needs whole Items to
build ``pystac.Item`` objects).

The rules, with ``include`` "missing" only possible in a POST body (``?fields=...`` always
has an include list, possibly empty, as the spec says):

============================  =====================  ===================================
include                       exclude                returned
============================  =====================  ===================================
missing, null or empty        missing, null, empty   DEFAULT_FIELDS
``["a", "b"]``                anything               ``a``, ``b``, IDENTITY_FIELDS; minus
                                                     the excluded (but ``a``, ``b``)
missing                       ``["a"]``              the whole Item minus ``a``
null or empty                 ``["a"]``              DEFAULT_FIELDS minus ``a``
============================  =====================  ===================================

A field in both lists is included; for nested paths the most specific rule wins
(``-properties,+properties.eo:cloud_cover`` keeps only that property). A path that does not
start with a top-level Item field (``eo:cloud_cover``) means ``properties.<path>``.
No ``fields`` at all: the whole Item.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.errors import BadRequestError
from app.input_limits import InputLimits, check_list_length

#: The fields of a GeoJSON Feature / STAC Item outside ``properties``.
ITEM_TOP_LEVEL = frozenset(
    {
        "type",
        "stac_version",
        "stac_extensions",
        "id",
        "geometry",
        "bbox",
        "properties",
        "links",
        "assets",
        "collection",
    }
)

#: What ``fields=`` (or ``{"fields": {}}``) returns: the spec's default set (a valid Item),
#: plus ``stac_extensions`` and ``collection`` (an Item with extension fields in its assets,
#: or a ``collection`` link, is invalid without them) and ``start_datetime``/``end_datetime``
#: (what an Item with a null ``datetime`` has instead; absent keys cost nothing).
DEFAULT_FIELDS: tuple[str, ...] = (
    "type",
    "stac_version",
    "stac_extensions",
    "id",
    "geometry",
    "bbox",
    "links",
    "assets",
    "collection",
    "properties.datetime",
    "properties.start_datetime",
    "properties.end_datetime",
)

#: Served with any ``include`` list unless excluded by name: small strings that say which
#: Item this is (the spec allows "always include simple string fields like id and type").
IDENTITY_FIELDS: tuple[str, ...] = ("type", "stac_version", "id", "collection")

_MAX_PATH_LENGTH = 256

Path = tuple[str, ...]


@dataclass(frozen=True)
class FieldsRequest:
    """A parsed ``fields`` parameter.

    Attributes:
        include: the included paths; None when ``include`` was missing (a POST body
            without the key: exclude from the whole Item), ``()`` when null or empty.
        exclude: the excluded paths (missing, null and empty alike are ``()``).
    """

    include: tuple[str, ...] | None
    exclude: tuple[str, ...] = ()


def _path(name: str, entry: Any) -> str:
    if not isinstance(entry, str):
        raise BadRequestError(f"{name}: expected field names (strings), got {entry!r}")
    path = entry.strip()
    if len(path) > _MAX_PATH_LENGTH:
        raise BadRequestError(f"{name}: a field name is over {_MAX_PATH_LENGTH} characters")
    if path and any(not part for part in path.split(".")):
        raise BadRequestError(f"{name}: {path!r} is not a field path like 'properties.datetime'")
    return path


def _paths(name: str, value: Any, limits: InputLimits) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise BadRequestError(f"{name}: expected a list of field names, got {value!r}")
    check_list_length(name, value, limits)
    return tuple(path for entry in value if (path := _path(name, entry)))


def fields_from_get(text: str | None, limits: InputLimits) -> FieldsRequest | None:
    """Read ``?fields=``: comma-separated names, ``-`` excludes, ``+`` (or nothing) includes.

    Args:
        text: the parameter's value; None when the parameter is absent.
        limits: the bound on the number of names (``max_search_list_items``).

    Returns:
        The request; None when the parameter is absent (the whole Item is served).

    Raises:
        BadRequestError: a malformed name, naming ``fields``.
        TooLargeError: more names than ``max_search_list_items``.

    """
    if text is None:
        return None
    check_list_length("fields", text, limits)
    include: list[str] = []
    exclude: list[str] = []
    for entry in text.split(","):
        # An unencoded "+" arrives as a space, hence the strip before the prefix test.
        path = _path("fields", entry)
        if path.startswith("-"):
            exclude.append(_path("fields", path[1:]))
        elif path.startswith("+"):
            include.append(_path("fields", path[1:]))
        elif path:
            include.append(path)
    return FieldsRequest(include=tuple(p for p in include if p), exclude=tuple(exclude))


def fields_from_body(body: Mapping[str, Any], limits: InputLimits) -> FieldsRequest | None:
    """Read the ``fields`` object of a POST search body.

    Args:
        body: the whole request body.
        limits: the bound on the number of names (``max_search_list_items``).

    Returns:
        The request; None when the body has no ``fields`` key (the whole Item is served).
        ``"fields": null`` is the default set, as the spec's table says.

    Raises:
        BadRequestError: ``fields`` is not an object of string lists, naming the key.
        TooLargeError: more names than ``max_search_list_items``.

    """
    if "fields" not in body:
        return None
    value = body["fields"]
    if value is None:
        return FieldsRequest(include=())
    if not isinstance(value, Mapping):
        raise BadRequestError(
            'fields: expected an object like {"include": [...], "exclude": [...]}, '
            f"got {type(value).__name__}"
        )
    unknown = sorted(set(value) - {"include", "exclude"})
    if unknown:
        raise BadRequestError(f"fields: unknown keys {unknown}, expected include and exclude")
    include = _paths("fields.include", value["include"], limits) if "include" in value else None
    return FieldsRequest(
        include=include, exclude=_paths("fields.exclude", value.get("exclude"), limits)
    )


def _split(path: str) -> Path:
    parts = tuple(path.split("."))
    return parts if parts[0] in ITEM_TOP_LEVEL else ("properties", *parts)


def _rules(request: FieldsRequest) -> dict[Path, bool]:
    """Each path's decision: True included, False excluded; ``()`` is the whole Item.

    Later entries win: the base set (the whole Item, or the default set when ``include``
    is null or empty), then the excludes, then the explicit includes (a field in both
    lists is included).
    """
    rules: dict[Path, bool] = {}
    if request.include is None and request.exclude:
        rules[()] = True
    elif not request.include:
        rules.update({_split(path): True for path in DEFAULT_FIELDS})
    else:
        rules.update({_split(path): True for path in IDENTITY_FIELDS})
    rules.update({_split(path): False for path in request.exclude})
    rules.update({_split(path): True for path in request.include or ()})
    return rules


def _select(
    value: Mapping[str, Any], prefix: Path, rules: dict[Path, bool], inherited: bool
) -> dict[str, Any]:
    selected: dict[str, Any] = {}
    depth = len(prefix) + 1
    for key, child in value.items():
        path = (*prefix, key)
        decision = rules.get(path, inherited)
        deeper = any(len(rule) > depth and rule[:depth] == path for rule in rules)
        if deeper and isinstance(child, Mapping):
            inner = _select(child, path, rules, decision)
            if decision or inner:
                selected[key] = inner
        elif decision:
            selected[key] = child
    return selected


def select_fields(item: Mapping[str, Any], request: FieldsRequest | None) -> dict[str, Any]:
    """Keep the fields of one Item JSON that ``request`` asks for.

    Args:
        item: the Item as served (not modified).
        request: the parsed ``fields``; None keeps the whole Item.

    Returns:
        The selected Item JSON (shares unmodified sub-objects with ``item``).

    """
    if request is None:
        return dict(item)
    rules = _rules(request)
    return _select(item, (), rules, rules.get((), False))
