"""Time intervals: ISO 8601 durations and the split of a time range into intervals.

Sentinel Hub's rules: the range ``[from, to)`` is cut into consecutive intervals of the
duration, starting at ``from``. Interval ``k`` starts at ``from + k * duration`` (calendar
arithmetic: ``P1M`` from Jan 31 gives Feb 28, then Mar 31, so months never drift). When the
duration does not divide the range, ``lastIntervalBehavior`` decides the last, partial one:
``SKIP`` drops it, ``SHORTEN`` ends it at ``to``, ``EXTEND`` keeps its full duration
(ending after ``to``).
"""

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from app.errors import BadRequestError

LastIntervalBehavior = Literal["SKIP", "SHORTEN", "EXTEND"]

_DURATION = re.compile(
    r"^P(?!$)(?:(?P<years>\d+)Y)?(?:(?P<months>\d+)M)?(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)


#: The longest duration accepted: the calendar (``datetime``) ends in year 9999.
MAX_DURATION_YEARS = 9999
_MAX_DIGITS = 12  # more digits than this in one number: past the calendar whatever the unit


@dataclass(frozen=True)
class Duration:
    """An ISO 8601 duration: calendar months (years are 12 months) plus a fixed time span."""

    months: int
    span: timedelta

    def times(self, start: datetime, count: int) -> datetime:
        """Return ``start + count * self``, months first (day clamped to the month's end).

        Raises:
            OverflowError: The result is past the calendar's end (year 9999).

        """
        moment = start
        try:
            if self.months:
                total = start.month - 1 + self.months * count
                year, month = start.year + total // 12, total % 12 + 1
                if year > 9999:
                    raise OverflowError(f"year {year} is past year 9999")
                day = min(start.day, calendar.monthrange(year, month)[1])
                moment = start.replace(year=year, month=month, day=day)
            return moment + self.span * count
        except (OverflowError, ValueError) as error:
            raise OverflowError(f"{start} + {count} x {self}: {error}") from None


def parse_duration(text: str, *, field: str = "aggregationInterval.of") -> Duration:
    """Parse an ISO 8601 duration such as ``P1D``, ``P5D``, ``P1W``, ``P1M``, ``P1Y``, ``PT12H``.

    Args:
        text: The duration.
        field: Request field named in error messages.

    Returns:
        The duration.

    Raises:
        BadRequestError: Not an ISO 8601 duration, zero, or longer than
            ``MAX_DURATION_YEARS``.

    """
    shown = text if not isinstance(text, str) or len(text) <= 40 else f"{text[:37]}..."
    match = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise BadRequestError(
            f"{field}: '{shown}' is not an ISO 8601 duration (e.g. P1D, P5D, P1W, P1M, P1Y)"
        )
    parts = {key: value for key, value in match.groupdict().items() if value is not None}
    too_long = BadRequestError(
        f"{field}: '{shown}' is longer than the limit of {MAX_DURATION_YEARS} years "
        "(dates end in year 9999)"
    )
    if any(len(value.split(".")[0].lstrip("0")) > _MAX_DIGITS for value in parts.values()):
        raise too_long
    months = int(parts.get("years", 0)) * 12 + int(parts.get("months", 0))
    try:
        span = timedelta(
            weeks=int(parts.get("weeks", 0)),
            days=int(parts.get("days", 0)),
            hours=int(parts.get("hours", 0)),
            minutes=int(parts.get("minutes", 0)),
            seconds=float(parts.get("seconds", 0)),
        )
    except OverflowError:
        raise too_long from None
    if months == 0 and span <= timedelta(0):
        raise BadRequestError(f"{field}: '{shown}' is a zero duration")
    years = months / 12 + span / timedelta(days=365.2425)
    if years > MAX_DURATION_YEARS:
        raise too_long
    return Duration(months=months, span=span)


def split_time_range(
    start: datetime,
    end: datetime,
    duration: Duration,
    behavior: LastIntervalBehavior = "SKIP",
    *,
    max_intervals: int | None = None,
) -> list[tuple[datetime, datetime]]:
    """Cut ``[start, end)`` into intervals of ``duration``.

    Args:
        start: Range start (inclusive).
        end: Range end (exclusive), after ``start``.
        duration: Interval length.
        behavior: What happens to a last, partial interval: SKIP, SHORTEN or EXTEND.
        max_intervals: Refuse ranges cut into more intervals than this.

    Returns:
        (interval start, interval end) pairs in time order; empty when the range is shorter
        than one interval and ``behavior`` is SKIP.

    Raises:
        BadRequestError: ``start`` is not before ``end``, or over ``max_intervals``.

    """
    if start >= end:
        raise BadRequestError("aggregation.timeRange: 'from' must be before 'to'")
    intervals: list[tuple[datetime, datetime]] = []
    k = 0
    lower = start
    while lower < end:
        try:
            upper = duration.times(start, k + 1)
        except OverflowError:  # past year 9999: after any end, an interval to the last day
            upper = datetime.max.replace(tzinfo=start.tzinfo or UTC)
            if start.tzinfo is None:
                upper = upper.replace(tzinfo=None)
        if upper > end:
            if behavior == "SHORTEN":
                intervals.append((lower, end))
            elif behavior == "EXTEND":
                intervals.append((lower, upper))
            break
        intervals.append((lower, upper))
        if max_intervals is not None and len(intervals) > max_intervals:
            break
        k += 1
        lower = upper
    if max_intervals is not None and len(intervals) > max_intervals:
        raise BadRequestError(
            f"aggregation: the time range makes more than {max_intervals} intervals, over the "
            f"limit stats_max_intervals={max_intervals}; use a longer interval or a shorter range"
        )
    return intervals
