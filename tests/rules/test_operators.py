"""Each clause operator as a table, with type-confusion rows, checked on our engine and on LaunchDarkly's SDK.

A row is (clause values, the context's attribute value or MISSING, whether the clause matches). Every row
runs twice, plain and negated: negation flips a present attribute's result, and a missing or null attribute
matches neither way. The same JSON goes through LaunchDarkly's evaluator: each row is LaunchDarkly's answer.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.factories import clause, is_member, rule, segment, user
from tests.rules.launchdarkly import ld_is_member

MISSING: Any = object()


def row(*fields: Any) -> Any:
    """A table row: its fields, then its id."""
    *data, row_id = fields
    return pytest.param(*data, id=row_id)


def assert_operator(op: str, values: list[Any], value: Any, expected: bool) -> None:
    ctx = user("u1") if value is MISSING else user("u1", attr=value)
    present = value is not MISSING and value is not None
    assert present or not expected, "a missing attribute never matches; fix the row"
    for negate in (False, True):
        seg = segment("s", rules=[rule(clause("attr", op, values, negate=negate))])
        want = (expected is not negate) if present else False
        assert is_member(seg, ctx, lenient=True) is want, f"ours, negate={negate}"
        assert ld_is_member("s", [seg], ctx) is want, f"LaunchDarkly, negate={negate}"


IN_ROWS = [
    row(["a"], "a", True, "string-equal"),
    row(["b"], "a", False, "string-unequal"),
    row(["b", "a"], "a", True, "any-of-several-values"),
    row(["A"], "a", False, "case-sensitive"),
    row(["é"], "e\u0301", False, "no-unicode-normalisation"),
    row(["ключ"], "ключ", True, "unicode-equal"),
    row([1], True, False, "bool-true-is-not-1"),
    row([1.0], True, False, "bool-true-is-not-1.0"),
    row([0], False, False, "bool-false-is-not-0"),
    row([True], 1, False, "1-is-not-bool-true"),
    row([False], 0, False, "0-is-not-bool-false"),
    row([False, True], 1, False, "1-is-not-in-bools"),
    row([0, 1], True, False, "bool-is-not-in-numbers"),
    row([True], True, True, "bool-equal"),
    row([1.0], 1, True, "int-equals-float"),
    row([1.5], 1.5, True, "float-equal"),
    row([2**53], 2**53 + 1, False, "big-ints-compare-exactly"),
    row([1], "1", False, "numeric-string-is-not-number"),
    row(["1"], 1, False, "number-is-not-numeric-string"),
    row(["true"], True, False, "bool-is-not-string"),
    row([None], None, False, "null-attribute-is-missing"),
    row(["a"], MISSING, False, "missing-attribute"),
    row([1], [True, 1], True, "array-any-element"),
    row([1], [True], False, "array-of-bool-is-not-number"),
    row(["c"], ["b", "c"], True, "array-of-strings"),
    row([None], ["b", None], True, "null-inside-array-equals-null"),
    row(["a"], [], False, "empty-array-is-present"),
    row([{"x": 1}], {"x": 1}, True, "object-equal"),
    row([{"x": 1}], {"x": 2}, False, "object-unequal"),
    row([[1, 2]], [[1, 2]], True, "array-element-equals-array-value"),
    row([[1, 2]], [1, 2], False, "array-attribute-is-not-compared-whole"),
]

STARTS_WITH_ROWS = [
    row(["prefix"], "prefixabc", True, "prefix"),
    row(["prefix"], "prefix", True, "whole-string"),
    row(["prefix"], "Prefixabc", False, "case-sensitive"),
    row([""], "anything", True, "empty-prefix"),
    row(["x", "pre"], "prefix", True, "any-of-several-values"),
    row(["true"], True, False, "bool-is-not-string"),
    row(["99"], 99, False, "number-is-not-string"),
    row([99], "99", False, "number-clause-value-is-skipped"),
    row(["pre"], ["x", "prefix"], True, "array-any-element"),
    row(["null"], None, False, "null-attribute"),
]

ENDS_WITH_ROWS = [
    row(["suffix"], "abcsuffix", True, "suffix"),
    row(["suffix"], "abcSuffix", False, "case-sensitive"),
    row(["suffix"], "suffixno", False, "not-at-end"),
    row(["🙂"], "hi🙂", True, "unicode"),
    row(["1"], 1, False, "number-is-not-string"),
    row(["e"], [True, "name"], True, "array-any-element"),
]

CONTAINS_ROWS = [
    row(["substring"], "abcsubstringxyz", True, "inside"),
    row(["substring"], "abcSubstringxyz", False, "case-sensitive"),
    row([""], "", True, "empty-in-empty"),
    row(["1"], 100, False, "number-is-not-string"),
    row(["a"], {"a": 1}, False, "object-is-not-string"),
]

MATCHES_ROWS = [
    row(["^[A-Za-z]+"], "matchThisName", True, "anchored"),
    row(["^[A-Za-z]+"], "_Don't match", False, "anchored-miss"),
    row(["abc"], "xxabcxx", True, "search-not-fullmatch"),
    row(["\\w+$"], "é", True, "unicode-word"),
    row(["99"], 99, False, "number-is-not-string"),
    row(["true"], True, False, "bool-is-not-string"),
    row(["("], "(", False, "bad-regex-never-matches"),
    row(["a{4294967296}"], "a", False, "overflowing-repeat-never-matches"),
    row(["(", "b"], "abc", True, "bad-regex-skipped-others-apply"),
    row([1], "1", False, "non-string-pattern-skipped"),
]

NUMERIC_ROWS = [
    row("lessThan", [100], 99, True, "lt"),
    row("lessThan", [100], 100, False, "lt-equal"),
    row("lessThan", [100], 100.1, False, "lt-float"),
    row("lessThan", [100, 200], 150, True, "lt-any-of-values"),
    row("lessThan", [0.5], 0, True, "lt-int-vs-float"),
    row("lessThan", [100], "99", False, "lt-numeric-string"),
    row("lessThan", ["100"], 99, False, "lt-string-clause-value-skipped"),
    row("lessThan", [2], True, False, "lt-bool-is-not-1"),
    row("lessThan", [True], 0, False, "lt-bool-clause-value-skipped"),
    row("lessThan", [100], [200, 99], True, "lt-array-any-element"),
    row("lessThanOrEqual", [100], 100, True, "le-equal"),
    row("lessThanOrEqual", [100], 100.1, False, "le-above"),
    row("lessThanOrEqual", [100], "100", False, "le-numeric-string"),
    row("greaterThan", [100], 100.1, True, "gt-float"),
    row("greaterThan", [100], 100, False, "gt-equal"),
    row("greaterThan", [0], False, False, "gt-bool-false-is-not-0"),
    row("greaterThan", [2**63], 2**63 + 1, False, "gt-beyond-float-precision"),
    row("greaterThanOrEqual", [100], 100, True, "ge-equal"),
    row("greaterThanOrEqual", [100], 99, False, "ge-below"),
    row("greaterThanOrEqual", [-1.5], -1, True, "ge-negative"),
]

T0 = 1512543600000  # 2017-12-06T07:00:00Z
DATE_ROWS = [
    row("before", [T0 + 1000], "2017-12-06T00:00:00.000-07:00", True, "offset-string-before-ms"),
    row("before", ["2017-12-06T07:00:01Z"], T0, True, "ms-before-string"),
    row("before", [T0], "2017-12-06T07:00:00Z", False, "same-instant-is-not-before"),
    row("after", [T0], "2017-12-06T12:30:00+05:30", False, "same-instant-other-offset-is-not-after"),
    row("after", [T0], "2017-12-06T07:00:00.5Z", True, "fractional-seconds"),
    row("after", [T0], "2017-12-06T07:00:00.001+00:00", True, "one-millisecond-later"),
    row("after", [T0], T0 + 0.5, True, "fractional-ms-number"),
    row("after", ["2017-12-06T07:00:00Z"], "2017-12-06t07:00:01z", True, "lowercase-t-and-z"),
    row("after", [T0 - 1], "1512543600000", False, "ms-as-string-is-not-a-date"),
    row("after", [0], "2017-12-06", False, "date-without-time-is-not-a-date"),
    row("after", [0], "2017-12-06T07:00:00", False, "no-offset-is-not-a-date"),
    row("after", [0], True, False, "bool-is-not-a-date"),
    row("after", ["2017-12-06"], T0, False, "bad-clause-date-never-matches"),
    row("after", [None, T0 - 1], T0, True, "bad-clause-value-skipped-others-apply"),
    row("before", [T0], [T0 + 1, "2017-12-06T06:00:00Z"], True, "array-any-element"),
]

SEMVER_ROWS = [
    row("semVerEqual", ["2.0.0"], "2", True, "pads-major"),
    row("semVerEqual", ["2.1.0"], "2.1", True, "pads-minor"),
    row("semVerEqual", ["2.0.0-rc"], "2-rc", True, "pads-before-prerelease"),
    row("semVerEqual", ["2.0.0"], "2.0.0+build", True, "build-metadata-ignored"),
    row("semVerEqual", ["2.0.0"], "v2", False, "refuses-v-prefix"),
    row("semVerEqual", ["2.0.0"], "v2.0.0", False, "refuses-v-prefix-full"),
    row("semVerEqual", ["2.0.0"], "02.0.0", False, "refuses-leading-zero"),
    row("semVerEqual", ["2.0.0"], "2.0.0.0", False, "refuses-four-parts"),
    row("semVerEqual", ["2.0.0"], 2, False, "number-is-not-a-version"),
    row("semVerEqual", [2], "2.0.0", False, "number-clause-value-never-matches"),
    row("semVerLessThan", ["1.0.0"], "1.0.0-beta", True, "prerelease-before-release"),
    row("semVerLessThan", ["1.0.0-beta.10"], "1.0.0-beta.2", True, "numeric-prerelease-parts"),
    row("semVerLessThan", ["2.0.0-rc.2.red"], "2.0.0-rc.2.green", True, "alphanumeric-prerelease-parts"),
    row("semVerLessThan", ["2.0"], "2.0.0", False, "equal-is-not-less"),
    row("semVerGreaterThan", ["2.0"], "2.0.1", True, "patch-greater"),
    row("semVerGreaterThan", ["2"], "10.0.0", True, "numeric-not-lexical"),
    row("semVerGreaterThan", ["1.0.0"], ["0.9.0", "v2", "1.0.1"], True, "array-any-element"),
]


@pytest.mark.parametrize(("values", "value", "expected"), IN_ROWS)
def test_in_operator(values: list[Any], value: Any, expected: bool) -> None:
    assert_operator("in", values, value, expected)


@pytest.mark.parametrize(("values", "value", "expected"), STARTS_WITH_ROWS)
def test_starts_with_operator(values: list[Any], value: Any, expected: bool) -> None:
    assert_operator("startsWith", values, value, expected)


@pytest.mark.parametrize(("values", "value", "expected"), ENDS_WITH_ROWS)
def test_ends_with_operator(values: list[Any], value: Any, expected: bool) -> None:
    assert_operator("endsWith", values, value, expected)


@pytest.mark.parametrize(("values", "value", "expected"), CONTAINS_ROWS)
def test_contains_operator(values: list[Any], value: Any, expected: bool) -> None:
    assert_operator("contains", values, value, expected)


@pytest.mark.parametrize(("values", "value", "expected"), MATCHES_ROWS)
def test_matches_operator(values: list[Any], value: Any, expected: bool) -> None:
    assert_operator("matches", values, value, expected)


@pytest.mark.parametrize(("op", "values", "value", "expected"), NUMERIC_ROWS)
def test_numeric_operators(op: str, values: list[Any], value: Any, expected: bool) -> None:
    assert_operator(op, values, value, expected)


@pytest.mark.parametrize(("op", "values", "value", "expected"), DATE_ROWS)
def test_date_operators(op: str, values: list[Any], value: Any, expected: bool) -> None:
    assert_operator(op, values, value, expected)


@pytest.mark.parametrize(("op", "values", "value", "expected"), SEMVER_ROWS)
def test_semver_operators(op: str, values: list[Any], value: Any, expected: bool) -> None:
    assert_operator(op, values, value, expected)


def test_unknown_operator_matches_nothing_when_lenient() -> None:
    assert_operator("unknownOperator", ["a"], "a", False)


@pytest.mark.parametrize(
    ("values", "ctx", "negate", "expected"),
    [
        pytest.param(["user"], user("u1"), False, True, id="single-kind"),
        pytest.param(["org"], user("u1"), False, False, id="single-kind-miss"),
        pytest.param(
            ["org"],
            {"kind": "multi", "user": {"key": "u"}, "org": {"key": "o"}},
            False,
            True,
            id="any-kind-of-multi",
        ),
        pytest.param(["dog"], {"kind": "multi", "dog": {"key": "d"}}, True, False, id="negated-multi-of-one"),
        pytest.param(["cat"], user("u1"), True, True, id="negated-miss"),
    ],
)
def test_kind_attribute_matches_against_every_kind(
    values: list[Any], ctx: dict[str, Any], negate: bool, expected: bool
) -> None:
    seg = segment("s", rules=[rule(clause("kind", "in", values, negate=negate))])
    assert is_member(seg, ctx) is expected
    assert ld_is_member("s", [seg], ctx) is expected


def test_kind_attribute_with_matches_operator() -> None:
    seg = segment("s", rules=[rule(clause("kind", "matches", ["^[uo]"]))])
    assert is_member(seg, {"kind": "company", "key": "c"}) is False
    assert is_member(seg, {"kind": "multi", "company": {"key": "c"}, "org": {"key": "o"}}) is True
