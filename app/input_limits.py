"""Bounds on the size and nesting of user text, checked before any parser sees it.

The parsers the service hands user text to recurse on nesting, and not all of them fail
gracefully: ``cql2`` 0.6 (Rust) overflows its stack on ``NOT (`` x1200 or ``-`` x5000 and
kills the process (every request in flight with it), takes minutes on ``NOT `` x3000 and
gigabytes on ``abs(`` x3000; ``json.loads`` raises ``RecursionError`` near 1000 levels;
the JSON schema validation of a CQL2 filter costs ~40 ms per level of nesting. So nesting
is measured here without parsing: JSON by counting brackets outside strings (C-speed:
regex, ``bytes.translate``, a numpy cumulative sum), cql2-text by a token scan that
over-estimates the depth of the expression tree the parser would build.

Every check raises ``BadRequestError`` (400, too deep) or ``TooLargeError`` (413, too
long) naming the input and the ``Settings`` field of the limit. Nothing here imports
FastAPI: the catalog engine and the routers both call it.
"""

import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.errors import BadRequestError, TooLargeError
from app.settings import Settings, default_settings

# A JSON string, escapes included; possessive quantifiers so an unterminated string is
# one linear scan, not a backtracking one.
_JSON_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPENERS = np.frombuffer(b"[{", np.uint8)
_BLOCK = 1 << 20  # brackets per numpy block: bounds the scan's memory to ~10 MB

# cql2-text tokens: literals first (their content is not syntax), then numbers (so the
# '-' of 1e-5 is not an operator), words, and operator symbols.
_CQL2_TOKEN = re.compile(
    r"""'(?:[^']|'')*+'?"""  # 'string' ('' escapes a quote); unterminated: to the end
    r'|"[^"]*+"?'  # "quoted identifier"
    r"|(?P<number>\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)"
    r"|(?P<word>[A-Za-z_][\w:.]*)"
    r"|(?P<symbol><>|<=|>=|[-+*/%^=<>(),\[\]])",
)
# Words that combine their operands into one n-ary node rather than nesting them.
_CQL2_JUNCTIONS = frozenset({"and", "or"})
_CQL2_OPERATOR_WORDS = frozenset({"not", "like", "between", "in", "is", "div"})


@dataclass(frozen=True)
class InputLimits:
    """The parser bounds of one service (``Settings`` fields of the same names)."""

    max_json_depth: int
    max_filter_length: int
    max_filter_depth: int
    max_search_list_items: int
    # Vertices of one geometry (app.geometry_limits); None: no limit.
    max_geometry_vertices: int | None

    @classmethod
    def from_settings(cls, settings: Settings) -> "InputLimits":
        """The limits of ``settings`` (an ``app.settings.Settings``)."""
        return cls(
            max_json_depth=settings.max_json_depth,
            max_filter_length=settings.max_filter_length,
            max_filter_depth=settings.max_filter_depth,
            max_search_list_items=settings.max_search_list_items,
            max_geometry_vertices=settings.max_geometry_vertices,
        )


#: The limits of the default settings (parsers called without a service's limits).
DEFAULT_LIMITS = InputLimits.from_settings(default_settings())


def json_depth(data: bytes | str) -> int:
    """The deepest nesting of arrays and objects in JSON text, without parsing it.

    Brackets inside strings do not count; the text need not be valid JSON (an
    unbalanced closing bracket only lowers the count after it).

    Args:
        data: JSON text.

    Returns:
        0 for a scalar, 1 for ``[]`` or ``{"a": 1}``, 2 for ``[[1]]`` ...

    """
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    elif (encoding := json.detect_encoding(data)).startswith(("utf-16", "utf-32")):
        # json.loads(bytes) reads UTF-16/32 too: scanned as bytes, a string holding U+0122
        # (bytes 22 01) closed a string early and hid any nesting after it from the count.
        data = data.decode(encoding, "replace").encode("utf-8")
    brackets = _JSON_STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for start in range(0, len(brackets), _BLOCK):
        block = np.frombuffer(brackets[start : start + _BLOCK], np.uint8)
        steps = np.where(np.isin(block, _OPENERS), 1, -1)
        levels = depth + np.cumsum(steps)
        deepest = max(deepest, int(levels.max()))
        depth = int(levels[-1])
    return deepest


def value_depth(value: Any) -> int:
    """The deepest nesting of lists/tuples and dicts in a parsed value (no recursion).

    Args:
        value: a parsed JSON value (e.g. a GeoJSON geometry).

    Returns:
        0 for a scalar, 1 for ``[]`` or ``{}``, 2 for ``[[1]]`` ...

    """
    deepest = 0
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list | tuple):
            children = node
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _too_deep(what: str, depth: int, setting: str, limit: int, unit: str) -> BadRequestError:
    return BadRequestError(f"{what}: nested {depth} {unit} deep, over the limit {setting}={limit}")


def check_json_depth(data: bytes | str, limit: int, what: str = "body") -> None:
    """Refuse JSON text nested deeper than ``limit`` (400 naming ``max_json_depth``)."""
    depth = json_depth(data)
    if depth > limit:
        raise _too_deep(what, depth, "max_json_depth", limit, "levels")


def parse_json(data: bytes | str, limit: int, what: str = "body") -> Any:
    """JSON text parsed, after its depth is checked (400 naming ``what``, never a 500).

    Args:
        data: The JSON text.
        limit: The deepest nesting accepted (``settings.max_json_depth``).
        what: What the text is, in error messages (``body``, ``request``).

    Raises:
        BadRequestError: Too deep, or not JSON (the parser's reason).

    """
    check_json_depth(data, limit, what)
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
        raise BadRequestError(f"{what}: not JSON ({error})") from None


def check_value_depth(value: Any, limit: int, what: str) -> None:
    """Refuse a parsed value (GeoJSON ...) nested deeper than ``limit`` (400)."""
    depth = value_depth(value)
    if depth > limit:
        raise _too_deep(what, depth, "max_json_depth", limit, "levels")


def cql2_text_depth(text: str) -> int:
    """An upper bound of the depth of the expression tree of a cql2-text filter.

    Each parenthesis (grouping, function call, list, geometry) is a level; within a
    level, each operator of an operand (``NOT``, ``-``, ``+``, comparisons ...) may nest
    one level deeper (``1+1+1`` is a chain of binary nodes); ``AND`` / ``OR`` start a new
    operand of one n-ary node, as does a comma.
    """
    levels = [1]  # per open parenthesis: the nesting reached by the current operand
    deepest = 1
    for match in _CQL2_TOKEN.finditer(text):
        symbol, word = match["symbol"], match["word"]
        if symbol in ("(", "["):
            levels.append(levels[-1] + 1)
        elif symbol in (")", "]"):
            if len(levels) > 1:
                levels.pop()
        elif symbol == ",":
            levels[-1] = (levels[-2] + 1) if len(levels) > 1 else 1
        elif symbol is not None or (word is not None and word.lower() in _CQL2_OPERATOR_WORDS):
            levels[-1] += 1
        elif word is not None and word.lower() in _CQL2_JUNCTIONS:
            levels[-1] = (levels[-2] + 2) if len(levels) > 1 else 2
        deepest = max(deepest, levels[-1])
    return deepest


def cql2_json_depth(value: Any) -> int:
    """The nesting of CQL2 operations (``{"op": ...}`` objects) in a cql2-json value."""
    deepest = 0
    stack = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            if "op" in node:
                depth += 1
                deepest = max(deepest, depth)
            stack.extend((child, depth) for child in node.values())
        elif isinstance(node, list | tuple):
            stack.extend((child, depth) for child in node)
    return deepest


def check_list_length(name: str, value: Any, limits: InputLimits) -> None:
    """Refuse a list (or comma-separated string) of more than ``max_search_list_items``."""
    if isinstance(value, str):
        count = value.count(",") + 1
    elif isinstance(value, list | tuple):
        count = len(value)
    else:
        return
    if count > limits.max_search_list_items:
        raise TooLargeError(
            f"{name}: {count} entries, over the limit "
            f"max_search_list_items={limits.max_search_list_items}"
        )


def check_filter_length(text: str, limits: InputLimits, what: str = "filter") -> None:
    """Refuse filter text over ``max_filter_length`` characters (413)."""
    if len(text) > limits.max_filter_length:
        raise TooLargeError(
            f"{what}: {len(text)} characters, over the limit "
            f"max_filter_length={limits.max_filter_length}"
        )


def check_filter(value: Any, limits: InputLimits, what: str = "filter") -> None:
    """Refuse a cql2-text string, or a parsed cql2-json value, too long or too deep.

    Raises:
        TooLargeError: text over ``max_filter_length`` characters (413).
        BadRequestError: nested deeper than ``max_filter_depth`` operations, or JSON
            deeper than ``max_json_depth`` levels (400).

    """
    if isinstance(value, str):
        check_filter_length(value, limits, what)
        depth = cql2_text_depth(value)
    else:
        check_value_depth(value, limits.max_json_depth, what)
        depth = cql2_json_depth(value)
    if depth > limits.max_filter_depth:
        raise _too_deep(what, depth, "max_filter_depth", limits.max_filter_depth, "operations")
