"""Pure. Turns validated segments into predicates: parse once (regexes, dates, versions, value sets),
evaluate many times.

Semantics are LaunchDarkly's (its Python server SDK where SDKs differ):
- precedence: `included` (user keys), `includedContexts`, then `excluded`, `excludedContexts`, then rules;
- rules are OR-ed, clauses in a rule AND-ed, a clause's values OR-ed; a rule with no clauses matches;
- a clause on a kind the context lacks, or an attribute it lacks (or that is null), is false even when
  negated; an array attribute matches when any element does; `kind` matches against every kind of a
  multi-kind context;
- a rule with `weight` keeps a context when its bucket (sha1 of `segmentKey.salt.value`, first 15 hex
  digits over 0xFFFFFFFFFFFFFFF) is below weight/100000. The bucketed value is the key of
  `rolloutContextKind` (default user), or its `bucketBy` attribute; a value that is neither a string nor an
  integer buckets to 0; when the context lacks that kind the bucket is -1, so the rule keeps it (the
  Python SDK's behaviour).
- `segmentMatch` is true when the context is in any listed segment.

Refused at compile time with a `RuleError` naming segment, rule and clause: an invalid attribute reference,
a `segmentMatch` cycle, big (unbounded) segments, duplicate keys; and unless `lenient`, an unknown operator,
a `segmentMatch` to a missing segment and clause values that can never match (bad regex, date, version).
`lenient=True` follows LaunchDarkly exactly for those last three: a missing segment is simply no match, and
an unknown operator matches no value (so, negated, it matches any present attribute).
LaunchDarkly reports a cycle only when evaluation walks into it; we refuse it whenever it exists.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from segmentflow.rules.attrref import AttributeRefError, parse_attribute
from segmentflow.rules.context import DEFAULT_KIND, Context
from segmentflow.rules.errors import CycleError, RuleError
from segmentflow.rules.model import Clause, Rule, Segment
from segmentflow.rules.operators import OPERATORS, ValueTest

__all__ = ["CompiledSegment", "Explanation", "compile_segments", "segment_order"]

Predicate = Callable[[Context], bool]
_LONG_SCALE = float(0xFFFFFFFFFFFFFFF)


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why a context is or is not in a segment: the target list or rule that decided."""

    segment_key: str
    is_member: bool
    reason: Literal["included", "excluded", "rule", "no_match"]
    context_kind: str | None = None
    rule_index: int | None = None
    rule_id: str | None = None


def _lookup(path: tuple[str, ...], attrs: Mapping[str, Any]) -> Any:
    value = attrs.get(path[0])
    for part in path[1:]:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _attribute_clause(kind: str, path: tuple[str, ...], test: ValueTest, negate: bool) -> Predicate:
    if len(path) == 1:
        name = path[0]

        def clause(ctx: Context) -> bool:
            attrs = ctx.by_kind.get(kind)
            if attrs is None:
                return False
            value = attrs.get(name)
            if value is None:
                return False
            if type(value) is list:
                return any(test(v) for v in value) is not negate
            return test(value) is not negate

        return clause

    def nested_clause(ctx: Context) -> bool:
        attrs = ctx.by_kind.get(kind)
        if attrs is None:
            return False
        value = _lookup(path, attrs)
        if value is None:
            return False
        if isinstance(value, list):
            return any(test(v) for v in value) is not negate
        return test(value) is not negate

    return nested_clause


def _kind_clause(test: ValueTest, negate: bool) -> Predicate:
    def clause(ctx: Context) -> bool:
        return any(test(kind) for kind in ctx.by_kind) is not negate

    return clause


def _never(value: Any) -> bool:
    return False


def _segment_clause(targets: list[CompiledSegment], negate: bool) -> Predicate:
    def clause(ctx: Context) -> bool:
        return any(t.matches(ctx) for t in targets) is not negate

    return clause


def _bucket(ctx: Context, kind: str, path: tuple[str, ...] | None, segment_key: str, salt: str) -> float:
    attrs = ctx.by_kind.get(kind)
    if attrs is None:
        return -1.0
    value = attrs["key"] if path is None else _lookup(path, attrs)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return 0.0
    digest = hashlib.sha1(f"{segment_key}.{salt}.{value}".encode()).hexdigest()
    return int(digest[:15], 16) / _LONG_SCALE


class CompiledRule:
    __slots__ = ("_bucket_by", "_kind", "clauses", "index", "rule", "salt", "segment_key", "threshold")

    def __init__(
        self,
        rule: Rule,
        index: int,
        clauses: list[Predicate],
        segment_key: str,
        salt: str,
        bucket_by: tuple[str, ...] | None,
    ) -> None:
        self.rule = rule
        self.index = index
        self.clauses = tuple(clauses)
        self.segment_key = segment_key
        self.salt = salt
        self.threshold = None if rule.weight is None else rule.weight / 100000.0
        self._kind = rule.rollout_context_kind or DEFAULT_KIND
        self._bucket_by = bucket_by

    def matches(self, ctx: Context) -> bool:
        for clause in self.clauses:
            if not clause(ctx):
                return False
        if self.threshold is None:
            return True
        return _bucket(ctx, self._kind, self._bucket_by, self.segment_key, self.salt) < self.threshold


class CompiledSegment:
    """A segment ready to evaluate: `matches(context)` is pure and never raises on context data."""

    __slots__ = (
        "definition",
        "excluded",
        "excluded_contexts",
        "included",
        "included_contexts",
        "key",
        "rules",
    )

    def __init__(self, definition: Segment, rules: list[CompiledRule]) -> None:
        self.definition = definition
        self.key = definition.key
        self.included = frozenset(definition.included)
        self.excluded = frozenset(definition.excluded)
        self.included_contexts = tuple(
            (t.context_kind or DEFAULT_KIND, frozenset(t.values))
            for t in definition.included_contexts
            if t.values
        )
        self.excluded_contexts = tuple(
            (t.context_kind or DEFAULT_KIND, frozenset(t.values))
            for t in definition.excluded_contexts
            if t.values
        )
        self.rules = tuple(rules)

    def _target_decision(self, ctx: Context) -> tuple[bool, str] | None:
        user = ctx.by_kind.get(DEFAULT_KIND)
        if user is not None and user["key"] in self.included:
            return True, DEFAULT_KIND
        for kind, keys in self.included_contexts:
            attrs = ctx.by_kind.get(kind)
            if attrs is not None and attrs["key"] in keys:
                return True, kind
        if user is not None and user["key"] in self.excluded:
            return False, DEFAULT_KIND
        for kind, keys in self.excluded_contexts:
            attrs = ctx.by_kind.get(kind)
            if attrs is not None and attrs["key"] in keys:
                return False, kind
        return None

    def matches(self, ctx: Context) -> bool:
        decided = self._target_decision(ctx)
        if decided is not None:
            return decided[0]
        return any(rule.matches(ctx) for rule in self.rules)

    def explain(self, ctx: Context) -> Explanation:
        decided = self._target_decision(ctx)
        if decided is not None:
            return Explanation(self.key, decided[0], "included" if decided[0] else "excluded", decided[1])
        for rule in self.rules:
            if rule.matches(ctx):
                return Explanation(self.key, True, "rule", rule_index=rule.index, rule_id=rule.rule.id)
        return Explanation(self.key, False, "no_match")

    def __repr__(self) -> str:
        return f"CompiledSegment({self.key!r})"


def segment_order(segments: Iterable[Segment], *, lenient: bool = False) -> list[Segment]:
    """Segments with every `segmentMatch` dependency before its dependents; refuses cycles, duplicate
    keys and (unless lenient) references to missing segments."""
    by_key: dict[str, Segment] = {}
    for seg in segments:
        if seg.key in by_key:
            raise RuleError("the key appears more than once", segment_key=seg.key)
        by_key[seg.key] = seg
    order: list[Segment] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(key: str, path: list[str]) -> None:
        state[key] = 1
        seg = by_key[key]
        for r_index, rule in enumerate(seg.rules):
            for c_index, clause in enumerate(rule.clauses):
                if clause.op != "segmentMatch":
                    continue
                for dep in clause.values:
                    if not isinstance(dep, str) or dep not in by_key:
                        if lenient:
                            continue
                        detail = (
                            f"segmentMatch value {dep!r} is not a segment key"
                            if not isinstance(dep, str)
                            else f'segmentMatch refers to missing segment "{dep}"'
                        )
                        raise RuleError(detail, segment_key=key, rule_index=r_index, clause_index=c_index)
                    if state.get(dep) == 1:
                        trail = [*path, key]
                        raise CycleError([*trail[trail.index(dep) :], dep])
                    if dep not in state:
                        visit(dep, [*path, key])
        state[key] = 2
        order.append(seg)

    for key in by_key:
        if key not in state:
            visit(key, [])
    return order


def _compile_clause(
    seg: Segment,
    r_index: int,
    c_index: int,
    clause: Clause,
    compiled: Mapping[str, CompiledSegment],
    lenient: bool,
) -> Predicate:
    def fail(detail: str) -> RuleError:
        return RuleError(detail, segment_key=seg.key, rule_index=r_index, clause_index=c_index)

    if clause.op not in OPERATORS and not lenient:
        known = ", ".join(sorted(OPERATORS))
        raise fail(f'unknown operator "{clause.op}" (known: {known})')
    if clause.op == "segmentMatch":
        return _segment_clause(
            [compiled[v] for v in clause.values if isinstance(v, str) and v in compiled], clause.negate
        )
    try:
        path = parse_attribute(clause.attribute, clause.context_kind)
    except AttributeRefError as exc:
        raise fail(f"attribute: {exc}") from None
    prepare = OPERATORS.get(clause.op)
    try:
        test = _never if prepare is None else prepare(clause.values, lenient)
    except ValueError as exc:
        raise fail(f"{clause.op}: {exc}") from None
    if path == ("kind",):
        return _kind_clause(test, clause.negate)
    return _attribute_clause(clause.context_kind or DEFAULT_KIND, path, test, clause.negate)


def _compile_one(seg: Segment, compiled: Mapping[str, CompiledSegment], lenient: bool) -> CompiledSegment:
    if seg.unbounded:
        raise RuleError(
            "big (unbounded) segments are not supported: memberships here come from rules and targets",
            segment_key=seg.key,
        )
    rules = []
    for r_index, rule in enumerate(seg.rules):
        clauses = [
            _compile_clause(seg, r_index, c_index, clause, compiled, lenient)
            for c_index, clause in enumerate(rule.clauses)
        ]
        bucket_by = None
        if rule.bucket_by:
            try:
                bucket_by = parse_attribute(rule.bucket_by, rule.rollout_context_kind)
            except AttributeRefError as exc:
                raise RuleError(f"bucketBy: {exc}", segment_key=seg.key, rule_index=r_index) from None
        rules.append(CompiledRule(rule, r_index, clauses, seg.key, seg.salt or "", bucket_by))
    return CompiledSegment(seg, rules)


def compile_segments(segments: Iterable[Segment], *, lenient: bool = False) -> dict[str, CompiledSegment]:
    """Compile a closed set of segments (every `segmentMatch` target included) keyed by segment key."""
    compiled: dict[str, CompiledSegment] = {}
    for seg in segment_order(segments, lenient=lenient):
        compiled[seg.key] = _compile_one(seg, compiled, lenient)
    return compiled
