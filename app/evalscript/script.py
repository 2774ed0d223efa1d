"""The evalscript model: what a script reads and returns, and how it is evaluated.

``parse_evalscript`` parses and checks a script, then tries the translator (vectorized numpy,
``translate.py``); a script it refuses runs in V8 (``v8.py``), and the reason is kept in
``translation_refused`` for logs and tests. An ``Evalscript`` pickles as its text and limits
(batch jobs send it to Dask workers) and is parsed again on the other side.
"""

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.errors import BadRequestError, TooLargeError
from app.evalscript.limits import EvalscriptLimits
from app.evalscript.parse import ParsedScript, parse_script
from app.evalscript.translate import Refused, Translation


@dataclass(frozen=True)
class ScriptOutput:
    """One output of ``setup()``.

    Attributes:
        id: Its id (``default`` when not named).
        bands: Its band count.
        sample_type: ``AUTO``, ``UINT8``, ``UINT16`` or ``FLOAT32``.

    """

    id: str
    bands: int
    sample_type: str


class Evalscript:
    """A parsed V3 evalscript, ready to evaluate over arrays.

    Attributes:
        text: The script.
        limits: The limits it was parsed (and runs in V8) under.
        inputs: Input band names as written in setup (``B04``, ``B8A``, ``SCL``, ``dataMask``).
        units: ``REFLECTANCE`` (default) or ``DN``.
        outputs: The outputs of setup(), in order.
        mosaicking: ``SIMPLE`` (the only one accepted).
        engine: ``translated`` or ``v8``: what ``evaluate`` uses.
        translation_refused: Why the translator refused the script (line:column and
            construct), or None when it is translated.
        setup: The object setup() returned (what V8 gets).

    """

    def __init__(self, parsed: ParsedScript, limits: EvalscriptLimits):
        self.text = parsed.text
        self.limits = limits
        self._parsed = parsed
        setup = parsed.setup
        self.inputs: tuple[str, ...] = setup.inputs
        self.units: str = setup.units
        self.outputs: tuple[ScriptOutput, ...] = tuple(
            ScriptOutput(id=output_id, bands=bands, sample_type=sample_type)
            for output_id, bands, sample_type in setup.outputs
        )
        self.mosaicking: str = setup.mosaicking
        self.setup: dict[str, Any] = setup.raw
        self._translation: Translation | None = None
        self.translation_refused: str | None = None
        try:
            self._translation = Translation(parsed, limits.memory_mb * 2**20)
        except Refused as refusal:
            self.translation_refused = refusal.reason
        except RecursionError:
            self.translation_refused = "the script nests too deeply for the translator"
        except BadRequestError:
            raise  # the script returns what setup() does not declare: V8 would say the same
        except Exception as error:  # noqa: BLE001 (a translator gap must not be a 500)
            # Not a construct the translator knows it refuses: a gap in it. V8 runs the
            # script; the reason is logged like any refusal.
            self.translation_refused = f"translator error {type(error).__name__}: {error}"
        self.engine: str = "translated" if self._translation is not None else "v8"

    def __reduce__(self) -> tuple[Any, tuple[str, EvalscriptLimits]]:
        # The AST and the translation are rebuilt on the other side: esprima's nodes and
        # the translator's closures are not worth pickling.
        return (parse_evalscript, (self.text, self.limits))

    def __repr__(self) -> str:
        outputs = ", ".join(f"{o.id}:{o.bands}" for o in self.outputs)
        return f"Evalscript(inputs={self.inputs}, outputs=[{outputs}], engine={self.engine!r})"

    def output(self, output_id: str | None = None) -> ScriptOutput:
        """One output by id (None: the first).

        Raises:
            BadRequestError: No output of that id.

        """
        if output_id is None:
            return self.outputs[0]
        for output in self.outputs:
            if output.id == output_id:
                return output
        known = ", ".join(o.id for o in self.outputs)
        raise BadRequestError(f"evalscript: no output '{output_id}'; setup() declares {known}")

    def evaluate(self, bands: Mapping[str, np.ndarray], valid: np.ndarray) -> dict[str, np.ndarray]:
        """Run evaluatePixel over every pixel.

        Args:
            bands: Input band name (as in ``inputs``, without dataMask) -> float32 (h, w)
                array: reflectance when units are REFLECTANCE, DN otherwise; values under
                invalid pixels are arbitrary.
            valid: bool (h, w): the service's mask (dataMask is ``valid`` as 0/1).

        Returns:
            Output id -> float32 array (bands, h, w), values as the script returned them
            (no sampleType conversion: see ``apply_sample_type``).

        Raises:
            BadRequestError: A band is missing, or the script returns what setup() does not
                declare.

        """
        missing = [band for band in self.inputs if band != "dataMask" and band not in bands]
        if missing:
            raise BadRequestError(f"evalscript: no data for input band '{missing[0]}'")
        if self._translation is not None:
            try:
                return self._translation.run(bands, valid)
            except RecursionError:
                # The trial run went as deep; a thread with less stack left may not.
                raise TooLargeError(
                    "evalscript: the script nests too deeply (evalscript_max_depth)"
                ) from None
        from app.evalscript.v8 import run_v8  # noqa: PLC0415 (mini-racer only when needed)

        return run_v8(self.text, self.setup, bands, valid, self.limits)


def parse_evalscript(text: str, limits: EvalscriptLimits) -> Evalscript:
    """Parse, check and prepare an evalscript (translation, else V8).

    Args:
        text: The JavaScript (VERSION=3).
        limits: ``EvalscriptLimits.from_settings(settings)``.

    Returns:
        The Evalscript.

    Raises:
        BadRequestError: Syntax error (line:column), not V3, an unsupported setup() feature.
        TooLargeError: Over a size limit (naming the setting).

    """
    if len(text) <= _CACHED_CHARS:
        return _parse_cached(text, limits)
    return Evalscript(parse_script(text, limits), limits)


# Tiles of one layer send the same script with every request: parsing and the trial run
# cost milliseconds (7 ms for the corpus' multi_output), so recent scripts are kept. An
# Evalscript holds no per-call state (each evaluate builds its own), so sharing one is safe.
# Only short scripts: a parsed script holds about 160x its text in memory (200 KB for the
# 1,250 characters of multi_output), so the cache stays under 50 MB.
_CACHED_CHARS = 10_000


@functools.lru_cache(maxsize=32)
def _parse_cached(text: str, limits: EvalscriptLimits) -> Evalscript:
    return Evalscript(parse_script(text, limits), limits)


def apply_sample_type(values: np.ndarray, sample_type: str) -> np.ndarray:
    """Sentinel Hub's output conversion of evaluatePixel's values.

    AUTO: 0..1 scaled to 0..255, rounded, clamped, uint8. UINT8 / UINT16: rounded (halves up),
    clamped to the type's range. FLOAT32: unchanged. NaN becomes 0 in the integer types.

    Args:
        values: float32 values as evaluatePixel returned them.
        sample_type: ``AUTO``, ``UINT8``, ``UINT16`` or ``FLOAT32``.

    Returns:
        The converted array (uint8, uint16 or float32).

    Raises:
        BadRequestError: An unknown sample type.

    """
    kind = sample_type.upper()
    if kind == "FLOAT32":
        return np.asarray(values, dtype=np.float32)
    if kind == "AUTO":
        scaled, top, dtype = np.multiply(values, 255.0, dtype=np.float64), 255, np.uint8
    elif kind == "UINT8":
        scaled, top, dtype = np.asarray(values, dtype=np.float64), 255, np.uint8
    elif kind == "UINT16":
        scaled, top, dtype = np.asarray(values, dtype=np.float64), 65535, np.uint16
    else:
        raise BadRequestError(f"evalscript: unknown sampleType '{sample_type}'")
    rounded = np.floor(scaled + 0.5)
    return np.nan_to_num(np.clip(rounded, 0, top), nan=0.0).astype(dtype)
