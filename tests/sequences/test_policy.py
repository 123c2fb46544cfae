"""Pure sequence logic: the definition's wire format and validation, step numbering, waits in the contact's
time zone, quiet hours, frequency caps and re-entry."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from segmentflow.policies.sequences import (
    FrequencyCap,
    QuietHours,
    SequenceError,
    compile_sequence,
    contact_zone,
    local_time_after,
    may_enroll,
    parse_duration,
    parse_sequences,
    quiet_until,
    walk,
)
from segmentflow.rules import parse_context

SEND = {
    "type": "send",
    "channel": "webhook",
    "url": "http://127.0.0.1:1/ok",
    "template": "Hi {{ contact.name }}",
}


def sequence(steps: list[dict[str, Any]], **options: Any) -> dict[str, Any]:
    return {"key": "welcome", "name": "Welcome", "segment": "vip", "steps": steps, **options}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("P2D", timedelta(days=2)),
        ("PT30M", timedelta(minutes=30)),
        ("P1W", timedelta(weeks=1)),
        ("P1DT12H", timedelta(days=1, hours=12)),
        ("PT1.5S", timedelta(seconds=1.5)),
    ],
)
def test_duration_parses_iso_8601(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text", ["P", "PT", "P1M", "P1Y", "2D", "P1DT", "PT-1H", "", "P9999999999D", "P999999999D", "P3654D"]
)
def test_duration_refuses_calendar_units_and_junk(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_sequence_json_round_trips_with_wire_names() -> None:
    data = sequence(
        [
            SEND,
            {"type": "wait", "duration": "P2D"},
            {"type": "branch", "segment": "eu", "then": [SEND], "else": []},
        ],
        exit_on_leave=False,
        reentry="P30D",
        quiet_hours={"start": "21:00", "end": "08:00"},
        frequency_cap={"max": 2, "period": "P1D"},
        rate_limit={"webhook": 10},
    )
    [parsed] = parse_sequences(data)
    again = parse_sequences(parsed.to_json())[0]
    assert again == parsed
    assert parsed.to_json()["steps"][2]["else"] == []
    assert parsed.reentry_cooldown() == timedelta(days=30)


@pytest.mark.parametrize(
    ("steps", "options", "fragment"),
    [
        ([], {}, "steps"),
        ([{"type": "wait", "duration": "P1M"}], {}, "steps[0]"),
        ([{"type": "send", "channel": "sms", "url": "http://x", "template": ""}], {}, "steps[0]"),
        ([{"type": "wait_until", "time": "25:00"}], {}, "steps[0]"),
        ([{"type": "branch", "then": []}], {}, "exactly one of segment and clause"),
        ([SEND], {"rate_limit": {"webhook": 0}}, "rate_limit"),
        ([SEND], {"rate_limit": {"webhook": float("nan")}}, "finite and positive"),
        ([SEND], {"rate_limit": {"webhook": float("inf")}}, "finite and positive"),
        ([SEND], {"reentry": "PT0S"}, "reentry"),
        ([SEND], {"reentry": "P999999999D"}, "longest duration"),
        ([SEND], {"frequency_cap": {"max": 1, "period": "P0D"}}, "longer than zero"),
        ([SEND], {"frequency_cap": {"max": 1, "period": "P99999999999W"}}, "longest duration"),
        ([{"type": "wait", "duration": "P9999999999D"}], {}, "longest duration"),
        ([{"type": "wait", "duration": "PT0S"}], {}, "longer than zero"),
        ([SEND], {"reentry": "sometimes"}, "reentry"),
        ([SEND], {"surprise": 1}, "surprise"),
        ([{"type": "branch", "clause": {"attribute": "plan", "op": "nope", "values": []}}], {}, "step 0"),
        ([{"type": "branch", "clause": {"op": "segmentMatch", "values": ["vip"]}}], {}, "segmentMatch"),
    ],
)
def test_bad_definitions_are_refused_naming_the_place(
    steps: list[dict[str, Any]], options: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(SequenceError, match='sequence "welcome"') as caught:
        parse_sequences(sequence(steps, **options))
    assert fragment in str(caught.value)


def test_duplicate_keys_in_one_file_are_refused() -> None:
    with pytest.raises(SequenceError, match="twice"):
        parse_sequences([sequence([SEND]), sequence([SEND])])


def test_steps_are_numbered_in_document_order_with_branches_rejoining() -> None:
    [parsed] = parse_sequences(
        sequence(
            [
                SEND,
                {"type": "branch", "segment": "eu", "then": [SEND, SEND], "else": [{"type": "exit"}]},
                {"type": "wait", "duration": "P1D"},
                SEND,
            ]
        )
    )
    nodes = compile_sequence(parsed).nodes
    assert [n.step.type for n in nodes] == ["send", "branch", "send", "send", "exit", "wait", "send"]
    assert [n.next for n in nodes] == [1, 5, 3, 5, 5, 6, None]
    assert (nodes[1].then_start, nodes[1].else_start) == (2, 4)


NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
CONTEXT = parse_context({"kind": "user", "key": "u1", "plan": "pro"})


def test_walk_branches_on_membership_and_on_a_clause() -> None:
    [parsed] = parse_sequences(
        sequence(
            [
                {"type": "branch", "segment": "eu", "then": [SEND], "else": [{"type": "exit"}]},
                {
                    "type": "branch",
                    "clause": {"attribute": "plan", "op": "in", "values": ["pro"]},
                    "then": [{"type": "wait", "duration": "PT1H"}],
                },
                SEND,
            ]
        )
    )
    program = compile_sequence(parsed)
    member = walk(program, 0, now=NOW, zone=UTC, segments={"vip", "eu"}, context=CONTEXT)
    assert (member.outcome, member.position) == ("send", 1)
    outsider = walk(program, 0, now=NOW, zone=UTC, segments={"vip"}, context=CONTEXT)
    assert outsider.outcome == "exited"
    pro = walk(program, 3, now=NOW, zone=UTC, segments=set(), context=CONTEXT)
    assert (pro.outcome, pro.position, pro.due_at) == ("wait", 5, NOW + timedelta(hours=1))
    free = parse_context({"kind": "user", "key": "u2", "plan": "free"})
    assert walk(program, 3, now=NOW, zone=UTC, segments=set(), context=free).position == 5
    assert walk(program, None, now=NOW, zone=UTC, segments=set(), context=CONTEXT).outcome == "completed"
    assert walk(program, 99, now=NOW, zone=UTC, segments=set(), context=CONTEXT).outcome == "completed"


def test_wait_until_is_read_in_the_contacts_time_zone() -> None:
    [parsed] = parse_sequences(sequence([{"type": "wait_until", "time": "09:00"}, SEND]))
    program = compile_sequence(parsed)
    tokyo = walk(program, 0, now=NOW, zone=ZoneInfo("Asia/Tokyo"), segments=set(), context=CONTEXT)
    # 12:00 UTC is 21:00 in Tokyo: the next 09:00 there is 00:00 UTC the next day.
    assert tokyo.due_at == datetime(2026, 3, 11, 0, 0, tzinfo=UTC)
    utc = walk(program, 0, now=NOW, zone=UTC, segments=set(), context=CONTEXT)
    assert utc.due_at == datetime(2026, 3, 11, 9, 0, tzinfo=UTC)


def test_local_time_now_is_due_now_and_dst_is_followed() -> None:
    assert local_time_after(NOW, time(12, 0), UTC) == NOW
    # New York moves to daylight time on 2026-03-08: 09:00 local is 13:00 UTC after, 14:00 UTC before.
    before = datetime(2026, 3, 7, 15, 0, tzinfo=UTC)
    assert local_time_after(before, time(9, 0), ZoneInfo("America/New_York")) == datetime(
        2026, 3, 8, 13, 0, tzinfo=UTC
    )


PARIS = ZoneInfo("Europe/Paris")


@pytest.mark.parametrize(
    ("at", "clock", "expected"),
    [
        # Fall-back 2024-10-27: 03:00 CEST -> 02:00 CET at 01:00Z, so 02:00-02:59 local happen twice.
        (datetime(2024, 10, 27, 1, 15, tzinfo=UTC), time(2, 30), datetime(2024, 10, 27, 1, 30, tzinfo=UTC)),
        (datetime(2024, 10, 26, 23, 0, tzinfo=UTC), time(2, 30), datetime(2024, 10, 27, 0, 30, tzinfo=UTC)),
        (datetime(2024, 10, 27, 0, 45, tzinfo=UTC), time(2, 30), datetime(2024, 10, 27, 1, 30, tzinfo=UTC)),
        (datetime(2024, 10, 27, 1, 45, tzinfo=UTC), time(2, 30), datetime(2024, 10, 28, 1, 30, tzinfo=UTC)),
        # Spring-forward 2024-03-31: 02:30 never shows; it resolves as zoneinfo's fold=0 does (01:30Z).
        (datetime(2024, 3, 31, 0, 45, tzinfo=UTC), time(2, 30), datetime(2024, 3, 31, 1, 30, tzinfo=UTC)),
    ],
)
def test_local_time_after_takes_the_first_of_a_repeated_hour_not_before_now(
    at: datetime, clock: time, expected: datetime
) -> None:
    assert local_time_after(at, clock, PARIS) == expected


def test_quiet_hours_ending_in_the_repeated_hour_end_that_night() -> None:
    at = datetime(2024, 10, 27, 1, 15, tzinfo=UTC)  # 02:15 CET, the second 02:15 of the night
    quiet = QuietHours(start="22:00", end="02:30")
    assert quiet_until(at, quiet, PARIS) == datetime(2024, 10, 27, 1, 30, tzinfo=UTC)


def test_an_exit_step_stops_at_its_own_index() -> None:
    [parsed] = parse_sequences(
        sequence([{"type": "branch", "segment": "vip", "then": [{"type": "exit"}], "else": []}, SEND])
    )
    stop = walk(compile_sequence(parsed), 0, now=NOW, zone=UTC, segments={"vip"}, context=CONTEXT)
    assert (stop.outcome, stop.position) == ("exited", 1)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "no sequence"),
        ([1], "item 0 of the list is not a sequence: expected a JSON object, got a number"),
        ("text", "the document is not a sequence: expected a JSON object, got a string"),
    ],
)
def test_files_without_sequence_objects_are_refused_clearly(data: Any, message: str) -> None:
    with pytest.raises(SequenceError) as caught:
        parse_sequences(data)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        ({"kind": "user", "key": "a", "timezone": "Europe/Paris"}, "Europe/Paris"),
        ({"kind": "user", "key": "a", "timezone": "Mars/Olympus"}, "UTC"),
        ({"kind": "user", "key": "a", "timezone": 3}, "UTC"),
        ({"kind": "user", "key": "a"}, "UTC"),
        (
            {"kind": "multi", "organization": {"key": "o", "timezone": "Asia/Tokyo"}, "user": {"key": "u"}},
            "Asia/Tokyo",
        ),
    ],
)
def test_contact_zone_falls_back_to_utc(context: dict[str, Any], expected: str) -> None:
    assert str(contact_zone(context, "timezone")) == expected


@pytest.mark.parametrize(
    ("start", "end", "clock", "until"),
    [
        ("21:00", "08:00", "23:30", datetime(2026, 3, 11, 8, 0, tzinfo=UTC)),
        ("21:00", "08:00", "07:59", datetime(2026, 3, 10, 8, 0, tzinfo=UTC)),
        ("21:00", "08:00", "08:00", None),
        ("21:00", "08:00", "12:00", None),
        ("12:00", "14:00", "13:00", datetime(2026, 3, 10, 14, 0, tzinfo=UTC)),
        ("12:00", "14:00", "14:30", None),
    ],
)
def test_quiet_hours_span_midnight_and_end_at_end(
    start: str, end: str, clock: str, until: datetime | None
) -> None:
    hour, minute = map(int, clock.split(":"))
    at = datetime(2026, 3, 10, hour, minute, tzinfo=UTC)
    assert quiet_until(at, QuietHours(start=start, end=end), UTC) == until
    assert quiet_until(at, None, UTC) is None


def test_frequency_cap_releases_when_the_oldest_counted_send_ages_out() -> None:
    cap = FrequencyCap(max=2, period="P1D")
    sent = [NOW - timedelta(hours=20), NOW - timedelta(hours=2), NOW - timedelta(days=3)]
    assert cap_release_at(sent, cap) == NOW + timedelta(hours=4)
    assert cap_release_at(sent[1:], cap) is None
    assert cap_release_at(sent, None) is None


def cap_release_at(sent: list[datetime], cap: FrequencyCap | None) -> datetime | None:
    from segmentflow.policies.sequences import cap_release

    return cap_release(sent, cap, NOW)


@pytest.mark.parametrize(
    ("active", "last", "cooldown", "expected"),
    [
        (False, None, None, True),
        (True, None, None, False),
        (False, NOW - timedelta(days=400), None, False),
        (False, NOW - timedelta(days=29), timedelta(days=30), False),
        (False, NOW - timedelta(days=30), timedelta(days=30), True),
        (True, NOW - timedelta(days=90), timedelta(days=30), False),
    ],
)
def test_reentry_rules(
    active: bool, last: datetime | None, cooldown: timedelta | None, expected: bool
) -> None:
    assert may_enroll(has_active=active, last_enrolled_at=last, cooldown=cooldown, now=NOW) is expected
