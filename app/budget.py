"""One memory budget per read request, checked from metadata before any pixel is read.

A read's memory is not bounded by its output pixels: ``expression=b1;b1;...`` with 200
outputs on one 1024 px tile took +3.3 GB, ``assets=red`` repeated 200 times +2.1 GB, and
at 4096x4096 a single request could ask for ~50 GB. What a request holds at once is

    output pixels x bytes held per output pixel

where the bytes per pixel add up, per band:

- each band read (assets counted with their repeats and their own band count, expression
  inputs, the SCL band of ``mask=scl-clear``): its data type's size + 1 byte of mask
  (rio-tiler's masked arrays);
- each band harmonized (``DN * scale + offset``): a float32 copy + mask, 5 bytes;
- the result: the bands stacked into one array (a copy of them); for band math instead,
  each input converted once to float64 + its mask, 9 bytes, each output band float32 +
  mask, 5 bytes, and the float64 temporaries of one output's evaluation
  (``MATH_WORK_BYTES``).

The figure is an estimate of the arrays the request keeps alive together, not a measure
of the process: it is what ``max_request_bytes`` bounds. Measured (tracemalloc peak of a
1024x1024 item crop, estimate / peak): red;green;blue with the SCL mask 84 / 76 MiB,
assets red,green,blue 18 / 18 MiB, the same harmonized 39 / 39 MiB, 16 outputs of band
math 113 / 105 MiB. Beside it, plain counts
(``max_assets_per_request``, ``max_bands_per_request``, ``max_expression_outputs``) refuse
what no size makes reasonable, points included.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from app.errors import TooLargeError
from app.settings import Settings

MASK_BYTES = 1  # numpy masked arrays hold one bool per sample
HARMONIZED_BYTES = 4 + MASK_BYTES  # sentinel2.harmonize: float32
MATH_INPUT_BYTES = 8 + MASK_BYTES  # expressions.Expression.evaluate: inputs as float64
MATH_OUTPUT_BYTES = 4 + MASK_BYTES  # ... outputs as float32
# One output's evaluation: a float64 result and a float64 operand or mask at a time.
MATH_WORK_BYTES = 2 * 8


@dataclass(frozen=True)
class RequestCost:
    """What one read holds in memory, estimated from its parameters and metadata.

    Attributes:
        pixels: Output pixels (width x height; 1 for a point).
        bands: Bands read, repeats and mask bands counted.
        outputs: Bands of the result.
        bytes_per_pixel: Bytes held per output pixel over every band (module docstring).
        output_bytes_per_pixel: Bytes per output pixel of the result alone.

    """

    pixels: int
    bands: int
    outputs: int
    bytes_per_pixel: int
    output_bytes_per_pixel: int

    @property
    def total(self) -> int:
        """Bytes held at once by the read."""
        return self.pixels * self.bytes_per_pixel

    def describe(self) -> str:
        """``N pixels x B bytes (k bands read, n outputs)``, for error messages."""
        return (
            f"{self.pixels} pixels x {self.bytes_per_pixel} bytes per pixel "
            f"({self.bands} bands read, {self.outputs} output bands)"
        )


def read_cost(
    pixels: int,
    itemsizes: Sequence[int],
    *,
    harmonized: int = 0,
    math_inputs: int = 0,
    outputs: int | None = None,
) -> RequestCost:
    """The memory of a read of ``pixels`` output pixels (module docstring).

    Args:
        pixels: Output pixels.
        itemsizes: The data type size of each band read (repeats included).
        harmonized: Bands turned into float32 reflectance.
        math_inputs: Distinct band-math inputs (0: no band math).
        outputs: Band-math outputs; None: the bands read are the result.

    Returns:
        The cost.

    """
    read = sum(size + MASK_BYTES for size in itemsizes)
    per_pixel = read + harmonized * HARMONIZED_BYTES
    if outputs is None:
        # The bands (raw, or float32 when harmonized) stacked into one result: a copy.
        output_bytes = len(itemsizes) * HARMONIZED_BYTES if harmonized else read
        outputs = len(itemsizes)
        per_pixel += output_bytes
    else:
        output_bytes = outputs * MATH_OUTPUT_BYTES
        per_pixel += math_inputs * MATH_INPUT_BYTES + output_bytes + MATH_WORK_BYTES
    return RequestCost(
        pixels=max(int(pixels), 1),
        bands=len(itemsizes),
        outputs=outputs,
        bytes_per_pixel=per_pixel,
        output_bytes_per_pixel=output_bytes,
    )


def _size(value: int) -> str:
    return f"{value / 2**20:.0f} MiB" if value >= 2**20 else f"{value} bytes"


@dataclass(frozen=True)
class MemoryBudget:
    """The per-request limits (``Settings``: the fields named in each message).

    Attributes:
        max_request_bytes: Bytes a read may hold (``RequestCost.total``); None: no limit.
        max_assets: Assets named by one request, repeats counted.
        max_bands: Bands read by one request, repeats and mask bands counted.
        max_outputs: Output bands of one expression.

    """

    max_request_bytes: int | None = None
    max_assets: int | None = None
    max_bands: int | None = None
    max_outputs: int | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> "MemoryBudget":
        """The budget of ``settings`` (``max_request_bytes`` and the three counts)."""
        return cls(
            max_request_bytes=settings.max_request_bytes,
            max_assets=settings.max_assets_per_request,
            max_bands=settings.max_bands_per_request,
            max_outputs=settings.max_expression_outputs,
        )

    def check_assets(self, count: int) -> None:
        """413 when a request names more than ``max_assets_per_request`` assets."""
        if self.max_assets is not None and count > self.max_assets:
            raise TooLargeError(
                f"assets: {count} assets (repeats counted) is over the limit "
                f"max_assets_per_request={self.max_assets}"
            )

    def check_outputs(self, count: int) -> None:
        """413 when an expression has more than ``max_expression_outputs`` outputs."""
        if self.max_outputs is not None and count > self.max_outputs:
            raise TooLargeError(
                f"expression: {count} outputs is over the limit "
                f"max_expression_outputs={self.max_outputs}"
            )

    def check(self, cost: RequestCost, what: str = "request") -> None:
        """413 when ``cost`` reads too many bands or holds more than the budget.

        Args:
            cost: The read's estimate.
            what: Names the read in the message (``"mosaic of 12 items"``).

        """
        if self.max_bands is not None and cost.bands > self.max_bands:
            raise TooLargeError(
                f"{what}: reads {cost.bands} bands (repeats and mask bands counted), over "
                f"the limit max_bands_per_request={self.max_bands}"
            )
        self.check_bytes(cost.total, cost.describe(), what)

    def check_bytes(self, total: int, detail: str, what: str = "request") -> None:
        """413 when ``total`` bytes are over ``max_request_bytes``; ``detail`` says why."""
        if self.max_request_bytes is not None and total > self.max_request_bytes:
            raise TooLargeError(
                f"{what}: needs about {total} bytes ({_size(total)}: {detail}), over the "
                f"limit max_request_bytes={self.max_request_bytes} "
                f"({_size(self.max_request_bytes)}); ask for fewer bands or outputs, or a "
                "smaller area or size"
            )
