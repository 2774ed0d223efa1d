"""Sentinel Hub evalscripts (V3): parsed, translated to numpy where possible, else run in V8.

No FastAPI here: errors are ``app.errors`` classes carrying their HTTP status.
"""

from app.evalscript.band_math import DATA_MASK, SAMPLE_DTYPES, EvalscriptBandMath
from app.evalscript.limits import EvalscriptLimits
from app.evalscript.script import Evalscript, ScriptOutput, apply_sample_type, parse_evalscript

__all__ = [
    "DATA_MASK",
    "SAMPLE_DTYPES",
    "Evalscript",
    "EvalscriptBandMath",
    "EvalscriptLimits",
    "ScriptOutput",
    "apply_sample_type",
    "parse_evalscript",
]
