import time
from collections.abc import Callable

import numpy as np
import pytest
from rio_tiler.colormap import cmap

from app import sentinel2
from app.errors import BadRequestError
from app.expressions import (
    FUNCTIONS,
    PRESETS,
    Expression,
    get_preset,
    parse_expression,
    resolve_names,
)

RNG = np.random.default_rng(42)
RED = RNG.uniform(0.0, 0.4, (4, 5))
NIR = RNG.uniform(0.1, 0.6, (4, 5))
GREEN = RNG.uniform(0.0, 0.3, (4, 5))
ARRAYS = {"red": RED, "nir": NIR, "green": GREEN}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("(nir-red)/(nir+red)", lambda: (NIR - RED) / (NIR + RED)),
        ("nir - red * 2", lambda: NIR - RED * 2),
        ("nir ** 2 + red % 0.1", lambda: NIR**2 + RED % 0.1),
        ("-red + +nir", lambda: -RED + NIR),
        ("2.5 * (nir - red) / (nir + 6 * red - 7.5 * green + 1)",
         lambda: 2.5 * (NIR - RED) / (NIR + 6 * RED - 7.5 * GREEN + 1)),
        ("red > 0.2", lambda: (RED > 0.2).astype(float)),
        ("red <= 0.2", lambda: (RED <= 0.2).astype(float)),
        ("red == red", lambda: np.ones_like(RED)),
        ("red != nir", lambda: np.ones_like(RED)),
        ("0.1 < red < 0.3", lambda: ((RED > 0.1) & (RED < 0.3)).astype(float)),
        ("0.1 < red <= nir", lambda: ((RED > 0.1) & (RED <= NIR)).astype(float)),
        ("(red > 0.1) & (nir > 0.3)", lambda: ((RED > 0.1) & (NIR > 0.3)).astype(float)),
        ("(red > 0.1) | (nir > 0.3)", lambda: ((RED > 0.1) | (NIR > 0.3)).astype(float)),
        ("~(red > 0.1)", lambda: (RED <= 0.1).astype(float)),
        ("red > 0.1 and nir > 0.3 and green > 0.1",
         lambda: ((RED > 0.1) & (NIR > 0.3) & (GREEN > 0.1)).astype(float)),
        ("red > 0.1 or nir > 0.3", lambda: ((RED > 0.1) | (NIR > 0.3)).astype(float)),
        ("not red > 0.1", lambda: (RED <= 0.1).astype(float)),
        ("(red > 0.1) * nir", lambda: (RED > 0.1) * NIR),
        ("(red > 0.1) - (nir > 0.3)", lambda: (RED > 0.1).astype(float) - (NIR > 0.3)),
        ("where(nir > red, nir, red)", lambda: np.where(NIR > RED, NIR, RED)),
        ("where(red, 1, 0)", lambda: (RED != 0).astype(float)),
        ("abs(red - nir)", lambda: np.abs(RED - NIR)),
        ("sqrt(nir)", lambda: np.sqrt(NIR)),
        ("log(nir) + log10(nir) + log1p(red)", lambda: np.log(NIR) + np.log10(NIR) + np.log1p(RED)),
        ("exp(red)", lambda: np.exp(RED)),
        ("clip(red * 4, 0.2, 0.8)", lambda: np.clip(RED * 4, 0.2, 0.8)),
        ("minimum(red, nir) + maximum(red, green)",
         lambda: np.minimum(RED, NIR) + np.maximum(RED, GREEN)),
        ("floor(nir * 10) + ceil(red * 10) + round(green * 10)",
         lambda: np.floor(NIR * 10) + np.ceil(RED * 10) + np.round(GREEN * 10)),
        ("1e-3 * nir + 10", lambda: 1e-3 * NIR + 10),
        ("red * 0 + 3", lambda: np.full_like(RED, 3.0)),
    ],
)  # fmt: skip
def test_single_output_equals_numpy(text: str, expected: Callable[[], np.ndarray]) -> None:
    result = parse_expression(text).evaluate(ARRAYS)
    assert result.dtype == np.float32
    assert result.shape == (1, 4, 5)
    assert not result.mask.any()
    np.testing.assert_allclose(result.data[0], expected(), rtol=1e-6, atol=1e-6)


def test_several_outputs() -> None:
    expr = parse_expression("red; green ;nir*2")
    assert expr.outputs == ("red", "green", "nir * 2")
    assert expr.text == "red;green;nir * 2"
    assert expr.names == ("red", "green", "nir")
    result = expr.evaluate(ARRAYS)
    assert result.shape == (3, 4, 5)
    np.testing.assert_allclose(result.data, np.stack([RED, GREEN, NIR * 2]), rtol=1e-6)


def test_names_in_written_order_unique_and_no_function_names() -> None:
    expr = parse_expression("sqrt(B08) - B04 + B08 * where(SCL > 3, 1, 0)")
    assert expr.names == ("B08", "B04", "SCL")
    assert isinstance(expr, Expression)


def test_integer_inputs_do_not_wrap() -> None:
    # uint16 DN: nir - red would wrap around in integer arithmetic.
    red = np.array([[3000]], dtype=np.uint16)
    nir = np.array([[1000]], dtype=np.uint16)
    result = parse_expression("(nir - red) / (nir + red)").evaluate({"red": red, "nir": nir})
    assert float(result[0, 0, 0]) == pytest.approx(-0.5)


def test_masks_propagate_per_output() -> None:
    red = np.ma.MaskedArray(np.array([[0.1, 0.2, 0.3]]), mask=[[False, True, False]])
    nir = np.ma.MaskedArray(np.array([[0.5, 0.5, 0.5]]), mask=[[False, False, True]])
    green = np.array([[0.2, 0.2, 0.2]])
    result = parse_expression("nir - red; green; green * red").evaluate(
        {"red": red, "nir": nir, "green": green}
    )
    assert result.mask.tolist() == [
        [[False, True, True]],
        [[False, False, False]],
        [[False, True, False]],
    ]
    assert result[0, 0, 0] == pytest.approx(0.4)
    assert result.data[0, 0, 1] == 0  # masked pixels hold 0


def test_non_finite_results_are_masked() -> None:
    red = np.array([0.0, 0.1, -0.1, 0.2])
    nir = np.array([0.0, 0.1, 0.5, 0.2])
    result = parse_expression("(nir - red) / (nir + red); log(red); 10 ** 400 * red").evaluate(
        {"red": red, "nir": nir}
    )
    assert result.mask[0].tolist() == [True, False, False, False]  # 0/0
    assert result.mask[1].tolist() == [True, False, True, False]  # log(0), log(<0)
    assert result.mask[2].all()  # inf and inf*0
    assert result[0].compressed().tolist() == pytest.approx([0.0, 1.5, 0.0])


def test_huge_powers_are_float_and_fast() -> None:
    # Python ints would compute 9**9**9 exactly (minutes); numpy floats give inf at once.
    start = time.monotonic()
    result = parse_expression("9 ** 9 ** 9 + red * 0").evaluate({"red": np.zeros(3)})
    assert time.monotonic() - start < 10
    assert result.mask.all()


def test_constant_outputs_broadcast_to_the_inputs() -> None:
    result = parse_expression("red; 1 + 1").evaluate({"red": RED})
    assert result.shape == (2, 4, 5)
    assert (result.data[1] == 2).all()


def test_missing_input_is_a_400() -> None:
    with pytest.raises(BadRequestError, match="^expression: unknown name 'swir16'"):
        parse_expression("nir - swir16").evaluate({"nir": NIR})


def test_inputs_of_different_shapes_are_a_programming_error() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        parse_expression("nir - red").evaluate({"nir": NIR, "red": RED[:2]})


# --- malicious / malformed ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expression: empty expression"),
        ("   ", "expression: empty expression"),
        ("red;;nir", "expression: empty output 2"),
        ("red;", "expression: empty output 2"),
        ("(nir - red", "expression: invalid syntax ('(' was never closed)"),
        ("nir - red)", "expression: invalid syntax (unmatched ')')"),
        ("nir -", "expression: invalid syntax"),
        ("__import__('os').system('id')", "expression: unsupported syntax 'Attribute'"),
        ("__import__('os')", "expression: unknown function '__import__'"),
        ("system('id')", "expression: unknown function 'system'"),
        ("eval('1')", "expression: unknown function 'eval'"),
        ("np.sqrt(red)", "expression: unsupported syntax 'Attribute'"),
        ("red.__class__", "expression: unsupported syntax 'Attribute'"),
        ("red[0]", "expression: unsupported syntax 'Subscript'"),
        ("'red'", "expression: unsupported constant 'red'"),
        ("b'red'", "expression: unsupported constant b'red'"),
        ("f'{red}'", "expression: unsupported syntax 'JoinedStr'"),
        ("lambda: 1", "expression: unsupported syntax 'Lambda'"),
        ("[x for x in red]", "expression: unsupported syntax 'ListComp'"),
        ("(x for x in red)", "expression: unsupported syntax 'GeneratorExp'"),
        ("[red]", "expression: unsupported syntax 'List'"),
        ("(red, nir)", "expression: unsupported syntax 'Tuple'"),
        ("{red}", "expression: unsupported syntax 'Set'"),
        ("{'a': red}", "expression: unsupported syntax 'Dict'"),
        ("red if nir else 0", "expression: unsupported syntax 'IfExp'"),
        ("(y := red)", "expression: unsupported syntax 'NamedExpr'"),
        ("red[1:2]", "expression: unsupported syntax 'Subscript'"),
        ("...", "expression: unsupported constant Ellipsis"),
        ("None", "expression: unsupported constant None"),
        ("True", "expression: unsupported constant True"),
        ("1j * red", "expression: unsupported constant 1j"),
        ("sqrt(x=red)", "expression: function 'sqrt' takes no keyword arguments"),
        ("sqrt(*red)", "expression: unsupported syntax 'Starred'"),
        ("clip(red, 0)", "expression: function 'clip' takes 3 argument(s), got 2"),
        ("sqrt(red, nir)", "expression: function 'sqrt' takes 1 argument(s), got 2"),
        ("where(red > 0, 1)", "expression: function 'where' takes 3 argument(s), got 2"),
        ("sqrt(red)(nir)", "expression: unsupported syntax 'Call'"),
        ("sqrt", "expression: 'sqrt' is a function; call it as sqrt(...)"),
        ("_red", "expression: invalid name '_red'"),
        ("__builtins__", "expression: invalid name '__builtins__'"),
        ("réd", "expression: invalid name 'réd'"),
        ("red // nir", "expression: unsupported operator '//'"),
        ("red @ nir", "expression: unsupported operator '@'"),
        ("red ^ nir", "expression: unsupported operator '^'"),
        ("red << 2", "expression: unsupported operator '<<'"),
        ("red is nir", "expression: unsupported operator 'is'"),
        ("red in nir", "expression: unsupported operator 'in'"),
        ("red = 1", "expression: invalid syntax"),
        ("import os", "expression: invalid syntax"),
        ("red; import os", "expression: invalid syntax in output 2"),
        ("red\x00", "expression: invalid syntax"),
        ("await red", "expression: unsupported syntax 'Await'"),
        ("yield red", "expression: invalid syntax"),
        ("1" * 30 + " * red", "expression: number too large"),
        ("4", "expression: '4' names no band or asset to read"),
        ("2 * 3; 1", "expression: '2 * 3; 1' names no band or asset to read"),
    ],
)
def test_refused_expressions(text: str, message: str) -> None:
    with pytest.raises(BadRequestError) as info:
        parse_expression(text)
    assert info.value.status_code == 400
    assert info.value.message.startswith(message), info.value.message


def test_too_long() -> None:
    text = "+".join(["red"] * 600)
    with pytest.raises(
        BadRequestError, match=r"^expression: too long \(2399 characters; at most 2000\)"
    ):
        parse_expression(text)
    assert parse_expression("red+nir", max_length=7).names == ("red", "nir")
    with pytest.raises(BadRequestError, match="too long"):
        parse_expression("red+nir", max_length=6)


def test_too_many_nodes() -> None:
    text = ";".join(["red+nir"] * 67)  # 3 nodes per output
    with pytest.raises(BadRequestError, match=r"^expression: too complex \(more than 200 nodes\)"):
        parse_expression(text)
    assert len(parse_expression(";".join(["red+nir"] * 66)).outputs) == 66
    assert parse_expression("+".join(["red"] * 100)).names == ("red",)  # 199 nodes
    with pytest.raises(BadRequestError, match="too complex"):
        parse_expression("red+nir", max_nodes=2)


def test_too_deep() -> None:
    with pytest.raises(BadRequestError, match=r"^expression: too deeply nested \(more than 100"):
        parse_expression("sqrt(" * 101 + "red" + ")" * 101)
    with pytest.raises(BadRequestError, match="too deeply nested"):
        parse_expression("-" * 30 + "red", max_depth=30)
    deep = parse_expression("sqrt(" * 99 + "red" + ")" * 99)
    assert deep.evaluate({"red": np.full(2, 2.0)}).tolist() == [[1.0, 1.0]]
    assert parse_expression("-" * 99 + "red").evaluate({"red": np.ones(2)}).tolist() == [[-1, -1]]


def test_pathological_nesting_never_crashes() -> None:
    with pytest.raises(BadRequestError, match="^expression: "):
        parse_expression("(" * 1000 + "red" + ")" * 1000)


# --- renaming -----------------------------------------------------------------------


def test_rename() -> None:
    expr = parse_expression("(B08 - B04) / (B08 + B04); sqrt(B04)")
    renamed = expr.rename({"B08": "nir", "B04": "red"})
    assert renamed.text == "(nir - red) / (nir + red);sqrt(red)"
    assert renamed.names == ("nir", "red")
    assert expr.names == ("B08", "B04")  # the original is untouched
    np.testing.assert_allclose(
        renamed.evaluate(ARRAYS).data[0], (NIR - RED) / (NIR + RED), rtol=1e-6
    )


def test_rename_merges_aliases_of_one_band() -> None:
    renamed = parse_expression("B04 + red").rename({"B04": "red"})
    assert renamed.names == ("red",)
    np.testing.assert_allclose(renamed.evaluate(ARRAYS).data[0], 2 * RED, rtol=1e-6)


@pytest.mark.parametrize("new", ["__class__", "red.x", "sqrt", "1a", ""])
def test_rename_refuses_invalid_names(new: str) -> None:
    with pytest.raises(BadRequestError, match="^expression: invalid name"):
        parse_expression("red").rename({"red": new})


def test_resolve_names_with_sentinel2_aliases() -> None:
    keys = ["red", "nir", "nir08", "swir16", "scl"]
    expr = parse_expression("(B8A - b11) / (B8A + b11) * where(SCL == 4, 1, 0) + nir * 0")
    resolved = resolve_names(expr, lambda name: sentinel2.resolve_asset(name, keys))
    assert resolved.names == ("nir08", "swir16", "scl", "nir")
    with pytest.raises(BadRequestError, match="^expression: unknown band 'B02'"):
        resolve_names(parse_expression("B02 + red"), lambda n: sentinel2.resolve_asset(n, keys))


# --- presets ------------------------------------------------------------------------


def test_preset_names() -> None:
    assert set(PRESETS) == {"true-color", "false-color", "ndvi", "ndwi", "ndmi", "scl"}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_consistent(name: str) -> None:
    preset = get_preset(name)
    assert preset.name == name
    assert (preset.assets is None) != (preset.expression is None)
    if preset.expression is not None:
        expr = parse_expression(preset.expression)
        assert set(expr.names) <= sentinel2.REFLECTANCE_ASSETS
        n_outputs = len(expr.outputs)
    else:
        assert set(preset.assets) <= set(sentinel2.BAND_ALIASES.values())
        n_outputs = len(preset.assets)
    if preset.rescale is not None:
        assert len(preset.rescale) == n_outputs
        assert all(low < high for low, high in preset.rescale)
    if preset.colormap_name is not None:
        assert preset.colormap_name in cmap.list()
        assert n_outputs == 1
    assert preset.description


def test_preset_values() -> None:
    assert get_preset("true-color").assets == ("red", "green", "blue")
    assert get_preset("true-color").rescale == ((0.0, 0.3),) * 3
    assert get_preset("true-color").harmonize
    assert get_preset("false-color").assets == ("nir", "red", "green")
    assert get_preset("ndvi").expression == "(nir-red)/(nir+red)"
    assert get_preset("ndwi").expression == "(green-nir)/(green+nir)"
    assert get_preset("ndmi").expression == "(nir08-swir16)/(nir08+swir16)"
    scl = get_preset("scl")
    assert scl.assets == ("scl",)
    assert not scl.harmonize
    assert scl.colormap == sentinel2.SCL_COLORMAP


def test_get_preset_is_case_insensitive() -> None:
    assert get_preset("NDVI") is PRESETS["ndvi"]


def test_unknown_preset() -> None:
    with pytest.raises(BadRequestError) as info:
        get_preset("evi")
    assert info.value.message == (
        "preset: unknown preset 'evi'; one of true-color, false-color, ndvi, ndwi, ndmi, scl"
    )


def test_ndvi_preset_on_harmonized_dn() -> None:
    # DN with ESA's +1000 (baseline >= 04.00, offset not yet applied), nodata 0.
    red_dn = np.array([[1500, 0], [1200, 3000]], dtype=np.uint16)
    nir_dn = np.array([[4000, 4000], [1200, 2000]], dtype=np.uint16)
    red = sentinel2.harmonize(red_dn, 0.0001, -0.1, nodata=0)
    nir = sentinel2.harmonize(nir_dn, 0.0001, -0.1, nodata=0)
    ndvi = parse_expression(get_preset("ndvi").expression).evaluate({"red": red, "nir": nir})
    assert ndvi.mask.tolist() == [[[False, True], [False, False]]]
    assert ndvi[0, 0, 0] == pytest.approx((0.3 - 0.05) / (0.3 + 0.05), abs=1e-5)
    assert ndvi[0, 1, 0] == pytest.approx(0.0, abs=1e-6)
    assert ndvi[0, 1, 1] == pytest.approx((0.1 - 0.2) / (0.1 + 0.2), abs=1e-5)


def test_function_table_is_small() -> None:
    assert set(FUNCTIONS) == {
        "where", "abs", "sqrt", "log", "log10", "log1p", "exp", "clip",
        "minimum", "maximum", "floor", "ceil", "round",
    }  # fmt: skip
