"""Stored segments: validate-then-upsert, reads, and the compiled index the recompute evaluates with.
Functions take the session as a keyword argument and never commit: the caller owns the transaction."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, select

from segmentflow.db.tables import SegmentRecord, segment_table
from segmentflow.rules import CompiledSegment, Segment, compile_segments, parse_segment

__all__ = [
    "SegmentIndex",
    "SegmentIndexCache",
    "dependents_of",
    "get_segment",
    "list_segments",
    "load_index",
    "page_segments",
    "upsert_segments",
    "where_segment_ref",
]


@dataclass(frozen=True)
class SegmentIndex:
    """Every stored segment compiled (strictly), with the database id of each key."""

    compiled: dict[str, CompiledSegment]
    ids: dict[str, uuid.UUID]

    @cached_property
    def keys_by_id(self) -> dict[uuid.UUID, str]:
        return {v: k for k, v in self.ids.items()}

    @cached_property
    def uuid_by_text(self) -> dict[str, uuid.UUID]:
        """Each id as the databases render it as text (PostgreSQL `uuid`, SQLite's 32 hex digits)."""
        return {text: v for v in self.ids.values() for text in (str(v), v.hex)}


class SegmentIndexCache:
    """Keeps one compiled `SegmentIndex` until the stored segments change, which one cheap aggregate query
    detects (count, newest update, sum of versions), so hot paths do not re-parse and recompile every
    segment per call. Safe to share between threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stamp: tuple[Any, ...] | None = None
        self._index: SegmentIndex | None = None

    def get(self, *, session: Session) -> SegmentIndex:
        stamp = tuple(
            session.execute(
                sa.select(
                    sa.func.count(),
                    sa.func.max(segment_table.c.updated_at),
                    sa.func.sum(segment_table.c.version),
                )
            ).one()
        )
        with self._lock:
            if self._index is not None and stamp == self._stamp:
                return self._index
        index = load_index(session=session)
        with self._lock:
            self._stamp, self._index = stamp, index
        return index


def list_segments(*, session: Session) -> list[SegmentRecord]:
    return list(session.exec(select(SegmentRecord).order_by(SegmentRecord.key)))


def page_segments(*, session: Session, offset: int, limit: int) -> tuple[list[SegmentRecord], int]:
    """One page of segments in key order, and how many there are in all."""
    total = session.scalar(sa.select(sa.func.count()).select_from(segment_table)) or 0
    page = session.exec(select(SegmentRecord).order_by(SegmentRecord.key).offset(offset).limit(limit))
    return list(page), int(total)


def where_segment_ref(query: Any, ref: str) -> Any:
    """Narrow a select to the one segment `ref` names: its key, or else its UUID `id` (a key wins)."""
    try:
        condition = sa.or_(segment_table.c.key == ref, segment_table.c.id == uuid.UUID(ref))
    except ValueError:
        return query.where(segment_table.c.key == ref).limit(1)
    return query.where(condition).order_by(sa.case((segment_table.c.key == ref, 0), else_=1)).limit(1)


def get_segment(*, session: Session, ref: str) -> SegmentRecord | None:
    """A segment by key, or by its UUID `id`."""
    found: SegmentRecord | None = session.exec(where_segment_ref(select(SegmentRecord), ref)).first()
    return found


def load_index(*, session: Session) -> SegmentIndex:
    records = list_segments(session=session)
    # Stored segments passed the strict check when saved; loading them the way LaunchDarkly does means one
    # saved before a check was tightened (a regex the linear-time engine refuses) matches nothing instead
    # of stopping every recompute.
    compiled = compile_segments((r.definition_model() for r in records), lenient=True)
    return SegmentIndex(compiled=compiled, ids={r.key: r.id for r in records})


def dependents_of(segments: Iterable[Segment], keys: Iterable[str]) -> set[str]:
    """`keys` plus every segment that reaches one of them through `segmentMatch`, transitively."""
    reverse: dict[str, set[str]] = {}
    for seg in segments:
        for dep in seg.dependencies():
            reverse.setdefault(dep, set()).add(seg.key)
    found = set(keys)
    frontier = list(found)
    while frontier:
        for parent in reverse.get(frontier.pop(), ()):
            if parent not in found:
                found.add(parent)
                frontier.append(parent)
    return found


def upsert_segments(*, session: Session, segments: Sequence[Segment], now: datetime) -> list[SegmentRecord]:
    """Insert or replace segments by key. The stored set with these applied must compile strictly (known
    operators, good regexes, no missing `segmentMatch` target, no cycle) or nothing is written and the
    `RuleError` propagates. A replaced segment's version is bumped past the stored one."""
    existing = {r.key: r for r in list_segments(session=session)}
    merged = {key: record.definition_model() for key, record in existing.items()}
    incoming: dict[str, Segment] = {}
    for seg in segments:
        incoming[seg.key] = seg
    merged.update(incoming)
    compile_segments(merged.values())  # raises RuleError before anything is written

    out = []
    for key, seg in incoming.items():
        record = existing.get(key)
        version = seg.version if record is None else max(record.version + 1, seg.version)
        definition = parse_segment({**seg.to_json(), "version": version})
        if record is None:
            record = SegmentRecord(
                key=key,
                name=seg.name or key,
                description=seg.description,
                version=version,
                definition=definition.to_json(),
                created_at=now,
                updated_at=now,
            )
        else:
            record.name = seg.name or key
            record.description = seg.description
            record.version = version
            record.definition = definition.to_json()
            record.updated_at = now
        session.add(record)
        out.append(record)
    session.flush()
    return out
