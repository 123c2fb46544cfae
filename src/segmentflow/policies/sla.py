"""Pure. SLA policies: the model of the policy file, its validation, first-match selection and due times.

A policy file is a JSON list; its order is precedence and the first policy whose conditions all hold wins.
No match means no SLA (`Selection.policy is None`), never a default chosen silently. Decisions:
- Conditions: `segments_any` (the contact is in at least one), `segments_all` (in every one),
  `segments_none` (in none), `priority`, `channel` and `tags` (the ticket has at least one of the listed
  tags). An absent or empty condition always holds. A ticket without a contact is in no segment.
- Targets are per priority and metric (`first_reply`, `next_reply`, `resolution`), ISO 8601 durations of
  whole minutes (`PnW`, or `PnDTnHnM` with parts left out; no years or months, which have no fixed
  length) counted in business time of the policy's calendar (`P1D` is 24 business hours), and at most
  `MAX_CALENDAR_YEARS` years of the calendar's weekly opening hours. A policy
  that matches but has no target for the ticket's priority still wins: the ticket has that policy and no
  targets (as Zendesk does); order the policies to say otherwise.
- `warning_threshold` (default 0.8) is the share of a target's business time after which a warning fires
  (to the second: 80% of PT1M warns after 48 s).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from segmentflow.policies.calendar import BusinessHours, Calendar, add_business_times, parse_calendar

__all__ = [
    "MAX_CALENDAR_YEARS",
    "METRICS",
    "PRIORITIES",
    "Conditions",
    "Due",
    "Metric",
    "Policy",
    "Priority",
    "Selection",
    "SlaPolicyError",
    "Targets",
    "TicketFacts",
    "due_times",
    "format_duration",
    "parse_duration",
    "parse_policies",
    "select_and_schedule",
    "select_policy",
]

Priority = Literal["low", "normal", "high", "urgent"]
Metric = Literal["first_reply", "next_reply", "resolution"]
PRIORITIES: tuple[Priority, ...] = get_args(Priority)
METRICS: tuple[Metric, ...] = get_args(Metric)
_MINUTE = timedelta(minutes=1)
#: A target may be at most this many years of its calendar's weekly opening hours.
MAX_CALENDAR_YEARS = 5
_Sets = frozenset[str] | None
_Prepared = tuple[_Sets, _Sets, _Sets, _Sets, _Sets, _Sets]


class SlaPolicyError(ValueError):
    """A refused policy file; names the policy's position, its key and the field."""

    def __init__(self, message: str, *, index: int | None = None, key: str | None = None) -> None:
        where = "" if index is None else f"policy {index}" + (f' ("{key}")' if key else "") + ": "
        super().__init__(where + message)
        self.index = index
        self.key = key


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Conditions(_Frozen):
    segments_any: frozenset[str] = frozenset()
    segments_all: frozenset[str] = frozenset()
    segments_none: frozenset[str] = frozenset()
    priority: frozenset[Priority] = frozenset()
    channel: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()


#: The ISO 8601 durations a target may be: weeks, or days and/or hours and minutes. Years and months have
#: no fixed length, so they are refused rather than guessed.
_DURATION = re.compile(r"P(?:(\d+)W|(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?)?)")


def parse_duration(text: Any) -> timedelta:
    """A target duration: `PnW`, or `PnDTnHnM` with any part left out (`P1D`, `PT8H`, `PT1H30M`)."""
    match = _DURATION.fullmatch(text) if isinstance(text, str) else None
    if match is None or text in ("P", "PT") or text.endswith("T"):
        shown = f'"{text}"' if isinstance(text, str) else repr(text)
        calendar_units = isinstance(text, str) and re.fullmatch(r"P[^T]*[YM].*", text) is not None
        hint = " (years and months have no fixed length: use days or weeks)" if calendar_units else ""
        raise ValueError(f"{shown} is not an ISO 8601 duration such as PT30M, PT8H, P1DT12H or P2W{hint}")
    weeks, days, hours, minutes = (int(g or 0) for g in match.groups())
    return timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes)


def format_duration(value: timedelta) -> str:
    """The policy file's spelling of a target (days and hours/minutes; never years)."""
    minutes = value // _MINUTE
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    clock = ("" if not hours else f"{hours}H") + ("" if not minutes else f"{minutes}M")
    return "P" + ("" if not days else f"{days}D") + (f"T{clock}" if clock else "")


class Targets(_Frozen):
    first_reply: timedelta | None = None
    next_reply: timedelta | None = None
    resolution: timedelta | None = None

    @field_validator("first_reply", "next_reply", "resolution", mode="before")
    @classmethod
    def _iso_8601(cls, value: Any) -> Any:
        return value if value is None or isinstance(value, timedelta) else parse_duration(value)

    @field_validator("first_reply", "next_reply", "resolution")
    @classmethod
    def _whole_minutes(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and (value <= timedelta(0) or value % _MINUTE):
            raise ValueError("a target is a positive whole number of minutes, e.g. PT30M")
        return value

    @field_serializer("first_reply", "next_reply", "resolution", when_used="json")
    def _spelled(self, value: timedelta | None) -> str | None:
        return None if value is None else format_duration(value)

    def of(self, metric: Metric) -> timedelta | None:
        target: timedelta | None = getattr(self, metric)
        return target


class Policy(_Frozen):
    key: str = Field(min_length=1, max_length=256)
    conditions: Conditions = Conditions()
    targets: dict[Priority, Targets]
    calendar: Any
    warning_threshold: float = Field(default=0.8, gt=0, lt=1)

    @field_validator("calendar")
    @classmethod
    def _calendar(cls, value: Any) -> Calendar:
        return parse_calendar(value)

    @model_validator(mode="after")
    def _reachable_targets(self) -> Policy:
        """A target longer than `MAX_CALENDAR_YEARS` of the calendar's opening hours is refused: with a
        calendar open a minute a week, P30D would be centuries away (and slow to count)."""
        calendar = self.calendar
        if not isinstance(calendar, BusinessHours):
            return self
        limit = calendar.week_total * 52 * MAX_CALENDAR_YEARS
        for priority, targets in self.targets.items():
            for metric in METRICS:
                target = targets.of(metric)
                if target is not None and target > limit:
                    raise ValueError(
                        f"targets.{priority}.{metric}: {format_duration(target)} is more business time than"
                        f" {MAX_CALENDAR_YEARS} years of the calendar's opening hours"
                        f" ({format_duration(calendar.week_total)} a week)"
                    )
        return self

    @cached_property
    def prepared(self) -> _Prepared:
        """The conditions as plain sets, None where a condition is absent (the selection loop's input)."""
        c = self.conditions
        return tuple(  # type: ignore[return-value]
            s or None
            for s in (c.priority, c.channel, c.tags, c.segments_any, c.segments_all, c.segments_none)
        )

    @property
    def segment_keys(self) -> frozenset[str]:
        """Every segment the conditions name."""
        c = self.conditions
        return c.segments_any | c.segments_all | c.segments_none

    @property
    def business_calendar(self) -> Calendar:
        calendar: Calendar = self.calendar
        return calendar

    def to_json(self) -> dict[str, Any]:
        """The policy as the file holds it (durations as ISO 8601, empty conditions left out)."""
        data: dict[str, Any] = self.model_dump(mode="json", exclude_defaults=True)
        data["conditions"] = {k: sorted(v) for k, v in data.get("conditions", {}).items()}
        data["targets"] = {
            priority: {metric: text for metric, text in targets.items() if text is not None}
            for priority, targets in data["targets"].items()
        }
        data["warning_threshold"] = self.warning_threshold
        return data


class TicketFacts(_Frozen):
    """What selection reads from a ticket."""

    priority: Priority
    channel: str | None = None
    tags: frozenset[str] = frozenset()
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Due:
    due_at: datetime
    warn_at: datetime
    business_minutes: int


@dataclass(frozen=True, slots=True)
class Selection:
    """The winning policy (None: no SLA) and the due time of each metric its targets set for the ticket."""

    policy: Policy | None
    targets: Mapping[Metric, Due]


_POLICY_LIST = TypeAdapter(list[Any])


def parse_policies(data: Any) -> list[Policy]:
    """Validate a policy file's JSON (a list, order = precedence) into policies; refuses duplicate keys."""
    try:
        items = _POLICY_LIST.validate_python(data)
    except ValidationError:
        raise SlaPolicyError("a policy file is a JSON list of policies") from None
    policies: list[Policy] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        key = item.get("key") if isinstance(item, dict) else None
        key = key if isinstance(key, str) else None
        try:
            policy = Policy.model_validate(item)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            message = first["msg"].removeprefix("Value error, ")
            raise SlaPolicyError(f"{loc}: {message}" if loc else message, index=index, key=key) from None
        if policy.key in seen:
            raise SlaPolicyError("duplicate key", index=index, key=policy.key)
        seen.add(policy.key)
        policies.append(policy)
    return policies


def select_policy(
    policies: Sequence[Policy],
    *,
    segments: Set[str],
    priority: str,
    channel: str | None = None,
    tags: Iterable[str] = (),
) -> Policy | None:
    """The first policy whose conditions hold for this ticket and its contact's segments, or None."""
    tag_set = tags if isinstance(tags, frozenset) else frozenset(tags)
    for policy in policies:
        want_priority, want_channel, want_tags, any_of, all_of, none_of = policy.prepared
        if want_priority is not None and priority not in want_priority:
            continue
        if want_channel is not None and channel not in want_channel:
            continue
        if want_tags is not None and want_tags.isdisjoint(tag_set):
            continue
        if any_of is not None and any_of.isdisjoint(segments):
            continue
        if all_of is not None and not all_of <= segments:
            continue
        if none_of is not None and not none_of.isdisjoint(segments):
            continue
        return policy
    return None


def due_times(
    policy: Policy,
    priority: Priority,
    starts: Mapping[Metric, datetime],
    paused: Mapping[Metric, timedelta] | None = None,
) -> dict[Metric, Due]:
    """Due and warning times of each metric in `starts` that the policy targets for `priority`: `target`
    (plus the business time the clock spent paused, `paused[metric]`) of business time after its start."""
    targets = policy.targets.get(priority)
    if targets is None:
        return {}
    calendar = policy.business_calendar
    # Clocks sharing a start are walked together: one pass over the calendar for all their instants.
    by_start: dict[datetime, list[tuple[Metric, timedelta, timedelta, timedelta]]] = {}
    for metric, start in starts.items():
        target = targets.of(metric)
        if target is not None:
            extra = (paused or {}).get(metric, timedelta(0))
            warn_after = timedelta(seconds=round(target.total_seconds() * policy.warning_threshold))
            by_start.setdefault(start, []).append((metric, target, warn_after + extra, target + extra))
    out: dict[Metric, Due] = {}
    for start, clocks in by_start.items():
        instants = add_business_times(calendar, start, [d for _, _, warn, due in clocks for d in (warn, due)])
        for index, (metric, target, _, _) in enumerate(clocks):
            out[metric] = Due(
                due_at=instants[2 * index + 1],
                warn_at=instants[2 * index],
                business_minutes=target // _MINUTE,
            )
    return out


def select_and_schedule(policies: Sequence[Policy], ticket: TicketFacts, segments: Set[str]) -> Selection:
    """Select the policy for a ticket and the due times of every metric it targets for the ticket's
    priority, each counted from the ticket's creation (the `TicketSla` workflow starts `next_reply` later,
    when a customer writes after an agent's reply)."""
    policy = select_policy(
        policies, segments=segments, priority=ticket.priority, channel=ticket.channel, tags=ticket.tags
    )
    if policy is None:
        return Selection(None, {})
    starts = dict.fromkeys(METRICS, ticket.created_at)
    return Selection(policy, due_times(policy, ticket.priority, starts))
