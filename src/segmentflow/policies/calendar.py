"""Pure. Business-hours calendars and the arithmetic of business time over them (no I/O, deterministic for a
given tz database).

Decisions, settled once:
- Business time is real elapsed time during which the calendar's local wall clock reads inside the opening
  hours of a local date that is not a holiday. So across a DST change, 09:00-17:00 is still 8 hours, while a
  `00:00-24:00` day is 23 or 25 hours long; an opening that begins inside a skipped hour begins when the
  clock jumps; a repeated hour counts twice if it is open.
- A holiday is a date in the calendar's local time: that whole local day is closed.
- Opening hours are `HH:MM-HH:MM` within one local day (`24:00` may end one); a night shift is written as
  two intervals (`22:00-24:00` and the next day's `00:00-06:00`). Overlapping intervals on a day are refused.
- A calendar without any opening hour is refused when loaded (nothing could ever become due); `"24/7"` is the
  always-open calendar (plain elapsed time, no holidays).
- `add_business_time(calendar, start, d)` is the earliest instant by which `d` of business time has elapsed
  since `start`. A start outside business hours therefore counts from the next opening; a zero duration
  returns `start` itself; a due time lands at the close of an opening rather than at the next one
  (Friday 16:00 plus one hour of 09:00-17:00 is Friday 17:00, not Monday 09:00).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, time, timedelta
from functools import cache, cached_property
from itertools import pairwise
from typing import Any, Literal, TypeAlias
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "ALWAYS_OPEN",
    "WEEKDAYS",
    "BusinessHours",
    "Calendar",
    "add_business_time",
    "add_business_times",
    "business_time_between",
    "parse_calendar",
]

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
#: Weekday keys in the policy file, Monday first (index = `date.weekday()`).
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALWAYS_OPEN: Literal["24/7"] = "24/7"
_INTERVAL = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")
_DAY = timedelta(days=1)
_WEEK = timedelta(days=7)
_ZERO = timedelta(0)

Span = tuple[timedelta, timedelta]  # offsets from local midnight, start < end


def _parse_interval(text: str) -> Span:
    match = _INTERVAL.match(text)
    if match is None:
        raise ValueError(f'"{text}" is not an interval "HH:MM-HH:MM"')
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    for hour, minute in ((h1, m1), (h2, m2)):
        if minute > 59 or hour > 24 or (hour == 24 and minute != 0):
            raise ValueError(f'"{text}": {hour:02d}:{minute:02d} is not a time of day')
    start, end = timedelta(hours=h1, minutes=m1), timedelta(hours=h2, minutes=m2)
    if start >= end:
        raise ValueError(f'"{text}" ends before it starts (split a night shift at 24:00)')
    return start, end


#: tz database names whose meaning depends on the host (its local zone, the default rules) or is none.
_HOST_ZONES = frozenset({"localtime", "posixrules", "Factory"})


class BusinessHours(BaseModel):
    """An IANA time zone, weekly opening hours and holiday dates (local dates)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    timezone: str
    hours: dict[Weekday, list[str]]
    holidays: list[date] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        if name in _HOST_ZONES:  # what these mean depends on the machine: due times would too
            raise ValueError(f'"{name}" is not an IANA time zone (name one, e.g. "Europe/Berlin")')
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f'unknown time zone "{name}"') from None
        return name

    @model_validator(mode="after")
    def _valid_hours(self) -> BusinessHours:
        for day, intervals in self.hours.items():
            spans = sorted(_parse_interval(text) for text in intervals)
            for (_, end), (start, _) in pairwise(spans):
                if start < end:
                    raise ValueError(f"hours.{day}: intervals overlap")
        if not any(self.hours.values()):
            raise ValueError('a calendar needs opening hours (use "24/7" for always open)')
        return self

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @cached_property
    def week(self) -> tuple[tuple[Span, ...], ...]:
        """Opening spans per weekday, Monday first, sorted."""
        return tuple(tuple(sorted(_parse_interval(t) for t in self.hours.get(day, []))) for day in WEEKDAYS)

    @cached_property
    def holiday_set(self) -> frozenset[date]:
        return frozenset(self.holidays)

    @cached_property
    def sorted_holidays(self) -> tuple[date, ...]:
        return tuple(sorted(self.holiday_set))

    @cached_property
    def week_total(self) -> timedelta:
        """Business time of a week without holidays or offset changes."""
        return sum((end - start for day in self.week for start, end in day), _ZERO)

    def holiday_within(self, first: date, days: int) -> bool:
        """Whether a holiday falls on one of the `days` local dates from `first`."""
        index = bisect.bisect_left(self.sorted_holidays, first)
        return index < len(self.sorted_holidays) and self.sorted_holidays[index] < first + timedelta(
            days=days
        )


Calendar: TypeAlias = BusinessHours | Literal["24/7"]


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("business-time arithmetic needs timezone-aware datetimes")
    return moment.astimezone(UTC)


def _offset(zone: ZoneInfo, moment: datetime) -> timedelta:
    offset = moment.astimezone(zone).utcoffset()
    assert offset is not None
    return offset


@cache
def _year(zone_name: str, year: int) -> tuple[timedelta, tuple[datetime, ...], tuple[timedelta, ...]]:
    """The zone's offset at the start of `year` (UTC), the UTC instants in the year at which it changes and
    the offset from each on (found by sampling each UTC midnight and bisecting to the second; real zones
    never change offset twice within a day). Cached: the walk then never converts a time zone itself."""
    zone = ZoneInfo(zone_name)
    instants: list[datetime] = []
    offsets: list[timedelta] = []
    day = datetime(year, 1, 1, tzinfo=UTC)
    first = previous = _offset(zone, day)
    while day.year == year:
        following = day + _DAY
        offset = _offset(zone, following)
        if offset != previous:
            low, high = day, following  # offset(low) == previous, offset(high) != previous
            while high - low > timedelta(seconds=1):
                middle = (low + (high - low) / 2).replace(microsecond=0)
                if _offset(zone, middle) == previous:
                    low = middle
                else:
                    high = middle
            instants.append(high.replace(tzinfo=None))  # naive UTC, as the walk keeps its instants
            offsets.append(_offset(zone, high))
            previous = offset
        day = following
    return first, tuple(instants), tuple(offsets)


def _piece(zone: ZoneInfo, moment: datetime) -> tuple[timedelta, datetime]:
    """The UTC offset at `moment` (naive UTC) and the end of the stretch it holds for: the next offset
    change, or the end of the UTC year (a harmless cut)."""
    first, instants, offsets = _year(zone.key, moment.year)
    index = bisect.bisect_right(instants, moment)
    offset = offsets[index - 1] if index else first
    end = instants[index] if index < len(instants) else datetime(moment.year + 1, 1, 1)
    return offset, end


def _open_spans(hours: BusinessHours, start: datetime) -> Iterator[tuple[datetime, datetime]]:
    """Business spans as naive UTC `(from, to)` pairs, in order, from `start` (naive UTC) on: endless.

    Instants stay naive inside the walk (aware arithmetic and `replace(tzinfo=...)` cost more than the
    rest of a step); the public functions convert at their edges."""
    zone, week, holidays = hours.zone, hours.week, hours.holiday_set
    cursor = start
    while True:
        offset, end = _piece(zone, cursor)
        # Within [cursor, end) the offset is constant, so local time is plain naive arithmetic.
        local_cursor, local_end = cursor + offset, end + offset
        day = local_cursor.date()
        while True:
            midnight = datetime.combine(day, time())
            if midnight >= local_end:
                break
            if day not in holidays:
                for span_start, span_end in week[day.weekday()]:
                    a = max(midnight + span_start, local_cursor)
                    b = min(midnight + span_end, local_end)
                    if a < b:
                        yield a - offset, b - offset
            day += _DAY
        cursor = end


def add_business_time(calendar: Calendar, start: datetime, duration: timedelta) -> datetime:
    """The earliest instant (UTC) by which `duration` of business time has elapsed since `start`."""
    return add_business_times(calendar, start, (duration,))[0]


def add_business_times(calendar: Calendar, start: datetime, durations: Sequence[timedelta]) -> list[datetime]:
    """`add_business_time` for several durations from one start, in one walk (a warning and its due time)."""
    if any(d < _ZERO for d in durations):
        raise ValueError("a business duration cannot be negative")
    begin = _utc(start)
    if calendar == ALWAYS_OPEN:
        try:
            return [begin + d for d in durations]
        except OverflowError:
            raise ValueError("the business time runs past the year 9999") from None
    assert isinstance(calendar, BusinessHours)
    order = sorted(range(len(durations)), key=lambda i: durations[i])
    found: list[datetime] = [begin] * len(durations)
    pending = [i for i in order if durations[i] > _ZERO]
    if pending:
        try:
            reached = _walk(calendar, begin.replace(tzinfo=None), [durations[i] for i in pending])
        except (OverflowError, ValueError):  # past datetime.max
            raise ValueError("the business time runs past the year 9999") from None
        for index, instant in zip(pending, reached, strict=True):
            found[index] = instant.replace(tzinfo=UTC)
    return found


def _walk(hours: BusinessHours, start: datetime, targets: list[timedelta]) -> list[datetime]:
    """The instants at which business time elapsed since `start` reaches each of `targets` (ascending,
    positive), naive UTC like `start`. Whole weeks without a holiday or an offset change are skipped in one
    step."""
    zone, week, week_total = hours.zone, hours.week, hours.week_total
    out: list[datetime] = []
    elapsed = _ZERO
    cursor = start
    while True:
        offset, end = _piece(zone, cursor)
        local_cursor, local_end = cursor + offset, end + offset
        day = local_cursor.date()
        while True:
            midnight = datetime.combine(day, time())
            if midnight >= local_end:
                break
            if (
                targets[len(out)] - elapsed > week_total
                and midnight >= local_cursor
                and midnight + _WEEK <= local_end
                and not hours.holiday_within(day, 7)
            ):
                elapsed += week_total
                day += _WEEK
                continue
            if day not in hours.holiday_set:
                for span_start, span_end in week[day.weekday()]:
                    a = max(midnight + span_start, local_cursor)
                    b = min(midnight + span_end, local_end)
                    if a >= b:
                        continue
                    while elapsed + (b - a) >= targets[len(out)]:
                        out.append(a + (targets[len(out)] - elapsed) - offset)
                        if len(out) == len(targets):
                            return out
                    elapsed += b - a
            day += _DAY
        cursor = end


def business_time_between(calendar: Calendar, start: datetime, end: datetime) -> timedelta:
    """Business time elapsed in `[start, end)`; zero when `end` is not after `start`."""
    begin, finish = _utc(start), _utc(end)
    if finish <= begin:
        return _ZERO
    if calendar == ALWAYS_OPEN:
        return finish - begin
    assert isinstance(calendar, BusinessHours)
    total = _ZERO
    until = finish.replace(tzinfo=None)
    for a, b in _open_spans(calendar, begin.replace(tzinfo=None)):
        if a >= until:
            break
        total += min(b, until) - a
    return total


def parse_calendar(data: Any) -> Calendar:
    """`"24/7"` or a business-hours object, validated (raises pydantic's `ValidationError`)."""
    if data == ALWAYS_OPEN:
        return ALWAYS_OPEN
    return BusinessHours.model_validate(data)
