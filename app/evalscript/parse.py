"""Parse an evalscript with esprima, check its size, and read its ``setup()`` statically.

Limits are checked in the order they cost: characters before parsing (a 413 naming
``evalscript_max_chars``), then the syntax tree's node count and depth (413s naming
``evalscript_max_nodes`` / ``evalscript_max_depth``). Syntax errors are 400s naming the line
and column. Only VERSION=3 scripts are accepted: a V1 script (no ``setup()``, bands as
globals, a top-level ``return``) is refused with a 400 saying so.

``setup()`` is read without running JavaScript when its body is ``return {...}`` over literals
(every script of Sentinel Hub's documentation), else through the translator's interpreter
(top-level constants, ``concat`` ...); what that refuses runs in V8 (``run_setup``).
"""

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import esprima
from esprima import nodes

from app.errors import BadRequestError, TooLargeError
from app.evalscript.limits import EvalscriptLimits
from app.sentinel2 import BAND_ALIASES

# Input band names a script may ask for: ESA's Sentinel-2 L2A names and dataMask.
INPUT_BANDS: frozenset[str] = frozenset(set(BAND_ALIASES) - {"TCI"} | {"dataMask"})
SAMPLE_TYPES: tuple[str, ...] = ("AUTO", "UINT8", "UINT16", "FLOAT32")
UNITS: tuple[str, ...] = ("REFLECTANCE", "DN")
# Top-level functions of multi-temporal / dynamic-output scripts this service does not run.
UNSUPPORTED_FUNCTIONS: dict[str, str] = {
    "preProcessScenes": "preProcessScenes (multi-temporal scene filtering)",
    "updateOutput": "updateOutput (outputs that depend on the scenes)",
    "updateOutputMetadata": "updateOutputMetadata (output metadata)",
}
_VERSION = re.compile(r"^\s*//\s*VERSION\s*=\s*(\S+)")


def fail(message: str, node: Any = None) -> BadRequestError:
    """A 400 whose message starts ``evalscript: `` (and names the node's line:column)."""
    return BadRequestError(f"evalscript: {where(node)}{message}")


def where(node: Any) -> str:
    """``line L:C: `` of an esprima node (1-based column), or nothing without a location."""
    loc = getattr(node, "loc", None)
    if loc is None:
        return ""
    return f"line {loc.start.line}:{loc.start.column + 1}: "


@dataclass(frozen=True)
class ScriptSetup:
    """What ``setup()`` declares, normalized.

    Attributes:
        inputs: Input band names as written (``B04``, ``B8A``, ``SCL``, ``dataMask``).
        units: ``REFLECTANCE`` or ``DN``.
        outputs: ``(id, bands, sampleType)`` per output, in order.
        mosaicking: ``SIMPLE``.
        raw: The object ``setup()`` returned (JSON-like), for V8.

    """

    inputs: tuple[str, ...]
    units: str
    outputs: tuple[tuple[str, int, str], ...]
    mosaicking: str
    raw: dict[str, Any] = field(compare=False)


@dataclass(frozen=True)
class ParsedScript:
    """A parsed, size-checked V3 evalscript.

    Attributes:
        text: The script.
        program: esprima's Program node (with ``loc`` and ``range``).
        functions: Top-level function declarations by name.
        statements: The other top-level statements, in order.
        setup: The normalized ``setup()``.

    """

    text: str
    program: Any = field(repr=False, compare=False)
    functions: dict[str, Any] = field(repr=False, compare=False)
    statements: tuple[Any, ...] = field(repr=False, compare=False)
    setup: ScriptSetup = field(compare=False)


def children(node: Any) -> Iterator[Any]:
    """The child nodes of an esprima node."""
    for value in vars(node).values():
        if isinstance(value, nodes.Node):
            yield value
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, nodes.Node):
                    yield item


def _check_tree(program: Any, limits: EvalscriptLimits) -> None:
    count = 0
    stack = [(program, 1)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > limits.max_nodes:
            raise TooLargeError(
                f"evalscript: more than {limits.max_nodes} syntax nodes (evalscript_max_nodes)"
            )
        if depth > limits.max_depth:
            raise TooLargeError(
                f"evalscript: {where(node)}nested deeper than {limits.max_depth} levels "
                "(evalscript_max_depth)"
            )
        stack.extend((child, depth + 1) for child in children(node))


def _parse(text: str, limits: EvalscriptLimits) -> Any:
    try:
        return esprima.parseScript(text, {"loc": True, "range": True})
    except esprima.Error as error:
        description = str(getattr(error, "description", "") or error.message)
        description = re.sub(r"^Line \d+: ", "", description)
        if "Illegal return" in description and not _VERSION.match(text):
            raise _v1() from None
        raise BadRequestError(
            f"evalscript: line {error.lineNumber}:{error.column}: syntax error: {description}"
        ) from None
    except RecursionError:
        # esprima is a recursive-descent parser: pathological nesting ends here.
        raise TooLargeError(
            f"evalscript: nested deeper than {limits.max_depth} levels (evalscript_max_depth)"
        ) from None


def _v1() -> BadRequestError:
    return BadRequestError(
        "evalscript: only VERSION=3 evalscripts are supported (start the script with "
        "//VERSION=3 and declare setup() and evaluatePixel()); this looks like a V1 script"
    )


def parse_script(text: str, limits: EvalscriptLimits) -> ParsedScript:
    """Parse and check an evalscript, and read its ``setup()``.

    Args:
        text: The JavaScript.
        limits: Size limits (and V8's, when ``setup()`` must run).

    Returns:
        The ParsedScript.

    Raises:
        BadRequestError: Syntax error (line:column), not V3, an invalid ``setup()``, a feature
            this service does not run (``mosaicking`` other than SIMPLE, ``preProcessScenes``).
        TooLargeError: Over ``evalscript_max_chars``, ``_max_nodes`` or ``_max_depth``.

    """
    if not isinstance(text, str) or not text.strip():
        raise BadRequestError("evalscript: empty script")
    if len(text) > limits.max_chars:
        raise TooLargeError(
            f"evalscript: {len(text)} characters; at most {limits.max_chars} (evalscript_max_chars)"
        )
    version = _VERSION.match(text)
    if version and version.group(1) != "3":
        raise BadRequestError(
            f"evalscript: VERSION={version.group(1)} is not supported; only VERSION=3 is"
        )
    program = _parse(text, limits)
    _check_tree(program, limits)

    functions: dict[str, Any] = {}
    statements: list[Any] = []
    for statement in program.body:
        if statement.type == "FunctionDeclaration" and statement.id is not None:
            functions[statement.id.name] = statement
        else:
            statements.append(statement)
    if "evaluatePixel" not in functions or "setup" not in functions:
        if not version:
            raise _v1()
        missing = "evaluatePixel" if "evaluatePixel" not in functions else "setup"
        raise fail(f"no function {missing}() (a VERSION=3 script declares setup and evaluatePixel)")
    for name, feature in UNSUPPORTED_FUNCTIONS.items():
        if name in functions:
            raise fail(f"{feature} is not supported", functions[name])
    raw = _static_setup(functions["setup"])
    if raw is None:
        from app.evalscript.translate import evaluate_setup  # noqa: PLC0415 (imports parse)

        raw = evaluate_setup(program.body, tuple(statements), functions["setup"])
    if raw is None:
        from app.evalscript.v8 import run_setup  # noqa: PLC0415 (V8 only when needed)

        raw = run_setup(text, limits)
    setup = normalize_setup(raw, functions["setup"])
    return ParsedScript(
        text=text,
        program=program,
        functions=functions,
        statements=tuple(statements),
        setup=setup,
    )


class _NotLiteral(Exception):
    pass


def _literal(node: Any) -> Any:
    kind = node.type
    if kind == "Literal":
        if node.regex is not None:
            raise _NotLiteral
        return node.value
    if kind == "ArrayExpression":
        return [_literal(element) for element in node.elements if element is not None]
    if kind == "ObjectExpression":
        result = {}
        for prop in node.properties:
            if prop.type != "Property" or prop.computed or prop.kind != "init":
                raise _NotLiteral
            key = prop.key.name if prop.key.type == "Identifier" else prop.key.value
            result[str(key)] = _literal(prop.value)
        return result
    if kind == "UnaryExpression" and node.operator in "-+":
        value = _literal(node.argument)
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise _NotLiteral
        return -value if node.operator == "-" else value
    if kind == "Identifier" and node.name == "undefined":
        return None
    raise _NotLiteral


def _static_setup(function: Any) -> dict[str, Any] | None:
    body = function.body.body
    if len(body) != 1 or body[0].type != "ReturnStatement" or body[0].argument is None:
        return None
    try:
        value = _literal(body[0].argument)
    except _NotLiteral:
        return None
    return value if isinstance(value, dict) else None


def normalize_setup(raw: Any, node: Any = None) -> ScriptSetup:
    """Check and normalize what ``setup()`` returned.

    Args:
        raw: The returned object (a dict).
        node: The setup function (for line numbers in errors).

    Returns:
        The ScriptSetup.

    Raises:
        BadRequestError: Anything this service cannot run, naming it.

    """
    if not isinstance(raw, dict):
        raise fail("setup() must return an object {input, output}", node)
    inputs, units = _inputs(raw.get("input"), node)
    outputs = _outputs(raw.get("output", {}), node)
    mosaicking = raw.get("mosaicking", "SIMPLE")
    if not isinstance(mosaicking, str) or mosaicking.upper() != "SIMPLE":
        raise fail(
            f"mosaicking {mosaicking!r} is not supported; only SIMPLE (one mosaicked sample "
            "per pixel) is: ORBIT and TILE (samples over dates) are refused",
            node,
        )
    return ScriptSetup(inputs=inputs, units=units, outputs=outputs, mosaicking="SIMPLE", raw=raw)


def _inputs(value: Any, node: Any) -> tuple[tuple[str, ...], str]:
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        bands, units = value, "REFLECTANCE"
    elif isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        spec = value[0]
        if "datasource" in spec or "datasources" in spec:
            raise fail("data fusion (input datasource) is not supported", node)
        bands = spec.get("bands")
        units = spec.get("units", "REFLECTANCE")
        if isinstance(units, list):
            distinct = {str(unit).upper() for unit in units}
            if len(distinct) != 1:
                raise fail("per-band units are not supported; give one units for all", node)
            units = distinct.pop()
    elif isinstance(value, list) and len(value) > 1 and all(isinstance(i, dict) for i in value):
        raise fail("data fusion (several input objects) is not supported", node)
    else:
        raise fail("setup().input must be a list of band names or [{bands: [...]}]", node)
    if not isinstance(bands, list) or not bands or not all(isinstance(b, str) for b in bands):
        raise fail("setup().input names no bands", node)
    unknown = [band for band in bands if band not in INPUT_BANDS]
    if unknown:
        raise fail(
            f"unknown input band '{unknown[0]}'; one of {', '.join(sorted(INPUT_BANDS))}", node
        )
    if not isinstance(units, str) or units.upper() not in UNITS:
        raise fail(f"units {units!r} is not supported; one of {', '.join(UNITS)}", node)
    return tuple(dict.fromkeys(bands)), units.upper()


def _outputs(value: Any, node: Any) -> tuple[tuple[str, int, str], ...]:
    specs = value if isinstance(value, list) else [value]
    if not specs or not all(isinstance(spec, dict) for spec in specs):
        raise fail("setup().output must be an object or a list of objects", node)
    outputs: list[tuple[str, int, str]] = []
    for spec in specs:
        output_id = spec.get("id", "default")
        bands = spec.get("bands", 1)
        sample_type = spec.get("sampleType", "AUTO")
        if not isinstance(output_id, str) or not output_id:
            raise fail("an output id must be a non-empty string", node)
        if any(output_id == seen for seen, _, _ in outputs):
            raise fail(f"output id '{output_id}' declared twice", node)
        if isinstance(bands, bool) or not isinstance(bands, int) or not 1 <= bands <= 256:
            raise fail(f"output '{output_id}': bands must be an integer 1..256", node)
        if not isinstance(sample_type, str) or sample_type.upper() not in SAMPLE_TYPES:
            raise fail(
                f"output '{output_id}': sampleType {sample_type!r} is not supported; one of "
                f"{', '.join(SAMPLE_TYPES)}",
                node,
            )
        outputs.append((output_id, bands, sample_type.upper()))
    return tuple(outputs)
