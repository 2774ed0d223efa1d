"""JavaScript values as the translator holds them, and the operators between them.

A number or boolean is a Python scalar when it is the same for every pixel and a numpy
array (float64 or bool, one element per pixel) when it is not. Arrays, objects and functions
are small Python objects; ``merge`` is ``where(mask, new, old)`` over all of them (how an
assignment under an ``if`` or a ternary between two arrays is written per pixel).
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.evalscript.parse import where


class Refused(Exception):
    """The translator does not handle a construct (the script may still run in V8)."""

    def __init__(self, construct: str, node: Any = None):
        self.reason = f"{where(node)}{construct}: not supported by the translator"
        super().__init__(self.reason)


class _Undefined:
    def __repr__(self) -> str:
        return "undefined"


class _Null:
    def __repr__(self) -> str:
        return "null"


UNDEF = _Undefined()
NULL = _Null()


@dataclass(eq=False)
class JSArray:
    """A JavaScript array of fixed length (items: numbers, arrays, objects ...)."""

    items: list[Any]
    frozen: bool = False


@dataclass(eq=False)
class JSObject:
    """A JavaScript object literal (or the sample)."""

    props: dict[str, Any]
    frozen: bool = False


@dataclass(eq=False)
class Closure:
    """A user function (declaration, expression or arrow) and the scope it closes over."""

    node: Any
    scope: Any  # translate.Scope


@dataclass(eq=False)
class Builtin:
    """A function of Math or of Sentinel Hub's library: ``fn(args, node)``."""

    name: str
    fn: Callable[[list[Any], Any], Any]


@dataclass(eq=False)
class Namespace:
    """``Math``, ``Number``, or a helper class with static constructors."""

    name: str
    members: dict[str, Any]
    constructor: Callable[[list[Any], Any], Any] | None = None


@dataclass(eq=False)
class HelperObject:
    """An instance of one of Sentinel Hub's visualizer classes."""

    name: str
    obj: Any


@dataclass(eq=False)
class Opaque:
    """A value the translator cannot use (evaluatePixel's ``scenes`` ...): any use refuses."""

    name: str


Mask = np.ndarray | None


def is_number(value: Any) -> bool:
    """Whether a value is a JavaScript number (scalar or per pixel)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, float | int):
        return True
    return isinstance(value, np.ndarray) and value.dtype != np.bool_


def is_bool(value: Any) -> bool:
    """Whether a value is a JavaScript boolean (scalar or per pixel)."""
    return isinstance(value, bool) or (isinstance(value, np.ndarray) and value.dtype == np.bool_)


def scalar(value: Any) -> Any:
    """0-d numpy results back to Python floats/bools (constants stay cheap)."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return bool(value) if value.dtype == np.bool_ else float(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def to_number(value: Any, node: Any) -> Any:
    """JavaScript's ToNumber for the values arithmetic meets."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, float | int):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.astype(np.float64) if value.dtype == np.bool_ else value
    if value is UNDEF:
        return math.nan
    if value is NULL:
        return 0.0
    if isinstance(value, str):
        try:
            return float(value) if value.strip() else 0.0
        except ValueError:
            return math.nan
    if isinstance(value, Opaque):
        raise Refused(f"using '{value.name}'", node)
    raise Refused(f"arithmetic on {kind(value)}", node)


def kind(value: Any) -> str:
    """A value's kind, for messages ("an array")."""
    if isinstance(value, JSArray):
        return "an array"
    if isinstance(value, JSObject | HelperObject | Namespace):
        return "an object"
    if isinstance(value, Closure | Builtin):
        return "a function"
    return type(value).__name__


def truthy(value: Any) -> Any:
    """JavaScript's truthiness: a Python bool, or a bool array per pixel."""
    if isinstance(value, bool):
        return value
    if isinstance(value, float | int):
        return value != 0 and not math.isnan(value)
    if isinstance(value, np.ndarray):
        if value.dtype == np.bool_:
            return value
        return (value != 0) & ~np.isnan(value)
    if value is UNDEF or value is NULL:
        return False
    if isinstance(value, str):
        return bool(value)
    if isinstance(value, Opaque):
        raise Refused(f"using '{value.name}'")
    return True


def and_mask(a: Mask, b: np.ndarray) -> Mask:
    """The pixels in both masks (None is every pixel)."""
    if a is None:
        return b
    return a & b


def merge(mask: Any, new: Any, old: Any, node: Any = None) -> Any:
    """``where(mask, new, old)`` over any value the translator knows."""
    if mask is None or mask is True:
        return new
    if mask is False:
        return old
    if new is old:
        return old
    if isinstance(new, JSArray) or isinstance(old, JSArray):
        if old is UNDEF or new is UNDEF:
            array = new if isinstance(new, JSArray) else old
            return JSArray(
                [
                    merge(mask, x, UNDEF, node) if array is new else merge(mask, UNDEF, x, node)
                    for x in array.items
                ]
            )
        if not (isinstance(new, JSArray) and isinstance(old, JSArray)):
            raise Refused("a value that is an array for some pixels only", node)
        length = max(len(new.items), len(old.items))
        items = [
            merge(
                mask,
                new.items[i] if i < len(new.items) else UNDEF,
                old.items[i] if i < len(old.items) else UNDEF,
                node,
            )
            for i in range(length)
        ]
        return JSArray(items)
    if isinstance(new, JSObject) or isinstance(old, JSObject):
        if old is UNDEF or new is UNDEF:
            obj = new if isinstance(new, JSObject) else old
            return JSObject(
                {
                    k: merge(mask, v, UNDEF, node) if obj is new else merge(mask, UNDEF, v, node)
                    for k, v in obj.props.items()
                }
            )
        if not (isinstance(new, JSObject) and isinstance(old, JSObject)):
            raise Refused("a value that is an object for some pixels only", node)
        keys = list(dict.fromkeys([*old.props, *new.props]))
        return JSObject(
            {k: merge(mask, new.props.get(k, UNDEF), old.props.get(k, UNDEF), node) for k in keys}
        )
    if isinstance(new, Closure | Builtin | HelperObject | Namespace | Opaque):
        if old is UNDEF:
            return new
        raise Refused("a function or object chosen per pixel", node)
    if isinstance(old, Closure | Builtin | HelperObject | Namespace | Opaque):
        if new is UNDEF:
            return old
        raise Refused("a function or object chosen per pixel", node)
    if isinstance(new, str) or isinstance(old, str):
        if new == old:
            return new
        raise Refused("strings that differ per pixel", node)
    if is_bool(new) and is_bool(old):
        return np.where(mask, new, old)
    return np.where(mask, to_number(new, node), to_number(old, node))


def to_static(value: Any, node: Any) -> Any:
    """A value made of constants only, as Python data (helper constructor arguments)."""
    if isinstance(value, JSArray):
        return [to_static(item, node) for item in value.items]
    if isinstance(value, bool | float | int | str):
        return value
    if value is UNDEF:
        return None
    raise Refused("helper arguments that vary per pixel", node)


def to_js(value: Any) -> Any:
    """A helper's Python result as translator values (lists become arrays)."""
    if isinstance(value, list | tuple):
        return JSArray([to_js(item) for item in value])
    return scalar(value)


def to_python(value: Any, node: Any) -> Any:
    """Arguments of the numpy helpers: arrays become lists, numbers stay numbers."""
    if isinstance(value, JSArray):
        return [to_python(item, node) for item in value.items]
    return to_number(value, node)


# ------------------------------------------------------------------------ operators


def js_int32(value: Any) -> Any:
    """JavaScript's ToInt32 (as int64)."""
    with np.errstate(all="ignore"):
        number = np.nan_to_num(np.trunc(value), nan=0.0, posinf=0.0, neginf=0.0)
        wrapped = np.mod(number, 2.0**32)
        return np.where(wrapped >= 2.0**31, wrapped - 2.0**32, wrapped).astype(np.int64)


def bitwise(op: str, a: Any, b: Any) -> Any:
    """A JavaScript bitwise operator: int32 operands, a float result."""
    x, y = js_int32(a), js_int32(b)
    if op == ">>>":
        result = (x & 0xFFFFFFFF) >> (y & 31)
        return result.astype(np.float64)
    if op == "&":
        result = x & y
    elif op == "|":
        result = x | y
    elif op == "^":
        result = x ^ y
    elif op == "<<":
        result = (x << (y & 31)) & 0xFFFFFFFF
    else:  # >>
        result = x >> (y & 31)
    return js_int32(result.astype(np.float64)).astype(np.float64)


ARITHMETIC: dict[str, Callable[[Any, Any], Any]] = {
    "+": np.add,
    "-": np.subtract,
    "*": np.multiply,
    "/": np.divide,
    "%": np.fmod,
    "**": np.power,
}
COMPARISONS: dict[str, Callable[[Any, Any], Any]] = {
    "<": np.less,
    "<=": np.less_equal,
    ">": np.greater,
    ">=": np.greater_equal,
}
BITWISE = ("&", "|", "^", "<<", ">>", ">>>")


def strict_equal(a: Any, b: Any, node: Any) -> Any:
    """JavaScript's ``===``."""
    if (is_number(a) and is_number(b)) or (is_bool(a) and is_bool(b)):
        return scalar(np.equal(a, b))
    if is_number(a) or is_number(b) or is_bool(a) or is_bool(b):
        return False
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    if isinstance(a, Opaque) or isinstance(b, Opaque):
        raise Refused("using evaluatePixel's extra arguments", node)
    return a is b


def loose_equal(a: Any, b: Any, node: Any) -> Any:
    """JavaScript's ``==`` for the values the translator holds."""
    a_nullish = a is UNDEF or a is NULL
    b_nullish = b is UNDEF or b is NULL
    if a_nullish or b_nullish:
        return a_nullish and b_nullish
    numeric = (is_number(a) or is_bool(a), is_number(b) or is_bool(b))
    if all(numeric) or (any(numeric) and (isinstance(a, str) or isinstance(b, str))):
        return scalar(np.equal(to_number(a, node), to_number(b, node)))
    return strict_equal(a, b, node)


def js_string(value: Any) -> str:
    """A property key as JavaScript spells it (``1`` for 1.0)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value == int(value):
        return str(int(value))
    return str(value)


def type_of(value: Any) -> str:
    """JavaScript's ``typeof``."""
    if is_bool(value):
        return "boolean"
    if is_number(value):
        return "number"
    if isinstance(value, str):
        return "string"
    if value is UNDEF:
        return "undefined"
    if isinstance(value, Closure | Builtin):
        return "function"
    if isinstance(value, Opaque):
        raise Refused(f"using '{value.name}'")
    return "object"


def js_not(value: Any) -> Any:
    """The negation of a boolean (scalar or per pixel)."""
    return (not value) if isinstance(value, bool) else ~value


def select(test: np.ndarray, yes: Any, no: Any, node: Any) -> Any:
    """``test ? yes : no`` per pixel."""
    return merge(test, yes, no, node)
