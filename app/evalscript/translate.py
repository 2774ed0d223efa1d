"""evaluatePixel over whole arrays: an abstract interpreter of the script's syntax tree.

The script is not compiled to Python text: its tree is walked once per call with every
per-pixel value a numpy array (one element per pixel, float64) and every value the script
builds from constants alone a Python scalar, list or dict. What JavaScript decides per pixel
is decided with masks:

- ``if``/``else`` and early ``return``: each statement runs under a mask (the pixels that
  reach it); an assignment writes ``where(mask, new, old)``; a ``return`` writes the pixels
  of the mask into the function's result and marks them done, so later statements run for
  the others only.
- ``a && b``, ``a || b``, ``c ? a : b``: both sides are computed and picked per pixel with
  JavaScript's truthiness (0 and NaN are false) and its rule that ``&&``/``||`` return an
  operand, not a boolean.
- user functions are inlined at each call (recursion is refused); arrow functions passed to
  ``.map`` and friends likewise.

Values computed from constants alone stay Python scalars, so ``const gain = 2.5`` costs nothing
per pixel and a static ``if`` takes one branch. Everything runs in float64 and outputs are
cast to float32 at the end: V8 computes in float64, and float32 arithmetic drifts past 1e-6
relative on scripts with cancellation (EVI's denominator). The band-math expression path
computes in float64 too.

Anything outside this (loops, ``sort``, ``Date``, classes, ``this``, per-pixel array indices,
assignments to globals from evaluatePixel: state kept across pixels) raises ``Refused`` naming
the line:column and the construct; the caller then runs the script in V8. Acceptance does not
depend on pixel values: the trial run at parse time walks every branch.
"""

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.errors import BadRequestError
from app.evalscript import helpers
from app.evalscript.parse import ParsedScript, where


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
    scope: "Scope"


@dataclass(eq=False)
class Builtin:
    """A function of Math or of Sentinel Hub's library: fn(interpreter, args, node)."""

    name: str
    fn: Callable[["Interpreter", list[Any], Any], Any]


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


@dataclass(eq=False)
class Scope:
    """Variable bindings; ``function`` scopes take ``var``, block scopes ``let``/``const``."""

    parent: "Scope | None"
    function: bool = False
    is_global: bool = False
    values: dict[str, Any] = field(default_factory=dict)
    consts: set[str] = field(default_factory=set)

    def find(self, name: str) -> "Scope | None":
        scope: Scope | None = self
        while scope is not None:
            if name in scope.values:
                return scope
            scope = scope.parent
        return None

    def function_scope(self) -> "Scope":
        scope = self
        while not scope.function and scope.parent is not None:
            scope = scope.parent
        return scope


@dataclass
class Frame:
    """One function call: its accumulated result and the pixels that returned."""

    result: Any = UNDEF
    done: np.ndarray | None = None
    returned_all: bool = False


Mask = np.ndarray | None

# ---------------------------------------------------------------------------- values


def is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, float | int):
        return True
    return isinstance(value, np.ndarray) and value.dtype != np.bool_


def is_bool(value: Any) -> bool:
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


def _js_int32(value: Any) -> Any:
    with np.errstate(all="ignore"):
        number = np.nan_to_num(np.trunc(value), nan=0.0, posinf=0.0, neginf=0.0)
        wrapped = np.mod(number, 2.0**32)
        return np.where(wrapped >= 2.0**31, wrapped - 2.0**32, wrapped).astype(np.int64)


def _bitwise(op: str, a: Any, b: Any) -> Any:
    x, y = _js_int32(a), _js_int32(b)
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
    return _js_int32(result.astype(np.float64)).astype(np.float64)


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
    a_nullish = a is UNDEF or a is NULL
    b_nullish = b is UNDEF or b is NULL
    if a_nullish or b_nullish:
        return a_nullish and b_nullish
    numeric = (is_number(a) or is_bool(a), is_number(b) or is_bool(b))
    if all(numeric) or (any(numeric) and (isinstance(a, str) or isinstance(b, str))):
        return scalar(np.equal(to_number(a, node), to_number(b, node)))
    return strict_equal(a, b, node)


# ------------------------------------------------------------------------- builtins


def _math1(function: Callable[[Any], Any]) -> Callable[["Interpreter", list[Any], Any], Any]:
    def call(_: "Interpreter", args: list[Any], node: Any) -> Any:
        value = to_number(args[0], node) if args else math.nan
        with np.errstate(all="ignore"):
            return scalar(function(value))

    return call


def _math2(function: Callable[[Any, Any], Any]) -> Callable[["Interpreter", list[Any], Any], Any]:
    def call(_: "Interpreter", args: list[Any], node: Any) -> Any:
        a = to_number(args[0], node) if args else math.nan
        b = to_number(args[1], node) if len(args) > 1 else math.nan
        with np.errstate(all="ignore"):
            return scalar(function(a, b))

    return call


def _reduce(function: Callable[[Any, Any], Any], empty: float) -> Callable[..., Any]:
    def call(_: "Interpreter", args: list[Any], node: Any) -> Any:
        result: Any = empty
        for arg in args:
            result = function(result, to_number(arg, node))
        return scalar(result)

    return call


def _hypot(_: "Interpreter", args: list[Any], node: Any) -> Any:
    total: Any = 0.0
    for arg in args:
        total = np.add(total, np.square(to_number(arg, node)))
    return scalar(np.sqrt(total))


def _refuse(name: str) -> Callable[..., Any]:
    def call(_: "Interpreter", args: list[Any], node: Any) -> Any:
        raise Refused(name, node)

    return call


MATH = Namespace(
    "Math",
    {
        "abs": Builtin("abs", _math1(np.abs)),
        "sqrt": Builtin("sqrt", _math1(np.sqrt)),
        "cbrt": Builtin("cbrt", _math1(np.cbrt)),
        "exp": Builtin("exp", _math1(np.exp)),
        "expm1": Builtin("expm1", _math1(np.expm1)),
        "log": Builtin("log", _math1(np.log)),
        "log10": Builtin("log10", _math1(np.log10)),
        "log2": Builtin("log2", _math1(np.log2)),
        "log1p": Builtin("log1p", _math1(np.log1p)),
        "floor": Builtin("floor", _math1(np.floor)),
        "ceil": Builtin("ceil", _math1(np.ceil)),
        "round": Builtin("round", _math1(helpers.js_round)),
        "trunc": Builtin("trunc", _math1(np.trunc)),
        "sign": Builtin("sign", _math1(np.sign)),
        "sin": Builtin("sin", _math1(np.sin)),
        "cos": Builtin("cos", _math1(np.cos)),
        "tan": Builtin("tan", _math1(np.tan)),
        "asin": Builtin("asin", _math1(np.arcsin)),
        "acos": Builtin("acos", _math1(np.arccos)),
        "atan": Builtin("atan", _math1(np.arctan)),
        "sinh": Builtin("sinh", _math1(np.sinh)),
        "cosh": Builtin("cosh", _math1(np.cosh)),
        "tanh": Builtin("tanh", _math1(np.tanh)),
        "asinh": Builtin("asinh", _math1(np.arcsinh)),
        "acosh": Builtin("acosh", _math1(np.arccosh)),
        "atanh": Builtin("atanh", _math1(np.arctanh)),
        "fround": Builtin(
            "fround",
            _math1(
                lambda x: (
                    np.float64(np.float32(x))
                    if np.ndim(x) == 0
                    else np.asarray(x, np.float32).astype(np.float64)
                )
            ),
        ),
        "atan2": Builtin("atan2", _math2(np.arctan2)),
        "pow": Builtin("pow", _math2(np.power)),
        "min": Builtin("min", _reduce(np.minimum, math.inf)),
        "max": Builtin("max", _reduce(np.maximum, -math.inf)),
        "hypot": Builtin("hypot", _hypot),
        "random": Builtin("random", _refuse("Math.random")),
        "PI": math.pi,
        "E": math.e,
        "LN2": math.log(2),
        "LN10": math.log(10),
        "LOG2E": 1 / math.log(2),
        "LOG10E": 1 / math.log(10),
        "SQRT2": math.sqrt(2),
        "SQRT1_2": math.sqrt(0.5),
    },
)


def _index(_: "Interpreter", args: list[Any], node: Any) -> Any:
    return scalar(helpers.index(to_number(args[0], node), to_number(args[1], node)))


def _inverse(_: "Interpreter", args: list[Any], node: Any) -> Any:
    return scalar(helpers.inverse(to_number(args[0], node)))


def _limits(value: Any, node: Any) -> list[float]:
    static = to_static(value, node)
    if not isinstance(static, list) or not all(isinstance(v, float | int) for v in static):
        raise Refused("limits that are not a list of numbers", node)
    return [float(v) for v in static]


def _color_blend(_: "Interpreter", args: list[Any], node: Any) -> Any:
    value = to_number(args[0], node)
    colors = to_python(args[2], node)
    if not isinstance(colors, list):
        raise Refused("colorBlend colours that are not a list", node)
    return to_js(helpers.color_blend(value, _limits(args[1], node), colors))


def _value_interpolate(_: "Interpreter", args: list[Any], node: Any) -> Any:
    values = to_python(args[2], node)
    if not isinstance(values, list):
        raise Refused("valueInterpolate values that are not a list", node)
    return to_js(
        helpers.value_interpolate(to_number(args[0], node), _limits(args[1], node), values)
    )


def _color_map(_: "Interpreter", args: list[Any], node: Any) -> Any:
    colors = to_python(args[2], node)
    if not isinstance(colors, list):
        raise Refused("colorMap colours that are not a list", node)
    return to_js(helpers.color_map(to_number(args[0], node), _limits(args[1], node), colors))


def _is_nan(_: "Interpreter", args: list[Any], node: Any) -> Any:
    return scalar(np.isnan(to_number(args[0] if args else UNDEF, node)))


def _is_finite(_: "Interpreter", args: list[Any], node: Any) -> Any:
    return scalar(np.isfinite(to_number(args[0] if args else UNDEF, node)))


def _number(_: "Interpreter", args: list[Any], node: Any) -> Any:
    return to_number(args[0], node) if args else 0.0


def _boolean(_: "Interpreter", args: list[Any], node: Any) -> Any:
    return truthy(args[0]) if args else False


def _helper_args(args: list[Any], node: Any) -> list[Any]:
    return [to_static(arg, node) for arg in args]


def _numbers(values: list[Any], defaults: list[float]) -> list[float]:
    out = list(defaults)
    for i, value in enumerate(values[: len(defaults)]):
        if value is not None:
            out[i] = float(value)
    return out


def _make(name: str, args: list[Any], node: Any) -> HelperObject:
    static = _helper_args(args, node)
    try:
        if name == "ColorRampVisualizer":
            extra = [None if v is None else float(v) for v in static[1:3]]
            return HelperObject(name, helpers.ColorRampVisualizer(static[0], *extra))
        if name == "ColorGradientVisualizer":
            extra = _numbers(static[1:3], [0.0, 1.0])
            return HelperObject(name, helpers.ColorGradientVisualizer(static[0], *extra))
        if name == "ColorMapVisualizer":
            return HelperObject(name, helpers.ColorMapVisualizer(static[0]))
        visualizers = {
            "HighlightCompressVisualizer": helpers.HighlightCompressVisualizer,
            "HighlightCompressVisualizerSingle": helpers.HighlightCompressVisualizerSingle,
            "DefaultVisualizer": helpers.DefaultVisualizer,
        }
        return HelperObject(name, visualizers[name](*_numbers(static, [0.0, 1.0, 1.0, 0.0, 1.0])))
    except (TypeError, ValueError, IndexError, ZeroDivisionError) as error:
        raise Refused(f"new {name} with these arguments ({error})", node) from None


def _static_constructor(cls: str, method: str) -> Builtin:
    def call(_: "Interpreter", args: list[Any], node: Any) -> Any:
        static = _helper_args(args, node)
        if cls == "ColorMapVisualizer":
            return HelperObject(cls, helpers.ColorMapVisualizer(helpers.ColorMapVisualizer.DEFAULT))
        low, high = _numbers(static, [0.0, 1.0])
        return HelperObject(cls, helpers.ColorGradientVisualizer.preset(method, low, high))

    return Builtin(f"{cls}.{method}", call)


def _helper_namespace(name: str) -> Namespace:
    members: dict[str, Any] = {}
    if name == "ColorGradientVisualizer":
        members = {
            m: _static_constructor(name, m) for m in helpers.ColorGradientVisualizer._PRESETS
        }
    elif name == "ColorMapVisualizer":
        members = {"createDefaultColorMap": _static_constructor(name, "createDefaultColorMap")}
    return Namespace(name, members, constructor=lambda args, node: _make(name, args, node))


HELPER_CLASSES = (
    "ColorRampVisualizer",
    "ColorGradientVisualizer",
    "ColorMapVisualizer",
    "HighlightCompressVisualizer",
    "HighlightCompressVisualizerSingle",
    "DefaultVisualizer",
)


def global_values() -> dict[str, Any]:
    """The names every script sees: Math, Sentinel Hub's library, a few JS globals."""
    values: dict[str, Any] = {
        "Math": MATH,
        "NaN": math.nan,
        "Infinity": math.inf,
        "undefined": UNDEF,
        "index": Builtin("index", _index),
        "inverse": Builtin("inverse", _inverse),
        "colorBlend": Builtin("colorBlend", _color_blend),
        "valueInterpolate": Builtin("valueInterpolate", _value_interpolate),
        "colorMap": Builtin("colorMap", _color_map),
        "isNaN": Builtin("isNaN", _is_nan),
        "isFinite": Builtin("isFinite", _is_finite),
        "Number": Namespace(
            "Number",
            {
                "isNaN": Builtin("Number.isNaN", _is_nan),
                "isFinite": Builtin("Number.isFinite", _is_finite),
                "MAX_VALUE": 1.7976931348623157e308,
                "MIN_VALUE": 5e-324,
                "EPSILON": 2.0**-52,
                "POSITIVE_INFINITY": math.inf,
                "NEGATIVE_INFINITY": -math.inf,
            },
            constructor=None,
        ),
        "Boolean": Builtin("Boolean", _boolean),
    }
    values["Number"].members["__call__"] = Builtin("Number", _number)
    for name in HELPER_CLASSES:
        values[name] = _helper_namespace(name)
    return values


# ---------------------------------------------------------------------- interpreter

_LOOPS = {
    "ForStatement": "'for' loops",
    "ForInStatement": "'for-in' loops",
    "ForOfStatement": "'for-of' loops",
    "WhileStatement": "'while' loops",
    "DoWhileStatement": "'do-while' loops",
    "SwitchStatement": "'switch'",
    "TryStatement": "'try'",
    "ThrowStatement": "'throw'",
    "ClassDeclaration": "classes",
    "ClassExpression": "classes",
    "BreakStatement": "'break'",
    "ContinueStatement": "'continue'",
    "LabeledStatement": "labels",
    "WithStatement": "'with'",
    "DebuggerStatement": "'debugger'",
    "ThisExpression": "'this'",
    "TemplateLiteral": "template strings",
    "TaggedTemplateExpression": "tagged templates",
    "YieldExpression": "generators",
    "AwaitExpression": "'await'",
    "Super": "'super'",
    "MetaProperty": "'new.target'",
}
_ARRAY_METHODS_REFUSED = (
    "sort",
    "filter",
    "find",
    "findIndex",
    "splice",
    "fill",
    "join",
    "flat",
    "flatMap",
    "shift",
    "unshift",
    "lastIndexOf",
    "copyWithin",
    "entries",
    "keys",
    "values",
    "toString",
)


class Interpreter:
    """Walks statements and expressions with per-pixel masks (see the module docstring).

    Args:
        exhaustive: Walk every branch, even where no pixel goes (the trial run that decides
            whether the script is translatable: acceptance must not depend on the data).

    """

    def __init__(self, exhaustive: bool):
        self.exhaustive = exhaustive
        self.stack: list[Any] = []
        self.in_pixel = False

    # ----------------------------------------------------------------- statements

    def active(self, mask: Mask, frame: Frame) -> Mask:
        if frame.done is None:
            return mask
        return ~frame.done if mask is None else mask & ~frame.done

    def skip(self, mask: Mask) -> bool:
        return mask is not None and not self.exhaustive and not mask.any()

    def hoist(self, statements: list[Any], scope: Scope) -> None:
        for statement in statements:
            if statement.type == "FunctionDeclaration":
                if statement.id is None:
                    raise Refused("an anonymous function declaration", statement)
                scope.values[statement.id.name] = Closure(statement, scope)

    def run_block(self, statements: list[Any], scope: Scope, frame: Frame, mask: Mask) -> None:
        self.hoist(statements, scope)
        for statement in statements:
            if frame.returned_all:
                return
            active = self.active(mask, frame)
            if self.skip(active):
                return
            self.statement(statement, scope, frame, active)

    def statement(self, node: Any, scope: Scope, frame: Frame, mask: Mask) -> None:
        kind_ = node.type
        if kind_ == "ExpressionStatement":
            self.expr(node.expression, scope, mask)
        elif kind_ == "VariableDeclaration":
            self.declare(node, scope, mask)
        elif kind_ == "ReturnStatement":
            value = UNDEF if node.argument is None else self.expr(node.argument, scope, mask)
            if mask is None:
                frame.result = value
                frame.returned_all = True
            else:
                frame.result = merge(mask, value, frame.result, node)
                frame.done = mask.copy() if frame.done is None else frame.done | mask
        elif kind_ == "IfStatement":
            test = truthy(self.expr(node.test, scope, mask))
            if isinstance(test, bool):
                branch = node.consequent if test else node.alternate
                if branch is not None:
                    self.run_block([branch], Scope(scope), frame, mask)
                return
            yes = and_mask(mask, test)
            self.run_block([node.consequent], Scope(scope), frame, yes)
            if node.alternate is not None:
                self.run_block([node.alternate], Scope(scope), frame, and_mask(mask, ~test))
        elif kind_ == "BlockStatement":
            self.run_block(node.body, Scope(scope), frame, mask)
        elif kind_ in ("FunctionDeclaration", "EmptyStatement"):
            return
        elif kind_ in _LOOPS:
            raise Refused(_LOOPS[kind_], node)
        else:
            raise Refused(f"'{kind_}'", node)

    def declare(self, node: Any, scope: Scope, mask: Mask) -> None:
        for declarator in node.declarations:
            value = UNDEF if declarator.init is None else self.expr(declarator.init, scope, mask)
            if node.kind == "var":
                target = scope.function_scope()
                self.bind(declarator.id, value, target, mask, var=True)
            else:
                self.bind(declarator.id, value, scope, mask, const=node.kind == "const")

    def bind(
        self,
        pattern: Any,
        value: Any,
        scope: Scope,
        mask: Mask,
        *,
        var: bool = False,
        const: bool = False,
    ) -> None:
        """Declare the names of a pattern (identifier, [a, b], {a, b}) in ``scope``."""
        if pattern.type == "Identifier":
            name = pattern.name
            if var and name in scope.values:
                scope.values[name] = merge(mask, value, scope.values[name], pattern)
            else:
                scope.values[name] = value
            if const:
                scope.consts.add(name)
        elif pattern.type == "AssignmentPattern":
            if value is UNDEF:
                value = self.expr(pattern.right, scope, mask)
            self.bind(pattern.left, value, scope, mask, var=var, const=const)
        elif pattern.type == "ArrayPattern":
            if not isinstance(value, JSArray):
                raise Refused("destructuring a value that is not an array", pattern)
            for i, element in enumerate(pattern.elements):
                if element is None:
                    continue
                if element.type == "RestElement":
                    rest = JSArray(list(value.items[i:]))
                    self.bind(element.argument, rest, scope, mask, var=var, const=const)
                    break
                item = value.items[i] if i < len(value.items) else UNDEF
                self.bind(element, item, scope, mask, var=var, const=const)
        elif pattern.type == "ObjectPattern":
            for prop in pattern.properties:
                if prop.type != "Property" or prop.computed:
                    raise Refused("this destructuring", prop)
                key = prop.key.name if prop.key.type == "Identifier" else str(prop.key.value)
                self.bind(
                    prop.value,
                    self.member_value(value, key, prop),
                    scope,
                    mask,
                    var=var,
                    const=const,
                )
        else:
            raise Refused(f"the pattern '{pattern.type}'", pattern)

    # ---------------------------------------------------------------- expressions

    def expr(self, node: Any, scope: Scope, mask: Mask) -> Any:
        kind_ = node.type
        method = getattr(self, f"e_{kind_}", None)
        if method is None:
            raise Refused(_LOOPS.get(kind_, f"'{kind_}'"), node)
        return method(node, scope, mask)

    def e_Literal(self, node: Any, scope: Scope, mask: Mask) -> Any:
        if node.regex is not None:
            raise Refused("regular expressions", node)
        value = node.value
        if value is None:
            return NULL
        if isinstance(value, bool | str):
            return value
        return float(value)

    def e_Identifier(self, node: Any, scope: Scope, mask: Mask) -> Any:
        found = scope.find(node.name)
        if found is None:
            raise Refused(f"the name '{node.name}'", node)
        return found.values[node.name]

    def e_ArrayExpression(self, node: Any, scope: Scope, mask: Mask) -> Any:
        items: list[Any] = []
        for element in node.elements:
            if element is None:
                items.append(UNDEF)
            elif element.type == "SpreadElement":
                spread = self.expr(element.argument, scope, mask)
                if not isinstance(spread, JSArray):
                    raise Refused(f"spreading {kind(spread)}", element)
                items.extend(spread.items)
            else:
                items.append(self.expr(element, scope, mask))
        return JSArray(items)

    def e_ObjectExpression(self, node: Any, scope: Scope, mask: Mask) -> Any:
        props: dict[str, Any] = {}
        for prop in node.properties:
            if prop.type == "SpreadElement":
                spread = self.expr(prop.argument, scope, mask)
                if not isinstance(spread, JSObject):
                    raise Refused(f"spreading {kind(spread)} into an object", prop)
                props.update(spread.props)
                continue
            if prop.kind != "init":
                raise Refused("getters and setters", prop)
            props[self.key(prop, scope, mask)] = self.expr(prop.value, scope, mask)
        return JSObject(props)

    def key(self, prop: Any, scope: Scope, mask: Mask) -> str:
        if not prop.computed:
            if prop.key.type == "Identifier":
                return prop.key.name
            return js_string(self.e_Literal(prop.key, scope, mask))
        value = self.expr(prop.key, scope, mask)
        if isinstance(value, str | float | bool):
            return js_string(value)
        raise Refused("a computed key that varies per pixel", prop)

    def e_SequenceExpression(self, node: Any, scope: Scope, mask: Mask) -> Any:
        value = UNDEF
        for expression in node.expressions:
            value = self.expr(expression, scope, mask)
        return value

    def e_ArrowFunctionExpression(self, node: Any, scope: Scope, mask: Mask) -> Any:
        return Closure(node, scope)

    e_FunctionExpression = e_ArrowFunctionExpression

    def e_UnaryExpression(self, node: Any, scope: Scope, mask: Mask) -> Any:
        op = node.operator
        if op == "typeof":
            if node.argument.type == "Identifier" and scope.find(node.argument.name) is None:
                return "undefined"
            return type_of(self.expr(node.argument, scope, mask))
        if op == "delete":
            raise Refused("'delete'", node)
        value = self.expr(node.argument, scope, mask)
        if op == "!":
            test = truthy(value)
            return (not test) if isinstance(test, bool) else ~test
        if op == "void":
            return UNDEF
        number = to_number(value, node)
        if op == "-":
            return scalar(np.negative(number))
        if op == "+":
            return number
        if op == "~":
            return scalar(_bitwise("^", number, -1.0))
        raise Refused(f"the operator '{op}'", node)

    def e_BinaryExpression(self, node: Any, scope: Scope, mask: Mask) -> Any:
        left = self.expr(node.left, scope, mask)
        right = self.expr(node.right, scope, mask)
        return self.binary(node.operator, left, right, node)

    def binary(self, op: str, left: Any, right: Any, node: Any) -> Any:
        if op == "+" and (isinstance(left, str) or isinstance(right, str)):
            if isinstance(left, str) and isinstance(right, str):
                return left + right
            raise Refused("string concatenation with numbers", node)
        if op in ARITHMETIC:
            with np.errstate(all="ignore"):
                return scalar(ARITHMETIC[op](to_number(left, node), to_number(right, node)))
        if op in COMPARISONS:
            if isinstance(left, str) and isinstance(right, str):
                return COMPARISONS[op](left, right).item()
            return scalar(COMPARISONS[op](to_number(left, node), to_number(right, node)))
        if op in ("===", "!=="):
            equal = strict_equal(left, right, node)
            return equal if op == "===" else _not(equal)
        if op in ("==", "!="):
            equal = loose_equal(left, right, node)
            return equal if op == "==" else _not(equal)
        if op in BITWISE:
            return scalar(_bitwise(op, to_number(left, node), to_number(right, node)))
        raise Refused(f"the operator '{op}'", node)

    def e_LogicalExpression(self, node: Any, scope: Scope, mask: Mask) -> Any:
        left = self.expr(node.left, scope, mask)
        op = node.operator
        if op == "??":
            if left is UNDEF or left is NULL:
                return self.expr(node.right, scope, mask)
            return left
        test = truthy(left)
        if isinstance(test, bool):
            # JavaScript short-circuits: the other side is not evaluated.
            if (op == "&&") == test:
                return self.expr(node.right, scope, mask)
            return left
        right = self.expr(node.right, scope, mask)
        if op == "&&":
            return select(test, right, left, node)
        return select(test, left, right, node)

    def e_ConditionalExpression(self, node: Any, scope: Scope, mask: Mask) -> Any:
        test = truthy(self.expr(node.test, scope, mask))
        if isinstance(test, bool):
            return self.expr(node.consequent if test else node.alternate, scope, mask)
        yes = self.expr(node.consequent, scope, and_mask(mask, test))
        no = self.expr(node.alternate, scope, and_mask(mask, ~test))
        return select(test, yes, no, node)

    # assignments

    def e_AssignmentExpression(self, node: Any, scope: Scope, mask: Mask) -> Any:
        op = node.operator
        value = self.expr(node.right, scope, mask)
        if op != "=":
            value = self.binary(op[:-1], self.expr(node.left, scope, mask), value, node)
        if node.left.type in ("ArrayPattern", "ObjectPattern"):
            raise Refused("destructuring assignment", node)
        self.assign(node.left, value, scope, mask)
        return value

    def e_UpdateExpression(self, node: Any, scope: Scope, mask: Mask) -> Any:
        old = to_number(self.expr(node.argument, scope, mask), node)
        new = scalar(np.add(old, 1.0 if node.operator == "++" else -1.0))
        self.assign(node.argument, new, scope, mask)
        return new if node.prefix else old

    def assign(self, target: Any, value: Any, scope: Scope, mask: Mask) -> None:
        if target.type == "Identifier":
            name = target.name
            found = scope.find(name)
            if found is None:
                raise Refused(f"assigning the undeclared name '{name}'", target)
            if found.is_global and self.in_pixel:
                raise Refused(
                    f"assigning the global '{name}' from evaluatePixel (state kept across pixels)",
                    target,
                )
            if name in found.consts:
                raise Refused(f"assigning the constant '{name}'", target)
            found.values[name] = merge(mask, value, found.values[name], target)
            return
        if target.type == "MemberExpression":
            obj = self.expr(target.object, scope, mask)
            key = self.member_key(target, scope, mask)
            if isinstance(obj, JSArray | JSObject) and obj.frozen and self.in_pixel:
                raise Refused("changing a global array or object from evaluatePixel", target)
            if isinstance(obj, JSArray):
                if not isinstance(key, float) or key != int(key) or key < 0 or key > 10_000:
                    raise Refused("this array index", target)
                i = int(key)
                while len(obj.items) <= i:
                    obj.items.append(UNDEF)
                obj.items[i] = merge(mask, value, obj.items[i], target)
                return
            if isinstance(obj, JSObject):
                name = js_string(key)
                obj.props[name] = merge(mask, value, obj.props.get(name, UNDEF), target)
                return
            raise Refused(f"assigning a property of {kind(obj)}", target)
        raise Refused(f"assigning to '{target.type}'", target)

    # members and calls

    def member_key(self, node: Any, scope: Scope, mask: Mask) -> Any:
        if not node.computed:
            return node.property.name
        key = self.expr(node.property, scope, mask)
        if isinstance(key, float | str | bool):
            return key
        raise Refused("an index that varies per pixel", node.property)

    def e_MemberExpression(self, node: Any, scope: Scope, mask: Mask) -> Any:
        obj = self.expr(node.object, scope, mask)
        key = self.member_key(node, scope, mask)
        return self.member_value(obj, key, node)

    def member_value(self, obj: Any, key: Any, node: Any) -> Any:
        if isinstance(obj, JSArray):
            if key == "length":
                return float(len(obj.items))
            if isinstance(key, float):
                if key == int(key) and 0 <= key < len(obj.items):
                    return obj.items[int(key)]
                return UNDEF
            raise Refused(f"Array.prototype.{key} used as a value", node)
        if isinstance(obj, JSObject):
            return obj.props.get(js_string(key), UNDEF)
        if isinstance(obj, Namespace):
            if key in obj.members:
                return obj.members[key]
            raise Refused(f"{obj.name}.{key}", node)
        if isinstance(obj, str) and key == "length":
            return float(len(obj))
        if isinstance(obj, Opaque):
            raise Refused(f"using '{obj.name}'", node)
        raise Refused(f"reading '{key}' of {kind(obj)}", node)

    def e_CallExpression(self, node: Any, scope: Scope, mask: Mask) -> Any:
        args = self.arguments(node.arguments, scope, mask)
        callee = node.callee
        if callee.type == "MemberExpression":
            obj = self.expr(callee.object, scope, mask)
            key = self.member_key(callee, scope, mask)
            if isinstance(obj, JSArray):
                return self.array_method(obj, key, args, scope, mask, node)
            if isinstance(obj, HelperObject):
                return self.helper_method(obj, key, args, mask, node)
            function = self.member_value(obj, key, callee)
        else:
            function = self.expr(callee, scope, mask)
        return self.call(function, args, mask, node)

    def arguments(self, nodes_: list[Any], scope: Scope, mask: Mask) -> list[Any]:
        args: list[Any] = []
        for arg in nodes_:
            if arg.type == "SpreadElement":
                spread = self.expr(arg.argument, scope, mask)
                if not isinstance(spread, JSArray):
                    raise Refused(f"spreading {kind(spread)}", arg)
                args.extend(spread.items)
            else:
                args.append(self.expr(arg, scope, mask))
        return args

    def e_NewExpression(self, node: Any, scope: Scope, mask: Mask) -> Any:
        callee = (
            self.expr(node.callee, scope, mask)
            if node.callee.type != "Identifier" or scope.find(node.callee.name)
            else None
        )
        if isinstance(callee, Namespace) and callee.constructor is not None:
            return callee.constructor(self.arguments(node.arguments, scope, mask), node)
        name = node.callee.name if node.callee.type == "Identifier" else "this constructor"
        raise Refused(f"'new {name}'", node)

    def call(self, function: Any, args: list[Any], mask: Mask, node: Any) -> Any:
        if isinstance(function, Builtin):
            return function.fn(self, args, node)
        if isinstance(function, Namespace) and "__call__" in function.members:
            return function.members["__call__"].fn(self, args, node)
        if isinstance(function, Closure):
            return self.call_closure(function, args, mask, node)
        if isinstance(function, Opaque):
            raise Refused(f"using '{function.name}'", node)
        raise Refused(f"calling {kind(function)}", node)

    def call_closure(self, closure: Closure, args: list[Any], mask: Mask, node: Any) -> Any:
        fn = closure.node
        if fn in self.stack:
            name = fn.id.name if getattr(fn, "id", None) is not None else "an anonymous function"
            raise Refused(f"recursion ({name} calls itself)", node)
        if fn.generator or fn.isAsync:
            raise Refused("generators and async functions", fn)
        scope = Scope(closure.scope, function=True)
        for i, param in enumerate(fn.params):
            if param.type == "RestElement":
                self.bind(param.argument, JSArray(list(args[i:])), scope, None)
                break
            self.bind(param, args[i] if i < len(args) else UNDEF, scope, None)
        self.stack.append(fn)
        try:
            if fn.expression:
                return self.expr(fn.body, scope, mask)
            frame = Frame()
            self.run_block(fn.body.body, scope, frame, mask)
            return frame.result
        finally:
            self.stack.pop()

    def helper_method(
        self, obj: HelperObject, key: Any, args: list[Any], mask: Mask, node: Any
    ) -> Any:
        if key == "process":
            return to_js(obj.obj.process(to_number(args[0] if args else UNDEF, node)))
        if key == "processList" and args and isinstance(args[0], JSArray):
            return JSArray([to_js(obj.obj.process(to_number(v, node))) for v in args[0].items])
        raise Refused(f"{obj.name}.{key}", node)

    def array_method(
        self, array: JSArray, key: Any, args: list[Any], scope: Scope, mask: Mask, node: Any
    ) -> Any:
        items = array.items
        if key in ("map", "forEach", "some", "every", "reduce") and (
            not args or not isinstance(args[0], Closure | Builtin)
        ):
            raise Refused(f"Array.prototype.{key} without a function", node)
        if key == "map":
            return JSArray(
                [self.call(args[0], [v, float(i), array], mask, node) for i, v in enumerate(items)]
            )
        if key == "forEach":
            for i, v in enumerate(items):
                self.call(args[0], [v, float(i), array], mask, node)
            return UNDEF
        if key in ("some", "every"):
            result: Any = key == "every"
            for i, v in enumerate(items):
                test = truthy(self.call(args[0], [v, float(i), array], mask, node))
                result = (result | test) if key == "some" else (result & test)
            return scalar(result)
        if key == "reduce":
            start = 0
            if len(args) > 1:
                total = args[1]
            elif items:
                total, start = items[0], 1
            else:
                raise Refused("reduce of an empty array without a start value", node)
            for i in range(start, len(items)):
                total = self.call(args[0], [total, items[i], float(i), array], mask, node)
            return total
        if key == "includes":
            target = args[0] if args else UNDEF
            found: Any = False
            for v in items:
                equal = strict_equal(v, target, node)
                if is_number(v) and is_number(target):
                    equal = equal | (np.isnan(v) & np.isnan(target))
                found = found | equal
            return scalar(found)
        if key == "indexOf":
            target = args[0] if args else UNDEF
            position: Any = -1.0
            for i in reversed(range(len(items))):
                position = scalar(
                    np.where(strict_equal(items[i], target, node), float(i), position)
                )
            return position
        if key == "concat":
            out = list(items)
            for arg in args:
                out.extend(arg.items if isinstance(arg, JSArray) else [arg])
            return JSArray(out)
        if key == "slice":
            bounds = [to_static(a, node) for a in args[:2]]
            if not all(isinstance(b, float) for b in bounds):
                raise Refused("slice bounds that vary per pixel", node)
            start = int(bounds[0]) if bounds else None
            end = int(bounds[1]) if len(bounds) > 1 else None
            return JSArray(items[start:end])
        if key in ("push", "pop", "reverse"):
            if array.frozen and self.in_pixel:
                raise Refused("changing a global array from evaluatePixel", node)
            if key == "push":
                items.extend(merge(mask, a, UNDEF, node) for a in args)
                return float(len(items))
            if mask is not None:
                raise Refused(f"Array.prototype.{key} inside a per-pixel branch", node)
            if key == "pop":
                return items.pop() if items else UNDEF
            items.reverse()
            return array
        if key in _ARRAY_METHODS_REFUSED:
            raise Refused(f"Array.prototype.{key}", node)
        raise Refused(f"the array method '{key}'", node)


def js_string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value == int(value):
        return str(int(value))
    return str(value)


def type_of(value: Any) -> str:
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


def _not(value: Any) -> Any:
    return (not value) if isinstance(value, bool) else ~value


def select(test: np.ndarray, yes: Any, no: Any, node: Any) -> Any:
    return merge(test, yes, no, node)


# ----------------------------------------------------------------------- the script


class Translation:
    """A script's evaluatePixel, accepted by the translator (else ``Refused`` at construction).

    Args:
        parsed: The parsed script.

    Raises:
        Refused: A construct the translator does not handle (with line:column).
        BadRequestError: The script returns something its setup() does not declare.

    """

    def __init__(self, parsed: ParsedScript):
        self.parsed = parsed
        self.outputs = parsed.setup.outputs
        function = parsed.functions["evaluatePixel"]
        if function.generator or function.isAsync:
            raise Refused("generators and async functions", function)
        self.function = function
        scope = Scope(None, function=True, is_global=True)
        scope.values.update(global_values())
        interpreter = Interpreter(exhaustive=True)
        interpreter.hoist(list(parsed.program.body), scope)
        for statement in parsed.statements:
            interpreter.statement(statement, scope, Frame(), None)
        for value in scope.values.values():
            _freeze(value)
        self.globals = scope
        # The trial run: every branch walked, so acceptance does not depend on pixel values.
        names = [band for band in parsed.setup.inputs if band != "dataMask"]
        trial = {name: np.array([[0.5, 0.25, 0.0]], dtype=np.float32) for name in names}
        self.run(trial, np.array([[True, True, False]]), exhaustive=True)

    def run(
        self, bands: Mapping[str, np.ndarray], valid: np.ndarray, *, exhaustive: bool = False
    ) -> dict[str, np.ndarray]:
        """evaluatePixel over every pixel (the contract of ``Evalscript.evaluate``)."""
        shape = np.shape(valid)
        n = int(np.prod(shape))
        sample: dict[str, Any] = {}
        for band in self.parsed.setup.inputs:
            if band == "dataMask":
                sample[band] = np.asarray(valid, dtype=np.float64).reshape(n)
            else:
                sample[band] = np.asarray(bands[band], dtype=np.float64).reshape(n)
        interpreter = Interpreter(exhaustive=exhaustive)
        interpreter.in_pixel = True
        params = self.function.params
        args: list[Any] = [JSObject(sample, frozen=False)]
        names = ("scenes", "inputMetadata", "customData", "outputMetadata")
        args.extend(
            Opaque(f"evaluatePixel's argument '{name}'")
            for name in names[: max(0, len(params) - 1)]
        )
        with np.errstate(all="ignore"):
            result = interpreter.call_closure(
                Closure(self.function, self.globals), args, None, self.function
            )
            return self._outputs(result, shape, n)

    def _outputs(self, result: Any, shape: tuple[int, ...], n: int) -> dict[str, np.ndarray]:
        node = self.function
        if isinstance(result, JSObject):
            declared = {output_id for output_id, _, _ in self.outputs}
            extra = [key for key in result.props if key not in declared]
            if extra:
                raise _bad(
                    f"evaluatePixel returns output '{extra[0]}', not declared in setup()", node
                )
            values = {}
            for output_id, _, _ in self.outputs:
                if output_id not in result.props:
                    raise _bad(f"evaluatePixel returns no output '{output_id}'", node)
                values[output_id] = result.props[output_id]
        elif len(self.outputs) == 1:
            values = {self.outputs[0][0]: result}
        else:
            raise _bad(
                f"evaluatePixel must return an object with the {len(self.outputs)} outputs "
                "of setup() ({ id: [values], ... })",
                node,
            )
        out: dict[str, np.ndarray] = {}
        for output_id, bands, _ in self.outputs:
            value = values[output_id]
            items = value.items if isinstance(value, JSArray) else [value]
            if len(items) != bands:
                raise _bad(
                    f"evaluatePixel returns {len(items)} values for output '{output_id}' "
                    f"declared with {bands} bands",
                    node,
                )
            array = np.empty((bands, n), dtype=np.float32)
            for i, item in enumerate(items):
                if isinstance(item, JSArray | JSObject | Closure | Builtin | HelperObject | str):
                    raise _bad(f"output '{output_id}' band {i} is {kind(item)}, not a number", node)
                array[i] = to_number(item, node)
            out[output_id] = array.reshape((bands, *shape))
        return out


def _bad(message: str, node: Any) -> BadRequestError:
    return BadRequestError(f"evalscript: {where(node)}{message}")


def _freeze(value: Any) -> None:
    if isinstance(value, JSArray):
        if not value.frozen:
            value.frozen = True
            for item in value.items:
                _freeze(item)
    elif isinstance(value, JSObject) and not value.frozen:
        value.frozen = True
        for item in value.props.values():
            _freeze(item)
