"""The evalscript translator: each corpus script against a numpy formula written here by hand.

The expected values are what each script means (Sentinel Hub's documented semantics),
computed directly with numpy on the same random pixels: not by the translator's code.
"""

import pickle
import re
from pathlib import Path

import numpy as np
import pytest

from app.errors import BadRequestError, TooLargeError
from app.evalscript.band_math import EvalscriptBandMath
from app.evalscript.limits import EvalscriptLimits
from app.evalscript.script import apply_sample_type, parse_evalscript
from app.expressions import parse_expression
from app.settings import Settings

CORPUS = Path(__file__).parent / "evalscripts"
LIMITS = EvalscriptLimits.default()
SHAPE = (37, 41)
V8_ONLY = ("loop_sort", "date_use", "class_use")


def corpus(name: str) -> str:
    return (CORPUS / f"{name}.js").read_text()


def script(name: str):
    return parse_evalscript(corpus(name), LIMITS)


@pytest.fixture(scope="module")
def pixels() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Random reflectances (with 0s, equal pairs and 0/0), SCL classes and a validity mask."""
    rng = np.random.default_rng(16)
    bands = {
        name: rng.uniform(0.0, 0.6, SHAPE).astype(np.float32)
        for name in ("B02", "B03", "B04", "B08", "B8A", "B11")
    }
    for name in bands:
        bands[name][0, :5] = 0.0  # 0/0 in every normalized difference
    bands["B08"][1, :5] = bands["B04"][1, :5]  # NDVI exactly 0
    bands["B08"][2, :5] = 0.0  # NDVI -1
    bands["SCL"] = rng.integers(0, 12, SHAPE).astype(np.float32)
    valid = rng.random(SHAPE) > 0.1
    return bands, valid


def f64(bands: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: array.astype(np.float64) for name, array in bands.items()}


def run(name: str, pixels) -> dict[str, np.ndarray]:
    evalscript = script(name)
    assert evalscript.engine == "translated", evalscript.translation_refused
    bands, valid = pixels
    out = evalscript.evaluate({b: bands[b] for b in evalscript.inputs if b != "dataMask"}, valid)
    for value in out.values():
        assert value.dtype == np.float32
    return out


def close(actual: np.ndarray, expected) -> None:
    """Band by band (a band may be a constant), 1e-6 relative."""
    if isinstance(expected, list):
        assert actual.shape[0] == len(expected)
        expected = np.stack(
            [np.broadcast_to(np.asarray(e, float), actual.shape[1:]) for e in expected]
        )
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-7)


def normalized(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return (a - b) / (a + b)


def sh_index(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sentinel Hub's index(): 0 where a + b == 0."""
    with np.errstate(all="ignore"):
        return np.where(a + b != 0, (a - b) / (a + b), 0.0)


def blend(value: np.ndarray, limits, colors) -> np.ndarray:
    """Piecewise-linear colours, first/last colour beyond the ends and the last for NaN."""
    colors = np.asarray(colors, dtype=np.float64)
    channels = [np.interp(value, limits, colors[:, c]) for c in range(colors.shape[1])]
    return np.stack([np.where(np.isnan(value), colors[-1, c], ch) for c, ch in enumerate(channels)])


# ------------------------------------------------------------------------ the corpus


def test_ndvi(pixels) -> None:
    b = f64(pixels[0])
    close(run("ndvi", pixels)["default"], [normalized(b["B08"], b["B04"])])


def test_evi(pixels) -> None:
    b = f64(pixels[0])
    with np.errstate(all="ignore"):
        expected = 2.5 * (b["B08"] - b["B04"]) / (b["B08"] + 6 * b["B04"] - 7.5 * b["B02"] + 1)
    close(run("evi", pixels)["default"], [expected])


def test_ndwi_uses_sentinel_hub_index(pixels) -> None:
    b = f64(pixels[0])
    out = run("ndwi", pixels)["default"]
    close(out, [sh_index(b["B03"], b["B08"])])
    assert (out[0, 0, :5] == 0).all()  # index(0, 0) is 0, not NaN


def test_ndmi_ternary_of_arrays(pixels) -> None:
    b = f64(pixels[0])
    ndmi = normalized(b["B8A"], b["B11"])
    wet = ndmi > 0
    close(run("ndmi", pixels)["default"], [np.where(wet, 0, -ndmi), 0, np.where(wet, ndmi, 0)])


def test_true_color_gain_map_and_spread(pixels) -> None:
    b = f64(pixels[0])
    expected = [2.5 * b["B04"], 2.5 * b["B03"], 2.5 * b["B02"], pixels[1].astype(float)]
    close(run("true_color_gain", pixels)["default"], expected)


def test_false_color_highlight_compress(pixels) -> None:
    b = f64(pixels[0])

    def compress(x: np.ndarray) -> np.ndarray:
        v = x / 0.4  # gain 1, min 0, max 0.4
        squeezed = 0.92 + (v - 0.92) * (1 - 0.92) / (2 - 0.92)
        return np.clip(np.where(v > 0.92, np.clip(squeezed, 0, 1), v), 0, 1)

    expected = [compress(b["B08"]), compress(b["B04"]), compress(b["B03"]), pixels[1]]
    close(run("false_color", pixels)["default"], expected)


def test_scl_cloud_mask_early_return(pixels) -> None:
    b = f64(pixels[0])
    cloud = np.isin(b["SCL"], [3, 8, 9, 10])
    clear = [3 * b["B04"], 3 * b["B03"], 3 * b["B02"], pixels[1].astype(float)]
    out = run("scl_cloud_mask", pixels)["default"]
    close(out, [np.where(cloud, 0, band) for band in clear])
    assert cloud.any() and (~cloud).any()


def test_classification_chain(pixels) -> None:
    b = f64(pixels[0])
    ndvi = sh_index(b["B08"], b["B04"])
    alpha = np.where(pixels[1], 255, 0)
    green = np.floor(255 * ndvi + 0.5)  # Math.round
    conditions = [ndvi < -0.2, ndvi < 0, ndvi < 0.2, ndvi < 0.5]
    rgb = [
        np.select(conditions, [0, 190, 230, 70], 0),
        np.select(conditions, [0, 190, 205, green], 100),
        np.select(conditions, [128, 190, 128, 40], 0),
    ]
    out = run("classification_chain", pixels)["default"]
    close(out, [*rgb, alpha])
    assert len(np.unique(np.select(conditions, [0, 1, 2, 3], 4))) == 5  # every class is present


def test_color_ramp(pixels) -> None:
    b = f64(pixels[0])
    ndvi = normalized(b["B08"], b["B04"])
    hexes = [0x0C0C0C, 0xEAEAEA, 0xCCC682, 0x91BF51, 0x4F8A2E, 0x0F540A]
    colors = [[(h >> 16) / 255, ((h >> 8) & 255) / 255, (h & 255) / 255] for h in hexes]
    expected = blend(ndvi, [-0.2, 0.0, 0.2, 0.4, 0.6, 0.8], colors)
    close(run("color_ramp", pixels)["default"], [*expected, pixels[1]])


def test_color_blend(pixels) -> None:
    b = f64(pixels[0])
    ndwi = sh_index(b["B03"], b["B08"])
    colors = [[0.5, 0.3, 0.1], [1, 1, 0.8], [0.3, 0.6, 1], [0, 0, 0.5]]
    expected = blend(ndwi, [-0.5, 0, 0.2, 0.6], colors)
    close(run("color_blend", pixels)["default"], [*expected, pixels[1]])


def test_statistical_ndvi_datamask(pixels) -> None:
    b = f64(pixels[0])
    out = run("statistical_ndvi_datamask", pixels)
    close(out["ndvi"], [normalized(b["B08"], b["B04"])])
    expected_mask = pixels[1] & (b["B08"] + b["B04"] != 0) & (b["SCL"] != 6)
    close(out["dataMask"], [expected_mask.astype(float)])


def test_multi_output(pixels) -> None:
    b = f64(pixels[0])
    out = run("multi_output", pixels)
    stretch = [np.clip(b[name] / 0.3, 0, 1) for name in ("B04", "B03", "B02")]
    close(out["default"], stretch)
    ndvi = sh_index(b["B08"], b["B04"])
    nbr = normalized(b["B08"], b["B11"])
    close(out["index"], [ndvi, nbr])
    rgb = np.stack([b["B02"], b["B03"], b["B04"]])
    wet = (b["B03"] > b["B08"]) & (b["B03"] > 0.05)
    math_bands = [
        np.sqrt(b["B04"] ** 2 + b["B03"] ** 2 + b["B02"] ** 2),
        np.floor(ndvi * 10 + 0.5) / 10,
        rgb.max(axis=0) - rgb.min(axis=0),
        np.abs(nbr) * np.sign(ndvi),
        np.log(1 + b["B08"]) + np.exp(-b["B11"]) + np.floor(b["B04"] * 4) - np.ceil(b["B03"] * 4),
        np.where(wet, np.arctan2(b["B03"], b["B08"]) / np.pi, 0),
    ]
    close(out["math"], math_bands)
    close(out["dataMask"], [pixels[1]])
    assert wet.any() and (~wet).any()


@pytest.mark.parametrize("name", V8_ONLY)
def test_v8_only_scripts_are_refused_with_a_reason(name: str) -> None:
    evalscript = script(name)
    assert evalscript.engine == "v8"
    expected = {
        "loop_sort": "line 12:3: 'for-of' loops: not supported by the translator",
        "date_use": "line 10:15: 'new Date': not supported by the translator",
        "class_use": "line 3:1: classes: not supported by the translator",
    }[name]
    assert evalscript.translation_refused == expected


def test_v1_script_is_refused() -> None:
    with pytest.raises(BadRequestError, match="only VERSION=3") as error:
        parse_evalscript(corpus("v1_style"), LIMITS)
    assert error.value.status_code == 400


def test_every_corpus_script_parses_and_declares_its_outputs() -> None:
    names = sorted(path.stem for path in CORPUS.glob("*.js"))
    assert len(names) >= 16
    for name in names:
        if name == "v1_style":
            continue
        evalscript = script(name)
        assert evalscript.outputs and all(o.bands >= 1 for o in evalscript.outputs)
        assert evalscript.engine == ("v8" if name in V8_ONLY else "translated"), name


# ------------------------------------------------------------- JavaScript semantics

HEAD = """//VERSION=3
function setup() {
  return { input: ["B04", "B08", "dataMask"], output: { bands: %d, sampleType: "FLOAT32" } };
}
"""


def evaluate_body(body: str, bands: int, b04, b08, valid=None) -> np.ndarray:
    text = HEAD % bands + "function evaluatePixel(s) {\n" + body + "\n}\n"
    evalscript = parse_evalscript(text, LIMITS)
    assert evalscript.engine == "translated", evalscript.translation_refused
    b04 = np.asarray(b04, dtype=np.float32).reshape(1, -1)
    b08 = np.asarray(b08, dtype=np.float32).reshape(1, -1)
    valid = np.ones(b04.shape, bool) if valid is None else np.asarray(valid).reshape(1, -1)
    return evalscript.evaluate({"B04": b04, "B08": b08}, valid)["default"][:, 0, :]


def test_logical_operators_return_operands() -> None:
    b04 = [0.0, 0.2, np.nan, 0.3]
    b08 = [0.5, 0.0, 0.7, 0.4]
    out = evaluate_body(
        "return [s.B04 && s.B08, s.B04 || 7, !s.B04 ? 1 : 2, (s.B04 > 0.25) + 1];", 4, b04, b08
    )
    np.testing.assert_array_equal(out[0], np.float32([0.0, 0.0, np.nan, 0.4]))
    np.testing.assert_array_equal(out[1], np.float32([7, 0.2, 7, 0.3]))
    np.testing.assert_array_equal(out[2], [1, 2, 1, 2])  # NaN and 0 are falsy
    np.testing.assert_array_equal(out[3], [1, 1, 1, 2])


def test_math_round_and_remainder_follow_javascript() -> None:
    b04 = [-2.5, 2.5, -0.5, 7.0]
    out = evaluate_body(
        "return [Math.round(s.B04), s.B04 % 3, Math.max(s.B04, s.B08)];", 3, b04, [0, 0, np.nan, 1]
    )
    np.testing.assert_array_equal(out[0], [-2, 3, -0, 7])  # halves up, not to even
    np.testing.assert_array_equal(out[1], [-2.5, 2.5, -0.5, 1])  # sign of the dividend
    np.testing.assert_array_equal(out[2], np.float32([0, 2.5, np.nan, 7]))  # NaN wins


def test_reassignment_in_branches_and_function_early_returns() -> None:
    body = """
  function classify(v) {
    if (v < 0.2) return 1;
    if (v < 0.5) { let twice = v * 2; return twice; }
    return 3;
  }
  var x = 10;
  let y;
  if (s.B04 > 0.3) { x = x + 1; y = 5; } else if (s.B04 > 0.1) { x -= 1; y = 6; } else { y = 7; }
  x++;
  return [x, y, classify(s.B08)];
"""
    out = evaluate_body(body, 3, [0.05, 0.2, 0.4], [0.1, 0.3, 0.9])
    np.testing.assert_array_equal(out[0], [11, 10, 12])
    np.testing.assert_array_equal(out[1], [7, 6, 5])
    np.testing.assert_allclose(out[2], [1, 0.6, 3], rtol=1e-7)


def test_helpers_map_spread_reduce_includes_destructuring() -> None:
    body = """
  const [a, b] = [s.B04, s.B08];
  const {dataMask} = s;
  const values = [a, b].map((v, i) => v * (i + 1));
  const total = [...values, 1].reduce((t, v) => t + v, 0);
  return [total, [1, 2, 3].includes(Math.floor(a * 10)) ? 1 : 0, dataMask];
"""
    out = evaluate_body(body, 3, [0.15, 0.45], [0.5, 0.25], valid=[True, False])
    np.testing.assert_allclose(out[0], [0.15 + 1.0 + 1, 0.45 + 0.5 + 1], rtol=1e-6)
    np.testing.assert_array_equal(out[1], [1, 0])
    np.testing.assert_array_equal(out[2], [1, 0])


@pytest.mark.parametrize(
    ("body", "construct"),
    [
        ("for (let i = 0; i < 3; i++) {}\n  return [1];", "line 6:3: 'for' loops"),
        ("while (false) {}\n  return [1];", "line 6:3: 'while' loops"),
        ("return [[s.B04, s.B08].sort()[0]];", "line 6:11: Array.prototype.sort"),
        ("return [Math.random()];", "line 6:11: Math.random"),
        ("return [[1, 2][s.B04 > 0.5 ? 1 : 0]];", "line 6:18: an index that varies per pixel"),
        (
            "function f(x) { return x < 1 ? x : f(x - 1); }\n  return [f(s.B04)];",
            "recursion (f calls itself)",
        ),
        (
            "counter = counter + 1;\n  return [counter];",
            "assigning the global 'counter' from evaluatePixel (state kept across pixels)",
        ),
        ("return [unknownHelper(s.B04)];", "line 6:11: the name 'unknownHelper'"),
    ],
)
def test_unsupported_constructs_are_named(body: str, construct: str) -> None:
    text = HEAD % 1 + "var counter = 0;\nfunction evaluatePixel(s) {\n  " + body + "\n}\n"
    text = text.replace("var counter = 0;\nfunction", "function") if "counter" not in body else text
    evalscript = parse_evalscript(text, LIMITS)
    assert evalscript.engine == "v8"
    assert construct in evalscript.translation_refused
    assert evalscript.translation_refused.endswith("not supported by the translator")


# -------------------------------------------------------------- errors and limits


def test_syntax_error_names_line_and_column() -> None:
    text = HEAD % 1 + "function evaluatePixel(s) {\n  return [s.B04 +];\n}\n"
    with pytest.raises(BadRequestError) as error:
        parse_evalscript(text, LIMITS)
    assert error.value.status_code == 400
    assert error.value.message == "evalscript: line 6:18: syntax error: Unexpected token ]"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ('output: { bands: 1, sampleType: "FLOAT32" }', None),
        ('output: { bands: 1, sampleType: "INT16" }', "sampleType 'INT16' is not supported"),
        ('output: { bands: 1 }, mosaicking: "ORBIT"', "mosaicking 'ORBIT' is not supported"),
        ("output: { bands: 0 }", "bands must be an integer 1..256"),
    ],
)
def test_setup_is_checked(change: str, expected: str | None) -> None:
    text = (HEAD % 1).replace('output: { bands: 1, sampleType: "FLOAT32" }', change)
    text += "function evaluatePixel(s) { return [s.B04]; }\n"
    if expected is None:
        assert parse_evalscript(text, LIMITS).outputs[0].sample_type == "FLOAT32"
        return
    with pytest.raises(BadRequestError, match=re.escape(expected)):
        parse_evalscript(text, LIMITS)


def test_unknown_band_and_unsupported_functions_are_400() -> None:
    text = HEAD.replace('"B04"', '"B99"') % 1 + "function evaluatePixel(s) { return [1]; }\n"
    with pytest.raises(BadRequestError, match="unknown input band 'B99'"):
        parse_evalscript(text, LIMITS)
    text = (
        HEAD % 1
        + "function evaluatePixel(s) { return [1]; }\nfunction preProcessScenes(c) { return c; }\n"
    )
    with pytest.raises(BadRequestError, match=r"line 6:1: preProcessScenes .* is not supported"):
        parse_evalscript(text, LIMITS)


def test_returning_the_wrong_band_count_is_400() -> None:
    text = HEAD % 2 + "function evaluatePixel(s) { return [s.B04, s.B08, 1]; }\n"
    with pytest.raises(
        BadRequestError, match="returns 3 values for output 'default' declared with 2 bands"
    ):
        parse_evalscript(text, LIMITS)


def test_limits_name_their_setting() -> None:
    small = EvalscriptLimits.from_settings(
        Settings.model_construct(
            evalscript_max_chars=500, evalscript_max_nodes=30, evalscript_max_depth=20
        )
    )
    ndvi = corpus("ndvi")
    with pytest.raises(TooLargeError, match="evalscript_max_chars") as error:
        parse_evalscript(ndvi + " " * 500, small)
    assert error.value.status_code == 413
    with pytest.raises(TooLargeError, match=r"more than 30 syntax nodes \(evalscript_max_nodes\)"):
        parse_evalscript(ndvi, small)
    deep = HEAD % 1 + "function evaluatePixel(s) { return [" + "-(" * 30 + "1" + ")" * 30 + "]; }"
    roomy = EvalscriptLimits.from_settings(Settings.model_construct(evalscript_max_depth=20))
    with pytest.raises(TooLargeError, match=r"deeper than 20 levels \(evalscript_max_depth\)"):
        parse_evalscript(deep, roomy)
    # esprima's own recursion on pathological nesting ends as the same 413, not a 500.
    abyss = "//VERSION=3\nvar x = " + "(" * 20000 + "1" + ")" * 20000 + ";"
    with pytest.raises(TooLargeError, match="evalscript_max_depth"):
        parse_evalscript(abyss, LIMITS)
    with pytest.raises(BadRequestError, match="empty script"):
        parse_evalscript("  ", LIMITS)


def test_limits_from_settings() -> None:
    settings = Settings.model_construct(
        evalscript_timeout_seconds=1.5, evalscript_block_pixels=1024
    )
    limits = EvalscriptLimits.from_settings(settings)
    assert (limits.timeout_seconds, limits.block_pixels, limits.max_chars) == (1.5, 1024, 100_000)


# ------------------------------------------------------------- sample types, adapter


def test_apply_sample_type() -> None:
    values = np.array([-0.1, 0.0, 0.5, 0.50196, 1.0, 2.0, np.nan, 300.5, 70000], dtype=np.float32)
    np.testing.assert_array_equal(
        apply_sample_type(values, "AUTO"), [0, 0, 128, 128, 255, 255, 0, 255, 255]
    )
    np.testing.assert_array_equal(
        apply_sample_type(values, "UINT8"), [0, 0, 1, 1, 1, 2, 0, 255, 255]
    )
    np.testing.assert_array_equal(
        apply_sample_type(values, "UINT16"), [0, 0, 1, 1, 1, 2, 0, 301, 65535]
    )
    assert apply_sample_type(values, "UINT16").dtype == np.uint16
    np.testing.assert_array_equal(apply_sample_type(values, "FLOAT32"), values)


def test_band_math_adapter_equals_the_expression_path(pixels) -> None:
    bands, valid = pixels
    rng = np.random.default_rng(3)
    arrays = {
        name: np.ma.MaskedArray(bands[name], mask=~valid | (rng.random(SHAPE) < 0.05))
        for name in ("B04", "B08")
    }
    expected = parse_expression("(B08-B04)/(B08+B04)").evaluate(arrays)
    band_math = EvalscriptBandMath(script("ndvi"))
    assert band_math.names == ("B04", "B08") and band_math.outputs == ("B0",)
    actual = band_math.evaluate(arrays)
    assert actual.dtype == np.float32 and actual.shape == expected.shape
    np.testing.assert_array_equal(np.ma.getmaskarray(actual), np.ma.getmaskarray(expected))
    np.testing.assert_array_equal(actual.filled(0), expected.filled(0))
    renamed = band_math.rename({"B04": "red", "B08": "nir"})
    assert renamed.names == ("red", "nir")
    actual = renamed.evaluate({"red": arrays["B04"], "nir": arrays["B08"]})
    np.testing.assert_array_equal(actual.filled(0), expected.filled(0))


def test_band_math_masks_the_scripts_data_mask(pixels) -> None:
    bands, valid = pixels
    arrays = {name: np.ma.MaskedArray(bands[name], mask=~valid) for name in ("B04", "B08", "SCL")}
    band_math = EvalscriptBandMath(script("statistical_ndvi_datamask"))
    assert band_math.output.id == "ndvi" and band_math.names == ("B04", "B08", "SCL")
    actual = band_math.evaluate(arrays)
    b = f64(bands)
    masked = ~valid | (b["SCL"] == 6) | (b["B08"] + b["B04"] == 0)
    np.testing.assert_array_equal(np.ma.getmaskarray(actual)[0], masked)
    close(actual.filled(0)[0], np.where(masked, 0, normalized(b["B08"], b["B04"])))


def test_pickle_round_trip(pixels) -> None:
    bands, valid = pixels
    for name in ("multi_output", "loop_sort"):
        original = script(name)
        copy = pickle.loads(pickle.dumps(original))
        assert (copy.text, copy.engine, copy.outputs, copy.limits) == (
            original.text,
            original.engine,
            original.outputs,
            original.limits,
        )
        assert copy.translation_refused == original.translation_refused
    original = script("multi_output")
    copy = pickle.loads(pickle.dumps(original))
    inputs = {b: bands[b] for b in original.inputs if b != "dataMask"}
    for key, value in original.evaluate(inputs, valid).items():
        np.testing.assert_array_equal(copy.evaluate(inputs, valid)[key], value)


# ------------------------------------------------------------------ helper library


def test_color_map_visualizer_matches_sentinel_hubs_documented_example() -> None:
    body = """
  const viz = new ColorMapVisualizer([[200, 0xff0000], [300, 0x0000ff]]);
  return viz.process(s.B04 * 1000);
"""
    out = evaluate_body(body, 3, [0.199, 0.2, 0.25, 0.299, 0.3, np.nan], [0] * 6)
    # docs.sentinel-hub.com/api/latest/evalscript/functions: 199, 200, 250, 299 -> red, 300 -> blue
    np.testing.assert_array_equal(out.T[:5], [[1, 0, 0]] * 4 + [[0, 0, 1]])
    np.testing.assert_array_equal(out.T[5], [0, 0, 1])  # NaN never breaks the scan: the last


def js_color_gradient(value: float, pairs, low: float, high: float) -> list[float]:
    """Sentinel Hub's ColorGradientVisualizer.process, one pixel, as its JavaScript reads."""
    points = [(low * v + high * (1 - v), c) for v, c in pairs]
    rgb = lambda h: [(h >> 16) & 255, (h >> 8) & 255, h & 255]  # noqa: E731
    if value <= low:
        color = points[0][1]
    elif value >= high:
        color = points[-1][1]
    else:
        color = points[-1][1]
        for (before, c0), (after, c1) in zip(points, points[1:], strict=False):
            if before < value <= after:
                alpha = (value - before) / (after - before)
                mixed = [
                    math_round(x * alpha + y * (1 - alpha))
                    for x, y in zip(rgb(c1), rgb(c0), strict=True)
                ]
                return [m / 255 for m in mixed]
    return [x / 255 for x in rgb(color)]


def math_round(x: float) -> float:
    return float(np.floor(x + 0.5))


def test_color_gradient_visualizer_presets() -> None:
    values = np.array([-0.5, 0.0, 0.1, 0.33, 0.5, 0.61, 0.9, 1.0, 1.5])
    body = "return ColorGradientVisualizer.createWhiteGreen(0, 1).process(s.B04 - 0.5);"
    out = evaluate_body(body, 3, values + 0.5, [0] * len(values))
    pairs = [(1.0, 0x000000), (0.6, 0x006600), (0.3, 0x80B300), (0.0, 0xFFFFFF)]
    expected = [
        js_color_gradient(v, pairs, 0.0, 1.0)
        for v in (values.astype(np.float32) + np.float32(0.5) - 0.5)
    ]
    np.testing.assert_allclose(out.T, expected, rtol=1e-6)


def test_color_blend_fast_path_equals_the_javascript_loop() -> None:
    from app.evalscript import helpers

    rng = np.random.default_rng(5)
    limits = [-0.3, 0.0, 0.25, 0.7]
    colors = [[0.1, 0.2, 0.3], [1, 0, 0], [0, 1, 0.5], [0.2, 0.2, 1]]
    values = np.concatenate([rng.uniform(-1, 1, 500), limits, [np.nan, np.inf, -np.inf]])
    fast = np.stack(helpers.color_blend(values, limits, colors))
    for i, value in enumerate(values):
        if value <= limits[0]:
            expected = colors[0]
        else:
            expected = colors[-1]
            for k in range(1, len(limits)):
                if value <= limits[k]:
                    ratio = (value - limits[k - 1]) / (limits[k] - limits[k - 1])
                    expected = [
                        a * (1 - ratio) + b * ratio
                        for a, b in zip(colors[k - 1], colors[k], strict=True)
                    ]
                    break
        assert fast[:, i].tolist() == expected, value  # bit for bit


def test_value_interpolate_and_bitwise_colours() -> None:
    body = """
  const hex = 0x336699;
  return [valueInterpolate(s.B04, [0, 0.5, 1], [0, 10, 100]), (hex >> 8) & 0xff, hex >>> 16, ~~(s.B08 * 10)];
"""
    out = evaluate_body(body, 4, [-1, 0.25, 0.75, 2, np.nan], [0.55, -0.55, 3.99, 0, 0])
    np.testing.assert_allclose(out[0], [0, 5, 55, 100, 100])
    np.testing.assert_array_equal(out[1], [0x66] * 5)
    np.testing.assert_array_equal(out[2], [0x33] * 5)
    np.testing.assert_array_equal(out[3], [5, -5, 39, 0, 0])  # ~~ truncates toward 0


def test_returns_of_different_lengths_are_left_to_v8() -> None:
    # V8 checks each pixel's return against the declared bands; the translator steps aside.
    text = HEAD % 3 + (
        "function evaluatePixel(s) {\n  if (s.B04 > 0.5) return [1, 2, 3];\n"
        "  return [s.B04, s.B08];\n}\n"
    )
    evalscript = parse_evalscript(text, LIMITS)
    assert evalscript.translation_refused == (
        "line 7:3: arrays whose length differs per pixel: not supported by the translator"
    )


def test_empty_arrays_evaluate() -> None:
    out = script("classification_chain").evaluate(
        {"B04": np.zeros((0, 3), np.float32), "B08": np.zeros((0, 3), np.float32)},
        np.zeros((0, 3), bool),
    )
    assert out["default"].shape == (4, 0, 3)


def test_a_translator_gap_falls_back_to_v8(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.evalscript import translate

    def broken(*args, **kwargs):
        raise IndexError("a bug")

    monkeypatch.setattr(translate.Translation, "__init__", broken)
    evalscript = parse_evalscript(corpus("ndvi") + "\n// uncached\n", LIMITS)
    assert evalscript.engine == "v8"
    assert evalscript.translation_refused == "translator error IndexError: a bug"


def test_parsed_scripts_are_shared() -> None:
    assert parse_evalscript(corpus("ndvi"), LIMITS) is parse_evalscript(corpus("ndvi"), LIMITS)


def test_setup_that_is_not_a_literal_is_evaluated_without_v8() -> None:
    text = """//VERSION=3
const BANDS = ["B04", "B08"];
const OUTPUTS = ["ndvi", "other"].map((id) => ({ id: id, bands: 1, sampleType: "FLOAT32" }));
function setup() {
  return { input: [{ bands: BANDS.concat(["dataMask"]), units: "DN" }], output: OUTPUTS };
}
function evaluatePixel(s) { return { ndvi: [index(s.B08, s.B04)], other: [s.dataMask] }; }
"""
    evalscript = parse_evalscript(text, LIMITS)
    assert evalscript.inputs == ("B04", "B08", "dataMask") and evalscript.units == "DN"
    assert [(o.id, o.bands, o.sample_type) for o in evalscript.outputs] == [
        ("ndvi", 1, "FLOAT32"),
        ("other", 1, "FLOAT32"),
    ]
    assert evalscript.engine == "translated"


def test_work_and_memory_of_a_script_are_bounded() -> None:
    # Inlining doubles the work per level: 2^20 calls are refused, not run.
    functions = "function f0(x) { return x + 1; }\n" + "".join(
        f"function f{i}(x) {{ return f{i - 1}(x) + f{i - 1}(x); }}\n" for i in range(1, 21)
    )
    text = HEAD % 1 + functions + "function evaluatePixel(s) { return [f20(s.B04)]; }\n"
    evalscript = parse_evalscript(text, LIMITS)
    assert evalscript.engine == "v8"
    assert "more than 50,000 evaluation steps" in evalscript.translation_refused
    # Arrays doubled at the top level stop at 4,096 items.
    doubling = "var a = [1, 2];\n" + "a = [...a, ...a];\n" * 40
    text = HEAD % 1 + doubling + "function evaluatePixel(s) { return [a.length]; }\n"
    evalscript = parse_evalscript(text, LIMITS)
    assert evalscript.engine == "v8"
    assert "arrays of more than 4,096 items" in evalscript.translation_refused


def test_blocks_of_pixels_give_the_same_values() -> None:
    rng = np.random.default_rng(7)
    bands = {
        b: rng.random((100, 150), dtype=np.float32) for b in ("B02", "B03", "B04", "B08", "B11")
    }
    valid = rng.random((100, 150)) > 0.2
    small = EvalscriptLimits.from_settings(Settings.model_construct(evalscript_memory_mb=1))
    whole = script("multi_output")
    sliced = parse_evalscript(corpus("multi_output"), small)
    assert sliced._translation.block_pixels < valid.size < whole._translation.block_pixels
    inputs = {b: bands[b] for b in whole.inputs if b != "dataMask"}
    expected = whole.evaluate(inputs, valid)
    for key, value in sliced.evaluate(inputs, valid).items():
        np.testing.assert_array_equal(value, expected[key])


def test_undefined_for_some_pixels_only() -> None:
    body = """
  let x;
  if (s.B04 > 0.5) { var late = 7; x = s.B08; }
  let y = 0;
  s.B04 > 0.2 && (y = 5);
  return [late === undefined ? -1 : late, x == null ? -2 : x, x + 1, y];
"""
    out = evaluate_body(body, 4, [0.25, 0.75, 0.0], [np.nan, 0.5, 0.5])
    np.testing.assert_array_equal(out[0], [-1, 7, -1])
    np.testing.assert_array_equal(out[1], [-2, 0.5, -2])
    np.testing.assert_array_equal(out[2], np.float32([np.nan, 1.5, np.nan]))  # undefined + 1
    np.testing.assert_array_equal(out[3], [5, 5, 0])  # the assignment only where && went on


def test_growing_an_array_inside_a_per_pixel_branch_is_refused() -> None:
    text = HEAD % 1 + (
        "function evaluatePixel(s) {\n  let a = [1];\n  if (s.B04 > 0.5) a.push(2);\n  return [a.length];\n}\n"
    )
    evalscript = parse_evalscript(text, LIMITS)
    assert evalscript.translation_refused == (
        "line 7:20: Array.prototype.push inside a per-pixel branch (its length would differ): "
        "not supported by the translator"
    )


def test_syntax_newer_than_es2017_runs_in_v8() -> None:
    text = HEAD % 1 + (
        "const gains = { red: { value: 2 } };\n"
        "function evaluatePixel(s) {\n  return [(gains.red?.value ?? 1) * s.B04];\n}\n"
    )
    evalscript = parse_evalscript(text, LIMITS)
    assert evalscript.engine == "v8"
    assert evalscript.translation_refused.startswith("line 7:22: syntax error: Unexpected token .")
    out = evalscript.evaluate(
        {"B04": np.float32([[0.25, 0.5]]), "B08": np.float32([[0, 0]])}, np.ones((1, 2), bool)
    )
    np.testing.assert_array_equal(out["default"], [[[0.5, 1.0]]])
    bad = (
        text.replace("function preProcessScenes", "")
        + "function preProcessScenes(c) { return c; }\n"
    )
    with pytest.raises(BadRequestError, match="preProcessScenes"):
        parse_evalscript(bad, LIMITS)


def test_band_math_pickles_and_one_script_serves_threads(pixels) -> None:
    from concurrent.futures import ThreadPoolExecutor

    bands, valid = pixels
    arrays = {name: np.ma.MaskedArray(bands[name], mask=~valid) for name in ("B04", "B08", "SCL")}
    band_math = EvalscriptBandMath(script("statistical_ndvi_datamask")).rename({"B04": "red"})
    arrays["red"] = arrays.pop("B04")
    copy = pickle.loads(pickle.dumps(band_math))
    assert (copy.names, copy.outputs, copy.output) == (
        band_math.names,
        band_math.outputs,
        band_math.output,
    )
    expected = band_math.evaluate(arrays)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: copy.evaluate(arrays), range(8)))
    for result in results:
        np.testing.assert_array_equal(result.filled(0), expected.filled(0))
        np.testing.assert_array_equal(np.ma.getmaskarray(result), np.ma.getmaskarray(expected))


AUTO_CONVERTED = """//VERSION=3 (auto-converted from 2)
function evaluatePixelOrig(samples) {
  var sample = samples[0];
  var n = normalize(sample.B04, 0, 0.25);
  return { default: [tansig(n) * 2] };
}
function normalize(unnormalized, min, max) { return 2 * (unnormalized - min) / (max - min) - 1; }
function tansig(input) { return 2 / (1 + Math.exp(-2 * input)) - 1; }
function setup() {
  return { input: [{ bands: ["B04", "B08"] }], output: [{ id: "default", sampleType: "AUTO", bands: 1 }] };
}
function evaluatePixel(sample, scene, metadata, customData, outputMetadata) {
  const result = evaluatePixelOrig([sample], [scene], metadata, customData, outputMetadata);
  return result[Object.keys(result)[0]];
}
"""


def test_scripts_auto_converted_from_v2_are_translated() -> None:
    # Sentinel Hub's converter wraps the V2 body; its extra arguments are passed, never used.
    evalscript = parse_evalscript(AUTO_CONVERTED, LIMITS)
    assert evalscript.engine == "translated", evalscript.translation_refused
    b04 = np.float32([[0.0, 0.1, 0.2, 0.3]])
    out = evalscript.evaluate({"B04": b04, "B08": b04}, np.ones(b04.shape, bool))["default"]
    n = 2 * b04.astype(float) / 0.25 - 1
    close(out, [2 * (2 / (1 + np.exp(-2 * n)) - 1)])


def test_scl_switch(pixels) -> None:
    b = f64(pixels[0])
    colors = {
        1: (255, 0, 0), 2: (47, 47, 47), 3: (100, 50, 0), 4: (0, 160, 0), 5: (255, 230, 90),
        6: (0, 0, 255), 8: (192, 192, 192), 9: (192, 192, 192), 10: (100, 200, 255),
        11: (255, 150, 255),
    }  # fmt: skip
    scl = b["SCL"].astype(int)
    rgb = np.array([colors.get(c, (128, 128, 128)) for c in scl.ravel()]).T.reshape(3, *SHAPE) / 255
    alpha = pixels[1] * np.select([scl == 0, scl == 7], [0.0, 0.5], 1.0)
    close(run("scl_switch", pixels)["default"], [*rgb, alpha])


def test_switch_falls_through_and_breaks_per_pixel() -> None:
    body = """
  let k = Math.floor(s.B04 * 10), acc = 0;
  switch (k) {
    case 1: acc += 1;
    default:
      acc += 10;
      if (s.B08 > 0.3) break;
      acc += 100;
    case 3: acc += 1000; break;
    case 5: return [5, 5];
  }
  return [acc, k];
"""
    out = evaluate_body(body, 2, [0.15, 0.15, 0.25, 0.35, 0.55], [0.5, 0.1, 0.1, 0.5, 0.5])
    np.testing.assert_array_equal(out[0], [11, 1111, 1110, 1000, 5])
