"""Reading a mosaic: items read one by one (or a few at a time), pixel-selected, bounded.

``read_mosaic`` is rio-tiler's ``mosaic_reader`` loop made for a service:

- the pixel selection methods are rio-tiler's (``rio_tiler.mosaic.methods``);
- ``first`` reads in item order and stops as soon as every pixel it can fill is filled:
  a pixel masked by ``mask=scl-clear`` (cloud, shadow, snow ...) or outside a scene's
  swath is taken from the next item that has it clear. Pixels that no remaining item's
  footprint covers do not keep it reading (the ``outside`` callback marks them, as a
  cutline). Footprints are never used to *skip* an item: an item whose footprint is
  covered by earlier ones may still fill their clouds (titiler-pgstac's ``skipcovered``
  leaves those gaps);
- ``first`` starts with one read and doubles its read-ahead each time an item leaves the
  output unfilled (1, 2, 4 ... up to ``max_window`` reads in flight): a clear scene costs
  one read, a cloudy stack is read in parallel. Stack methods (mean, median ...) read
  ``max_window`` items at a time from the start;
- at most ``max_items`` items are read, and nothing more is waited for after
  ``time_limit`` seconds; the result then says it is partial (``items-limit`` /
  ``time-limit``), and the router turns that into the ``X-Mosaic-Partial`` header;
- an item whose COG cannot be read (I/O error) is skipped and the result is partial
  (``read-errors``); if no item could be read, that error is raised.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import closing
from contextvars import copy_context
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np
from rasterio.errors import RasterioIOError
from rio_tiler.errors import PointOutsideBounds, TileOutsideBounds
from rio_tiler.models import ImageData, PointData
from rio_tiler.mosaic.methods import (
    CountMethod,
    FirstMethod,
    HighestMethod,
    LowestMethod,
    MeanMethod,
    MedianMethod,
    StdevMethod,
)
from rio_tiler.mosaic.methods.base import MosaicMethodBase

from app.datasets import shared_executor
from app.errors import BadRequestError, UpstreamError

__all__ = [
    "PARTIAL_ITEMS",
    "PARTIAL_READ_ERRORS",
    "PARTIAL_TIME",
    "PIXEL_SELECTIONS",
    "MosaicRead",
    "pixel_selection_method",
    "read_mosaic",
]

PARTIAL_ITEMS = "items-limit"
PARTIAL_TIME = "time-limit"
PARTIAL_READ_ERRORS = "read-errors"

PIXEL_SELECTIONS = ("first", "highest", "lowest", "mean", "median", "stdev", "count")

#: Exceptions that mean "this item has nothing here": the item is skipped.
SKIPPED = (TileOutsideBounds, PointOutsideBounds)
#: Exceptions that mean "this item's COG could not be read": skipped, result partial.
UNREADABLE = (RasterioIOError, UpstreamError)

T = TypeVar("T")


class SortedMedianMethod(MedianMethod):
    """rio-tiler's median (of the valid values per pixel), by one sort instead of np.ma.

    ``numpy.ma.median`` over a stack is several times slower than sorting the stack with
    masked values as NaN (which sort last) and taking the middle value(s) of each pixel's
    valid count; the results are the same (the mean of the two middle values for an even
    count, float64 for integer data).
    """

    @property
    def data(self) -> np.ma.MaskedArray | None:
        """The per-pixel median of the valid values; masked where there is none."""
        if not self.stack:
            return None
        masks = np.stack([np.ma.getmaskarray(a) for a in self.stack])
        values = np.stack([np.ma.getdata(a) for a in self.stack])
        if not np.issubdtype(values.dtype, np.floating):
            values = values.astype("float64")
        ordered = np.sort(np.where(masks, np.nan, values), axis=0)
        count = (~masks).sum(axis=0)
        low = np.take_along_axis(ordered, np.maximum((count - 1) // 2, 0)[np.newaxis], 0)[0]
        high = np.take_along_axis(ordered, np.maximum(count // 2, 0)[np.newaxis], 0)[0]
        empty = count == 0
        median = np.where(empty, 0, (low + high) / 2).astype(values.dtype)
        return np.ma.MaskedArray(median, mask=empty)


def pixel_selection_method(name: str) -> MosaicMethodBase:
    """A fresh rio-tiler pixel selection method for ``name``.

    ``mean`` and ``median`` keep floating-point results (rio-tiler would cast them back to
    the input's data type: the mean of integer DN would be truncated); ``median`` sorts
    (``SortedMedianMethod``).
    """
    if name == "first":
        return FirstMethod()
    if name == "highest":
        return HighestMethod()
    if name == "lowest":
        return LowestMethod()
    if name == "mean":
        return MeanMethod(enforce_data_type=False)
    if name == "median":
        return SortedMedianMethod(enforce_data_type=False)
    if name == "stdev":
        return StdevMethod()
    if name == "count":
        return CountMethod()
    raise BadRequestError(
        f"pixel_selection: must be one of {', '.join(PIXEL_SELECTIONS)}, got '{name}'"
    )


@dataclass
class MosaicRead:
    """The outcome of ``read_mosaic``.

    Attributes:
        image: the mosaic, or None when no item had data there.
        used: the items that went into it, in feeding order.
        candidates: how many items intersected the request.
        partial: why it is partial (``items-limit``, ``time-limit``, ``read-errors``).
    """

    image: ImageData | None
    used: list[Any] = field(default_factory=list)
    candidates: int = 0
    partial: list[str] = field(default_factory=list)


def _feed(method: MosaicMethodBase, array: np.ma.MaskedArray) -> None:
    array = np.ma.MaskedArray(array.data, mask=np.ma.getmaskarray(array))
    method.feed(array)


def _result(method: MosaicMethodBase, first: ImageData, used: list[Any], name: str) -> ImageData:
    data = method.data
    assert data is not None
    band_names = list(first.band_names)
    if data.ndim == 2:  # count: one band
        data = data[np.newaxis]
    if data.shape[0] != len(band_names):
        band_names = ["count"] if name == "count" else [f"b{i + 1}" for i in range(data.shape[0])]
    return ImageData(
        data,
        assets=[getattr(u, "id", u) for u in used],
        bounds=first.bounds,
        crs=first.crs,
        band_names=band_names,
        band_descriptions=band_names,
        metadata={"mosaic_method": name, "mosaic_assets_used": len(used)},
    )


class _OrderedReads(Generic[T]):
    """Reads of ``entries`` on the shared ``mosaic-read`` threads, results in order.

    At most ``window`` reads are in flight (the caller may change it while iterating), so
    one request does not fill the shared threads. Iterating yields ``(entry, value)``;
    entries with nothing there (``SKIPPED``) are left out, unreadable ones (``UNREADABLE``)
    go to ``errors``; at ``deadline`` iteration ends with ``timed_out`` set. Reads not
    waited for are cancelled when iteration ends.
    """

    def __init__(
        self, entries: Sequence[T], read: Callable[[T], Any], window: int, deadline: float | None
    ):
        self.entries = entries
        self.read = read
        self.window = window
        self.deadline = deadline
        self.errors: list[BaseException] = []
        self.timed_out = False

    def __iter__(self) -> Iterator[tuple[T, Any]]:
        executor = shared_executor("mosaic-read")
        queued = deque(self.entries)
        pending: deque[tuple[T, Future[Any]]] = deque()

        def top_up() -> None:
            while queued and len(pending) < max(1, self.window):
                entry = queued.popleft()
                # In the request's context: its V8 time budget (app.evalscript.budget).
                read = copy_context().run
                pending.append((entry, executor.submit(read, self.read, entry)))

        try:
            top_up()
            while pending:
                entry, future = pending.popleft()
                timeout = (
                    None if self.deadline is None else max(0.0, self.deadline - time.monotonic())
                )
                try:
                    value = future.result(timeout=timeout)
                except FutureTimeout:
                    self.timed_out = True
                    return
                except SKIPPED:
                    pass
                except UNREADABLE as error:
                    self.errors.append(error)
                else:
                    yield entry, value
                top_up()
        finally:
            for _, future in pending:
                future.cancel()


def _deadline(time_limit: float | None) -> float | None:
    return time.monotonic() + time_limit if time_limit else None


def read_mosaic(
    candidates: Sequence[T],
    read: Callable[[T], ImageData],
    pixel_selection: str = "first",
    *,
    max_items: int,
    time_limit: float | None = None,
    max_window: int = 4,
    outside: Callable[[ImageData], np.ndarray | None] | None = None,
) -> MosaicRead:
    """Read ``candidates`` in order with ``read`` and combine them by ``pixel_selection``.

    Args:
        candidates: the items, in mosaicking order.
        read: reads one item (same output grid for every item).
        pixel_selection: first, highest, lowest, mean, median, stdev or count.
        max_items: read at most this many items.
        time_limit: seconds after which nothing more is waited for.
        max_window: reads in flight at most.
        outside: given the first image read, a boolean (height, width) array of pixels
            that ``first`` need not fill (no remaining item covers them), or None.

    Returns:
        The mosaic and how it was made.

    """
    method = pixel_selection_method(pixel_selection)
    outcome = MosaicRead(image=None, candidates=len(candidates))
    selected = list(candidates[: max(max_items, 0)])
    if not selected:
        if candidates:
            outcome.partial.append(PARTIAL_ITEMS)
        return outcome
    exit_early = method.exit_when_filled
    max_window = max(1, max_window)
    reads = _OrderedReads(selected, read, 1 if exit_early else max_window, _deadline(time_limit))
    first: ImageData | None = None
    done = False
    with closing(iter(reads)) as images:
        for entry, image in images:
            if first is None:
                first = image
                method.width, method.height, method.count = image.width, image.height, image.count
                if exit_early and outside is not None:
                    method.cutline_mask = outside(image)
            elif (image.height, image.width) != (first.height, first.width):
                raise UpstreamError(
                    f"item '{getattr(entry, 'id', entry)}' read as {image.width}x{image.height}"
                    f", not {first.width}x{first.height}: items must share the output grid"
                )
            _feed(method, image.array)
            outcome.used.append(entry)
            if method.is_done:
                done = True
                break
            if exit_early:
                reads.window = min(reads.window * 2, max_window)

    if reads.timed_out:
        outcome.partial.append(PARTIAL_TIME)
    elif not done and len(candidates) > len(selected):
        outcome.partial.append(PARTIAL_ITEMS)
    if reads.errors:
        if not outcome.used:
            raise reads.errors[0]
        outcome.partial.append(PARTIAL_READ_ERRORS)
    if first is not None and method.data is not None:
        outcome.image = _result(method, first, outcome.used, pixel_selection)
    return outcome


def read_all(
    candidates: Sequence[T],
    read: Callable[[T], Any],
    *,
    max_items: int,
    time_limit: float | None = None,
    max_window: int = 4,
) -> tuple[list[tuple[T, Any]], list[str]]:
    """Read every candidate (up to ``max_items``, within ``time_limit``), keeping order.

    At most ``max_window`` reads are in flight. Items that have nothing there (outside
    their bounds) are left out; unreadable ones too, with ``read-errors`` in the partial
    reasons (raised when none could be read).

    Returns:
        ``([(candidate, value), ...], partial_reasons)``.

    """
    selected = list(candidates[: max(max_items, 0)])
    partial: list[str] = []
    if len(candidates) > len(selected):
        partial.append(PARTIAL_ITEMS)
    if not selected:
        return [], partial
    reads = _OrderedReads(selected, read, max_window, _deadline(time_limit))
    results = list(reads)
    if reads.timed_out:
        partial.append(PARTIAL_TIME)
    if reads.errors:
        if not results:
            raise reads.errors[0]
        partial.append(PARTIAL_READ_ERRORS)
    return results, partial


def select_point(values: Sequence[PointData], pixel_selection: str) -> np.ma.MaskedArray | None:
    """The pixel selection of point values already read, in mosaicking order."""
    method = pixel_selection_method(pixel_selection)
    for point in values:
        method.width, method.height, method.count = 1, 1, point.count
        _feed(method, point.array)
        if method.is_done:
            break
    data = method.data
    if data is None:
        return None
    return np.ma.atleast_1d(data).reshape(-1)
