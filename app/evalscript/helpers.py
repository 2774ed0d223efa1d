"""Sentinel Hub's evalscript helper library, vectorized with numpy.

Each function takes numbers as Python floats or float64 arrays (one value per pixel) and
colours as lists, and returns what the JavaScript returns for every pixel at once. The
semantics are those of Sentinel Hub's library (V8's ``prelude.js`` implements the same ones;
the corpus tests compare the two), including what happens to NaN: a chain of ``value <=
limit`` tests is false for NaN, so NaN takes the colour the JavaScript falls through to.

- ``index(x, y)``: ``x + y != 0 ? (x - y) / (x + y) : 0``.
- ``colorBlend(value, limits, colors)``: ``colors[0]`` at or below ``limits[0]``, linear
  between neighbouring limits (``c1 * (1 - r) + c2 * r``), the last colour above (and for
  NaN). Colours are numbers or arrays. Sentinel Hub's JavaScript writes the blended colour
  into ``colors[i - 1]`` (a bug that leaks between pixels); neither engine here does.
- ``valueInterpolate(value, points, values)``: ``colorBlend`` with numbers.
- ``colorMap(value, limits, colors)``: the colour of the first limit above the value, else
  the last.
- ``ColorRampVisualizer(ramps, minVal?, maxVal?)``: ramps ``[[value, colour], ...]`` (hex
  ``0xRRGGBB`` or ``[r, g, b]`` in 0..1), sorted by value; ``minVal``/``maxVal`` move the
  ramp's first and last values there (the others linearly); ``process(v)`` is
  ``colorBlend`` over the ramp: ``[r, g, b]`` in 0..1, not rounded.
- ``ColorGradientVisualizer(valColPairs, minVal = 0, maxVal = 1)``: Sentinel Hub's: pair
  values v in 0..1 sit at ``minVal * v + maxVal * (1 - v)``; RGB channels of neighbouring
  hex colours blended and rounded to integers, then divided by 255.
- ``ColorMapVisualizer(valColPairs)``: discrete: the colour of the last pair whose value is
  <= v (scanning from the first), ``[r, g, b] / 255``.
- ``HighlightCompressVisualizer(min = 0, max = 1, gain = 1, offset = 0, gamma = 1)``:
  ``process(v)`` returns one number: ``gain * (v - min) / (max - min) + offset``, gamma,
  highlights above 0.92 compressed when ``0 < max < 1``, clamped to 0..1.
  ``HighlightCompressVisualizerSingle`` returns it as ``[v]``; ``DefaultVisualizer`` is
  the same without the highlight compression (and unclamped when gamma != 1).
"""

from collections.abc import Sequence
from typing import Any

import numpy as np

Number = Any  # float | np.ndarray (float64, one value per pixel)
JAVA_DOUBLE_MAX_VAL = 1.7976931348623157e308


def js_round(value: Number) -> Number:
    """JavaScript's ``Math.round``: halves go up (``-2.5 -> -2``), unlike numpy's even rule."""
    return np.floor(np.add(value, 0.5))


def _select(conditions: list[Any], choices: list[Number], default: Number) -> Number:
    if all(np.ndim(c) == 0 for c in conditions) and all(np.ndim(c) == 0 for c in choices):
        for condition, choice in zip(conditions, choices, strict=True):
            if bool(condition):
                return choice
        return default
    shape = np.broadcast_shapes(*(np.shape(x) for x in [*conditions, *choices, default]))
    return np.select(
        [np.broadcast_to(c, shape) for c in conditions],
        [np.broadcast_to(np.asarray(c, dtype=np.float64), shape) for c in choices],
        np.broadcast_to(np.asarray(default, dtype=np.float64), shape),
    )


def index(x: Number, y: Number) -> Number:
    """Normalized difference ``(x - y) / (x + y)``, 0 where ``x + y == 0``."""
    total = np.add(x, y)
    with np.errstate(all="ignore"):
        ratio = np.subtract(x, y) / total
    if np.ndim(ratio) == 0:
        return 0.0 if total == 0 else float(ratio)
    return np.where(total != 0, ratio, 0.0)


def inverse(x: Number) -> Number:
    """``1 / x``, Java's largest double where ``x == 0``."""
    with np.errstate(all="ignore"):
        result = np.where(np.not_equal(x, 0), np.divide(1.0, x), JAVA_DOUBLE_MAX_VAL)
    return float(result) if np.ndim(result) == 0 else result


def color_blend(value: Number, limits: Sequence[float], colors: Sequence[Any]) -> Any:
    """Sentinel Hub's ``colorBlend`` (see the module docstring).

    Args:
        value: The value per pixel.
        limits: Ascending numbers.
        colors: One number or one list of numbers per limit.

    Returns:
        A number (numbers in ``colors``) or a list of numbers (colour components).

    """
    if len(limits) == 0 or len(colors) == 0:
        return colors[0] if colors else value
    if isinstance(colors[0], list):
        plan = _Segments.of(value, limits)
        return [
            _blend_channel(value, limits, [color[c] for color in colors], plan)
            for c in range(len(colors[0]))
        ]
    return _blend_channel(value, limits, list(colors), _Segments.of(value, limits))


class _Segments:
    """Which segment of ascending limits each pixel falls in, found once for all channels.

    ``index`` is the first limit at or above the value (``len(limits)`` above the last and for
    NaN): the limit JavaScript's loop stops at. ``ratio`` is computed with the same operands
    as the JavaScript, so the blend is the same float64 to the last bit.
    """

    def __init__(self, value: np.ndarray, limits: np.ndarray):
        self.count = len(limits)
        self.index = np.searchsorted(limits, value, side="left")
        self.upper = np.clip(self.index, 1, self.count - 1)
        low, high = limits[self.upper - 1], limits[self.upper]
        with np.errstate(all="ignore"):
            self.ratio = (value - low) / (high - low)

    @classmethod
    def of(cls, value: Number, limits: Sequence[float]) -> "_Segments | None":
        array = np.asarray(limits, dtype=np.float64)
        if np.ndim(value) == 0 or len(array) < 2 or not (np.diff(array) > 0).all():
            return None  # scalars, one limit, or limits not strictly ascending: the loop
        return cls(np.asarray(value, dtype=np.float64), array)


def _blend_channel(
    value: Number, limits: Sequence[float], colors: list[Any], plan: "_Segments | None"
) -> Number:
    last = colors[len(colors) - 1]
    if plan is not None and all(np.ndim(c) == 0 for c in colors[: plan.count]):
        table = np.asarray(colors[: plan.count], dtype=np.float64)
        if len(table) == plan.count:
            with np.errstate(all="ignore"):
                blended = table[plan.upper - 1] * (1 - plan.ratio) + table[plan.upper] * plan.ratio
            below = np.where(plan.index == 0, table[0], blended)
            return np.where(plan.index >= plan.count, np.float64(last), below)
    conditions: list[Any] = [np.less_equal(value, limits[0])]
    choices: list[Number] = [colors[0]]
    with np.errstate(all="ignore"):
        for i in range(1, len(limits)):
            ratio = np.subtract(value, limits[i - 1]) / (limits[i] - limits[i - 1])
            conditions.append(np.less_equal(value, limits[i]))
            choices.append(
                np.add(
                    np.multiply(colors[i - 1], np.subtract(1, ratio)),
                    np.multiply(colors[i], ratio),
                )
            )
    return _select(conditions, choices, last)


def value_interpolate(value: Number, points: Sequence[float], values: Sequence[Number]) -> Number:
    """Sentinel Hub's ``valueInterpolate``: ``colorBlend`` over numbers."""
    return color_blend(value, points, list(values))


def color_map(value: Number, limits: Sequence[float], colors: Sequence[Any]) -> Any:
    """Sentinel Hub's ``colorMap``: the colour of the first limit above the value, else the last."""
    if colors and isinstance(colors[0], list):
        return [
            color_map(value, limits, [color[component] for color in colors])
            for component in range(len(colors[0]))
        ]
    conditions = [np.less(value, limit) for limit in limits]
    return _select(conditions, list(colors[: len(limits)]), colors[len(colors) - 1])


def hex_to_rgb(color: Any) -> list[float]:
    """``0xRRGGBB`` -> ``[r, g, b]`` in 0..255 (JavaScript's ``>>> 16 & 0xFF`` ...)."""
    value = int(color) & 0xFFFFFFFF
    return [float((value >> 16) & 0xFF), float((value >> 8) & 0xFF), float(value & 0xFF)]


def _rgb01(color: Any) -> list[float]:
    if isinstance(color, list):
        return [float(c) for c in color]
    return [c / 255.0 for c in hex_to_rgb(color)]


class ColorRampVisualizer:
    """Sentinel Hub's ColorRampVisualizer (see the module docstring)."""

    def __init__(
        self,
        ramps: Sequence[Sequence[Any]],
        min_val: float | None = None,
        max_val: float | None = None,
    ):
        pairs = sorted(
            ((float(value), _rgb01(color)) for value, color in ramps), key=lambda p: p[0]
        )
        values = [value for value, _ in pairs]
        low, high = values[0], values[-1]
        new_low = low if min_val is None else float(min_val)
        new_high = high if max_val is None else float(max_val)
        if high != low and (new_low, new_high) != (low, high):
            values = [new_low + (v - low) * (new_high - new_low) / (high - low) for v in values]
        self.limits = values
        self.colors = [color for _, color in pairs]

    def process(self, value: Number) -> list[Number]:
        """``[r, g, b]`` in 0..1 for each pixel."""
        return color_blend(value, self.limits, self.colors)


class ColorGradientVisualizer:
    """Sentinel Hub's ColorGradientVisualizer (see the module docstring)."""

    _PRESETS: dict[str, list[tuple[float, int]]] = {
        "createBlueRed": [
            (1.000, 0x000080),
            (0.875, 0x0000FF),
            (0.625, 0x00FFFF),
            (0.375, 0xFFFF00),
            (0.125, 0xFF0000),
            (0.000, 0x800000),
        ],
        "createRedTemperature": [
            (1.000, 0x000000),
            (0.525, 0xAE0000),
            (0.300, 0xFF6E00),
            (0.250, 0xFF8600),
            (0.000, 0xFFFFFF),
        ],
        "createWhiteGreen": [
            (1.000, 0x000000),
            (0.600, 0x006600),
            (0.300, 0x80B300),
            (0.000, 0xFFFFFF),
        ],
    }

    def __init__(
        self,
        pairs: Sequence[Sequence[Any]],
        min_val: float | None = 0.0,
        max_val: float | None = 1.0,
    ):
        values = [float(value) for value, _ in pairs]
        self.min_val = min(values) if min_val is None else float(min_val)
        self.max_val = max(values) if max_val is None else float(max_val)
        self.values = [self.min_val * v + self.max_val * (1 - v) for v in values]
        self.colors = [hex_to_rgb(color) for _, color in pairs]

    @classmethod
    def preset(cls, name: str, min_val: float, max_val: float) -> "ColorGradientVisualizer":
        """One of Sentinel Hub's static constructors (``createBlueRed`` ...)."""
        return cls(cls._PRESETS[name], min_val, max_val)

    def process(self, value: Number) -> list[Number]:
        """``[r, g, b]`` in 0..1 for each pixel."""
        n = len(self.values)
        conditions: list[Any] = [
            np.less_equal(value, self.min_val),
            np.greater_equal(value, self.max_val),
        ]
        choices: list[list[Number]] = [self.colors[0], self.colors[n - 1]]
        with np.errstate(all="ignore"):
            for i in range(1, n):
                before, after = self.values[i - 1], self.values[i]
                conditions.append(np.greater(value, before) & np.less_equal(value, after))
                alpha = np.subtract(value, before) / (after - before)
                choices.append(
                    [
                        js_round(
                            np.add(
                                np.multiply(self.colors[i][c], alpha),
                                np.multiply(self.colors[i - 1][c], np.subtract(1, alpha)),
                            )
                        )
                        for c in range(3)
                    ]
                )
        return [
            np.divide(
                _select(conditions, [choice[c] for choice in choices], self.colors[n - 1][c]), 255.0
            )
            for c in range(3)
        ]


class ColorMapVisualizer:
    """Sentinel Hub's ColorMapVisualizer (see the module docstring)."""

    DEFAULT: list[tuple[float, int]] = [
        (-1.0, 0x000000),
        (-0.2, 0xFF0000),
        (-0.1, 0x9A0000),
        (0.0, 0x660000),
        (0.1, 0xFFFF33),
        (0.2, 0xCCCC33),
        (0.3, 0x666600),
        (0.4, 0x33FFFF),
        (0.5, 0x33CCCC),
        (0.6, 0x006666),
        (0.7, 0x33FF33),
        (0.8, 0x33CC33),
        (0.9, 0x006600),
    ]

    def __init__(self, pairs: Sequence[Sequence[Any]]):
        self.values = [float(value) for value, _ in pairs]
        self.colors = [[c / 255.0 for c in hex_to_rgb(color)] for _, color in pairs]

    def process(self, value: Number) -> list[Number]:
        """``[r, g, b]`` in 0..1 for each pixel."""
        result: list[Number] = list(self.colors[0])
        scanning: Any = True
        for limit, color in zip(self.values, self.colors, strict=True):
            scanning = np.logical_and(scanning, np.logical_not(np.less(value, limit)))
            result = [np.where(scanning, color[c], result[c]) for c in range(3)]
        return [r if np.ndim(r) else float(r) for r in result]


class HighlightCompressVisualizer:
    """Sentinel Hub's HighlightCompressVisualizer (see the module docstring)."""

    highlight_point = 0.92
    clip_point = 2.0
    compress = True
    single = False

    def __init__(
        self,
        min_value: float = 0.0,
        max_value: float = 1.0,
        gain: float = 1.0,
        offset: float = 0.0,
        gamma: float = 1.0,
    ):
        self.min_value = float(min_value)
        self.max_value = float(max_value)
        self.gain = float(gain)
        self.offset = float(offset)
        self.gamma = float(gamma)
        self.highlight_adjust = 0 < self.max_value < 1
        self.factor = 1.0 / (self.max_value - self.min_value)
        self.highlight_factor = (1.0 - self.highlight_point) / (
            self.clip_point - self.highlight_point
        )

    @staticmethod
    def _clamp(value: Number, low: float, high: float) -> Number:
        return np.maximum(np.minimum(value, high), low)

    def process(self, value: Number) -> Number:
        """The stretched value per pixel (a number; ``[v]`` for the Single variant)."""
        v = np.add(
            np.multiply(np.multiply(self.gain, np.subtract(value, self.min_value)), self.factor),
            self.offset,
        )
        if self.gamma != 1.0:
            v = np.power(np.maximum(0, v), self.gamma)
            if not self.compress:
                return self._wrap(v)
        if self.compress and self.highlight_adjust:
            adjusted = self._clamp(
                self.highlight_point + (v - self.highlight_point) * self.highlight_factor, 0.0, 1.0
            )
            v = np.where(np.greater(v, self.highlight_point), adjusted, v)
        return self._wrap(self._clamp(v, 0.0, 1.0))

    def _wrap(self, v: Number) -> Any:
        v = float(v) if np.ndim(v) == 0 else v
        return [v] if self.single else v


class HighlightCompressVisualizerSingle(HighlightCompressVisualizer):
    """``HighlightCompressVisualizer`` whose ``process`` returns ``[v]``."""

    single = True


class DefaultVisualizer(HighlightCompressVisualizer):
    """Sentinel Hub's DefaultVisualizer: no highlight compression."""

    compress = False
