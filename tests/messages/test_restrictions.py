"""The pure restriction policy: every rule of "Restricted to segments", item by item and indexed."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from segmentflow.policies.restrictions import RestrictionIndex, Withheld, decide

EXISTING = frozenset({"vip", "eu", "beta"})


@dataclass(frozen=True)
class Item:
    key: str
    restricted_to_segments: tuple[str, ...] = ()


@pytest.mark.parametrize(
    ("restricted_to", "segments", "allowed", "reason"),
    [
        ((), None, True, None),  # empty list: everyone, anonymous included
        ((), frozenset(), True, None),
        (("vip",), frozenset({"vip"}), True, None),
        (("vip", "eu"), frozenset({"eu"}), True, None),  # one listed segment is enough
        (("vip", "eu"), frozenset({"beta"}), False, "not-in-segments"),
        (("vip",), frozenset(), False, "not-in-segments"),  # unknown contact: in no segment
        (("vip",), None, False, "anonymous"),
        (("gone",), frozenset({"gone"}), False, "unknown-segment"),  # fails closed, even for a "member"
        (("vip", "gone"), frozenset({"vip"}), False, "unknown-segment"),
        (("gone",), None, False, "unknown-segment"),
    ],
)
def test_decide_follows_each_rule(
    restricted_to: tuple[str, ...], segments: frozenset[str] | None, allowed: bool, reason: str | None
) -> None:
    decision = decide("a", restricted_to, segments, EXISTING)
    assert (decision.allowed, decision.reason) == (allowed, reason)
    if not allowed:
        assert '"a"' in decision.detail


def test_unknown_segment_refusal_names_the_missing_segments() -> None:
    decision = decide("refund", ("vip", "gone", "lost"), frozenset({"vip"}), EXISTING)
    assert decision.detail == '"refund" is restricted to segments that no longer exist: gone, lost'


def test_index_keeps_order_and_withholds_items_naming_missing_segments() -> None:
    items = [
        Item("a"),
        Item("b", ("vip",)),
        Item("c", ("eu", "vip")),
        Item("d", ("gone",)),
        Item("e", ("vip", "gone")),
        Item("f"),
    ]
    index = RestrictionIndex(items, EXISTING)
    assert [i.key for i in index.applicable(None)] == ["a", "f"]
    assert [i.key for i in index.applicable(frozenset())] == ["a", "f"]
    assert [i.key for i in index.applicable(frozenset({"vip"}))] == ["a", "b", "c", "f"]
    assert [i.key for i in index.applicable(frozenset({"eu", "gone"}))] == ["a", "c", "f"]
    assert index.withheld == (Withheld("d", ("gone",)), Withheld("e", ("gone",)))


segment_keys = st.sampled_from(["vip", "eu", "beta", "gone"])


@given(
    restrictions=st.lists(st.lists(segment_keys, max_size=3), max_size=30),
    segments=st.none() | st.frozensets(segment_keys),
)
def test_index_agrees_with_decide_item_by_item(
    restrictions: list[list[str]], segments: frozenset[str] | None
) -> None:
    items = [Item(f"i{n}", tuple(r)) for n, r in enumerate(restrictions)]
    index = RestrictionIndex(items, EXISTING)
    expected = [i for i in items if decide(i.key, i.restricted_to_segments, segments, EXISTING).allowed]
    assert index.applicable(segments) == expected


def test_index_of_many_items_matches_a_naive_filter() -> None:
    rng = random.Random(7)
    existing = frozenset(f"s{n}" for n in range(100))
    items = [Item(f"i{n}", tuple(rng.sample(sorted(existing), rng.randint(0, 3)))) for n in range(1000)]
    member_of = frozenset(rng.sample(sorted(existing), 50))
    naive = [i for i in items if not i.restricted_to_segments or set(i.restricted_to_segments) & member_of]
    assert RestrictionIndex(items, existing).applicable(member_of) == naive
