"""Business-time arithmetic against an independent minute-by-minute walk (local wall clock per UTC minute),
over random starts, durations and calendars in zones with DST, holidays included."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from segmentflow.policies.calendar import (
    ALWAYS_OPEN,
    WEEKDAYS,
    BusinessHours,
    add_business_time,
    add_business_times,
    business_time_between,
    parse_calendar,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
MINUTE = timedelta(minutes=1)
OFFICE = {day: ["09:00-17:00"] for day in WEEKDAYS[:5]}


def _is_open(calendar: BusinessHours, moment: datetime) -> bool:
    """The definition, read literally: is the local wall clock inside an opening of a non-holiday date?"""
    local = moment.astimezone(ZoneInfo(calendar.timezone))
    if local.date() in set(calendar.holidays):
        return False
    now = f"{local.hour:02d}:{local.minute:02d}"
    for text in calendar.hours.get(WEEKDAYS[local.weekday()], []):
        start, end = text.split("-")
        if start <= now < end:  # "24:00" sorts after every HH:MM
            return True
    return False


def _brute_add(calendar: BusinessHours, start: datetime, minutes: int) -> datetime:
    moment, left = start, minutes
    while left:
        if _is_open(calendar, moment):
            left -= 1
        moment += MINUTE
    return moment


def _brute_between(calendar: BusinessHours, start: datetime, end: datetime) -> int:
    count, moment = 0, start
    while moment < end:
        count += _is_open(calendar, moment)
        moment += MINUTE
    return count


def _hours(start: int, end: int) -> str:
    return f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"


@st.composite
def calendars(draw: st.DrawFn) -> BusinessHours:
    zone = draw(st.sampled_from(["Europe/Berlin", "America/New_York", "UTC"]))
    hours: dict[str, list[str]] = {}
    for day in WEEKDAYS:
        # 0-2 intervals at 15-minute steps, some crossing the 02:00-03:00 DST hour, some ending at 24:00.
        cuts = sorted(draw(st.sets(st.integers(0, 96), max_size=4)))
        spans = [_hours(a * 15, b * 15) for a, b in zip(cuts[::2], cuts[1::2], strict=False)]
        if spans:
            hours[day] = spans
    if not hours:
        hours["wed"] = ["01:30-03:15"]
    holidays = draw(st.lists(st.dates(date(2026, 3, 20), date(2026, 4, 10)), max_size=4))
    holidays += draw(st.lists(st.dates(date(2026, 10, 20), date(2026, 11, 10)), max_size=4))
    return BusinessHours.model_validate({"timezone": zone, "hours": hours, "holidays": holidays})


# Weeks around the DST changes in Europe (Mar 29 / Oct 25 2026) and the US (Mar 8 / Nov 1), and New Year.
starts = st.one_of(
    st.datetimes(datetime(2026, 3, 1), datetime(2026, 4, 5)),
    st.datetimes(datetime(2026, 10, 20), datetime(2026, 11, 5)),
    st.datetimes(datetime(2026, 12, 26), datetime(2027, 1, 3)),  # across the year end (cached per year)
).map(lambda d: d.replace(second=0, microsecond=0, tzinfo=UTC))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calendar=calendars(), start=starts, minutes=st.integers(0, 1500))
def test_adding_business_time_matches_a_minute_by_minute_walk(
    calendar: BusinessHours, start: datetime, minutes: int
) -> None:
    assert add_business_time(calendar, start, timedelta(minutes=minutes)) == _brute_add(
        calendar, start, minutes
    )


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calendar=calendars(), start=starts, span=st.integers(0, 4 * 1440))
def test_business_time_between_matches_a_minute_by_minute_walk(
    calendar: BusinessHours, start: datetime, span: int
) -> None:
    end = start + timedelta(minutes=span)
    assert business_time_between(calendar, start, end) == _brute_between(calendar, start, end) * MINUTE


@settings(max_examples=80, deadline=None)
@given(calendar=calendars(), start=starts, minutes=st.integers(1, 20_000))
def test_business_time_between_start_and_due_is_the_duration(
    calendar: BusinessHours, start: datetime, minutes: int
) -> None:
    due = add_business_time(calendar, start, timedelta(minutes=minutes))
    assert business_time_between(calendar, start, due) == timedelta(minutes=minutes)


@settings(max_examples=60, deadline=None)
@given(calendar=calendars(), start=starts, minutes=st.lists(st.integers(0, 20_000), min_size=1, max_size=4))
def test_several_durations_in_one_walk_equal_one_walk_each(
    calendar: BusinessHours, start: datetime, minutes: list[int]
) -> None:
    durations = [timedelta(minutes=m) for m in minutes]
    expected = [add_business_time(calendar, start, d) for d in durations]
    assert add_business_times(calendar, start, durations) == expected


def _office(**extra: object) -> BusinessHours:
    return BusinessHours.model_validate({"timezone": "Europe/Berlin", "hours": OFFICE, **extra})


def test_friday_1630_plus_two_business_hours_is_monday_1030() -> None:
    friday = datetime(2026, 11, 27, 16, 30, tzinfo=BERLIN)
    assert friday.strftime("%A") == "Friday"
    due = add_business_time(_office(), friday, timedelta(hours=2))
    assert due.astimezone(BERLIN) == datetime(2026, 11, 30, 10, 30, tzinfo=BERLIN)


def test_a_holiday_closes_the_whole_local_day() -> None:
    calendar = _office(holidays=["2026-12-24", "2026-12-25"])
    due = add_business_time(calendar, datetime(2026, 12, 23, 16, 0, tzinfo=BERLIN), timedelta(hours=2))
    assert due.astimezone(BERLIN) == datetime(2026, 12, 28, 10, 0, tzinfo=BERLIN)


def test_holidays_are_local_dates_not_utc_dates() -> None:
    # 23:30 UTC on Dec 24 is already Dec 25 in Berlin: the holiday, so the day stays closed.
    calendar = BusinessHours.model_validate(
        {
            "timezone": "Europe/Berlin",
            "hours": {d: ["00:00-24:00"] for d in WEEKDAYS},
            "holidays": ["2026-12-25"],
        }
    )
    start = datetime(2026, 12, 24, 22, 30, tzinfo=UTC)  # 23:30 in Berlin
    due = add_business_time(calendar, start, timedelta(hours=1))
    assert due.astimezone(BERLIN) == datetime(2026, 12, 26, 0, 30, tzinfo=BERLIN)


def test_a_start_outside_business_hours_counts_from_the_next_opening() -> None:
    saturday = datetime(2026, 11, 28, 11, 0, tzinfo=BERLIN)
    due = add_business_time(_office(), saturday, timedelta(minutes=30))
    assert due.astimezone(BERLIN) == datetime(2026, 11, 30, 9, 30, tzinfo=BERLIN)


def test_a_due_time_lands_at_a_close_not_at_the_next_opening() -> None:
    friday = datetime(2026, 11, 27, 16, 0, tzinfo=BERLIN)
    assert add_business_time(_office(), friday, timedelta(hours=1)).astimezone(BERLIN).hour == 17


@pytest.mark.parametrize(
    ("zone", "day", "hours"),
    [
        ("Europe/Berlin", date(2026, 3, 29), 23),
        ("Europe/Berlin", date(2026, 10, 25), 25),
        ("America/New_York", date(2026, 3, 8), 23),
        ("America/New_York", date(2026, 11, 1), 25),
        ("America/New_York", date(2026, 11, 2), 24),
    ],
)
def test_a_whole_open_day_lasts_as_long_as_the_local_day(zone: str, day: date, hours: int) -> None:
    tz = ZoneInfo(zone)
    calendar = BusinessHours.model_validate(
        {"timezone": zone, "hours": {d: ["00:00-24:00"] for d in WEEKDAYS}}
    )
    start = datetime.combine(day, datetime.min.time(), tz)
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), tz)
    assert business_time_between(calendar, start, end) == timedelta(hours=hours)


def test_office_hours_keep_eight_hours_across_a_dst_change() -> None:
    calendar = BusinessHours.model_validate(
        {"timezone": "America/New_York", "hours": {"sun": ["09:00-17:00"]}}
    )
    start = datetime(2026, 3, 8, 0, 0, tzinfo=NEW_YORK)
    due = add_business_time(calendar, start, timedelta(hours=8))
    assert due.astimezone(NEW_YORK) == datetime(2026, 3, 8, 17, 0, tzinfo=NEW_YORK)


def test_always_open_is_plain_elapsed_time() -> None:
    start = datetime(2026, 3, 29, 0, 0, tzinfo=BERLIN)
    # Elapsed, not wall-clock: 00:00 CET plus five hours is 06:00 CEST on the spring-forward night.
    due = add_business_time(ALWAYS_OPEN, start, timedelta(hours=5))
    assert due.astimezone(BERLIN) == datetime(2026, 3, 29, 6, 0, tzinfo=BERLIN)
    assert business_time_between(ALWAYS_OPEN, start, due) == timedelta(hours=5)
    assert parse_calendar("24/7") == ALWAYS_OPEN


def test_zero_duration_returns_the_start_even_when_closed() -> None:
    saturday = datetime(2026, 11, 28, 11, 0, tzinfo=UTC)
    assert add_business_time(_office(), saturday, timedelta(0)) == saturday


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"timezone": "Europe/Berlin", "hours": {}}, "needs opening hours"),
        ({"timezone": "Europe/Berlin", "hours": {"mon": []}}, "needs opening hours"),
        ({"timezone": "Mars/Olympus", "hours": OFFICE}, "unknown time zone"),
        ({"timezone": "Europe/Berlin", "hours": {"mon": ["17:00-09:00"]}}, "ends before it starts"),
        ({"timezone": "Europe/Berlin", "hours": {"mon": ["09:00-13:00", "12:00-17:00"]}}, "overlap"),
        ({"timezone": "Europe/Berlin", "hours": {"mon": ["9-17"]}}, "HH:MM-HH:MM"),
        ({"timezone": "Europe/Berlin", "hours": {"mon": ["09:00-24:30"]}}, "not a time of day"),
        ({"timezone": "Europe/Berlin", "hours": {"monday": ["09:00-17:00"]}}, "Input should be"),
        ({"timezone": "Europe/Berlin", "hours": OFFICE, "holidays": ["2026-02-30"]}, "date"),
        ({"timezone": "Europe/Berlin", "hours": OFFICE, "open": True}, "Extra inputs"),
    ],
)
def test_bad_calendars_are_refused_when_loaded(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_calendar(data)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        add_business_time(_office(), datetime(2026, 1, 1), timedelta(hours=1))


def test_a_due_time_past_the_year_9999_is_a_value_error() -> None:
    late = datetime(9999, 12, 31, 12, 0, tzinfo=UTC)
    for calendar in (_office(), ALWAYS_OPEN):
        with pytest.raises(ValueError, match="year 9999"):
            add_business_time(calendar, late, timedelta(days=3))
