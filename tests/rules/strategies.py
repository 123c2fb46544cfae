"""Hypothesis strategies for adversarial segments and contexts in LaunchDarkly's JSON shapes.

Values are chosen to confuse types (bools vs 0/1, numeric strings, dates as numbers and strings, semver-ish
strings, arrays, nested objects, unicode) while staying inside what both engines must agree on: no
`segmentMatch` cycles, valid attribute references, valid contexts, and only regexes that compile without
warnings (Python's `re` warns once per pattern, which would make results depend on call order).
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

KINDS = ("user", "org", "device")
KEYS = ("u1", "u2", "o:1", "100%", "ключ")
OPERATORS = (
    "in",
    "startsWith",
    "endsWith",
    "contains",
    "matches",
    "lessThan",
    "lessThanOrEqual",
    "greaterThan",
    "greaterThanOrEqual",
    "before",
    "after",
    "semVerEqual",
    "semVerLessThan",
    "semVerGreaterThan",
)

DATES = (
    "2017-12-06T00:00:00.000-07:00",
    "2017-12-06T07:00:00Z",
    "2017-12-06T07:00:00.5+00:00",
    "2017-12-06T12:30:00+05:30",
    "2017-12-06T07:00:01.001Z",
    "2017-12-06t07:00:00z",
    "20171206T070000Z",
    "2017-12-06",
    "2017-12-06T07:00:00",
    "1512543600000",
    "not a date",
    # Malformed dates LaunchDarkly loads and never matches.
    "not-a-date",
    "2017-13-45T00:00:00Z",
    "2017-12-06T25:00:00Z",
    "2017-12-06 07:00:00",
    "",
)
DATE_NUMBERS = (1512543600000, 1512543600000.5, 1512543601000, 0, -1)
SEMVERS = (
    "2",
    "2.1",
    "2.0.0",
    "2.1.0",
    "v2",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.10",
    "02.0.0",
    "2.0.0+build",
    "2.0.0.0",
    "2-rc",
    "2.0.0-rc",
    # Malformed versions LaunchDarkly loads and never matches.
    "v2.0.0",
    "2.0.0-",
    "1.2.3.4-beta",
    "2.0.0-01",
    "a.b.c",
    "",
)
NUMERIC_STRINGS = ("0", "1", "1.0", "99", "100", " 1", "1e3", "true", "null", "")
WORDS = ("a", "b", "prefix", "prefixabc", "é", "e\u0301", "ключ", "🙂", "u1", "user", "org", "x/y")
REGEXES = (
    "^[uo]",
    "a|b",
    "^$",
    ".*",
    "\\d+",
    "^v?2",
    "é",
    "(",
    "[",
    "a{4294967296}",
    "^1\\.0",
    "ключ",
    "🙂$",
    # Meanings RE2 spells differently, translated so answers stay Python's (and LaunchDarkly's).
    "(?i)^U",
    "(?i)ключ",
    "\\w+$",
    "^\\S*$",
    "(?m)^o",
    "\\s",
    "1$",
    "(a+)+$",
    "^(?:u|o:?)\\d",
)

# Custom attribute names on contexts; clause attributes are drawn from these plus the built-ins.
CONTEXT_ATTRIBUTES = ("a", "b", "email", "nested", "ünï", "/lit", "a~b")
LITERAL_REFS = (
    "a",
    "b",
    "email",
    "nested",
    "ünï",
    "/lit",
    "a~b",
    "key",
    "name",
    "kind",
    "anonymous",
    "missing",
)
PATH_REFS = (
    "a",
    "/a",
    "/nested/x",
    "/nested/2",
    "/nested/x/y",
    "email",
    "/ünï",
    "/a~0b",
    "key",
    "/name",
    "kind",
    "/kind",
    "anonymous",
    "/lit",
)

numbers = st.one_of(
    st.sampled_from((0, 1, -1, 0.0, 1.0, -0.0, 0.5, 99, 100, 100.1, 2**53, 2**53 + 1)),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False, allow_infinity=False),
)
scalars = st.one_of(
    st.booleans(),
    numbers,
    st.sampled_from(DATES + SEMVERS + NUMERIC_STRINGS + WORDS + KEYS + KINDS),
    st.sampled_from(DATE_NUMBERS),
    st.text(max_size=5),
)
json_values = st.recursive(
    st.one_of(scalars, st.none()),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(("x", "y", "2")), inner, max_size=2),
    ),
    max_leaves=5,
)
# A present (non-null) attribute value.
present_values = json_values.filter(lambda v: v is not None)

_RELEVANT: dict[str, st.SearchStrategy[Any]] = {
    "in": st.one_of(scalars, st.none(), st.lists(scalars, max_size=2), st.just({"x": 1})),
    "startsWith": st.sampled_from((*WORDS, "", "pre", "u")),
    "endsWith": st.sampled_from((*WORDS, "", "abc", "1")),
    "contains": st.sampled_from((*WORDS, "", "ref", "1")),
    "matches": st.sampled_from(REGEXES),
    "lessThan": numbers,
    "lessThanOrEqual": numbers,
    "greaterThan": numbers,
    "greaterThanOrEqual": numbers,
    "before": st.sampled_from(DATES + DATE_NUMBERS),
    "after": st.sampled_from(DATES + DATE_NUMBERS),
    "semVerEqual": st.sampled_from(SEMVERS),
    "semVerLessThan": st.sampled_from(SEMVERS),
    "semVerGreaterThan": st.sampled_from(SEMVERS),
}
# Off-type clause values (LaunchDarkly loads them and never matches them): never a string regex here,
# since a string under `matches` is a regex.
_OFF_TYPE = st.one_of(
    st.booleans(),
    numbers,
    st.none(),
    st.sampled_from((*NUMERIC_STRINGS, "2")),
    st.sampled_from(([], [1], {}, {"x": "2.0.0"})),
)


def clause_values(op: str) -> st.SearchStrategy[list[Any]]:
    return st.lists(st.one_of(_RELEVANT[op], _RELEVANT[op], _OFF_TYPE), max_size=3)


@st.composite
def attribute_clauses(draw: st.DrawFn, ops: tuple[str, ...] = OPERATORS) -> dict[str, Any]:
    op = draw(st.sampled_from(ops))
    kind = draw(st.sampled_from((None, None, "", *KINDS)))
    out: dict[str, Any] = {
        "attribute": draw(st.sampled_from(PATH_REFS if kind else LITERAL_REFS)),
        "op": op,
        "values": draw(clause_values(op)),
        "negate": draw(st.booleans()),
    }
    if kind is not None:
        out["contextKind"] = kind
    return out


@st.composite
def clauses(draw: st.DrawFn, later: tuple[str, ...]) -> dict[str, Any]:
    """Mostly attribute clauses; sometimes a `segmentMatch` to a later segment (or a missing one), so the
    references form no cycle; rarely an operator LaunchDarkly does not know."""
    roll = draw(st.integers(0, 19))
    if roll < 3:
        return {
            "attribute": "",
            "op": "segmentMatch",
            "negate": draw(st.booleans()),
            "values": draw(st.lists(st.sampled_from((*later, "missing")), min_size=1, max_size=2)),
        }
    if roll == 3:
        return {
            "attribute": draw(st.sampled_from(LITERAL_REFS)),
            "op": "unknownOperator",
            "values": ["a"],
            "negate": draw(st.booleans()),
        }
    return draw(attribute_clauses())


@st.composite
def rules(draw: st.DrawFn, later: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {"clauses": draw(st.lists(clauses(later), max_size=3))}
    if draw(st.booleans()):
        out["weight"] = draw(st.one_of(st.integers(0, 100000), st.sampled_from((0, 50000, 100000))))
        rollout_kind = draw(st.sampled_from((None, "", *KINDS)))
        if rollout_kind is not None:
            out["rolloutContextKind"] = rollout_kind
        if draw(st.booleans()):
            out["bucketBy"] = draw(st.sampled_from(PATH_REFS if rollout_kind else LITERAL_REFS))
    return out


@st.composite
def targets(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {"values": draw(st.lists(st.sampled_from(KEYS), max_size=2))}
    kind = draw(st.sampled_from((None, *KINDS)))
    if kind is not None:
        out["contextKind"] = kind
    return out


@st.composite
def segments(draw: st.DrawFn, key: str, later: tuple[str, ...] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {
        "key": key,
        "version": 1,
        "included": draw(st.lists(st.sampled_from(KEYS), max_size=1)),
        "excluded": draw(st.lists(st.sampled_from(KEYS), max_size=1)),
        "includedContexts": draw(st.lists(targets(), max_size=1)),
        "excludedContexts": draw(st.lists(targets(), max_size=1)),
        "rules": draw(st.lists(rules(later), max_size=3)),
    }
    salt = draw(st.one_of(st.none(), st.text(max_size=4)))
    if salt is not None:
        out["salt"] = salt
    return out


@st.composite
def segment_families(draw: st.DrawFn) -> list[dict[str, Any]]:
    """One to three segments; segment `s{i}` may reference only `s{j}` with j > i, and "missing"."""
    keys = [f"s{i}" for i in range(draw(st.integers(1, 3)))]
    return [draw(segments(key, tuple(keys[i + 1 :]))) for i, key in enumerate(keys)]


@st.composite
def single_contexts(draw: st.DrawFn, kind: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": kind or draw(st.sampled_from(KINDS)), "key": draw(st.sampled_from(KEYS))}
    if draw(st.booleans()):
        out["name"] = draw(st.sampled_from((None, "", "Ann", "u1", "é")))
    if draw(st.booleans()):
        out["anonymous"] = draw(st.booleans())
    out.update(draw(st.dictionaries(st.sampled_from(CONTEXT_ATTRIBUTES), json_values, max_size=4)))
    if "nested" not in out and draw(st.booleans()):
        out["nested"] = {"x": draw(json_values), "2": draw(scalars)}
    if draw(st.integers(0, 9)) == 0:
        out["_meta"] = {"privateAttributes": ["a"]}
    return out


@st.composite
def contexts(draw: st.DrawFn) -> dict[str, Any]:
    """A single-kind context, or a multi-kind one with one to three distinct kinds."""
    if draw(st.booleans()):
        return draw(single_contexts())
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=3, unique=True))
    out: dict[str, Any] = {"kind": "multi"}
    for kind in kinds:
        single = draw(single_contexts(kind))
        del single["kind"]
        out[kind] = single
    return out
