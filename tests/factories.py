"""Builders for LaunchDarkly-shaped JSON (segments, clauses, contexts) and one-call evaluation helpers.

Builders return wire JSON, not models, so the same data feeds our engine and LaunchDarkly's SDK.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from segmentflow.rules import CompiledSegment, compile_segments, parse_context, parse_segment

__all__ = [
    "clause",
    "compile_one",
    "context",
    "is_member",
    "multi",
    "rule",
    "segment",
    "target",
    "user",
]


def clause(
    attribute: str, op: str, values: list[Any], negate: bool = False, kind: str | None = None
) -> dict[str, Any]:
    """One clause; `kind` is the clause's `contextKind` (which also makes `attribute` a `/path`)."""
    out: dict[str, Any] = {"attribute": attribute, "op": op, "values": values, "negate": negate}
    if kind is not None:
        out["contextKind"] = kind
    return out


def rule(
    *clauses: Mapping[str, Any],
    weight: int | None = None,
    bucket_by: str | None = None,
    rollout_kind: str | None = None,
    id: str | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {"clauses": [dict(c) for c in clauses]}
    if id is not None:
        out["id"] = id
    if weight is not None:
        out["weight"] = weight
    if bucket_by is not None:
        out["bucketBy"] = bucket_by
    if rollout_kind is not None:
        out["rolloutContextKind"] = rollout_kind
    return out


def target(kind: str, *keys: str) -> dict[str, Any]:
    """An `includedContexts`/`excludedContexts` entry."""
    return {"contextKind": kind, "values": list(keys)}


def segment(
    key: str,
    rules: Iterable[Mapping[str, Any]] = (),
    included: Iterable[str] = (),
    excluded: Iterable[str] = (),
    included_contexts: Iterable[Mapping[str, Any]] = (),
    excluded_contexts: Iterable[Mapping[str, Any]] = (),
    salt: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A segment's JSON (`extra` adds fields such as `unbounded`)."""
    out: dict[str, Any] = {
        "key": key,
        "version": 1,
        "included": list(included),
        "excluded": list(excluded),
        "includedContexts": [dict(t) for t in included_contexts],
        "excludedContexts": [dict(t) for t in excluded_contexts],
        "rules": [dict(r) for r in rules],
    }
    if salt is not None:
        out["salt"] = salt
    out.update(extra)
    return out


def context(kind: str, key: str, **attributes: Any) -> dict[str, Any]:
    """A single-kind context in LaunchDarkly's JSON shape."""
    return {"kind": kind, "key": key, **attributes}


def user(key: str, **attributes: Any) -> dict[str, Any]:
    return context("user", key, **attributes)


def multi(*contexts: Mapping[str, Any]) -> dict[str, Any]:
    """A multi-kind context from single-kind ones."""
    out: dict[str, Any] = {"kind": "multi"}
    for single in contexts:
        out[single["kind"]] = {k: v for k, v in single.items() if k != "kind"}
    return out


def compile_one(seg: Mapping[str, Any], *others: Mapping[str, Any], lenient: bool = False) -> CompiledSegment:
    """Compile `seg` together with the segments it references."""
    compiled = compile_segments([parse_segment(dict(s)) for s in (seg, *others)], lenient=lenient)
    return compiled[seg["key"]]


def is_member(
    seg: Mapping[str, Any], ctx: Mapping[str, Any], *others: Mapping[str, Any], lenient: bool = False
) -> bool:
    return compile_one(seg, *others, lenient=lenient).matches(parse_context(dict(ctx)))
