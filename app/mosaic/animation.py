"""Animations of a mosaic over time: items grouped into frames, frames read, cloudy ones dropped.

A frame is a scene date (the items of one UTC day, e.g. the adjacent tiles of one pass) or,
with an interval (an ISO 8601 duration such as ``P10D``), the items of ``[start + k x
interval, start + (k + 1) x interval)`` counted from the first item's day; inside a frame
the items combine by the request's pixel selection, exactly as a bbox crop of those items
alone would (``SearchBackend.part_frames``). Frames come oldest first; a frame whose clear
fraction (pixels with a valid value, ``clear_fraction``) is under ``min_clear`` is dropped.

No FastAPI here: the routers parse, this module and the backend read, ``app.animation``
draws and encodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
from rasterio.crs import CRS
from rio_tiler.constants import WGS84_CRS
from rio_tiler.models import ImageData

from app.errors import BadRequestError
from app.mosaic.backend import SearchBackend
from app.mosaic.index import IndexedItem
from app.settings import Settings
from app.stats.intervals import Duration, parse_duration

__all__ = [
    "AnimationFrame",
    "AnimationLimits",
    "FrameSpan",
    "clear_fraction",
    "frame_spans",
    "read_animation",
]


@dataclass(frozen=True)
class FrameSpan:
    """The time a frame covers and the items in it.

    Attributes:
        start: first day of the frame.
        end: last day of the frame (``start`` for a scene date).
        items: the frame's items, in the mosaic's order.
    """

    start: date
    end: date
    items: list[IndexedItem] = field(default_factory=list)

    @property
    def label(self) -> str:
        """``2023-04-02``, or ``2023-04-01..2023-04-10`` for an interval."""
        if self.start == self.end:
            return self.start.isoformat()
        return f"{self.start.isoformat()}..{self.end.isoformat()}"


@dataclass(frozen=True)
class AnimationFrame:
    """One frame of an animation.

    Attributes:
        span: its time and items.
        image: the mosaic of its items over the bbox.
        clear: the fraction of its pixels with a valid value (0..1).
        used: the ids of the items that went in.
        partial: why its mosaic is partial, if it is.
    """

    span: FrameSpan
    image: ImageData
    clear: float
    used: list[str]
    partial: list[str]


@dataclass(frozen=True)
class AnimationLimits:
    """The bounds of one animation (the ``animation_*`` settings).

    Attributes:
        max_frames: frames read at most (400 over it).
        max_pixels: output pixels over every frame read (413 over it).
        time_limit: seconds every read of an animation waits at most.
    """

    max_frames: int
    max_pixels: int
    time_limit: float

    @classmethod
    def from_settings(cls, settings: Settings) -> AnimationLimits:
        """The limits of ``settings``."""
        return cls(
            max_frames=settings.animation_max_frames,
            max_pixels=settings.animation_max_pixels,
            time_limit=settings.animation_time_limit,
        )


def _day(entry: IndexedItem) -> date:
    if entry.datetime is None:
        raise BadRequestError(f"item '{entry.id}' has no datetime: it cannot be a frame")
    moment = entry.datetime
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.date()


def frame_spans(items: Sequence[IndexedItem], interval: str | None = None) -> list[FrameSpan]:
    """The frames of ``items``: one per UTC day, or per ``interval`` from the first day.

    Args:
        items: the items, in the mosaic's order (kept within each frame).
        interval: an ISO 8601 duration (``P10D``, ``P1M``); None: one frame per scene date.

    Returns:
        The frames that have items, oldest first.

    Raises:
        BadRequestError: ``interval`` is not a duration (the message names ``interval``),
            or an item has no datetime.

    """
    days = [_day(entry) for entry in items]
    if interval is None:
        by_day: dict[date, list[IndexedItem]] = {}
        for day, entry in zip(days, items, strict=True):
            by_day.setdefault(day, []).append(entry)
        return [FrameSpan(day, day, by_day[day]) for day in sorted(by_day)]
    duration = parse_duration(interval, field="interval")
    if duration.span % timedelta(days=1):
        raise BadRequestError(
            f"interval: '{interval}' is not a whole number of days, weeks, months or years "
            "(P1D, P10D, P1W, P1M ...)"
        )
    if not days:
        return []
    start = datetime.combine(min(days), datetime.min.time(), tzinfo=UTC)
    return _interval_spans(items, days, start, duration, interval)


def _interval_spans(
    items: Sequence[IndexedItem],
    days: Sequence[date],
    start: datetime,
    duration: Duration,
    interval: str,
) -> list[FrameSpan]:
    """The items by interval ``[start + k d, start + (k + 1) d)``, ``k`` the interval number."""
    last = max(days)
    bounds = [start]
    while bounds[-1].date() <= last:
        try:
            bounds.append(duration.times(start, len(bounds)))
        except OverflowError:
            raise BadRequestError(
                f"interval: frames of '{interval}' from {start.date().isoformat()} reach past "
                "the limit of the calendar (year 9999); use a shorter interval"
            ) from None
    edges = np.array([moment.date().toordinal() for moment in bounds])
    groups: dict[int, list[IndexedItem]] = {}
    for day, entry in zip(days, items, strict=True):
        k = int(np.searchsorted(edges, day.toordinal(), side="right")) - 1
        groups.setdefault(k, []).append(entry)
    return [
        FrameSpan(bounds[k].date(), bounds[k + 1].date() - timedelta(days=1), groups[k])
        for k in sorted(groups)
    ]


def clear_fraction(image: ImageData) -> float:
    """The fraction of ``image``'s pixels with a valid value in some band (as rendered: alpha).

    ``ImageData.mask`` is not used: for float data its "masked" value is the dtype's
    minimum, not 0.
    """
    valid = np.logical_or.reduce(~np.ma.getmaskarray(image.array), axis=0)
    return float(np.count_nonzero(valid)) / valid.size if valid.size else 0.0


def read_animation(
    backend: SearchBackend,
    bbox: Sequence[float],
    width: int,
    height: int,
    *,
    limits: AnimationLimits,
    interval: str | None = None,
    min_clear: float = 0.0,
    bounds_crs: CRS = WGS84_CRS,
    dst_crs: CRS | None = None,
    **kwargs: Any,
) -> tuple[list[AnimationFrame], int]:
    """The frames of an animation over ``bbox``, oldest first, cloudy ones dropped.

    Args:
        backend: the mosaic (a registered search, or a list of items).
        bbox: the bbox in ``bounds_crs``.
        width: frame width.
        height: frame height.
        limits: frames, pixels and time bounds.
        interval: an ISO 8601 duration per frame; None: one frame per scene date.
        min_clear: frames whose clear fraction is under this are dropped (0..1).
        bounds_crs: the bbox's CRS.
        dst_crs: the frames' CRS (default ``bounds_crs``).
        kwargs: ``order``, ``pixel_selection`` and the item read options.

    Returns:
        The frames kept, and how many frames were read.

    """
    if not 0.0 <= min_clear <= 1.0:
        raise BadRequestError(f"min_clear: must be within 0..1, got {min_clear}")
    spans: list[FrameSpan] = []

    def frames(items: list[IndexedItem]) -> list[list[IndexedItem]]:
        spans.extend(frame_spans(items, interval))
        return [span.items for span in spans]

    reads = backend.part_frames(
        bbox,
        frames,
        bounds_crs=bounds_crs,
        dst_crs=dst_crs,
        width=width,
        height=height,
        max_frames=limits.max_frames,
        max_pixels=limits.max_pixels,
        time_limit=limits.time_limit,
        **kwargs,
    )
    kept: list[AnimationFrame] = []
    for span, read in zip(spans, reads, strict=True):
        if read is None or read.image is None:
            continue
        clear = clear_fraction(read.image)
        if clear < min_clear:
            continue
        used = [backend.asset_name(entry) for entry in read.used]
        kept.append(AnimationFrame(span, read.image, clear, used, list(read.partial)))
    return kept, len(reads)
