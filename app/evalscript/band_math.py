"""An evalscript as band math: the same face as ``app.expressions.Expression``.

Tiles, crops, points and statistics take an ``Expression`` (``.names`` to read,
``.evaluate`` over masked arrays, ``.rename`` to asset keys); ``EvalscriptBandMath`` quacks the
same, so those engines run one output of an evalscript unchanged.
"""

from collections.abc import Mapping

import numpy as np

from app.errors import BadRequestError
from app.evalscript.script import Evalscript, ScriptOutput, apply_sample_type

DATA_MASK = "dataMask"
#: Sentinel-2 L2A bands whose DN are reflectance x 10000 (Sentinel Hub's `units: "DN"`).
REFLECTANCE_BANDS = frozenset(
    ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
)
#: numpy data type of each Sentinel Hub sampleType (AUTO: 0..1 scaled to 0..255).
SAMPLE_DTYPES = {"AUTO": "uint8", "UINT8": "uint8", "UINT16": "uint16", "FLOAT32": "float32"}


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
        output: The chosen ScriptOutput.
        dtype: The numpy data type of the output's sampleType (AUTO: uint8).

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
        self.dtype = np.dtype(SAMPLE_DTYPES[self.output.sample_type.upper()])
        # The inputs are always the service's reflectance; with units DN the script sees
        # Sentinel Hub's DN of L2A reflectance bands: reflectance x 10000 (harmonized).
        self._dn_bands = (
            frozenset(REFLECTANCE_BANDS & set(self._bands)) if script.units == "DN" else frozenset()
        )

    def __repr__(self) -> str:
        return f"EvalscriptBandMath(output={self.output.id!r}, names={self.names})"

    def evaluate(self, arrays: Mapping[str, np.ndarray]) -> np.ma.MaskedArray:
        """Compute the output over (masked) arrays, as ``Expression.evaluate`` does.

        Args:
            arrays: One array per name in ``names`` (masked arrays keep their mask), all of
                one shape (h, w).

        Returns:
            float32 masked array (bands, h, w) of the values converted to the output's
            sampleType (AUTO: 0..255; ``dtype`` holds them exactly): masked where any input
            is masked, where the script's ``dataMask`` output is 0, or where the value is
            not finite; masked pixels hold 0.

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
            values = np.asarray(np.ma.getdata(array), dtype=np.float32)
            if band in self._dn_bands:
                values = values * np.float32(10000.0)
            bands[band] = values
        results = self.script.evaluate(bands, ~invalid)
        values = results[self.output.id]
        mask = np.broadcast_to(invalid, values.shape) | ~np.isfinite(values)
        if self.output.id != DATA_MASK and DATA_MASK in results:
            mask = mask | (results[DATA_MASK][0] == 0)
        converted = apply_sample_type(values, self.output.sample_type).astype(np.float32)
        return np.ma.MaskedArray(np.where(mask, np.float32(0), converted), mask=mask)

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
