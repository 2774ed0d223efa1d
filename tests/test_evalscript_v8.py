"""The V8 path: Sentinel Hub's helper library in prelude.js, the driver, run_setup.

The helpers are checked against the translator's numpy library (``helpers.py``, whose
semantics are tested against Sentinel Hub's documented values in
test_evalscript_translate.py) on the same values, limits included; the driver against numpy.
"""

import asyncio
import dataclasses

import numpy as np
import pytest

from app.errors import BadRequestError
from app.evalscript import helpers
from app.evalscript.limits import EvalscriptLimits
from app.evalscript.script import parse_evalscript
from app.evalscript.v8 import run_setup, run_v8

LIMITS = dataclasses.replace(EvalscriptLimits.default(), block_pixels=1000)
SHAPE = (47, 53)


@pytest.fixture(scope="module")
def values() -> np.ndarray:
    """-1.2..1.2 with the limits the tests use exactly, and NaN."""
    rng = np.random.default_rng(8)
    v = rng.uniform(-1.2, 1.2, SHAPE).astype(np.float32)
    exact = [-1, -0.5, -0.25, -0.2, 0, 0.2, 0.25, 0.3, 0.5, 0.6, 0.75, 0.8, 1, 0.92]
    v[0, : len(exact)] = exact
    v[1, 0] = np.nan
    return v


def js(expression: str, bands: int, v: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """``expression`` (of ``v`` and ``w``, one pixel each) through V8: (bands, h, w)."""
    script = (
        "//VERSION=3\nfunction setup() { return {}; }\n"
        f"function evaluatePixel(s) {{ const v = s.B04, w = s.B08; return {expression}; }}\n"
    )
    setup = {"input": ["B04", "B08"], "output": {"bands": bands, "sampleType": "FLOAT32"}}
    b08 = v if w is None else w
    return run_v8(script, setup, {"B04": v, "B08": b08}, np.ones(SHAPE, bool), LIMITS)["default"]


def same(actual: np.ndarray, expected) -> None:
    expected = np.stack([np.broadcast_to(np.asarray(e, np.float64), SHAPE) for e in expected])
    np.testing.assert_allclose(actual, expected.astype(np.float32), rtol=1e-6, atol=1e-7)
    assert np.array_equal(np.isnan(actual), np.isnan(expected.astype(np.float32)))


def test_index_and_inverse(values) -> None:
    w = np.random.default_rng(1).uniform(-1, 1, SHAPE).astype(np.float32)
    w[0, :3] = -values[0, :3]  # x + y == 0
    v64, w64 = values.astype(np.float64), w.astype(np.float64)
    same(js("[index(v, w)]", 1, values, w), [helpers.index(v64, w64)])
    zeros = values.copy()
    zeros[2, :4] = 0
    out = js("[inverse(v)]", 1, zeros)
    with np.errstate(over="ignore"):  # Java's largest double is inf as a float32
        same(out, [helpers.inverse(zeros.astype(np.float64))])
    assert np.isposinf(out[0, 2, :4]).all()


LIMITS_4 = [-0.5, 0, 0.2, 0.6]
COLORS_4 = [[0.5, 0.3, 0.1], [1, 1, 0.8], [0.3, 0.6, 1], [0, 0, 0.5]]


def test_color_blend_value_interpolate_color_map(values) -> None:
    v = values.astype(np.float64)
    same(
        js(f"colorBlend(v, {LIMITS_4}, {COLORS_4})", 3, values),
        helpers.color_blend(v, LIMITS_4, COLORS_4),
    )
    same(
        js("[valueInterpolate(v, [0, 0.3, 1], [0, 0.5, 1])]", 1, values),
        [helpers.value_interpolate(v, [0, 0.3, 1], [0, 0.5, 1])],
    )
    same(
        js("[colorBlend(v, [-1, 1], [10, 20])]", 1, values),
        [helpers.color_blend(v, [-1, 1], [10, 20])],
    )
    limits, colors = [-0.2, 0, 0.5], [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]]
    same(js(f"colorMap(v, {limits}, {colors})", 3, values), helpers.color_map(v, limits, colors))


def test_color_blend_never_writes_into_its_colors(values) -> None:
    # Sentinel Hub's own writes the blend into colors[i - 1]; a later pixel would see it.
    body = (
        "(() => { const c = [[0], [1]]; colorBlend(v, [0, 1], c); return [c[0][0], c[1][0]]; })()"
    )
    same(js(body, 2, values), [0, 1])


def test_color_ramp_visualizer(values) -> None:
    v = values.astype(np.float64)
    ramps = [[0.5, 0x00FF00], [-0.5, 0xFF0000], [0, [0.2, 0.4, 0.6]], [1, 0x0C0C0C]]
    js_ramps = "[[0.5, 0x00ff00], [-0.5, 0xff0000], [0, [0.2, 0.4, 0.6]], [1, 0x0c0c0c]]"
    same(
        js(f"new ColorRampVisualizer({js_ramps}).process(v)", 3, values),
        helpers.ColorRampVisualizer(ramps).process(v),
    )
    same(
        js(f"new ColorRampVisualizer({js_ramps}, -0.2, 0.8).process(v)", 3, values),
        helpers.ColorRampVisualizer(ramps, -0.2, 0.8).process(v),
    )


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [("createBlueRed", -1, 1), ("createRedTemperature", 0, 1), ("createWhiteGreen", -0.5, 0.5)],
)
def test_color_gradient_visualizer_presets(values, name: str, low: float, high: float) -> None:
    v = values.astype(np.float64)
    same(
        js(f"ColorGradientVisualizer.{name}({low}, {high}).process(v)", 3, values),
        helpers.ColorGradientVisualizer.preset(name, low, high).process(v),
    )


def test_color_gradient_visualizer_custom(values) -> None:
    v = values.astype(np.float64)
    pairs = [[1, 0x000000], [0.5, 0x808080], [0, 0xFFFFFF]]
    same(
        js(
            "new ColorGradientVisualizer([[1, 0x000000], [0.5, 0x808080], [0, 0xffffff]], -0.5, 0.5).process(v)",
            3,
            values,
        ),
        helpers.ColorGradientVisualizer(pairs, -0.5, 0.5).process(v),
    )


def test_color_map_visualizer(values) -> None:
    v = values.astype(np.float64)
    same(
        js("ColorMapVisualizer.createDefaultColorMap().process(v)", 3, values),
        helpers.ColorMapVisualizer(helpers.ColorMapVisualizer.DEFAULT).process(v),
    )
    same(
        js("new ColorMapVisualizer([[0, 0xff0000], [0.5, 0x00ff00]]).process(v)", 3, values),
        helpers.ColorMapVisualizer([[0, 0xFF0000], [0.5, 0x00FF00]]).process(v),
    )


@pytest.mark.parametrize(
    "args",
    [(), (-0.2, 0.8), (0, 0.4, 1.2, 0.01, 0.8), (0, 0.5, 2.5), (0, 1.5, 1, 0, 1.3)],
)
def test_highlight_compress_and_default_visualizers(values, args: tuple) -> None:
    v = values.astype(np.float64)
    call = ", ".join(str(a) for a in args)
    same(
        js(f"[new HighlightCompressVisualizer({call}).process(v)]", 1, values),
        [helpers.HighlightCompressVisualizer(*args).process(v)],
    )
    same(
        js(f"new HighlightCompressVisualizerSingle({call}).process(v)", 1, values),
        helpers.HighlightCompressVisualizerSingle(*args).process(v),
    )
    same(
        js(f"[new DefaultVisualizer({call}).process(v)]", 1, values),
        [helpers.DefaultVisualizer(*args).process(v)],
    )


def test_a_script_may_declare_the_helpers_names(values) -> None:
    # `const index` / `class ColorRampVisualizer` in the script: no "already declared".
    script = (
        "//VERSION=3\nfunction setup() { return {}; }\n"
        "const index = (a, b) => a * b;\nclass ColorRampVisualizer { process(v) { return [7]; } }\n"
        "function colorBlend() { return [8]; }\n"
        "const evaluatePixel = (s) => [index(s.B04, 2), new ColorRampVisualizer().process(0)[0], colorBlend()[0]];\n"
    )
    setup = {"input": ["B04"], "output": {"bands": 3}}
    out = run_v8(script, setup, {"B04": values}, np.ones(SHAPE, bool), LIMITS)["default"]
    same(out, [values.astype(np.float64) * 2, 7, 8])


def test_blocks_cover_every_pixel_once_with_the_mask_as_data_mask(values) -> None:
    # 2491 pixels in blocks of 1000: two full blocks and a partial one.
    valid = np.random.default_rng(3).random(SHAPE) > 0.3
    script = (
        "//VERSION=3\nfunction setup() { return {}; }\nlet seen = 0;\n"
        "function evaluatePixel(s) { seen++; return {a: [seen], b: [s.dataMask, s.B04]}; }\n"
    )
    setup = {
        "input": ["B04", "dataMask"],
        "output": [{"id": "a", "bands": 1}, {"id": "b", "bands": 2, "sampleType": "FLOAT32"}],
    }
    out = run_v8(script, setup, {"B04": values}, valid, LIMITS)
    assert out["a"].shape == (1, *SHAPE) and out["b"].shape == (2, *SHAPE)
    np.testing.assert_array_equal(out["a"][0].ravel(), np.arange(1, values.size + 1))
    np.testing.assert_array_equal(out["b"][0], valid.astype(np.float32))
    np.testing.assert_array_equal(out["b"][1], values)


def test_run_setup_of_a_computed_setup_and_parse_uses_it() -> None:
    script = (
        "//VERSION=3\nconst BANDS = ['B04', 'B08'];\n"
        "function setup() { return {input: BANDS.concat(['dataMask']),"
        " output: [{id: 'ndvi', bands: 1, sampleType: 'FLOAT32'}, {id: 'dataMask', bands: 1}]}; }\n"
        "function evaluatePixel(s) { return {ndvi: [index(s.B08, s.B04)], dataMask: [s.dataMask]}; }\n"
    )
    assert run_setup(script, LIMITS) == {
        "input": ["B04", "B08", "dataMask"],
        "output": [
            {"id": "ndvi", "bands": 1, "sampleType": "FLOAT32"},
            {"id": "dataMask", "bands": 1},
        ],
    }
    evalscript = parse_evalscript(script, LIMITS)
    assert evalscript.inputs == ("B04", "B08", "dataMask")
    assert [o.id for o in evalscript.outputs] == ["ndvi", "dataMask"]


def test_missing_band_and_mismatched_shapes_are_400s(values) -> None:
    setup = {"input": ["B04", "B08"], "output": {"bands": 1}}
    script = "//VERSION=3\nfunction evaluatePixel(s) { return [0]; }\n"
    with pytest.raises(BadRequestError, match="no data for input band 'B08'"):
        run_v8(script, setup, {"B04": values}, np.ones(SHAPE, bool), LIMITS)
    with pytest.raises(BadRequestError, match="band 'B08'"):
        run_v8(script, setup, {"B04": values, "B08": values[:3]}, np.ones(SHAPE, bool), LIMITS)


def test_runs_from_inside_an_event_loop(values) -> None:
    # mini-racer in-process would take over a running asyncio loop; the workers do not care.
    setup = {"input": ["B04"], "output": {"bands": 1}}
    script = "//VERSION=3\nfunction evaluatePixel(s) { return [s.B04 * 2]; }\n"

    async def inside() -> np.ndarray:
        return run_v8(script, setup, {"B04": values}, np.ones(SHAPE, bool), LIMITS)["default"]

    same(asyncio.run(inside()), [values.astype(np.float64) * 2])
