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
a `segmentMatch` to a missing segment and a regex that does not compile or cannot run in linear time
(`segmentflow.rules.regex`). `lenient=True` follows LaunchDarkly for those last three: a missing segment is
simply no match, an unknown operator matches no value (so, negated, it matches any present attribute), and
a bad regex matches nothing; a regex that compiles but needs backtracking also matches nothing there (where
LaunchDarkly would run it), with a warning, since no evaluation may take exponential time.
LaunchDarkly reports a cycle only when evaluation walks into it; we refuse it whenever it exists.

Clause values LaunchDarkly loads but never matches (a malformed date or version, a value of the wrong type
for its operator) load in both modes and never match; the clause's other values still can, and `negate`
applies to the clause's result as LaunchDarkly applies it. Each is a `RuleWarning` in
`CompiledSegment.warnings` (and from `segment_problems`, which checks one segment without compiling).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from itertools import compress
from typing import Any, Literal

from segmentflow.rules.attrref import AttributeRefError, parse_attribute
from segmentflow.rules.context import DEFAULT_KIND, Context
from segmentflow.rules.errors import CycleError, RuleError, RuleWarning
from segmentflow.rules.model import Clause, Rule, Segment
from segmentflow.rules.operators import (
    OPERATORS,
    never_matches,
    parse_semver,
    parse_time,
    parse_time_text,
    precedence_key,
    regex_problem,
    semver_key,
    unusable_regex,
)
from segmentflow.rules.regex import compile_linear

__all__ = [
    "CompiledSegment",
    "Explanation",
    "compile_segments",
    "fuse",
    "lint_segments",
    "segment_order",
    "segment_problems",
]

ByKind = Mapping[str, Mapping[str, Any]]
Memo = dict[str, bool]
#: A generated predicate over a context's `by_kind` attributes; `memo` shares `segmentMatch` results.
Evaluator = Callable[[ByKind, Memo], bool]
_LONG_SCALE = float(0xFFFFFFFFFFFFFFF)
#: Integers in this range convert to float exactly, so comparing them directly equals LaunchDarkly's
#: float comparison; outside it the operator's own test (which converts) decides.
_EXACT = 2**53


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why a context is or is not in a segment: the target list or rule that decided."""

    segment_key: str
    is_member: bool
    reason: Literal["included", "excluded", "rule", "no_match"]
    context_kind: str | None = None
    rule_index: int | None = None
    rule_id: str | None = None


def _lookup(path: tuple[str, ...], attrs: Mapping[str, Any] | None) -> Any:
    if attrs is None:
        return None
    value = attrs.get(path[0])
    for part in path[1:]:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _never(value: Any) -> bool:
    return False


def _bucket(by_kind: ByKind, kind: str, path: tuple[str, ...] | None, segment_key: str, salt: str) -> float:
    attrs = by_kind.get(kind)
    if attrs is None:
        return -1.0
    value = attrs["key"] if path is None else _lookup(path, attrs)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return 0.0
    digest = hashlib.sha1(f"{segment_key}.{salt}.{value}".encode()).hexdigest()
    return int(digest[:15], 16) / _LONG_SCALE


def _reference(key: str, target: CompiledSegment) -> Callable[[ByKind, Memo], bool]:
    """A `segmentMatch` target, evaluated at most once per context through the shared memo."""

    def ref(by_kind: ByKind, memo: Memo) -> bool:
        result = memo.get(key)
        if result is None:
            result = memo[key] = target.evaluate(by_kind, memo)
        return result

    return ref


class _Source:
    """Builds the Python source of one segment's predicate. Every value (keys, attribute names, value
    sets, tests) is bound by name in the namespace, never written into the source, so no segment data
    can change the generated code."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.namespace: dict[str, Any] = {"_lookup": _lookup, "_bucket": _bucket, "_any": any, "_map": map}
        self.kinds: dict[str, str] = {}
        #: In a fused function (`fuse`): the local variable holding each segment already evaluated, and
        #: each top-level attribute read once up front (None when hoisting is off: read where used).
        self.segment_vars: dict[str, str] = {}
        self.attributes: dict[tuple[str, tuple[str, ...]], str] | None = None

    def attribute(self, attrs: str, path: tuple[str, ...]) -> str:
        """The attribute at `path` of the kind held in `attrs`, None when absent."""
        if self.attributes is None:
            return self.read(attrs, path)
        var = self.attributes.get((attrs, path))
        if var is None:
            var = self.attributes[(attrs, path)] = f"_x{len(self.attributes)}"
        return var

    def read(self, attrs: str, path: tuple[str, ...]) -> str:
        if len(path) == 1:
            return f"({attrs}.get({self.bind(path[0])}) if {attrs} is not None else None)"
        return f"_lookup({self.bind(path)}, {attrs})"

    def segment_test(self, key: str, target: CompiledSegment) -> str:
        """`segmentMatch` on `key`: a local variable when the fused function has evaluated it already,
        else a call sharing the memo."""
        var = self.segment_vars.get(key)
        return var if var is not None else f"{self.bind(_reference(key, target))}(by_kind, memo)"

    def bind(self, value: Any) -> str:
        name = f"_c{len(self.namespace)}"
        self.namespace[name] = value
        return name

    def kind_var(self, kind: str) -> str:
        if kind not in self.kinds:
            self.kinds[kind] = f"_a{len(self.kinds)}"
        return self.kinds[kind]

    def prologue(self) -> list[str]:
        lines = [f"    {var} = by_kind.get({self.bind(kind)})" for kind, var in self.kinds.items()]
        for (attrs, path), var in (self.attributes or {}).items():
            lines.append(f"    {var} = {self.read(attrs, path)}")
        return lines

    def function(self, name: str, body: list[str], params: str = "by_kind, memo") -> Any:
        source = "\n".join([f"def {name}({params}):", *self.prologue(), *body])
        # Only names bound by `bind` appear in the source, never segment data.
        exec(compile(source, f"<segment {self.key!r} {name}>", "exec"), self.namespace)
        return self.namespace[name]


def _exact_numbers(values: list[Any]) -> list[float] | None:
    """The values as floats when every one is a finite JSON number that converts exactly, else None."""
    out = []
    for v in values:
        if (type(v) is float and math.isfinite(v)) or (type(v) is int and -_EXACT <= v <= _EXACT):
            out.append(float(v))
        else:
            return None
    return out or None


def _scalar_expression(src: _Source, op: str, values: list[Any], test: str) -> str:
    """A fast inline test of `_v` for the common operators, falling back to the operator's own test for
    any other type (so every answer is the operator table's)."""
    if op == "in" and values and all(type(v) is str for v in values):
        return f"(_v in {src.bind(frozenset(values))} if type(_v) is str else {test}(_v))"
    # Numeric and date operators against plain numbers: any-of over the values is one comparison with
    # the loosest bound, and a number in the context compares directly.
    bounds = {
        "lessThan": ("<", max),
        "lessThanOrEqual": ("<=", max),
        "greaterThan": (">", min),
        "greaterThanOrEqual": (">=", min),
        "before": ("<", max),
        "after": (">", min),
    }
    numbers = _exact_numbers(values)
    if op in bounds and numbers:
        symbol, pick = bounds[op]
        bound = src.bind(pick(numbers))
        return (
            f"(_v {symbol} {bound} if type(_v) is float or (type(_v) is int and -{_EXACT} <= _v <= {_EXACT})"
            f" else {test}(_v))"
        )
    if op in ("before", "after"):
        parsed = [parse_time(v) for v in values]
        times = [t for t in parsed if t is not None and math.isfinite(t)]
        if times and len(times) == len(values):
            symbol, when = ("<", max(times)) if op == "before" else (">", min(times))
            return (
                f"((_t := {src.bind(parse_time_text)}(_v)) is not None and _t {symbol} {src.bind(when)}"
                f" if type(_v) is str else {test}(_v))"
            )
    if op in ("semVerEqual", "semVerLessThan", "semVerGreaterThan"):
        versions = [parse_semver(v) for v in values]
        if versions and all(v is not None for v in versions):
            keys = [precedence_key(v) for v in versions if v is not None]
            check = {
                "semVerEqual": f"_k in {src.bind(frozenset(keys))}",
                "semVerLessThan": f"_k < {src.bind(max(keys))}",
                "semVerGreaterThan": f"_k > {src.bind(min(keys))}",
            }[op]
            key_of = src.bind(semver_key)
            return f"((_k := {key_of}(_v)) is not None and {check} if type(_v) is str else {test}(_v))"
    if op == "matches" and len(values) == 1 and type(values[0]) is str and regex_problem(values[0]) is None:
        search = compile_linear(values[0]).search
        return f"({src.bind(search)}(_v) if type(_v) is str else {test}(_v))"
    if op == "contains" and len(values) == 1 and type(values[0]) is str:
        return f"({src.bind(values[0])} in _v if type(_v) is str else {test}(_v))"
    if op in ("startsWith", "endsWith") and values and all(type(v) is str for v in values):
        method = "startswith" if op == "startsWith" else "endswith"
        return f"(_v.{method}({src.bind(tuple(values))}) if type(_v) is str else {test}(_v))"
    return f"{test}(_v)"


def _clause_expression(
    src: _Source,
    seg: Segment,
    r_index: int,
    c_index: int,
    clause: Clause,
    compiled: Mapping[str, CompiledSegment],
    lenient: bool,
) -> str:
    """The clause as an expression; `segment_problems` has already refused what cannot compile."""
    negation = "not " if clause.negate else ""
    if clause.op == "segmentMatch":
        tests = [
            src.segment_test(v, compiled[v])
            for v in dict.fromkeys(clause.values)
            if isinstance(v, str) and v in compiled
        ]
        return f"({negation}({' or '.join(tests) or 'False'}))"
    path = parse_attribute(clause.attribute, clause.context_kind)
    prepare = OPERATORS.get(clause.op)
    test = src.bind(_never if prepare is None else prepare(clause.values, lenient))
    if path == ("kind",):
        return f"({negation}_any(_map({test}, by_kind)))"
    attrs = src.kind_var(clause.context_kind or DEFAULT_KIND)
    lookup = src.attribute(attrs, path)
    scalar = _scalar_expression(src, clause.op, clause.values, test)
    return (
        f"((_v := {lookup}) is not None and "
        f"{negation}(_any(_map({test}, _v)) if type(_v) is list else {scalar}))"
    )


def _rule_expression(
    src: _Source,
    seg: Segment,
    r_index: int,
    rule: Rule,
    compiled: Mapping[str, CompiledSegment],
    lenient: bool,
) -> str:
    parts = [
        _clause_expression(src, seg, r_index, c_index, clause, compiled, lenient)
        for c_index, clause in enumerate(rule.clauses)
    ]
    if rule.weight is not None:
        bucket_by = parse_attribute(rule.bucket_by, rule.rollout_context_kind) if rule.bucket_by else None
        args = ", ".join(
            src.bind(v)
            for v in (rule.rollout_context_kind or DEFAULT_KIND, bucket_by, seg.key, seg.salt or "")
        )
        parts.append(f"_bucket(by_kind, {args}) < {src.bind(rule.weight / 100000.0)}")
    return "(" + " and ".join(parts) + ")" if parts else "True"


def _target_checks(src: _Source, seg: Segment) -> list[tuple[str, bool]]:
    """(condition, membership) for each target list, in precedence order: the first that holds decides."""
    checks: list[tuple[str, bool]] = []

    def check(kind: str, keys: Iterable[str], result: bool) -> None:
        key_set = frozenset(keys)
        if key_set:
            attrs = src.kind_var(kind)
            checks.append((f"{attrs} is not None and {attrs}['key'] in {src.bind(key_set)}", result))

    check(DEFAULT_KIND, seg.included, True)
    for target in seg.included_contexts:
        check(target.context_kind or DEFAULT_KIND, target.values, True)
    check(DEFAULT_KIND, seg.excluded, False)
    for target in seg.excluded_contexts:
        check(target.context_kind or DEFAULT_KIND, target.values, False)
    return checks


def _segment_expression(
    src: _Source, seg: Segment, compiled: Mapping[str, CompiledSegment], lenient: bool
) -> tuple[list[tuple[str, bool]], list[str]]:
    """The segment's target checks and each rule's expression (OR-ed after the checks)."""
    expressions = [_rule_expression(src, seg, i, rule, compiled, lenient) for i, rule in enumerate(seg.rules)]
    return _target_checks(src, seg), expressions


class CompiledRule:
    """One rule of a compiled segment, for `explain` only (`matches` runs the segment's fused code), so
    its own function is generated the first time it is asked for."""

    __slots__ = ("_build", "_fn", "index", "rule")

    def __init__(self, rule: Rule, index: int, build: Callable[[], Evaluator]) -> None:
        self.rule = rule
        self.index = index
        self._build = build
        self._fn: Evaluator | None = None

    def matches(self, ctx: Context) -> bool:
        if self._fn is None:
            self._fn = self._build()
        return self._fn(ctx.by_kind, {})


class CompiledSegment:
    """A segment ready to evaluate: `matches(context)` is pure and never raises on context data.

    Its predicate is one generated Python function (targets, then every rule inlined), so evaluating a
    clause costs a few bytecodes rather than several nested calls."""

    __slots__ = (
        "definition",
        "evaluate",
        "excluded",
        "excluded_contexts",
        "included",
        "included_contexts",
        "key",
        "lenient",
        "rules",
        "targets",
        "warnings",
    )

    #: The raw predicate over `context.by_kind`; `memo` caches `segmentMatch` targets across the segments
    #: of one context (a fresh dict per context).
    evaluate: Evaluator

    def __init__(
        self,
        definition: Segment,
        rules: list[CompiledRule],
        fn: Evaluator,
        warnings: Iterable[RuleWarning] = (),
        *,
        targets: Mapping[str, CompiledSegment] | None = None,
        lenient: bool = False,
    ) -> None:
        self.definition = definition
        #: The compiled `segmentMatch` targets it was compiled against, and how leniently (for `fuse`).
        self.targets: Mapping[str, CompiledSegment] = targets or {}
        self.lenient = lenient
        #: Clause values kept although they never match, in rule and clause order.
        self.warnings = tuple(warnings)
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
        self.evaluate = fn

    def matches(self, ctx: Context) -> bool:
        return self.evaluate(ctx.by_kind, {})

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


def _clause_problems(
    seg: Segment, r_index: int, c_index: int, clause: Clause, lenient: bool
) -> tuple[list[RuleError], list[RuleWarning]]:
    def error(detail: str) -> RuleError:
        return RuleError(detail, segment_key=seg.key, rule_index=r_index, clause_index=c_index)

    if clause.op == "segmentMatch":
        return [], []  # its values are checked with the other segments, by `segment_order`
    errors = []
    try:
        parse_attribute(clause.attribute, clause.context_kind)
    except AttributeRefError as exc:
        errors.append(error(f"attribute: {exc}"))
    prepare = OPERATORS.get(clause.op)
    if prepare is None:
        if not lenient:
            known = ", ".join(sorted(OPERATORS))
            errors.append(error(f'unknown operator "{clause.op}" (known: {known})'))
        return errors, []  # an unknown operator matches no value: nothing to say about each one
    try:
        prepare(clause.values, lenient)
    except ValueError as exc:
        errors.append(error(f"{clause.op}: {exc}"))
    check = never_matches if not (lenient and clause.op == "matches") else _never_matches_leniently
    warnings = [
        RuleWarning(seg.key, r_index, c_index, problem)
        for problem in (check(clause.op, value) for value in clause.values)
        if problem is not None
    ]
    return errors, warnings


def _never_matches_leniently(op: str, value: Any) -> str | None:
    """`never_matches`, plus the patterns a lenient load keeps but a save refuses."""
    return never_matches(op, value) or unusable_regex(value)


def segment_problems(seg: Segment, *, lenient: bool = False) -> tuple[list[RuleError], list[RuleWarning]]:
    """Everything wrong with one segment on its own (its `segmentMatch` targets are `segment_order`'s
    concern), in rule and clause order: errors refuse it, warnings name values kept that never match."""
    errors: list[RuleError] = []
    warnings: list[RuleWarning] = []
    if seg.unbounded:
        errors.append(
            RuleError(
                "big (unbounded) segments are not supported: memberships here come from rules and targets",
                segment_key=seg.key,
            )
        )
    for r_index, rule in enumerate(seg.rules):
        for c_index, clause in enumerate(rule.clauses):
            clause_errors, clause_warnings = _clause_problems(seg, r_index, c_index, clause, lenient)
            errors += clause_errors
            warnings += clause_warnings
        if rule.weight is not None and rule.bucket_by:
            try:
                parse_attribute(rule.bucket_by, rule.rollout_context_kind)
            except AttributeRefError as exc:
                errors.append(RuleError(f"bucketBy: {exc}", segment_key=seg.key, rule_index=r_index))
    return errors, warnings


def lint_segments(segments: Iterable[Segment]) -> tuple[list[RuleError], list[RuleWarning]]:
    """Every error (what `compile_segments` would refuse, the first reference problem included) and every
    warning of a set of segments, without stopping at the first error."""
    segments = list(segments)
    errors: list[RuleError] = []
    warnings: list[RuleWarning] = []
    try:
        segment_order(segments)
    except RuleError as exc:
        errors.append(exc)
    for seg in segments:
        seg_errors, seg_warnings = segment_problems(seg)
        errors += seg_errors
        warnings += seg_warnings
    return errors, warnings


def _compile_one(seg: Segment, compiled: Mapping[str, CompiledSegment], lenient: bool) -> CompiledSegment:
    errors, warnings = segment_problems(seg, lenient=lenient)
    if errors:
        raise errors[0]
    src = _Source(seg.key)
    checks, expressions = _segment_expression(src, seg, compiled, lenient)
    rules = [
        CompiledRule(rule, i, partial(src.function, f"_rule{i}", [f"    return {expr}"]))
        for i, (rule, expr) in enumerate(zip(seg.rules, expressions, strict=True))
    ]
    body = [f"    if {condition}: return {result}" for condition, result in checks]
    fused = " or ".join(expressions) or "False"
    targets = {key: compiled[key] for key in seg.dependencies() if key in compiled}
    function = src.function("_segment", [*body, f"    return {fused}"])
    return CompiledSegment(seg, rules, function, warnings, targets=targets, lenient=lenient)


def compile_segments(segments: Iterable[Segment], *, lenient: bool = False) -> dict[str, CompiledSegment]:
    """Compile a closed set of segments (every `segmentMatch` target included) keyed by segment key."""
    compiled: dict[str, CompiledSegment] = {}
    for seg in segment_order(segments, lenient=lenient):
        compiled[seg.key] = _compile_one(seg, compiled, lenient)
    return compiled


#: Keys of the segments a context belongs to, from its `by_kind` (see `fuse`).
Matcher = Callable[[ByKind], list[str]]


def fuse(segments: Mapping[str, CompiledSegment]) -> Matcher:
    """One generated function evaluating every segment of `segments` (in its order, which must put each
    `segmentMatch` target before the segments that use it, as `compile_segments` does) for one context
    and returning the keys of those it belongs to, in that order: `matching` without a call, a memo
    entry and a kind lookup per segment. Each segment is evaluated once into a local variable, which
    the segments after it read for `segmentMatch`; a target outside `segments` is called as usual.
    The answers are the segments' own: the same generated expressions, in one body."""
    keys = list(segments)
    if not keys:
        return lambda by_kind: []
    src = _Source("*")
    src.attributes = {}
    lines = ["    memo = {}"]
    for n, (key, seg) in enumerate(segments.items()):
        checks, expressions = _segment_expression(src, seg.definition, seg.targets, seg.lenient)
        value = f"({' or '.join(expressions) or 'False'})"
        for condition, result in reversed(checks):
            value = f"({result} if {condition} else {value})"
        lines.append(f"    _s{n} = {value}")
        src.segment_vars[key] = f"_s{n}"
    flags = ", ".join(f"_s{n}" for n in range(len(keys)))
    lines.append(f"    return _list(_compress({src.bind(tuple(keys))}, ({flags},)))")
    src.namespace.update(_list=list, _compress=compress)
    matcher: Matcher = src.function("_matching", lines, params="by_kind")
    return matcher
