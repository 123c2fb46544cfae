"""Segment membership: target precedence, clause kinds, weighted rules and explanations, each answer also
asked of LaunchDarkly's SDK."""

from __future__ import annotations

from typing import Any

from segmentflow.rules import compile_segments, explain, matches, memberships, parse_context, parse_segment
from tests.factories import clause, context, is_member, multi, rule, segment, target, user
from tests.rules.launchdarkly import ld_is_member


def member(seg: dict[str, Any], ctx: dict[str, Any], *others: dict[str, Any]) -> bool:
    """Our answer, after checking that LaunchDarkly gives the same one."""
    ours = is_member(seg, ctx, *others, lenient=True)
    assert ld_is_member(seg["key"], [seg, *others], ctx) is ours, "LaunchDarkly disagrees"
    return ours


PLAN_RULE = rule(clause("plan", "in", ["pro"]))


def test_included_user_key_beats_excluded_and_rules() -> None:
    seg = segment("s", included=["u1"], excluded=["u1"])
    assert member(seg, user("u1")) is True


def test_excluded_target_beats_matching_rule() -> None:
    seg = segment("s", excluded=["u1"], rules=[PLAN_RULE])
    assert member(seg, user("u1", plan="pro")) is False
    assert member(seg, user("u2", plan="pro")) is True


def test_included_contexts_beat_excluded_user_key() -> None:
    seg = segment("s", excluded=["k"], included_contexts=[target("org", "o1")])
    assert member(seg, multi(user("k"), context("org", "o1"))) is True


def test_included_and_excluded_lists_are_for_the_user_kind_only() -> None:
    seg = segment(
        "s", included=["k"], excluded=["x"], rules=[rule(clause("plan", "in", ["pro"], kind="org"))]
    )
    assert member(seg, context("org", "k")) is False
    assert member(seg, context("org", "x", plan="pro")) is True


def test_context_targets_match_only_their_kind() -> None:
    seg = segment(
        "s",
        included_contexts=[target("org", "o1")],
        excluded_contexts=[target("device", "d1")],
        rules=[rule()],
    )
    assert member(seg, context("org", "o1")) is True
    assert member(seg, context("device", "o1")) is True  # by the rule, not the target
    assert member(seg, context("device", "d1")) is False
    assert member(seg, multi(context("device", "d1"), context("org", "o1"))) is True  # included first


def test_target_without_context_kind_is_for_users() -> None:
    seg = segment("s", included_contexts=[{"values": ["u1"]}])
    assert member(seg, user("u1")) is True
    assert member(seg, context("org", "u1")) is False


def test_rule_without_clauses_matches_every_context() -> None:
    seg = segment("s", rules=[rule()])
    assert member(seg, user("u1")) is True
    assert member(seg, context("org", "o")) is True


def test_clause_on_a_kind_the_context_lacks_is_false_even_negated() -> None:
    seg = segment("s", rules=[rule(clause("plan", "in", ["pro"], negate=True, kind="org"))])
    assert member(seg, user("u1", plan="free")) is False
    assert member(seg, context("org", "o1", plan="free")) is True


def test_clause_kind_picks_that_part_of_a_multi_kind_context() -> None:
    seg = segment("s", rules=[rule(clause("key", "in", ["b"], kind="other"))])
    assert member(seg, multi(user("a"), context("other", "b"))) is True
    assert member(seg, multi(user("b"), context("other", "a"))) is False


def test_nested_attribute_path_reads_objects_not_arrays() -> None:
    seg = segment("s", rules=[rule(clause("/address/city", "in", ["Oslo"], kind="user"))])
    assert member(seg, user("u1", address={"city": "Oslo"})) is True
    assert member(seg, user("u1", address=[{"city": "Oslo"}])) is False
    by_index = segment("t", rules=[rule(clause("/tags/0", "in", ["x"], kind="user"))])
    assert member(by_index, user("u1", tags=["x"])) is False


def test_segment_match_is_true_when_any_listed_segment_matches() -> None:
    a = segment("a", included=["u1"])
    b = segment("b", included=["u2"])
    either = segment("either", rules=[rule(clause("", "segmentMatch", ["a", "b"]))])
    assert member(either, user("u2"), a, b) is True
    assert member(either, user("u3"), a, b) is False


def test_diamond_references_are_not_a_cycle() -> None:
    base = segment("base", rules=[PLAN_RULE])
    left = segment("left", rules=[rule(clause("", "segmentMatch", ["base"]))])
    right = segment("right", rules=[rule(clause("", "segmentMatch", ["base"]))])
    top = segment(
        "top", rules=[rule(clause("", "segmentMatch", ["left"]), clause("", "segmentMatch", ["right"]))]
    )
    assert member(top, user("u1", plan="pro"), left, right, base) is True


def test_weight_keeps_contexts_whose_bucket_is_below_it() -> None:
    # LaunchDarkly's harness: segment3.salty.user-key buckets at 14950, unmatching-key at 36563.
    seg = segment("segment3", salt="salty", rules=[rule(weight=14955)])
    assert member(seg, user("user-key")) is True
    assert member(seg, user("unmatching-key")) is False


def test_zero_weight_excludes_and_full_weight_includes() -> None:
    assert member(segment("s", rules=[rule(weight=0)]), user("u1")) is False
    assert member(segment("s", rules=[rule(weight=100000)]), user("u1")) is True


def test_bucket_by_integer_attribute_buckets_like_its_string() -> None:
    by_int = segment("s", salt="x", rules=[rule(weight=30000, bucket_by="n")])
    by_key = segment("s", salt="x", rules=[rule(weight=30000)])
    for n in range(20):
        assert member(by_int, user("u", n=n)) is member(by_key, user(str(n)))


def test_unbucketable_value_buckets_to_zero() -> None:
    seg = segment("s", rules=[rule(weight=1, bucket_by="v")])
    for value in (1.5, True, ["a"], {"a": 1}, None):
        assert member(seg, user("u1", v=value)) is True


def test_rollout_kind_the_context_lacks_keeps_it() -> None:
    # LaunchDarkly's Python SDK buckets a missing kind at -1, which is below any weight.
    seg = segment("s", rules=[rule(weight=0, rollout_kind="org")])
    assert member(seg, user("u1")) is True
    assert member(seg, context("org", "o1")) is False


def test_explain_reports_the_deciding_target_or_rule() -> None:
    compiled = compile_segments(
        [
            parse_segment(
                segment("s", excluded_contexts=[target("org", "o1")], rules=[PLAN_RULE, rule(id="all")])
            )
        ]
    )["s"]
    excluded = explain(compiled, parse_context(multi(user("u1"), context("org", "o1"))))
    assert (excluded.is_member, excluded.reason, excluded.context_kind) == (False, "excluded", "org")
    by_rule = explain(compiled, parse_context(user("u1")))
    assert (by_rule.is_member, by_rule.reason, by_rule.rule_index, by_rule.rule_id) == (
        True,
        "rule",
        1,
        "all",
    )


def test_memberships_lists_every_matching_segment_sorted() -> None:
    compiled = compile_segments(
        [
            parse_segment(s)
            for s in (
                segment("zeta", rules=[rule()]),
                segment("alpha", included=["u1"]),
                segment("mid", excluded=["u1"]),
            )
        ]
    )
    ctx = parse_context(user("u1"))
    assert memberships(compiled, ctx) == ["alpha", "zeta"]
    assert matches(compiled["mid"], ctx) is False
