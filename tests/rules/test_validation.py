"""Segments refused when they load (with messages naming segment, rule, clause and the problem), and
properties of every segment that does load: evaluation never raises, negation flips a present attribute,
and the JSON round trip is lossless."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segmentflow.rules import (
    CycleError,
    RuleError,
    compile_segments,
    lint_segments,
    parse_context,
    parse_segment,
)
from tests.factories import clause, compile_one, is_member, rule, segment, user
from tests.rules.launchdarkly import ld_is_member
from tests.rules.strategies import (
    OPERATORS,
    attribute_clauses,
    clause_values,
    present_values,
    segment_families,
    segments,
    single_contexts,
)


def refusal(*segs: dict[str, Any], lenient: bool = False) -> str:
    with pytest.raises(RuleError) as info:
        compile_segments([parse_segment(s) for s in segs], lenient=lenient)
    return str(info.value)


@pytest.mark.parametrize("lenient", [False, True])
def test_unknown_operator_is_refused_unless_lenient(lenient: bool) -> None:
    seg = segment("s", rules=[rule(clause("a", "in", ["x"]), clause("a", "isOneOf", ["x"]))])
    if lenient:
        assert is_member(seg, user("u1", a="x"), lenient=True) is False
        return
    message = refusal(seg)
    assert message.startswith('segment "s" rule 0 clause 1: unknown operator "isOneOf"')
    assert "segmentMatch" in message  # the known operators are listed


def test_bad_regex_is_refused_with_the_regex_error() -> None:
    message = refusal(segment("s", rules=[rule(), rule(clause("email", "matches", ["ok", "(unclosed"]))]))
    assert message.startswith("segment \"s\" rule 1 clause 0: matches: bad regex '(unclosed'")
    assert "missing )" in message


def test_non_string_regex_loads_with_a_warning_and_never_matches() -> None:
    seg = segment("s", rules=[rule(clause("a", "matches", [1, "^x"]))])
    compiled = compile_one(seg)
    assert [str(w) for w in compiled.warnings] == [
        'segment "s" rule 0 clause 0: matches: 1 is not a string; it never matches'
    ]
    assert compiled.matches(parse_context(user("u1", a="xy"))) is True  # the clause's other value still can


def test_values_that_are_not_a_list_are_refused_with_the_field_path() -> None:
    with pytest.raises(RuleError) as info:
        parse_segment(segment("s", rules=[rule(clause("a", "in", "x"))]))  # type: ignore[arg-type]
    err = info.value
    assert (err.segment_key, err.rule_index, err.clause_index) == ("s", 0, 0)
    assert str(err) == 'segment "s" rule 0 clause 0 field "values": input should be a valid list'


def test_wrongly_typed_negate_is_refused_not_coerced() -> None:
    with pytest.raises(RuleError, match='segment "s" rule 0 clause 0 field "negate"'):
        parse_segment(
            segment("s", rules=[rule({"attribute": "a", "op": "in", "values": [], "negate": "yes"})])
        )


def test_missing_segment_match_target_is_refused_unless_lenient() -> None:
    seg = segment("s", rules=[rule(clause("", "segmentMatch", ["nope"]))])
    assert refusal(seg) == 'segment "s" rule 0 clause 0: segmentMatch refers to missing segment "nope"'
    assert is_member(seg, user("u1"), lenient=True) is False


def test_segment_match_value_that_is_not_a_key_is_refused() -> None:
    seg = segment("s", rules=[rule(clause("", "segmentMatch", [3]))])
    assert "segmentMatch value 3 is not a segment key" in refusal(seg)


def test_cycle_is_refused_and_the_message_shows_the_path() -> None:
    a = segment("a", rules=[rule(clause("", "segmentMatch", ["b"]))])
    b = segment("b", rules=[rule(clause("", "segmentMatch", ["c"]))])
    c = segment("c", rules=[rule(clause("", "segmentMatch", ["a"]))])
    with pytest.raises(CycleError) as info:
        compile_segments([parse_segment(s) for s in (a, b, c)], lenient=True)
    assert info.value.path == ["a", "b", "c", "a"]
    assert str(info.value) == 'segment "a": segmentMatch references form a cycle: a -> b -> c -> a'


def test_self_reference_is_a_cycle() -> None:
    assert "cycle: s -> s" in refusal(segment("s", rules=[rule(clause("", "segmentMatch", ["s"]))]))


def test_cycle_below_the_first_segment_shows_only_the_loop() -> None:
    top = segment("top", rules=[rule(clause("", "segmentMatch", ["x"]))])
    x = segment("x", rules=[rule(clause("", "segmentMatch", ["y"]))])
    y = segment("y", rules=[rule(clause("", "segmentMatch", ["x"]))])
    assert "cycle: x -> y -> x" in refusal(top, x, y)


@pytest.mark.parametrize(
    ("attribute", "kind", "problem"),
    [
        pytest.param("", None, "cannot be empty", id="empty"),
        pytest.param("/", "user", "cannot be empty", id="slash-only"),
        pytest.param("///", "user", "double slash or a trailing slash", id="empty-component"),
        pytest.param("/a/", "user", "double slash or a trailing slash", id="trailing-slash"),
        pytest.param("/a~b", "user", '"~" not followed by 0 or 1', id="bad-escape"),
        pytest.param("/a~", "user", '"~" not followed by 0 or 1', id="dangling-escape"),
    ],
)
def test_bad_attribute_reference_is_refused_even_when_lenient(
    attribute: str, kind: str | None, problem: str
) -> None:
    message = refusal(segment("s", rules=[rule(clause(attribute, "in", [True], kind=kind))]), lenient=True)
    assert message.startswith('segment "s" rule 0 clause 0: attribute: attribute reference')
    assert problem in message


def test_bad_bucket_by_reference_is_refused_naming_the_rule() -> None:
    seg = segment("s", rules=[rule(weight=50000), rule(weight=50000, bucket_by="/a~x", rollout_kind="org")])
    assert refusal(seg).startswith('segment "s" rule 1: bucketBy: attribute reference "/a~x"')


def test_slash_attribute_without_context_kind_is_a_literal_name() -> None:
    seg = segment("s", rules=[rule(clause("/a~b", "in", [1]))])
    assert is_member(seg, user("u1", **{"/a~b": 1})) is True


def test_unbounded_segment_is_refused() -> None:
    message = refusal(segment("big", unbounded=True))
    assert message.startswith('segment "big": big (unbounded) segments are not supported')


def test_duplicate_keys_are_refused() -> None:
    assert refusal(segment("s"), segment("t"), segment("s")) == 'segment "s": the key appears more than once'


@pytest.mark.parametrize(
    ("op", "values", "problem"),
    [
        pytest.param("before", ["2017-12-06"], "'2017-12-06' is not a valid date", id="date-without-time"),
        pytest.param("after", ["1512543600000"], "'1512543600000' is not a valid date", id="ms-as-string"),
        pytest.param("after", [True], "true is not a valid date", id="bool-date"),
        pytest.param("before", ["not-a-date"], "'not-a-date' is not a valid date", id="not-a-date"),
        pytest.param("semVerEqual", ["v2"], "'v2' is not a valid semantic version", id="v-prefixed-version"),
        pytest.param(
            "semVerLessThan", ["02.0.0"], "'02.0.0' is not a valid semantic version", id="leading-zero"
        ),
        pytest.param("semVerGreaterThan", [2], "2 is not a valid semantic version", id="number-version"),
        pytest.param("startsWith", [None], "null is not a string", id="null-prefix"),
        pytest.param("contains", [{"x": 1}], '{"x": 1} is not a string', id="object-substring"),
        pytest.param("lessThan", ["5"], "'5' is not a number", id="numeric-string"),
        pytest.param("greaterThanOrEqual", [False], "false is not a number", id="bool-number"),
    ],
)
def test_clause_values_that_can_never_match_load_with_one_warning_each(
    op: str, values: list[Any], problem: str
) -> None:
    good = "2.0.0" if op.startswith("sem") else "x" if op in ("startsWith", "contains") else 0
    seg = segment("s", rules=[rule(), rule(clause("a", "in", [1]), clause("a", op, [good, *values]))])
    for lenient in (False, True):
        warnings = compile_one(seg, lenient=lenient).warnings
        [line] = [str(w) for w in warnings]
        assert line.startswith(f'segment "s" rule 1 clause 1: {op}: {problem}')
        assert line.endswith("; it never matches")
        assert (warnings[0].rule_index, warnings[0].clause_index) == (1, 1)


def test_the_warning_line_is_exactly_the_documented_one() -> None:
    seg = segment(
        "vip", rules=[rule(clause("plan", "in", ["pro"]), clause("version", "semVerLessThan", ["v2.0.0"]))]
    )
    assert [str(w) for w in compile_one(seg).warnings] == [
        "segment \"vip\" rule 0 clause 1: semVerLessThan: 'v2.0.0' is not a valid semantic version; "
        "it never matches"
    ]


@pytest.mark.parametrize("negate", [False, True])
@pytest.mark.parametrize(
    ("op", "bad", "good", "hit", "miss"),
    [
        pytest.param("semVerLessThan", "v2.0.0", "3.0.0", "2.5.0", "3.5.0", id="semver"),
        pytest.param("before", "not-a-date", 1000, 999, 1001, id="date"),
        pytest.param("endsWith", 7, "@x.io", "a@x.io", "a@y.io", id="wrong-type"),
    ],
)
def test_a_never_matching_value_only_drops_itself_and_negate_applies_to_the_clause(
    op: str, bad: Any, good: Any, hit: Any, miss: Any, negate: bool
) -> None:
    only_bad = segment("s", rules=[rule(clause("a", op, [bad], negate=negate))])
    mixed = segment("s", rules=[rule(clause("a", op, [bad, good], negate=negate))])
    for value in (hit, miss):
        # Like LaunchDarkly: the bad value never matches, so the clause is "no match", then negated.
        assert is_member(only_bad, user("u1", a=value)) is negate
        assert ld_is_member("s", [only_bad], user("u1", a=value)) is negate
    assert is_member(mixed, user("u1", a=hit)) is not negate
    assert is_member(mixed, user("u1", a=miss)) is negate
    assert ld_is_member("s", [mixed], user("u1", a=hit)) is not negate
    # A missing attribute is no match even when negated.
    assert is_member(only_bad, user("u1")) is False


def test_segment_problems_and_lint_collect_every_error_and_warning() -> None:
    a = segment(
        "a",
        rules=[
            rule(clause("v", "semVerEqual", ["v1"]), clause("v", "isOneOf", ["x"])),
            rule(clause("e", "matches", ["(unclosed"]), clause("d", "after", ["soon"])),
        ],
    )
    b = segment("b", rules=[rule(clause("", "segmentMatch", ["nope"]))])
    errors, warnings = lint_segments([parse_segment(a), parse_segment(b)])
    assert len(errors) == 3
    assert str(errors[0]) == 'segment "b" rule 0 clause 0: segmentMatch refers to missing segment "nope"'
    assert [(e.segment_key, e.rule_index, e.clause_index) for e in errors[1:]] == [("a", 0, 1), ("a", 1, 0)]
    assert errors[1].detail.startswith('unknown operator "isOneOf"')
    assert errors[2].detail.startswith("matches: bad regex '(unclosed'")
    assert [(w.segment_key, w.rule_index, w.clause_index) for w in warnings] == [("a", 0, 0), ("a", 1, 1)]


# Arbitrary JSON, including numbers beyond float range, NaN and infinities that Python's json reads.
arbitrary_json = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(10**30), max_value=10**30),
        st.just(10**400),
        st.floats(),
        st.text(max_size=8),
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=8,
)
attribute_names = st.sampled_from(("a", "b", "email", "nested", "ünï", "/lit", "a~b", "x"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    family=segment_families(),
    ctx=single_contexts(),
    extra=st.dictionaries(attribute_names, arbitrary_json, max_size=4),
)
def test_evaluation_never_raises_on_arbitrary_attribute_values(
    family: list[dict[str, Any]], ctx: dict[str, Any], extra: dict[str, Any]
) -> None:
    compiled = compile_segments([parse_segment(s) for s in family], lenient=True)
    parsed = parse_context({**ctx, **extra})
    for seg in compiled.values():
        seg.matches(parsed)
        seg.explain(parsed)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), op=st.sampled_from(OPERATORS), value=present_values)
def test_negate_flips_the_result_for_a_present_attribute(data: st.DataObject, op: str, value: Any) -> None:
    values = data.draw(clause_values(op))
    plain = segment("s", rules=[rule(clause("a", op, values))])
    negated = segment("s", rules=[rule(clause("a", op, values, negate=True))])
    ctx = user("u1", a=value)
    assert is_member(plain, ctx, lenient=True) is not is_member(negated, ctx, lenient=True)


@settings(max_examples=100, deadline=None)
@given(
    value=arbitrary_json.filter(lambda v: v is not None), negate=st.booleans(), op=st.sampled_from(OPERATORS)
)
def test_missing_attribute_never_matches_negated_or_not(value: Any, negate: bool, op: str) -> None:
    seg = segment("s", rules=[rule(clause("a", op, [value], negate=negate))])
    assert is_member(seg, user("u1", b=value), lenient=True) is False
    assert is_member(seg, user("u1", a=None), lenient=True) is False


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seg=segments("s", ("t", "u")), clauses=st.lists(attribute_clauses(), max_size=2))
def test_segment_survives_a_json_round_trip(seg: dict[str, Any], clauses: list[dict[str, Any]]) -> None:
    seg = {**seg, "rules": [*seg["rules"], rule(*clauses)], "tags": ["imported"], "_links": {"self": "x"}}
    model = parse_segment(seg)
    assert parse_segment(json.loads(json.dumps(model.to_json()))) == model
    assert model.to_json()["tags"] == ["imported"]  # LaunchDarkly's extra fields are kept
