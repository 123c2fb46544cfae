"""Contexts: valid JSON, fully-qualified keys and JSON round trips, each checked with LaunchDarkly's SDK."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from ldclient import Context as LDContext

from segmentflow.rules import ContextError, parse_context
from tests.factories import context, multi, user
from tests.rules.strategies import contexts

INVALID = [
    pytest.param({"kind": "user"}, id="missing-key"),
    pytest.param({"kind": "user", "key": ""}, id="empty-key"),
    pytest.param({"kind": "user", "key": None}, id="null-key"),
    pytest.param({"kind": "user", "key": 1}, id="number-key"),
    pytest.param({"kind": "user", "key": "a", "name": 1}, id="non-string-name"),
    pytest.param({"kind": "user", "key": "a", "anonymous": "yes"}, id="non-bool-anonymous"),
    pytest.param({"kind": "user", "key": "a", "anonymous": None}, id="null-anonymous"),
    pytest.param({"kind": "kind", "key": "a"}, id="kind-named-kind"),
    pytest.param({"kind": "", "key": "a"}, id="empty-kind"),
    pytest.param({"kind": "a b", "key": "a"}, id="kind-with-space"),
    pytest.param({"kind": "ключ", "key": "a"}, id="kind-non-ascii"),
    pytest.param({"kind": 1, "key": "a"}, id="non-string-kind"),
    pytest.param({"kind": "multi"}, id="multi-with-no-kinds"),
    pytest.param({"kind": "multi", "key": "a"}, id="multi-with-non-object-part"),
    pytest.param({"kind": "multi", "multi": {"key": "a"}}, id="multi-inside-multi"),
    pytest.param({"kind": "multi", "user": {"key": "a"}, "org": {"key": ""}}, id="multi-with-invalid-part"),
    pytest.param(
        {"kind": "multi", "org": {"key": "a", "kind": "user"}, "user": {"key": "b"}},
        id="multi-with-duplicate-kind",
    ),
    pytest.param({"kind": "user", "key": "a", "_meta": "x"}, id="meta-not-object"),
    pytest.param({"kind": "user", "key": "a", "_meta": {"privateAttributes": "a"}}, id="private-not-list"),
    pytest.param({"kind": "user", "key": "a", "_meta": {"privateAttributes": [1]}}, id="private-not-strings"),
    pytest.param({"kind": "user", "key": "a", "": 1}, id="empty-attribute-name"),
]

VALID = [
    pytest.param({"kind": "user", "key": "a"}, id="user"),
    pytest.param({"kind": "org_1.x-Y", "key": "a"}, id="kind-with-allowed-punctuation"),
    pytest.param({"kind": "user", "key": "a", "name": None}, id="null-name"),
    pytest.param({"kind": "user", "key": "a", "_meta": None}, id="null-meta"),
    pytest.param({"kind": "user", "key": "a", "_meta": {}}, id="empty-meta"),
    pytest.param(
        {"kind": "user", "key": "a", "_meta": {"privateAttributes": ["email", "/a/b"]}},
        id="private-attributes",
    ),
    pytest.param({"kind": "user", "key": "a", "attr": None}, id="null-attribute"),
    pytest.param({"kind": "multi", "org": {"key": "o"}}, id="multi-of-one"),
    pytest.param(
        {"kind": "multi", "org": {"key": "o", "kind": "device"}, "user": {"key": "u"}},
        id="multi-part-kind-overridden",
    ),
]


@pytest.mark.parametrize("data", INVALID)
def test_invalid_context_is_refused_as_launchdarkly_refuses_it(data: dict[str, Any]) -> None:
    assert not LDContext.from_dict(data).valid
    with pytest.raises(ContextError):
        parse_context(data)


@pytest.mark.parametrize("data", VALID)
def test_valid_context_is_accepted_as_launchdarkly_accepts_it(data: dict[str, Any]) -> None:
    ld = LDContext.from_dict(data)
    assert ld.valid, ld.error
    ours = parse_context(data)
    assert ours.fully_qualified_key == ld.fully_qualified_key
    assert ours.to_dict() == ld.to_dict()


def test_non_object_context_is_refused() -> None:
    with pytest.raises(ContextError, match="JSON object"):
        parse_context(["user", "u1"])


def test_multi_kind_error_lists_every_invalid_part() -> None:
    with pytest.raises(ContextError) as info:
        parse_context({"kind": "multi", "a": {"key": ""}, "b": {"key": "k", "name": 2}})
    assert "key must not be empty" in str(info.value)
    assert 'invalid data type for "name"' in str(info.value)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(user("u1"), "u1", id="user-is-bare-key"),
        pytest.param(user("a:b%"), "a:b%", id="user-key-is-not-escaped"),
        pytest.param(context("organization", "o1"), "organization:o1", id="other-kind-is-prefixed"),
        pytest.param(context("org", "x:y%z"), "org:x%3Ay%25z", id="colon-and-percent-are-escaped"),
        pytest.param(
            multi(user("u:1"), context("org", "o%1")),
            "org:o%251:user:u%3A1",
            id="multi-sorted-by-kind-and-joined",
        ),
        pytest.param(
            multi(context("b", "2"), context("a", "1"), user("u")),
            "a:1:b:2:user:u",
            id="multi-user-kind-is-prefixed-too",
        ),
        pytest.param(multi(context("org", "o1")), "org:o1", id="multi-of-one-is-single"),
    ],
)
def test_fully_qualified_key_matches_launchdarkly(data: dict[str, Any], expected: str) -> None:
    assert parse_context(data).fully_qualified_key == expected
    assert LDContext.from_dict(data).fully_qualified_key == expected


def test_legacy_user_without_kind_reads_custom_and_builtin_attributes() -> None:
    ctx = parse_context(
        {
            "key": "u1",
            "email": "a@b.c",
            "custom": {"plan": "pro", "n": None},
            "privateAttributeNames": ["email"],
        }
    )
    assert ctx.kinds == ("user",)
    assert ctx.by_kind["user"]["plan"] == "pro"
    assert ctx.by_kind["user"]["email"] == "a@b.c"
    assert "n" not in ctx.by_kind["user"]
    assert ctx.to_dict() == {
        "kind": "user",
        "key": "u1",
        "email": "a@b.c",
        "plan": "pro",
        "_meta": {"privateAttributes": ["email"]},
    }


def test_legacy_user_may_have_an_empty_key_but_not_a_non_string_one() -> None:
    assert parse_context({"key": ""}).fully_qualified_key == ""
    with pytest.raises(ContextError):
        parse_context({"key": 1})
    with pytest.raises(ContextError):
        parse_context({"name": "no key"})


def test_anonymous_and_name_are_attributes_only_when_meaningful() -> None:
    attrs = parse_context(user("u1")).by_kind["user"]
    assert attrs["anonymous"] is False
    assert "name" not in attrs
    assert parse_context(user("u1", name="Ann", anonymous=True)).by_kind["user"]["name"] == "Ann"


@settings(max_examples=200, deadline=None)
@given(data=contexts())
def test_context_round_trips_and_agrees_with_launchdarkly(data: dict[str, Any]) -> None:
    ctx = parse_context(data)
    ld = LDContext.from_dict(data)
    assert ld.valid
    assert ctx.fully_qualified_key == ld.fully_qualified_key
    assert ctx.to_dict() == ld.to_dict()
    assert parse_context(ctx.to_dict()) == ctx
