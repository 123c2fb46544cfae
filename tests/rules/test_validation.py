"""Segments refused when they load (with messages naming segment, rule, clause and the problem), and
properties of every segment that does load: evaluation never raises, negation flips a present attribute,
and the JSON round trip is lossless."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segmentflow.rules import CycleError, RuleError, compile_segments, parse_context, parse_segment
from tests.factories import clause, compile_one, is_member, rule, segment, user
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


def test_non_string_regex_is_refused() -> None:
    assert "regex 1 is not a string" in refusal(segment("s", rules=[rule(clause("a", "matches", [1]))]))


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
        pytest.param("after", [True], "True is not a valid date", id="bool-date"),
        pytest.param("semVerEqual", ["v2"], "'v2' is not a valid semantic version", id="v-prefixed-version"),
        pytest.param(
            "semVerLessThan", ["02.0.0"], "'02.0.0' is not a valid semantic version", id="leading-zero"
        ),
        pytest.param("semVerGreaterThan", [2], "2 is not a valid semantic version", id="number-version"),
    ],
)
def test_strict_mode_refuses_clause_values_that_can_never_match(
    op: str, values: list[Any], problem: str
) -> None:
    seg = segment("s", rules=[rule(clause("a", op, ["2.0.0" if op.startswith("sem") else 0, *values]))])
    message = refusal(seg)
    assert message.startswith(f'segment "s" rule 0 clause 0: {op}: ')
    assert problem in message
    compile_one(seg, lenient=True)  # LaunchDarkly just skips such a value


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
