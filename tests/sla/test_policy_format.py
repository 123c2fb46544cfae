"""The policy file's strict parts: targets are ISO 8601 durations in weeks, days, hours and minutes only;
time zones are IANA zones, not host-dependent names; a target must be reachable within a few years of its
calendar's opening hours."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from segmentflow.policies.sla import SlaPolicyError, format_duration, parse_duration, parse_policies

BERLIN = {"timezone": "Europe/Berlin", "hours": {"mon": ["09:00-17:00"]}}


def _policy(first_reply: Any = "PT1H", calendar: Any = "24/7") -> list[dict[str, Any]]:
    return [{"key": "p", "targets": {"normal": {"first_reply": first_reply}}, "calendar": calendar}]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PT30M", timedelta(minutes=30)),
        ("PT8H", timedelta(hours=8)),
        ("PT1H30M", timedelta(minutes=90)),
        ("P1D", timedelta(days=1)),
        ("P1DT12H", timedelta(days=1, hours=12)),
        ("P2W", timedelta(weeks=2)),
    ],
)
def test_iso_8601_durations_are_read(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected
    target = parse_policies(_policy(text))[0].targets["normal"].first_reply
    assert target == expected
    assert parse_duration(format_duration(expected)) == expected


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        ("P1M", "years and months"),
        ("P1Y", "years and months"),
        ("P1Y2D", "years and months"),
        (60, "not an ISO 8601 duration"),
        ("01:00:00", "not an ISO 8601 duration"),
        ("1 day, 0:00:00", "not an ISO 8601 duration"),
        ("P", "not an ISO 8601 duration"),
        ("PT", "not an ISO 8601 duration"),
        ("P1DT", "not an ISO 8601 duration"),
        ("pt1h", "not an ISO 8601 duration"),
        ("P1W2D", "not an ISO 8601 duration"),
    ],
)
def test_other_durations_are_refused_naming_the_policy(value: Any, hint: str) -> None:
    with pytest.raises(SlaPolicyError, match=rf'policy 0 \("p"\): targets.normal.first_reply: .*{hint}'):
        parse_policies(_policy(value))


def test_a_long_target_round_trips_without_years() -> None:
    policy = parse_policies(_policy("P400D"))[0]
    assert policy.to_json()["targets"]["normal"]["first_reply"] == "P400D"
    assert parse_policies([policy.to_json()]) == [policy]


@pytest.mark.parametrize("zone", ["localtime", "posixrules", "Factory"])
def test_host_dependent_time_zones_are_refused(zone: str) -> None:
    with pytest.raises(SlaPolicyError, match=f'"{zone}" is not an IANA time zone'):
        parse_policies(_policy(calendar={**BERLIN, "timezone": zone}))


def test_a_target_beyond_five_years_of_opening_hours_is_refused() -> None:
    one_minute = {"timezone": "UTC", "hours": {"mon": ["09:00-09:01"]}}
    # 5 years of a minute a week is 260 minutes: P30D (43,200 minutes) would be centuries away.
    with pytest.raises(SlaPolicyError, match=r'policy 0 \("p"\): targets.normal.first_reply: P30D is more'):
        parse_policies(_policy("P30D", one_minute))
    assert parse_policies(_policy("PT4H20M", one_minute))  # 260 minutes: reachable
    with pytest.raises(SlaPolicyError, match="PT4H21M is more business time than 5 years"):
        parse_policies(_policy("PT4H21M", one_minute))
    # An ordinary calendar allows long targets: 8 hours a week for 5 years is 2,080 hours.
    assert parse_policies(_policy("P86D", BERLIN))
    with pytest.raises(SlaPolicyError, match="P87D is more business time"):
        parse_policies(_policy("P87D", BERLIN))
