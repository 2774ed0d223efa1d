"""An evalscript as band math: the same face as ``app.expressions.Expression``.

Tiles, crops, points and statistics take an ``Expression`` (``.names`` to read,
``.evaluate`` over masked arrays, ``.rename`` to asset keys); ``EvalscriptBandMath`` quacks the
same, so those engines run one output of an evalscript unchanged.
"""

from collections.abc import Mapping

import numpy as np

from app.errors import BadRequestError
from app.evalscript.script import Evalscript, ScriptOutput

DATA_MASK = "dataMask"


class EvalscriptBandMath:
    """One output of an evalscript, evaluated like band math.

    Args:
        script: The parsed evalscript.
        output_id: The output to compute; None: the first output that is not ``dataMask``.
        mapping: Input band name -> the name the caller's arrays use (``rename``).

    Attributes:
        text: The script.
        names: The band names to read (input bands without dataMask, renamed).
        outputs: One label per band of the output: ``B0``, ``B1`` ... (Sentinel Hub's).
        harmonize: Whether the inputs are reflectance (units REFLECTANCE) rather than DN.
        output: The chosen ScriptOutput.

    Raises:
        BadRequestError: No such output, or a script that reads no band.

    """

    def __init__(
        self,
        script: Evalscript,
        output_id: str | None = None,
        mapping: Mapping[str, str] | None = None,
    ):
        self.script = script
        if output_id is None:
            candidates = [o for o in script.outputs if o.id != DATA_MASK] or list(script.outputs)
            self.output: ScriptOutput = candidates[0]
        else:
            self.output = script.output(output_id)
        self._bands = tuple(band for band in script.inputs if band != DATA_MASK)
        if not self._bands:
            raise BadRequestError("evalscript: setup() reads no band (only dataMask)")
        self._mapping = dict(mapping or {})
        self.text = script.text
        self.names: tuple[str, ...] = tuple(self._mapping.get(b, b) for b in self._bands)
        self.outputs: tuple[str, ...] = tuple(f"B{i}" for i in range(self.output.bands))
        self.harmonize: bool = script.units == "REFLECTANCE"

    def __repr__(self) -> str:
        return f"EvalscriptBandMath(output={self.output.id!r}, names={self.names})"

    def evaluate(self, arrays: Mapping[str, np.ndarray]) -> np.ma.MaskedArray:
        """Compute the output over (masked) arrays, as ``Expression.evaluate`` does.

        Args:
            arrays: One array per name in ``names`` (masked arrays keep their mask), all of
                one shape (h, w).

        Returns:
            float32 masked array (bands, h, w): masked where any input is masked, where the
            script's ``dataMask`` output is 0, or where the value is not finite; masked
            pixels hold 0.

        Raises:
            BadRequestError: A name has no array.

        """
        missing = [name for name in self.names if name not in arrays]
        if missing:
            available = ", ".join(sorted(arrays)) or "none"
            raise BadRequestError(f"evalscript: no data for '{missing[0]}'; available: {available}")
        first = arrays[self.names[0]]
        invalid = np.zeros(np.shape(first), dtype=bool)
        bands: dict[str, np.ndarray] = {}
        for band, name in zip(self._bands, self.names, strict=True):
            array = arrays[name]
            invalid |= np.ma.getmaskarray(array)
            bands[band] = np.asarray(np.ma.getdata(array), dtype=np.float32)
        results = self.script.evaluate(bands, ~invalid)
        values = results[self.output.id]
        mask = np.broadcast_to(invalid, values.shape) | ~np.isfinite(values)
        if self.output.id != DATA_MASK and DATA_MASK in results:
            mask = mask | (results[DATA_MASK][0] == 0)
        return np.ma.MaskedArray(np.where(mask, np.float32(0), values), mask=mask)

    def rename(self, mapping: Mapping[str, str]) -> "EvalscriptBandMath":
        """A copy reading other names (e.g. ``{"B04": "red"}``); names not in it stay.

        Args:
            mapping: Current name -> new name.

        Returns:
            The renamed EvalscriptBandMath.

        """
        composed = {
            band: mapping.get(name, name)
            for band, name in zip(self._bands, self.names, strict=True)
        }
        return EvalscriptBandMath(self.script, self.output.id, composed)
