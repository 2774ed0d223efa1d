"""One COG with band math: ``b1``-style expressions evaluated by ``app.expressions``."""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attr
from rasterio.crs import CRS

from app.budget import MemoryBudget, read_cost
from app.errors import BadRequestError
from app.expressions import parse_expression
from app.readers.gtiff import GTiffReader
from app.readers.layers import Layer, bands_by_name, replace_bands
from app.readers.sizing import Bounds, itemsize, native_pixels
from app.readers.template import SizedReads
from app.request_checks import check_indexes


@attr.s
class SafeCOGReader(SizedReads, GTiffReader):
    """rio-tiler's COG reader with band math by ``app.expressions`` (``b1``, ``b2``...).

    Its reads are checked and sized by ``SizedReads``; an unsized crop or feature is
    counted at the COG's native resolution, in its CRS.
    """

    max_tile_size: int | None = attr.ib(default=None, kw_only=True)
    budget: MemoryBudget | None = attr.ib(default=None, kw_only=True)

    def _native_output_size(
        self, bbox: Bounds, bounds_crs: CRS, dst_crs: CRS, options: Mapping[str, Any]
    ) -> tuple[int, int]:
        return native_pixels(bbox, bounds_crs, self.crs, min(self.dataset.res))

    def _grid_aspect(self) -> float:
        return self.dataset.height / self.dataset.width

    def _read_layer(
        self,
        read: Callable[..., Layer],
        pixels: int,
        sized: bool,
        expression: str | None = None,
        **kwargs: Any,
    ) -> Layer:
        """``read`` the bands (or the inputs of ``expression``) of ``pixels`` output pixels.

        Checked before anything is read: band indexes, the expression and the request's
        memory (``app.budget``).
        """
        check_indexes(kwargs.get("indexes"), self.dataset.count)
        if not expression:
            self._check_budget(pixels, kwargs.get("indexes"), None)
            return read(**kwargs)
        expr = parse_expression(expression)
        count = self.dataset.count
        indexes: list[int] = []
        for name in expr.names:
            if not (name.startswith("b") and name[1:].isdigit()):
                raise BadRequestError(
                    f"expression: unknown band '{name}'; a COG's bands are b1..b{count}"
                )
            index = int(name[1:])
            if not 1 <= index <= count:
                raise BadRequestError(
                    f"expression: band '{name}' out of range; this COG has {count} bands"
                )
            indexes.append(index)
        kwargs.pop("indexes", None)
        self._check_budget(pixels, indexes, len(expr.outputs))
        layer = read(indexes=indexes, **kwargs)
        data = expr.evaluate(bands_by_name(layer, expr.names))
        return replace_bands(layer, data, list(expr.outputs))

    def _check_budget(
        self, pixels: int, indexes: int | Sequence[int] | None, outputs: int | None
    ) -> None:
        """Refuse (413) a read of ``indexes`` (None: every band) over the memory budget."""
        if self.budget is None:
            return
        if isinstance(indexes, int):
            indexes = [indexes]
        bands = list(indexes) if indexes else list(range(1, self.dataset.count + 1))
        itemsizes = [itemsize(self.dataset.dtypes[index - 1]) for index in bands]
        if outputs is None:
            cost = read_cost(pixels, itemsizes)
        else:
            self.budget.check_outputs(outputs)
            cost = read_cost(pixels, itemsizes, math_inputs=len(bands), outputs=outputs)
        self.budget.check(cost)
