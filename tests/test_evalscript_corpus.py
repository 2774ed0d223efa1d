"""The two evalscript engines agree: translated numpy == V8 for every translatable corpus script.

Each script of ``tests/evalscripts/`` runs through the translator (``Evalscript.evaluate``)
and through V8 (``run_v8``: Sentinel Hub's helper library in ``prelude.js``, the script as
written) on the same random pixels, including the awkward ones (0/0, equal bands, NaN-free
zeros, every SCL class, masked pixels). The V8-only scripts run in V8 and are checked against
their meaning computed with numpy here.
"""

from pathlib import Path

import numpy as np
import pytest

from app.evalscript.limits import EvalscriptLimits
from app.evalscript.script import parse_evalscript
from app.evalscript.v8 import run_v8

CORPUS = Path(__file__).parent / "evalscripts"
LIMITS = EvalscriptLimits.default()
SHAPE = (61, 67)  # 4087 px: several V8 blocks below, the last one partial
V8_ONLY = ("loop_sort", "date_use", "class_use")
REFUSED = ("v1_style",)
TRANSLATABLE = sorted(
    path.stem for path in CORPUS.glob("*.js") if path.stem not in V8_ONLY + REFUSED
)


@pytest.fixture(scope="module")
def pixels() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Random reflectances (with 0s, equal pairs, 0/0), every SCL class, a validity mask."""
    rng = np.random.default_rng(1616)
    bands = {
        name: rng.uniform(0.0, 0.6, SHAPE).astype(np.float32)
        for name in ("B02", "B03", "B04", "B08", "B8A", "B11")
    }
    for name in bands:
        bands[name][0, :7] = 0.0
    bands["B08"][1, :7] = bands["B04"][1, :7]
    bands["B03"][1, 7:14] = bands["B08"][1, 7:14]
    bands["B11"][1, 14:21] = bands["B8A"][1, 14:21]
    bands["B08"][2, :7] = 0.0
    bands["SCL"] = rng.integers(0, 12, SHAPE).astype(np.float32)
    valid = rng.random(SHAPE) > 0.1
    return bands, valid


def inputs(evalscript, bands: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: bands[name] for name in evalscript.inputs if name != "dataMask"}


def v8(evalscript, pixels, block: int = 1000) -> dict[str, np.ndarray]:
    bands, valid = pixels
    limits = EvalscriptLimits(**{**LIMITS.__dict__, "block_pixels": block})
    return run_v8(evalscript.text, evalscript.setup, inputs(evalscript, bands), valid, limits)


def test_the_corpus_has_the_scripts_the_plan_names() -> None:
    assert len(TRANSLATABLE) >= 12
    assert {"ndvi", "statistical_ndvi_datamask", "color_ramp", "multi_output"} <= set(TRANSLATABLE)


@pytest.mark.parametrize("name", TRANSLATABLE)
def test_translated_equals_v8(name: str, pixels) -> None:
    evalscript = parse_evalscript((CORPUS / f"{name}.js").read_text(), LIMITS)
    assert evalscript.engine == "translated", evalscript.translation_refused
    bands, valid = pixels
    translated = evalscript.evaluate(inputs(evalscript, bands), valid)
    in_v8 = v8(evalscript, pixels)
    assert list(in_v8) == [output.id for output in evalscript.outputs]
    for output in evalscript.outputs:
        expected = translated[output.id]
        actual = in_v8[output.id]
        assert actual.shape == (output.bands, *SHAPE) == expected.shape
        assert actual.dtype == np.float32
        # 1e-6 relative; values that cancel to ~0 (0.3 - 0.3 in float32 inputs) get the
        # same 1e-6 as an absolute bound.
        np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-6, err_msg=output.id)
        assert np.array_equal(np.isnan(actual), np.isnan(expected)), output.id


def test_ndvi_in_v8_is_the_normalized_difference(pixels) -> None:
    bands, valid = pixels
    evalscript = parse_evalscript((CORPUS / "ndvi.js").read_text(), LIMITS)
    b04, b08 = bands["B04"].astype(np.float64), bands["B08"].astype(np.float64)
    with np.errstate(all="ignore"):
        expected = (b08 - b04) / (b08 + b04)
    actual = v8(evalscript, pixels)["default"][0]
    np.testing.assert_allclose(actual, expected.astype(np.float32), rtol=1e-6)
    assert np.isnan(actual[0, :7]).all()  # 0/0 is NaN in JavaScript too


def test_v8_only_scripts_run_in_v8_with_their_meaning(pixels) -> None:
    bands, _ = pixels
    b = {name: array.astype(np.float64) for name, array in bands.items()}
    with np.errstate(all="ignore"):
        ndvi = (b["B08"] - b["B04"]) / (b["B08"] + b["B04"])
    stack = np.stack([b["B02"], b["B03"], b["B04"], b["B08"], b["B11"]])
    expected = {
        "loop_sort": np.median(stack, axis=0),
        "date_use": 61 * ndvi,  # 2024-03-01 is day 61
        "class_use": (ndvi + 1) / 2,
    }
    for name in V8_ONLY:
        evalscript = parse_evalscript((CORPUS / f"{name}.js").read_text(), LIMITS)
        assert evalscript.engine == "v8", name
        out = evalscript.evaluate(inputs(evalscript, bands), pixels[1])["default"][0]
        np.testing.assert_allclose(out, expected[name].astype(np.float32), rtol=1e-6, err_msg=name)
