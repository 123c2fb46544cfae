"""Pure. Outbound sequences: the definition (JSON wire format), its steps laid out as a program, and the
timing rules (waits, local times of day, quiet hours, frequency caps, re-entry). No I/O.

A sequence file holds one JSON object or a list of them:

    {"key": "welcome-vip", "name": "Welcome VIPs", "segment": "vip", "exit_on_leave": true,
     "reentry": "never", "quiet_hours": {"start": "21:00", "end": "08:00"},
     "frequency_cap": {"max": 3, "period": "P1D"}, "rate_limit": {"webhook": 50},
     "steps": [{"type": "send", "channel": "webhook", "url": "http://...",
                "template": "Hi {{ contact.name }}"},
               {"type": "wait", "duration": "P2D"},
               {"type": "wait_until", "time": "09:00"},
               {"type": "branch", "segment": "churn-risk", "then": [...], "else": [...]},
               {"type": "exit"}]}

Steps are numbered in document order, nested `then`/`else` steps included (pre-order), so a sequence
without branches numbers its steps exactly as its `steps` list; that number is the `step` a provider
receives. Numbers only ever grow along a path, so no step runs twice in one enrollment.

Settled once here: durations are ISO 8601 weeks/days/hours/minutes/seconds (years and months have no fixed
length and are refused); local times are read in the contact's time zone attribute (an IANA name; missing
or unknown means UTC); a local time that does not exist (DST gap) resolves as `zoneinfo` does (fold=0).
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, tzinfo
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from segmentflow.rules import CompiledSegment, Context, RuleError, compile_segments, matches, parse_segment

__all__ = [
    "MAX_DURATION",
    "BranchStep",
    "ExitStep",
    "FrequencyCap",
    "Node",
    "Program",
    "QuietHours",
    "SendStep",
    "SequenceDefinition",
    "SequenceError",
    "Step",
    "Stop",
    "WaitStep",
    "WaitUntilStep",
    "cap_release",
    "compile_sequence",
    "contact_attribute",
    "contact_zone",
    "local_time_after",
    "may_enroll",
    "parse_duration",
    "parse_sequences",
    "quiet_until",
    "walk",
]

_DURATION = re.compile(
    r"^P(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)
#: The longest wait, period or cooldown accepted: ten years (so due times stay far inside datetime's range).
MAX_DURATION = timedelta(days=3653)
_CLOCK = re.compile(r"^(?P<h>[01]\d|2[0-3]):(?P<m>[0-5]\d)(?::(?P<s>[0-5]\d))?$")


class SequenceError(ValueError):
    """A sequence definition that cannot be saved; the message names the sequence key and the step."""


def parse_duration(text: str) -> timedelta:
    """An ISO 8601 duration (`P2D`, `PT30M`, `P1W`, `P1DT12H`) as a timedelta; years and months refused,
    and so is anything longer than MAX_DURATION (ten years)."""
    found = _DURATION.match(text)
    if found is None or text in ("P", "PT") or text.endswith("T"):
        raise ValueError(f'"{text}" is not an ISO 8601 duration in weeks, days, hours, minutes or seconds')
    parts = {k: float(v) if v else 0.0 for k, v in found.groupdict().items()}
    try:
        value = timedelta(
            weeks=parts["w"], days=parts["d"], hours=parts["h"], minutes=parts["m"], seconds=parts["s"]
        )
    except OverflowError:
        value = timedelta.max
    if value > MAX_DURATION:
        raise ValueError(f'"{text}" is longer than the longest duration allowed (P3653D, ten years)')
    return value


def _positive_duration(text: str, what: str) -> str:
    if parse_duration(text) <= timedelta(0):
        raise ValueError(f"{what} must be longer than zero")
    return text


def _parse_clock(text: str) -> time:
    found = _CLOCK.match(text)
    if found is None:
        raise ValueError(f'"{text}" is not a local time of day (HH:MM or HH:MM:SS, 24-hour)')
    return time(int(found["h"]), int(found["m"]), int(found["s"] or 0))


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class SendStep(_Model):
    """Channel `webhook`: POST the rendered `template` to `url`. Channel `email`: mail it through the
    configured SMTP server to the address in the contact's `to_attribute`, with `subject` (a template too)."""

    type: Literal["send"]
    channel: Literal["webhook", "email"]
    url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    subject: str | None = None
    to_attribute: str = "email"
    template: str

    @model_validator(mode="after")
    def _channel_fields(self) -> SendStep:
        if self.channel == "webhook" and self.url is None:
            raise ValueError("a webhook send needs a url")
        if self.channel == "email" and self.subject is None:
            raise ValueError("an email send needs a subject")
        return self


class WaitStep(_Model):
    type: Literal["wait"]
    duration: str

    @field_validator("duration")
    @classmethod
    def _valid_duration(cls, value: str) -> str:
        return _positive_duration(value, "a wait")


class WaitUntilStep(_Model):
    """Wait until the next time the contact's local clock shows `time` (now, if it shows it already)."""

    type: Literal["wait_until"]
    time: str

    @field_validator("time")
    @classmethod
    def _valid_time(cls, value: str) -> str:
        _parse_clock(value)
        return value


class ExitStep(_Model):
    type: Literal["exit"]


class BranchStep(_Model):
    """`then` when the contact is in `segment` (stored membership) or matches `clause` (a LaunchDarkly
    clause evaluated on the contact; `segmentMatch` is refused, use `segment`), else `else`."""

    type: Literal["branch"]
    segment: str | None = None
    clause: dict[str, Any] | None = None
    then: list[Step] = Field(default_factory=list)
    else_: list[Step] = Field(default_factory=list, alias="else")

    @model_validator(mode="after")
    def _one_condition(self) -> BranchStep:
        if (self.segment is None) == (self.clause is None):
            raise ValueError("a branch needs exactly one of segment and clause")
        return self


Step = Annotated[SendStep | WaitStep | WaitUntilStep | BranchStep | ExitStep, Field(discriminator="type")]
BranchStep.model_rebuild()


class QuietHours(_Model):
    """No send while the contact's local clock is in [start, end); `start` after `end` spans midnight."""

    start: str
    end: str

    @field_validator("start", "end")
    @classmethod
    def _valid_time(cls, value: str) -> str:
        _parse_clock(value)
        return value


class FrequencyCap(_Model):
    """At most `max` sends to one contact per `period`, counting every sequence's sends."""

    max: int = Field(ge=1)
    period: str

    @field_validator("period")
    @classmethod
    def _valid_period(cls, value: str) -> str:
        return _positive_duration(value, "a frequency cap period")


class SequenceDefinition(_Model):
    key: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
    name: str = Field(min_length=1)
    segment: str = Field(min_length=1)
    steps: list[Step] = Field(min_length=1)
    exit_on_leave: bool = True
    #: "never", or an ISO 8601 cooldown: a contact may enroll again that long after its last enrollment.
    reentry: str = "never"
    quiet_hours: QuietHours | None = None
    frequency_cap: FrequencyCap | None = None
    #: Messages per second per channel, e.g. {"webhook": 50}; a channel not listed is not limited.
    rate_limit: dict[Literal["webhook", "email"], float] | None = None
    #: The contact attribute holding its IANA time zone (e.g. "Europe/Paris"); UTC when missing.
    timezone_attribute: str = "timezone"

    @field_validator("reentry")
    @classmethod
    def _valid_reentry(cls, value: str) -> str:
        if value != "never":
            _positive_duration(value, 'reentry (a cooldown, or "never")')
        return value

    @field_validator("rate_limit")
    @classmethod
    def _positive_rates(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is not None and any(not math.isfinite(rate) or rate <= 0 for rate in value.values()):
            raise ValueError("rate limits are messages per second and must be finite and positive")
        return value

    def reentry_cooldown(self) -> timedelta | None:
        """None when a contact never enrolls twice."""
        return None if self.reentry == "never" else parse_duration(self.reentry)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def _location(loc: tuple[int | str, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else type(value).__name__


def webhook_urls(definition: SequenceDefinition) -> list[tuple[tuple[str | int, ...], str]]:
    """Every webhook send step's URL with its place in the definition (`("steps", 2, "then", 0, "url")`),
    for the egress policy's check when a sequence is saved."""
    found: list[tuple[tuple[str | int, ...], str]] = []

    def walk(steps: list[Any], at: tuple[str | int, ...]) -> None:
        for index, step in enumerate(steps):
            if isinstance(step, SendStep) and step.url is not None:
                found.append(((*at, index, "url"), step.url))
            elif isinstance(step, BranchStep):
                walk(step.then, (*at, index, "then"))
                walk(step.else_, (*at, index, "else"))

    walk(definition.steps, ("steps",))
    return found


def parse_sequences(data: Any) -> list[SequenceDefinition]:
    """One sequence object or a list of them; errors name the sequence key and the field path."""
    items = data if isinstance(data, list) else [data]
    if not items:
        raise SequenceError("no sequence: expected a sequence object or a non-empty list of them")
    out: list[SequenceDefinition] = []
    seen: set[str] = set()
    for number, item in enumerate(items):
        if not isinstance(item, dict):
            where = f"item {number} of the list" if isinstance(data, list) else "the document"
            raise SequenceError(f"{where} is not a sequence: expected a JSON object, got {_json_type(item)}")
        label = item.get("key") if isinstance(item.get("key"), str) else f"#{number}"
        try:
            sequence = SequenceDefinition.model_validate(item)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = _location(tuple(first["loc"])) or "definition"
            raise SequenceError(f'sequence "{label}": {where}: {first["msg"]}') from None
        if sequence.key in seen:
            raise SequenceError(f'sequence "{sequence.key}" appears twice')
        seen.add(sequence.key)
        compile_sequence(sequence)  # refuses bad branch clauses now rather than at run time
        out.append(sequence)
    return out


# ---- the program: steps laid out in pre-order ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Node:
    index: int
    step: SendStep | WaitStep | WaitUntilStep | BranchStep | ExitStep
    #: The step after this one (None: the sequence is done).
    next: int | None
    then_start: int | None = None
    else_start: int | None = None
    condition: CompiledSegment | None = None


@dataclass(frozen=True)
class Program:
    definition: SequenceDefinition
    nodes: tuple[Node, ...]

    def send_steps(self) -> list[int]:
        return [n.index for n in self.nodes if isinstance(n.step, SendStep)]


def compile_sequence(definition: SequenceDefinition) -> Program:
    """Number the steps (pre-order) and link each to its successor; branch clauses are compiled once."""
    slots: list[dict[str, Any]] = []

    def assign(steps: list[Any]) -> list[int]:
        indices = []
        for step in steps:
            index = len(slots)
            slots.append({"step": step})
            indices.append(index)
            if isinstance(step, BranchStep):
                slots[index]["then"] = assign(step.then)
                slots[index]["else"] = assign(step.else_)
        return indices

    def link(indices: list[int], after: int | None) -> None:
        for position, index in enumerate(indices):
            following = indices[position + 1] if position + 1 < len(indices) else after
            slot = slots[index]
            slot["next"] = following
            if isinstance(slot["step"], BranchStep):
                slot["then_start"] = slot["then"][0] if slot["then"] else following
                slot["else_start"] = slot["else"][0] if slot["else"] else following
                link(slot["then"], following)
                link(slot["else"], following)

    link(assign(definition.steps), None)
    nodes = []
    for index, slot in enumerate(slots):
        step = slot["step"]
        condition = None
        if isinstance(step, BranchStep) and step.clause is not None:
            condition = _compile_clause(definition.key, index, step.clause)
        nodes.append(
            Node(index, step, slot["next"], slot.get("then_start"), slot.get("else_start"), condition)
        )
    return Program(definition, tuple(nodes))


def _compile_clause(key: str, index: int, clause: dict[str, Any]) -> CompiledSegment:
    name = f"{key}.step{index}"
    try:
        if clause.get("op") == "segmentMatch":
            raise RuleError("segmentMatch is not allowed in a branch clause: branch on `segment` instead")
        segment = parse_segment({"key": name, "rules": [{"clauses": [clause]}]})
        return compile_segments([segment])[name]
    except RuleError as exc:
        raise SequenceError(f'sequence "{key}": step {index}: {exc}') from None


# ---- where an enrollment goes next ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stop:
    """Where a walk through the program stops: at a `send` due now, at a wait (the step after it, due at
    `due_at`), or at the end (`completed`; `exited` by an exit step, whose index is `position`)."""

    outcome: Literal["send", "wait", "completed", "exited"]
    position: int | None
    due_at: datetime | None


def walk(
    program: Program,
    position: int | None,
    *,
    now: datetime,
    zone: tzinfo,
    segments: Collection[str],
    context: Context | None,
) -> Stop:
    """Run the steps that take no time (branches, exit) from `position` until a send, a wait or the end.
    `segments` are the keys of the segments the contact is in; `context` is needed only by clause
    branches. A position past the last step (the sequence was shortened since) is the end."""
    while position is not None and position < len(program.nodes):
        node = program.nodes[position]
        step = node.step
        if isinstance(step, SendStep):
            return Stop("send", position, now)
        if isinstance(step, WaitStep):
            return Stop("wait", node.next, now + parse_duration(step.duration))
        if isinstance(step, WaitUntilStep):
            return Stop("wait", node.next, local_time_after(now, _parse_clock(step.time), zone))
        if isinstance(step, ExitStep):
            return Stop("exited", position, None)
        if node.condition is None:
            taken = step.segment in segments
        elif context is None:
            raise ValueError(f"step {position} branches on a clause: the contact's context is needed")
        else:
            taken = matches(node.condition, context)
        position = node.then_start if taken else node.else_start
    return Stop("completed", None, None)


def contact_attribute(context: Mapping[str, Any], attribute: str) -> Any:
    """A top-level attribute of a single-kind context, or of the first kind of a multi-kind context that
    has it (user first); None when none has it."""
    if context.get("kind") != "multi":
        return context.get(attribute)
    kinds = sorted((k for k in context if k != "kind"), key=lambda k: (k != "user", k))
    for kind in kinds:
        value = context[kind].get(attribute) if isinstance(context[kind], dict) else None
        if value is not None:
            return value
    return None


def contact_zone(context: Mapping[str, Any], attribute: str) -> tzinfo:
    """The contact's time zone, from `attribute` (see `contact_attribute`). Missing, non-text or unknown
    names mean UTC."""
    name = contact_attribute(context, attribute)
    if isinstance(name, str) and name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            return UTC
    return UTC


def local_time_after(now: datetime, clock: time, zone: tzinfo) -> datetime:
    """The first instant at or after `now` when the clock in `zone` shows `clock`, in UTC. A time shown
    twice (DST fall-back) is either instant, the first one not before `now`; a time never shown (DST gap)
    resolves as `zoneinfo` does with fold=0."""
    local = now.astimezone(zone)
    found: list[datetime] = []
    for day in (local.date(), local.date() + timedelta(days=1)):
        wall = datetime.combine(day, clock)
        for fold in (0, 1):
            instant = wall.replace(tzinfo=zone, fold=fold).astimezone(UTC)
            shown = instant.astimezone(zone).replace(tzinfo=None) == wall
            if (shown or fold == 0) and instant >= now:
                found.append(instant)
    return min(found)


def quiet_until(now: datetime, quiet: QuietHours | None, zone: tzinfo) -> datetime | None:
    """When quiet hours end, if `now` is inside them in `zone`; None when a send may go now."""
    if quiet is None:
        return None
    start, end = _parse_clock(quiet.start), _parse_clock(quiet.end)
    clock = now.astimezone(zone).time()
    inside = start <= clock < end if start <= end else (clock >= start or clock < end)
    return local_time_after(now, end, zone) if inside else None


def cap_release(sent_at: Collection[datetime], cap: FrequencyCap | None, now: datetime) -> datetime | None:
    """When the contact may get another message under `cap`, given when it got its recent ones (from any
    sequence); None when it may get one now."""
    if cap is None:
        return None
    period = parse_duration(cap.period)
    recent = sorted(t for t in sent_at if t > now - period)
    if len(recent) < cap.max:
        return None
    return recent[len(recent) - cap.max] + period


def may_enroll(
    *, has_active: bool, last_enrolled_at: datetime | None, cooldown: timedelta | None, now: datetime
) -> bool:
    """A contact enrolls when it has no active enrollment and either never enrolled, or re-entry is allowed
    (`cooldown` is not None) and its last enrollment began at least `cooldown` ago."""
    if has_active:
        return False
    if last_enrolled_at is None:
        return True
    return cooldown is not None and now - last_enrolled_at >= cooldown
