"""The names every evalscript sees: ``Math``, Sentinel Hub's helper library, a few globals.

Each is bound to its numpy version (``helpers.py``) as a translator value; what the
translator cannot do with one (``Math.random``, helper arguments that vary per pixel) raises
``Refused``.
"""

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from app.evalscript import helpers
from app.evalscript.values import (
    UNDEF,
    Builtin,
    HelperObject,
    Namespace,
    Refused,
    scalar,
    to_js,
    to_number,
    to_python,
    to_static,
    truthy,
)


def _math1(function: Callable[[Any], Any]) -> Callable[[list[Any], Any], Any]:
    def call(args: list[Any], node: Any) -> Any:
        value = to_number(args[0], node) if args else math.nan
        with np.errstate(all="ignore"):
            return scalar(function(value))

    return call


def _math2(function: Callable[[Any, Any], Any]) -> Callable[[list[Any], Any], Any]:
    def call(args: list[Any], node: Any) -> Any:
        a = to_number(args[0], node) if args else math.nan
        b = to_number(args[1], node) if len(args) > 1 else math.nan
        with np.errstate(all="ignore"):
            return scalar(function(a, b))

    return call


def _reduce(function: Callable[[Any, Any], Any], empty: float) -> Callable[..., Any]:
    def call(args: list[Any], node: Any) -> Any:
        result: Any = empty
        for arg in args:
            result = function(result, to_number(arg, node))
        return scalar(result)

    return call


def _hypot(args: list[Any], node: Any) -> Any:
    total: Any = 0.0
    for arg in args:
        total = np.add(total, np.square(to_number(arg, node)))
    return scalar(np.sqrt(total))


def _refuse(name: str) -> Callable[..., Any]:
    def call(args: list[Any], node: Any) -> Any:
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


def _index(args: list[Any], node: Any) -> Any:
    return scalar(helpers.index(to_number(args[0], node), to_number(args[1], node)))


def _inverse(args: list[Any], node: Any) -> Any:
    return scalar(helpers.inverse(to_number(args[0], node)))


def _limits(value: Any, node: Any) -> list[float]:
    static = to_static(value, node)
    if not isinstance(static, list) or not all(isinstance(v, float | int) for v in static):
        raise Refused("limits that are not a list of numbers", node)
    return [float(v) for v in static]


def _color_blend(args: list[Any], node: Any) -> Any:
    value = to_number(args[0], node)
    colors = to_python(args[2], node)
    if not isinstance(colors, list):
        raise Refused("colorBlend colours that are not a list", node)
    return to_js(helpers.color_blend(value, _limits(args[1], node), colors))


def _value_interpolate(args: list[Any], node: Any) -> Any:
    values = to_python(args[2], node)
    if not isinstance(values, list):
        raise Refused("valueInterpolate values that are not a list", node)
    return to_js(
        helpers.value_interpolate(to_number(args[0], node), _limits(args[1], node), values)
    )


def _color_map(args: list[Any], node: Any) -> Any:
    colors = to_python(args[2], node)
    if not isinstance(colors, list):
        raise Refused("colorMap colours that are not a list", node)
    return to_js(helpers.color_map(to_number(args[0], node), _limits(args[1], node), colors))


def _is_nan(args: list[Any], node: Any) -> Any:
    return scalar(np.isnan(to_number(args[0] if args else UNDEF, node)))


def _is_finite(args: list[Any], node: Any) -> Any:
    return scalar(np.isfinite(to_number(args[0] if args else UNDEF, node)))


def _number(args: list[Any], node: Any) -> Any:
    return to_number(args[0], node) if args else 0.0


def _boolean(args: list[Any], node: Any) -> Any:
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
    def call(args: list[Any], node: Any) -> Any:
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
