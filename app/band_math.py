"""Band math in either of its two forms: an ``expression`` or a Sentinel Hub ``evalscript``.

Every reader and engine that evaluates band math takes what ``parse_band_math`` returns: an
``app.expressions.Expression`` or an ``app.evalscript.EvalscriptBandMath``, which answer
the same calls (``names``, ``outputs``, ``evaluate``, ``rename``). ``parse_evalscript``
keeps recent scripts parsed: the tiles of one layer send one script.
"""

from app.errors import BadRequestError
from app.evalscript import EvalscriptBandMath, EvalscriptLimits, parse_evalscript
from app.expressions import Expression, parse_expression

#: What band math evaluates as: either form answers the same calls.
BandMath = Expression | EvalscriptBandMath


def parse_band_math(
    expression: str | None = None,
    evalscript: str | None = None,
    limits: EvalscriptLimits | None = None,
    *,
    output: str | None = None,
) -> BandMath | None:
    """The band math a request gives, or None when it gives neither form.

    Args:
        expression: Band math over asset or band names (``app.expressions``).
        evalscript: A Sentinel Hub V3 evalscript.
        limits: The evalscript limits (the settings' defaults when omitted).
        output: The evalscript output to evaluate (default: its first, or ``default``).

    Returns:
        The parsed band math, or None.

    Raises:
        BadRequestError: Both forms given, or either does not parse (naming the field).

    """
    if expression and evalscript:
        raise BadRequestError("give `expression` or `evalscript`, not both")
    if evalscript:
        script = parse_evalscript(evalscript, limits or EvalscriptLimits.default())
        return EvalscriptBandMath(script, output)
    if expression:
        return parse_expression(expression)
    return None
