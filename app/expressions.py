"""Band math: parse, validate and evaluate user expressions; the named presets.

User text is never handed to ``eval`` or numexpr. It is parsed with Python's ``ast``,
every node is checked against a small whitelist (numbers, band names, arithmetic,
comparisons, logic, a few numpy functions), and the checked tree is evaluated here with
numpy. Outputs are separated by ``;`` as in rio-tiler (``"red;green;blue"``).
"""

import ast
import copy
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.errors import BadRequestError
from app.sentinel2 import SCL_ASSET, SCL_COLORMAP

NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")

# name -> (numpy function, number of arguments).
FUNCTIONS: dict[str, tuple[Callable[..., Any], int]] = {
    "where": (np.where, 3),
    "abs": (np.abs, 1),
    "sqrt": (np.sqrt, 1),
    "log": (np.log, 1),
    "log10": (np.log10, 1),
    "log1p": (np.log1p, 1),
    "exp": (np.exp, 1),
    "clip": (np.clip, 3),
    "minimum": (np.minimum, 2),
    "maximum": (np.maximum, 2),
    "floor": (np.floor, 1),
    "ceil": (np.ceil, 1),
    "round": (np.round, 1),
}

_ARITHMETIC: dict[type, tuple[str, Callable[[Any, Any], Any]]] = {
    ast.Add: ("+", np.add),
    ast.Sub: ("-", np.subtract),
    ast.Mult: ("*", np.multiply),
    ast.Div: ("/", np.true_divide),
    ast.Pow: ("**", np.power),
    ast.Mod: ("%", np.mod),
}
_LOGICAL: dict[type, tuple[str, Callable[[Any, Any], Any]]] = {
    ast.BitAnd: ("&", np.logical_and),
    ast.BitOr: ("|", np.logical_or),
}
_COMPARISONS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Lt: np.less,
    ast.LtE: np.less_equal,
    ast.Gt: np.greater,
    ast.GtE: np.greater_equal,
    ast.Eq: np.equal,
    ast.NotEq: np.not_equal,
}
# Spellings of the operators refused, for the error message.
_OPERATOR_TEXT: dict[type, str] = {
    ast.FloorDiv: "//",
    ast.MatMult: "@",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitXor: "^",
    ast.Is: "is",
    ast.IsNot: "is not",
    ast.In: "in",
    ast.NotIn: "not in",
}


def _fail(message: str) -> BadRequestError:
    return BadRequestError(f"expression: {message}")


def _operator_name(op: ast.AST) -> str:
    return _OPERATOR_TEXT.get(type(op), type(op).__name__)


class _Validator:
    """Walks a parsed output, refusing anything outside the whitelist."""

    def __init__(self, max_depth: int):
        self.max_depth = max_depth
        self.nodes = 0

    def visit(self, node: ast.AST, depth: int = 1) -> None:
        self.nodes += 1
        if depth > self.max_depth:
            raise _fail(f"too deeply nested (more than {self.max_depth} levels)")
        children: list[ast.AST]
        if isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _fail(f"unsupported constant {value!r}; only numbers are allowed")
            if isinstance(value, int) and abs(value) > 2**63:
                raise _fail("number too large")
            children = []
        elif isinstance(node, ast.Name):
            if not NAME_PATTERN.match(node.id):
                raise _fail(f"invalid name '{node.id}'")
            if node.id in FUNCTIONS:
                raise _fail(f"'{node.id}' is a function; call it as {node.id}(...)")
            children = []
        elif isinstance(node, ast.BinOp):
            if type(node.op) not in _ARITHMETIC and type(node.op) not in _LOGICAL:
                raise _fail(f"unsupported operator '{_operator_name(node.op)}'")
            children = [node.left, node.right]
        elif isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, ast.USub | ast.UAdd | ast.Not | ast.Invert):
                raise _fail(f"unsupported operator '{_operator_name(node.op)}'")
            children = [node.operand]
        elif isinstance(node, ast.Compare):
            for op in node.ops:
                if type(op) not in _COMPARISONS:
                    raise _fail(f"unsupported operator '{_operator_name(op)}'")
            children = [node.left, *node.comparators]
        elif isinstance(node, ast.BoolOp):
            children = list(node.values)
        elif isinstance(node, ast.Call):
            children = self._call(node)
        else:
            raise _fail(f"unsupported syntax '{type(node).__name__}'")
        for child in children:
            self.visit(child, depth + 1)

    def _call(self, node: ast.Call) -> list[ast.AST]:
        if not isinstance(node.func, ast.Name):
            # e.g. np.sqrt(x) or (f)(x): only plain whitelisted names are callable.
            raise _fail(f"unsupported syntax '{type(node.func).__name__}'")
        name = node.func.id
        if name not in FUNCTIONS:
            raise _fail(f"unknown function '{name}'; one of {', '.join(sorted(FUNCTIONS))}")
        if node.keywords:
            raise _fail(f"function '{name}' takes no keyword arguments")
        if any(isinstance(arg, ast.Starred) for arg in node.args):
            raise _fail("unsupported syntax 'Starred'")
        arity = FUNCTIONS[name][1]
        if len(node.args) != arity:
            raise _fail(f"function '{name}' takes {arity} argument(s), got {len(node.args)}")
        return list(node.args)


def _as_float(value: Any) -> Any:
    # Booleans (comparison results) take part in arithmetic as 0/1; numpy refuses
    # `-` on booleans, so everything arithmetic runs in float64.
    return np.asarray(value, dtype=np.float64)


def _as_bool(value: Any) -> Any:
    array = np.asarray(value)
    return array if array.dtype == np.bool_ else array != 0


def _evaluate(node: ast.AST, values: Mapping[str, np.ndarray]) -> Any:
    """Evaluate a validated node with numpy."""
    if isinstance(node, ast.Constant):
        return np.float64(node.value)
    if isinstance(node, ast.Name):
        return values[node.id]
    if isinstance(node, ast.BinOp):
        left = _evaluate(node.left, values)
        right = _evaluate(node.right, values)
        if type(node.op) in _LOGICAL:
            return _LOGICAL[type(node.op)][1](_as_bool(left), _as_bool(right))
        return _ARITHMETIC[type(node.op)][1](_as_float(left), _as_float(right))
    if isinstance(node, ast.UnaryOp):
        operand = _evaluate(node.operand, values)
        if isinstance(node.op, ast.Not | ast.Invert):
            return np.logical_not(_as_bool(operand))
        return -_as_float(operand) if isinstance(node.op, ast.USub) else _as_float(operand)
    if isinstance(node, ast.Compare):
        # Chained comparisons (a < b < c) mean (a < b) & (b < c), as in Python.
        result = None
        left = _as_float(_evaluate(node.left, values))
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = _as_float(_evaluate(comparator, values))
            step = _COMPARISONS[type(op)](left, right)
            result = step if result is None else np.logical_and(result, step)
            left = right
        return result
    if isinstance(node, ast.BoolOp):
        combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
        result = _as_bool(_evaluate(node.values[0], values))
        for value in node.values[1:]:
            result = combine(result, _as_bool(_evaluate(value, values)))
        return result
    if isinstance(node, ast.Call):
        assert isinstance(node.func, ast.Name)
        name = node.func.id
        args = [_evaluate(arg, values) for arg in node.args]
        if name == "where":
            return np.where(_as_bool(args[0]), _as_float(args[1]), _as_float(args[2]))
        return FUNCTIONS[name][0](*(_as_float(arg) for arg in args))
    raise AssertionError(f"unvalidated node {type(node).__name__}")  # pragma: no cover


def _used_names(tree: ast.AST) -> list[str]:
    """Variable names of a tree, unique, in order; function names are not variables."""
    names: list[str] = []

    def walk(node: ast.AST) -> None:
        if isinstance(node, ast.Name):
            if node.id not in names:
                names.append(node.id)
            return
        children = node.args if isinstance(node, ast.Call) else ast.iter_child_nodes(node)
        for child in children:
            walk(child)

    walk(tree)
    return names


@dataclass(frozen=True)
class Expression:
    """A validated band-math expression with one or more outputs.

    Attributes:
        text: The normalized text (outputs joined by ``;``).
        outputs: One normalized sub-expression per output band.
        names: The variable (band) names, unique, in the order first written.

    """

    text: str
    outputs: tuple[str, ...]
    names: tuple[str, ...]
    _trees: tuple[ast.expr, ...] = field(repr=False, compare=False)

    def evaluate(self, arrays: Mapping[str, np.ndarray]) -> np.ma.MaskedArray:
        """Compute every output with numpy.

        Args:
            arrays: One array per name, all of the same shape (e.g. ``(h, w)``); masked
                arrays keep their mask.

        Returns:
            A float32 masked array of shape ``(len(outputs), *shape)``. A pixel of an
            output is masked where any input that output uses is masked, or where the
            result is not finite (0/0, log of a negative ...); masked pixels hold 0.

        Raises:
            BadRequestError: A name has no array.
            ValueError: The input arrays differ in shape.

        """
        missing = [name for name in self.names if name not in arrays]
        if missing:
            raise _fail(
                f"unknown name '{missing[0]}'; available: {', '.join(sorted(arrays)) or 'none'}"
            )
        used = {name: arrays[name] for name in self.names}
        shapes = {np.shape(array) for array in used.values()}
        if len(shapes) > 1:
            raise ValueError(f"expression inputs differ in shape: {sorted(shapes)}")
        shape = shapes.pop() if shapes else np.shape(next(iter(arrays.values()), 0))
        # Converted once: every arithmetic step runs in float64 (see _as_float).
        data = {name: _as_float(np.ma.getdata(array)) for name, array in used.items()}
        masks = {name: np.ma.getmaskarray(array) for name, array in used.items()}

        bands = np.zeros((len(self._trees), *shape), dtype=np.float32)
        band_masks = np.zeros((len(self._trees), *shape), dtype=bool)
        with np.errstate(all="ignore"):
            for index, tree in enumerate(self._trees):
                result = np.broadcast_to(_as_float(_evaluate(tree, data)), shape)
                mask = ~np.isfinite(result)
                for name in _used_names(tree):
                    mask = mask | masks[name]
                bands[index] = np.where(mask, 0, result)
                band_masks[index] = mask
        return np.ma.MaskedArray(bands, mask=band_masks)

    def rename(self, mapping: Mapping[str, str]) -> "Expression":
        """Return a copy with variable names replaced (e.g. ``{"B04": "red"}``).

        Args:
            mapping: Old name -> new name; names not in it stay.

        Returns:
            The renamed Expression.

        Raises:
            BadRequestError: A new name is not a valid name.

        """
        for new in mapping.values():
            if not NAME_PATTERN.match(new) or new in FUNCTIONS:
                raise _fail(f"invalid name '{new}'")
        trees = tuple(_Renamer(mapping).visit(copy.deepcopy(tree)) for tree in self._trees)
        return _build(trees)


class _Renamer(ast.NodeTransformer):
    def __init__(self, mapping: Mapping[str, str]):
        self.mapping = mapping

    def visit_Name(self, node: ast.Name) -> ast.Name:  # noqa: D102 (ast visitor)
        node.id = self.mapping.get(node.id, node.id)
        return node

    def visit_Call(self, node: ast.Call) -> ast.Call:  # noqa: D102 (ast visitor)
        # Only the arguments: the function name is not a variable.
        node.args = [self.visit(arg) for arg in node.args]
        return node


def _build(trees: tuple[ast.expr, ...]) -> Expression:
    outputs = tuple(ast.unparse(tree) for tree in trees)
    names: list[str] = []
    for tree in trees:
        names.extend(name for name in _used_names(tree) if name not in names)
    return Expression(text=";".join(outputs), outputs=outputs, names=tuple(names), _trees=trees)


def parse_expression(
    text: str,
    *,
    max_length: int = 2000,
    max_nodes: int = 200,
    max_depth: int = 100,
) -> Expression:
    """Parse and validate band math, rio-tiler style (``;`` separates output bands).

    Allowed: int/float numbers; names ``[A-Za-z][A-Za-z0-9_]*``; ``+ - * / ** %``; unary
    ``- +``; comparisons ``< <= > >= == !=`` (chained too); ``& | ~`` and ``and or not``
    (all elementwise); functions ``where(cond, a, b)``, ``abs``, ``sqrt``, ``log``,
    ``log10``, ``log1p``, ``exp``, ``clip(x, lo, hi)``, ``minimum``, ``maximum``,
    ``floor``, ``ceil``, ``round``.

    Args:
        text: The expression, e.g. ``"(nir-red)/(nir+red)"`` or ``"red;green;blue"``.
        max_length: Longest accepted text, in characters.
        max_nodes: Most syntax-tree nodes (numbers, names, operations) over all outputs.
        max_depth: Deepest accepted nesting of operations.

    Returns:
        The validated Expression.

    Raises:
        BadRequestError: Anything else, with a message starting ``expression: ``.

    """
    if not isinstance(text, str) or not text.strip():
        raise _fail("empty expression")
    if len(text) > max_length:
        raise _fail(f"too long ({len(text)} characters; at most {max_length})")
    trees: list[ast.expr] = []
    nodes = 0
    parts = text.split(";")
    for position, part in enumerate(parts, start=1):
        label = f" in output {position}" if len(parts) > 1 else ""
        if not part.strip():
            raise _fail(f"empty output {position}")
        try:
            tree = ast.parse(part.strip(), mode="eval")
        except SyntaxError as error:
            raise _fail(f"invalid syntax{label} ({error.msg})") from None
        except (RecursionError, MemoryError, ValueError):
            # The CPython parser gives up on pathological nesting or null bytes.
            raise _fail(f"invalid syntax{label} (too complex)") from None
        validator = _Validator(max_depth)
        validator.visit(tree.body)
        nodes += validator.nodes
        if nodes > max_nodes:
            raise _fail(f"too complex (more than {max_nodes} nodes)")
        trees.append(tree.body)
    expression = _build(tuple(trees))
    if not expression.names:
        # Band math reads what it names: a constant has no grid, no size, nothing to read.
        raise _fail(f"'{text}' names no band or asset to read")
    return expression


def resolve_names(expression: Expression, resolver: Callable[[str], str | None]) -> Expression:
    """Rename every variable through a resolver, refusing names it does not know.

    Args:
        expression: A parsed expression.
        resolver: Name -> asset key or None, e.g.
            ``lambda name: sentinel2.resolve_asset(name, item.assets)``.

    Returns:
        The expression over resolved names.

    Raises:
        BadRequestError: ``expression: unknown band 'x'`` for an unresolved name.

    """
    mapping: dict[str, str] = {}
    for name in expression.names:
        resolved = resolver(name)
        if resolved is None:
            raise _fail(f"unknown band '{name}'")
        mapping[name] = resolved
    return expression.rename(mapping)


@dataclass(frozen=True)
class Preset:
    """A named visualization / index: what to read and how to render it.

    Attributes:
        name: The preset name (``ndvi``).
        assets: Assets read as output bands, when the preset is not an expression.
        expression: Band math over common asset names, when it is.
        rescale: One (min, max) range per output band, for 8-bit rendering.
        colormap_name: A rio-tiler colormap name (one-band outputs).
        colormap: An explicit {value: (r, g, b, a)} colormap (discrete data: SCL).
        harmonize: Whether DN is turned into reflectance (scale/offset) before use.
        description: One sentence for the API docs and the viewer.

    """

    name: str
    assets: tuple[str, ...] | None
    expression: str | None
    rescale: tuple[tuple[float, float], ...] | None
    colormap_name: str | None
    colormap: dict[int, tuple[int, int, int, int]] | None
    harmonize: bool
    description: str


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            name="true-color",
            assets=("red", "green", "blue"),
            expression=None,
            rescale=((0.0, 0.3),) * 3,
            colormap_name=None,
            colormap=None,
            harmonize=True,
            description="True colour (B04, B03, B02) from reflectance 0-0.3.",
        ),
        Preset(
            name="false-color",
            assets=("nir", "red", "green"),
            expression=None,
            rescale=((0.0, 0.5), (0.0, 0.3), (0.0, 0.3)),
            colormap_name=None,
            colormap=None,
            harmonize=True,
            description="Colour infrared (B08, B04, B03): vegetation shows red.",
        ),
        Preset(
            name="ndvi",
            assets=None,
            expression="(nir-red)/(nir+red)",
            rescale=((-0.2, 0.9),),
            colormap_name="rdylgn",
            colormap=None,
            harmonize=True,
            description="Normalized difference vegetation index (B08, B04).",
        ),
        Preset(
            name="ndwi",
            assets=None,
            expression="(green-nir)/(green+nir)",
            rescale=((-1.0, 1.0),),
            colormap_name="rdbu",
            colormap=None,
            harmonize=True,
            description="Normalized difference water index, McFeeters (B03, B08).",
        ),
        Preset(
            name="ndmi",
            assets=None,
            expression="(nir08-swir16)/(nir08+swir16)",
            rescale=((-1.0, 1.0),),
            colormap_name="rdbu",
            colormap=None,
            harmonize=True,
            description="Normalized difference moisture index (B8A, B11).",
        ),
        Preset(
            name="scl",
            assets=(SCL_ASSET,),
            expression=None,
            rescale=None,
            colormap_name=None,
            colormap=SCL_COLORMAP,
            harmonize=False,
            description="Scene classification (SCL) in ESA's legend colours.",
        ),
    )
}


def get_preset(name: str) -> Preset:
    """Look a preset up by name (case-insensitive).

    Args:
        name: e.g. ``ndvi`` or ``true-color``.

    Returns:
        The Preset.

    Raises:
        BadRequestError: ``preset: unknown preset 'x'; one of ...``.

    """
    preset = PRESETS.get(name.strip().lower())
    if preset is None:
        raise BadRequestError(f"preset: unknown preset '{name}'; one of {', '.join(PRESETS)}")
    return preset


def check_default_preset(name: str | None) -> None:
    """Refuse a ``default_preset`` setting that names no preset (a start-up error).

    Raises:
        ValueError: ``default_preset: unknown preset 'x'; one of ...``.

    """
    if name is not None and name not in PRESETS:
        raise ValueError(f"default_preset: unknown preset {name!r}; one of {', '.join(PRESETS)}")
