"""Stored actions and AI instructions: file formats, import, list, the per-message resolution of what
applies to a contact (memberships read once), the permission check of one action, and the refusal audit.
Functions take the session as a keyword argument and never commit: the caller owns the transaction."""

from __future__ import annotations

import re
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, TypeVar

import httpx
import sqlalchemy as sa
from jsonschema import Draft202012Validator, SchemaError
from jsonschema import ValidationError as ArgumentsError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlmodel import Session, col, select

from segmentflow.db.bulk import insert_on_conflict
from segmentflow.db.tables import (
    Action,
    ActionRefusal,
    Instruction,
    action_table,
    instruction_table,
    refusal_table,
    segment_table,
)
from segmentflow.policies.restrictions import Decision, RestrictionIndex, Withheld, decide, missing_segments
from segmentflow.services.argument_schema import ArgumentsValidator, schema_regex_problems
from segmentflow.services.membership import contact_segment_set

__all__ = [
    "ActionSpec",
    "CatalogAction",
    "CatalogInstruction",
    "ImportReport",
    "InstructionSpec",
    "MessageCatalog",
    "MessageCatalogCache",
    "Resolution",
    "SpecError",
    "UnknownActionError",
    "WebhookSpec",
    "argument_errors",
    "check_action",
    "contact_memberships",
    "existing_segment_keys",
    "list_actions",
    "list_instructions",
    "list_refusals",
    "load_catalog",
    "parse_actions",
    "parse_instructions",
    "record_refusal",
    "resolve_message",
    "sanitize_column",
    "upsert_actions",
    "upsert_instructions",
]

_KEY = r"^[^\x00]{1,256}$"
_SEGMENT_KEY = r"^[^\x00]{1,256}$"
_HEADER_CHARS = re.compile(r"[\x00\r\n]")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")  # an HTTP token (RFC 9110)


class SpecError(ValueError):
    """A bad action or instruction file: the message names the item and the field."""


SegmentKey = Annotated[str, Field(pattern=_SEGMENT_KEY)]


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class WebhookSpec(_Spec):
    """Where an action is performed: an HTTP POST of `{"action", "contactKey", "arguments"}`."""

    url: str = Field(pattern=r"^https?://\S+$", max_length=2048)
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _valid_url(cls, url: str) -> str:
        """An absolute http(s) URL with a host and a valid port, as httpx will send it."""
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in url):
            raise ValueError("control characters in the URL")
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, ValueError) as exc:
            raise ValueError(f"not a URL: {exc}") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError("an http:// or https:// URL with a host is required")
        if parsed.port is not None and not 0 < parsed.port <= 65535:
            raise ValueError(f"port {parsed.port} is out of range (1-65535)")
        return url

    @field_validator("headers")
    @classmethod
    def _valid_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"header name {name!r} is not a valid HTTP header name")
            if _HEADER_CHARS.search(value):
                raise ValueError(f'header "{name}": CR, LF and NUL are not allowed in a value')
        return headers


class ActionSpec(_Spec):
    """One entry of `segmentflow actions import FILE.json`. Only `key` is required: the name defaults to
    the key, the restriction to none (every contact), the parameters to an empty object schema, and an
    action without a webhook runs without calling anything."""

    key: str = Field(pattern=_KEY)
    name: str | None = Field(default=None, max_length=512)
    description: str = ""
    restricted_to_segments: list[SegmentKey] = Field(default_factory=list)
    trigger_phrases: list[str] = Field(default_factory=list)
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    webhook: WebhookSpec | None = None

    @field_validator("parameters")
    @classmethod
    def _valid_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        """A JSON Schema (draft 2020-12, as tool-calling APIs take them), refused when it is not one."""
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            where = "/".join(str(p) for p in exc.absolute_path)
            raise ValueError(f"not a JSON Schema{f' at /{where}' if where else ''}: {exc.message}") from None
        problems = schema_regex_problems(schema)  # every regex must run in linear time on any argument
        if problems:
            raise ValueError(problems[0])
        return schema


_VALIDATORS: dict[tuple[str, int], tuple[dict[str, Any], Any]] = {}
_MAX_VALIDATORS = 4096


def _validator(schema: dict[str, Any], cache_key: tuple[str, int] | None) -> Any:
    """A compiled validator, kept per (action key, version) while that version's schema is the same one
    (compared, so two databases holding different actions under one key cannot share a validator)."""
    if cache_key is None:
        return ArgumentsValidator(schema)
    hit = _VALIDATORS.get(cache_key)
    if hit is not None and hit[0] == schema:
        return hit[1]
    if len(_VALIDATORS) >= _MAX_VALIDATORS:
        _VALIDATORS.clear()
    validator = ArgumentsValidator(schema)
    _VALIDATORS[cache_key] = (schema, validator)
    return validator


def argument_errors(
    schema: dict[str, Any], arguments: Any, *, cache_key: tuple[str, int] | None = None
) -> list[str]:
    """Why `arguments` do not satisfy an action's `parameters` schema: one line per error, each naming
    where in the arguments (`/path`), in a stable order; empty when they do. `cache_key` (the action's key
    and version) reuses the compiled validator across calls."""

    def line(error: ArgumentsError) -> str:
        return f"/{'/'.join(str(p) for p in error.absolute_path)}: {error.message}"

    errors = _validator(schema, cache_key).iter_errors(arguments)
    return sorted(line(e) for e in errors)


class InstructionSpec(_Spec):
    """One entry of `segmentflow instructions import FILE.json`."""

    key: str = Field(pattern=_KEY)
    text: str
    restricted_to_segments: list[SegmentKey] = Field(default_factory=list)


S = TypeVar("S", ActionSpec, InstructionSpec)


def _parse(model: type[S], data: Any, noun: str) -> list[S]:
    if not isinstance(data, list):
        raise SpecError(f"expected a JSON list of {noun}s")
    out: list[S] = []
    seen: set[str] = set()
    for index, item in enumerate(data):
        try:
            spec = model.model_validate(item)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(p) for p in error["loc"]) or "item"
            key = item.get("key") if isinstance(item, dict) else None
            name = f'{noun} "{key}"' if isinstance(key, str) else f"{noun} #{index}"
            raise SpecError(f"{name}: {where}: {error['msg']}") from None
        if spec.key in seen:
            raise SpecError(f'{noun} "{spec.key}" appears twice')
        seen.add(spec.key)
        out.append(spec)
    return out


def parse_actions(data: Any) -> list[ActionSpec]:
    """Validate a JSON list of actions (the whole list, before anything is stored)."""
    return _parse(ActionSpec, data, "action")


def parse_instructions(data: Any) -> list[InstructionSpec]:
    return _parse(InstructionSpec, data, "instruction")


@dataclass(frozen=True)
class ImportReport:
    """What an import stored, and which restrictions name segments that do not exist (those items are
    stored, and withheld from everyone until the segments exist)."""

    keys: list[str]
    unknown_segments: dict[str, list[str]] = field(default_factory=dict)


def existing_segment_keys(*, session: Session) -> frozenset[str]:
    return frozenset(session.scalars(sa.select(segment_table.c.key)))


def upsert_actions(*, session: Session, actions: Sequence[ActionSpec], now: datetime) -> ImportReport:
    """Insert or replace actions by key."""
    keys = [a.key for a in actions]
    existing = {a.key: a for a in session.exec(select(Action).where(col(Action.key).in_(keys)))}
    segments = existing_segment_keys(session=session)
    unknown: dict[str, list[str]] = {}
    for spec in actions:
        record = existing.get(spec.key) or Action(key=spec.key, name=spec.key, created_at=now)
        record.name = spec.name or spec.key
        record.description = spec.description
        record.restricted_to_segments = list(spec.restricted_to_segments)
        record.trigger_phrases = list(spec.trigger_phrases)
        record.parameters = dict(spec.parameters)
        record.webhook = None if spec.webhook is None else spec.webhook.model_dump()
        record.updated_at = now
        record.version = 1 if record.id is None else record.version + 1
        session.add(record)
        missing = missing_segments(spec.restricted_to_segments, segments)
        if missing:
            unknown[spec.key] = list(missing)
    session.flush()
    return ImportReport(keys, unknown)


def upsert_instructions(
    *, session: Session, instructions: Sequence[InstructionSpec], now: datetime
) -> ImportReport:
    """Insert or replace instructions by key."""
    keys = [i.key for i in instructions]
    existing = {i.key: i for i in session.exec(select(Instruction).where(col(Instruction.key).in_(keys)))}
    segments = existing_segment_keys(session=session)
    unknown: dict[str, list[str]] = {}
    for spec in instructions:
        record = existing.get(spec.key) or Instruction(key=spec.key, text=spec.text, created_at=now)
        record.text = spec.text
        record.restricted_to_segments = list(spec.restricted_to_segments)
        record.updated_at = now
        record.version = 1 if record.id is None else record.version + 1
        session.add(record)
        missing = missing_segments(spec.restricted_to_segments, segments)
        if missing:
            unknown[spec.key] = list(missing)
    session.flush()
    return ImportReport(keys, unknown)


def list_actions(*, session: Session) -> list[Action]:
    return list(session.exec(select(Action).order_by(Action.key)))


def list_instructions(*, session: Session) -> list[Instruction]:
    return list(session.exec(select(Instruction).order_by(Instruction.key)))


@dataclass(frozen=True, slots=True)
class CatalogAction:
    """A stored action as the hot path reads it (plain attributes, shared read-only by the cache)."""

    key: str
    name: str
    description: str
    restricted_to_segments: tuple[str, ...]
    trigger_phrases: tuple[str, ...]
    parameters: dict[str, Any]
    webhook: dict[str, Any] | None
    version: int = 1

    def argument_errors(self, arguments: Any) -> list[str]:
        """`argument_errors` against this action's parameters (its compiled validator is reused)."""
        return argument_errors(self.parameters, arguments, cache_key=(self.key, self.version))


@dataclass(frozen=True, slots=True)
class CatalogInstruction:
    key: str
    text: str
    restricted_to_segments: tuple[str, ...]


@dataclass(frozen=True)
class MessageCatalog:
    """Every action and instruction compiled against the stored segment keys, filtered per contact."""

    actions: RestrictionIndex[CatalogAction]
    instructions: RestrictionIndex[CatalogInstruction]
    segments: frozenset[str]
    by_key: dict[str, CatalogAction]
    instructions_by_key: dict[str, CatalogInstruction]


def _catalog_action(a: Action) -> CatalogAction:
    return CatalogAction(
        key=a.key,
        name=a.name,
        description=a.description,
        restricted_to_segments=tuple(a.restricted_to_segments),
        trigger_phrases=tuple(a.trigger_phrases),
        parameters=a.parameters,
        webhook=a.webhook,
        version=a.version,
    )


def _compile(
    actions: list[CatalogAction], instructions: list[CatalogInstruction], segments: frozenset[str]
) -> MessageCatalog:
    return MessageCatalog(
        actions=RestrictionIndex(actions, segments),
        instructions=RestrictionIndex(instructions, segments),
        segments=segments,
        by_key={a.key: a for a in actions},
        instructions_by_key={i.key: i for i in instructions},
    )


def _load_items(session: Session) -> tuple[list[CatalogAction], list[CatalogInstruction]]:
    actions = [_catalog_action(a) for a in list_actions(session=session)]
    instructions = [
        CatalogInstruction(key=i.key, text=i.text, restricted_to_segments=tuple(i.restricted_to_segments))
        for i in list_instructions(session=session)
    ]
    return actions, instructions


def load_catalog(*, session: Session) -> MessageCatalog:
    actions, instructions = _load_items(session)
    return _compile(actions, instructions, existing_segment_keys(session=session))


def _existing_among(session: Session, keys: Collection[str]) -> frozenset[str]:
    """Which of `keys` name stored segments (one query on the unique key index; none for no keys)."""
    if not keys:
        return frozenset()
    query = sa.select(segment_table.c.key).where(
        segment_table.c.key.in_(sa.bindparam("keys", expanding=True))
    )
    return frozenset(session.scalars(query, {"keys": sorted(keys)}))


_ITEMS_STAMP = sa.select(
    sa.select(sa.func.count()).select_from(action_table).scalar_subquery(),
    sa.select(sa.func.coalesce(sa.func.sum(action_table.c.version), 0)).scalar_subquery(),
    sa.select(sa.func.count()).select_from(instruction_table).scalar_subquery(),
    sa.select(sa.func.coalesce(sa.func.sum(instruction_table.c.version), 0)).scalar_subquery(),
)


class MessageCatalogCache:
    """Keeps one `MessageCatalog` so a message does not reload and re-index every item.

    Staleness never relies on clocks: every upsert of an action or instruction bumps its `version` in the
    same transaction, so the count and the sum of versions of each table (one aggregate query) change with
    every write, whoever wrote and whatever their clock said. The segments a restriction names are checked
    for existence on every call (one read of the stored segment keys), and the index is
    rebuilt when that set changes, so a deleted or recreated segment is seen at once. Safe to share between
    threads. (The permission check of a single action does not use this cache: see `check_action`.)"""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stamp: tuple[Any, ...] | None = None
        self._items: tuple[list[CatalogAction], list[CatalogInstruction], frozenset[str]] | None = None
        self._catalog: MessageCatalog | None = None

    def get(self, *, session: Session) -> MessageCatalog:
        stamp = tuple(session.execute(_ITEMS_STAMP).one())
        with self._lock:
            items = self._items if stamp == self._stamp else None
            catalog = self._catalog
        if items is None:
            actions, instructions = _load_items(session)
            named = frozenset(s for a in actions for s in a.restricted_to_segments) | frozenset(
                s for i in instructions for s in i.restricted_to_segments
            )
            items = (actions, instructions, named)
            catalog = None
        # Every stored key (one small scan: cheaper than a long IN list), kept to the ones the catalog names.
        existing = existing_segment_keys(session=session) & items[2]
        if catalog is not None and catalog.segments == existing:
            return catalog
        catalog = _compile(items[0], items[1], existing)
        with self._lock:
            self._stamp, self._items, self._catalog = stamp, items, catalog
        return catalog


def contact_memberships(*, session: Session, contact_key: str | None) -> frozenset[str] | None:
    """The segment keys of a contact, from the precomputed memberships (computed now for a contact never
    computed). None for an anonymous contact; a contact that is not stored is in no segment."""
    if contact_key is None:
        return None
    return contact_segment_set(session=session, contact_key=contact_key)


@dataclass(frozen=True)
class Resolution:
    """What applies to one contact for one message."""

    contact_key: str | None
    segments: frozenset[str] | None
    actions: list[CatalogAction]
    instructions: list[CatalogInstruction]
    withheld: list[tuple[str, Withheld]]
    catalog: MessageCatalog


def resolve_message(*, session: Session, catalog: MessageCatalog, contact_key: str | None) -> Resolution:
    """Read the contact's memberships once and keep the actions and instructions that apply."""
    segments = contact_memberships(session=session, contact_key=contact_key)
    withheld = [("action", w) for w in catalog.actions.withheld]
    withheld += [("instruction", w) for w in catalog.instructions.withheld]
    return Resolution(
        contact_key=contact_key,
        segments=segments,
        actions=catalog.actions.applicable(segments),
        instructions=catalog.instructions.applicable(segments),
        withheld=withheld,
        catalog=catalog,
    )


class UnknownActionError(LookupError):
    """No stored action has that key."""


def check_action(
    *, session: Session, action_key: str, contact_key: str | None
) -> tuple[CatalogAction, Decision]:
    """May this contact use this action now? Everything is read fresh, no cache: the action's row (by its
    unique key), whether the segments it names exist (one indexed query), and the contact's memberships."""
    row = session.exec(select(Action).where(Action.key == action_key)).first()
    if row is None:
        raise UnknownActionError(f'unknown action "{sanitize_column(action_key, 256)}"')
    action = _catalog_action(row)
    existing = _existing_among(session, action.restricted_to_segments)
    segments = contact_memberships(session=session, contact_key=contact_key)
    return action, decide(action.key, action.restricted_to_segments, segments, existing)


def sanitize_column(value: str, limit: int | None = None) -> str:
    """`value` as a text column can always store it: NUL escaped (PostgreSQL refuses it in text), and cut
    to `limit` characters with a trailing "…" when longer."""
    value = value.replace("\x00", "\\x00")
    if limit is not None and len(value) > limit:
        value = value[: limit - 1] + "…"
    return value


def record_refusal(
    *,
    session: Session,
    action_key: str,
    contact_key: str | None,
    reason: str,
    side: str,
    now: datetime,
    workflow_id: str | None = None,
    run_id: str | None = None,
    activity_id: str | None = None,
) -> bool:
    """Write one audit row, once per refusing activity: (`workflow_id`, `run_id`, `activity_id`) is
    unique, so a retry of the same activity after the commit writes nothing (returns False). Whatever the
    values (a responder's made-up action name, a caller's oversized or NUL-bearing key), the row is
    written: values are escaped and cut to the column sizes."""
    result = session.execute(
        insert_on_conflict(session, refusal_table)
        .values(
            at=now,
            contact_key=None if contact_key is None else sanitize_column(contact_key, 512),
            action_key=sanitize_column(action_key, 256),
            reason=sanitize_column(reason),
            side=sanitize_column(side, 16),
            workflow_id=None if workflow_id is None else sanitize_column(workflow_id, 512),
            run_id=None if run_id is None else sanitize_column(run_id, 128),
            activity_id=None if activity_id is None else sanitize_column(activity_id, 256),
        )
        .on_conflict_do_nothing()
        .returning(refusal_table.c.id)
    )
    return result.first() is not None


def list_refusals(*, session: Session, limit: int = 100) -> list[ActionRefusal]:
    """The newest refusals first."""
    query = select(ActionRefusal).order_by(ActionRefusal.id.desc()).limit(limit)  # type: ignore[union-attr]
    return list(session.exec(query))
