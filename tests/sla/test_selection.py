"""Policy selection: first match wins, segment conditions any/all/none, ticket fields, explicit no match,
and the file's validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from segmentflow.policies.sla import (
    Policy,
    SlaPolicyError,
    TicketFacts,
    parse_policies,
    select_and_schedule,
    select_policy,
)

TARGETS = {"urgent": {"first_reply": "PT1H", "resolution": "PT8H"}, "normal": {"first_reply": "PT4H"}}


def policy(key: str, **conditions: Any) -> dict[str, Any]:
    return {"key": key, "conditions": conditions, "targets": TARGETS, "calendar": "24/7"}


def pick(
    policies: list[dict[str, Any]], segments: set[str], priority: str = "normal", **ticket: Any
) -> str | None:
    chosen = select_policy(
        parse_policies(policies), segments=frozenset(segments), priority=priority, **ticket
    )
    return None if chosen is None else chosen.key


@pytest.mark.parametrize(
    ("conditions", "segments", "expected"),
    [
        ({"segments_any": ["vip", "gold"]}, {"gold"}, True),
        ({"segments_any": ["vip", "gold"]}, {"eu"}, False),
        ({"segments_any": ["vip"]}, set(), False),
        ({"segments_all": ["vip", "eu"]}, {"vip", "eu", "x"}, True),
        ({"segments_all": ["vip", "eu"]}, {"vip"}, False),
        ({"segments_none": ["trial"]}, {"vip"}, True),
        ({"segments_none": ["trial"]}, {"vip", "trial"}, False),
        ({"segments_none": ["trial"]}, set(), True),
        ({"segments_any": ["vip"], "segments_none": ["staff"]}, {"vip", "staff"}, False),
        ({}, set(), True),
        ({"segments_any": []}, set(), True),
    ],
)
def test_segment_conditions(conditions: dict[str, Any], segments: set[str], expected: bool) -> None:
    assert (pick([policy("p", **conditions)], segments) == "p") is expected


@pytest.mark.parametrize(
    ("conditions", "ticket", "expected"),
    [
        ({"priority": ["high", "urgent"]}, {"priority": "urgent"}, True),
        ({"priority": ["high", "urgent"]}, {"priority": "low"}, False),
        ({"channel": ["email"]}, {"channel": "email"}, True),
        ({"channel": ["email"]}, {"channel": "chat"}, False),
        ({"channel": ["email"]}, {"channel": None}, False),
        ({"tags": ["billing", "outage"]}, {"tags": ["outage", "x"]}, True),
        ({"tags": ["billing"]}, {"tags": ["x"]}, False),
        ({"tags": ["billing"]}, {"tags": []}, False),
    ],
)
def test_ticket_field_conditions(conditions: dict[str, Any], ticket: dict[str, Any], expected: bool) -> None:
    ticket = {"priority": "normal", **ticket}
    assert (pick([policy("p", **conditions)], {"vip"}, **ticket) == "p") is expected


def test_first_matching_policy_wins_in_file_order() -> None:
    policies = [policy("vip", segments_any=["vip"]), policy("eu", segments_any=["eu"]), policy("rest")]
    assert pick(policies, {"vip", "eu"}) == "vip"
    assert pick(policies, {"eu"}) == "eu"
    assert pick(policies, set()) == "rest"
    assert pick(list(reversed(policies)), {"vip", "eu"}) == "rest"


def test_no_match_is_stated_as_no_policy_and_no_targets() -> None:
    policies = parse_policies([policy("vip", segments_any=["vip"])])
    ticket = TicketFacts(priority="urgent", created_at=datetime(2026, 1, 5, 9, tzinfo=UTC))
    selection = select_and_schedule(policies, ticket, frozenset())
    assert selection.policy is None
    assert selection.targets == {}


def test_selection_gives_due_times_for_the_priority_targets() -> None:
    created = datetime(2026, 1, 5, 9, tzinfo=UTC)
    selection = select_and_schedule(
        parse_policies([policy("all")]), TicketFacts(priority="urgent", created_at=created), set()
    )
    assert selection.policy is not None and selection.policy.key == "all"
    assert set(selection.targets) == {"first_reply", "resolution"}
    first = selection.targets["first_reply"]
    assert (first.due_at, first.business_minutes) == (created + timedelta(hours=1), 60)
    assert first.warn_at == created + timedelta(minutes=48)  # 80% of an hour
    assert selection.targets["resolution"].due_at == created + timedelta(hours=8)


def test_a_matching_policy_without_targets_for_the_priority_still_wins() -> None:
    created = datetime(2026, 1, 5, 9, tzinfo=UTC)
    selection = select_and_schedule(
        parse_policies([policy("p")]), TicketFacts(priority="low", created_at=created), set()
    )
    assert selection.policy is not None and selection.policy.key == "p"
    assert selection.targets == {}


def test_a_policy_round_trips_through_its_json() -> None:
    data = {
        "key": "vip",
        "conditions": {"segments_any": ["vip"], "priority": ["high", "urgent"]},
        "targets": {"urgent": {"first_reply": "PT1H", "resolution": "PT8H"}},
        "calendar": {
            "timezone": "Europe/Berlin",
            "hours": {"mon": ["09:00-17:00"]},
            "holidays": ["2026-12-25"],
        },
        "warning_threshold": 0.75,
    }
    parsed = parse_policies([data])[0]
    assert Policy.model_validate(parsed.to_json()) == parsed
    assert parsed.to_json()["targets"] == data["targets"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"key": "x"}, "should be a valid list|JSON list"),
        ([policy("a"), policy("a")], 'policy 1 \\("a"\\): duplicate key'),
        (
            [{**policy("a"), "calendar": {"timezone": "UTC", "hours": {}}}],
            'policy 0 \\("a"\\): calendar: .*opening hours',
        ),
        ([{**policy("a"), "targets": {"p1": {}}}], "targets.p1"),
        ([{**policy("a"), "targets": {"low": {"first_reply": "PT90S"}}}], "not an ISO 8601 duration"),
        ([{**policy("a"), "targets": {"low": {"first_reply": "-PT1H"}}}], "not an ISO 8601 duration"),
        ([{**policy("a"), "targets": {"low": {"first_reply": "PT0M"}}}], "whole number of minutes"),
        ([{**policy("a"), "conditions": {"segment_any": ["vip"]}}], "conditions.segment_any"),
        ([{**policy("a"), "warning_threshold": 1.5}], "warning_threshold"),
        ([{**policy("a"), "key": ""}], "key"),
        (["vip"], "policy 0"),
    ],
)
def test_bad_policy_files_are_refused_naming_the_policy(data: Any, message: str) -> None:
    with pytest.raises(SlaPolicyError, match=message):
        parse_policies(data)
