"""The rules builder's translation: a definition shown as form fields reads back as the same definition."""

from __future__ import annotations

from typing import Any

import pytest

from segmentflow.console.builder import (
    apply_edit,
    builder_view,
    definition_from_fields,
    format_value,
    parse_value,
)


def as_fields(definition: dict[str, Any]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """What a browser posts for the builder the template renders from `builder_view`."""
    view = builder_view(definition)
    one: dict[str, str] = {"rules-count": str(len(view.rules))}
    many: dict[str, list[str]] = {}
    for i, rule in enumerate(view.rules):
        one |= {
            f"rule-{i}-id": rule.id,
            f"rule-{i}-weight": rule.weight,
            f"rule-{i}-bucketBy": rule.bucket_by,
            f"rule-{i}-rolloutContextKind": rule.rollout_context_kind,
            f"rule-{i}-clauses-count": str(len(rule.clauses)),
        }
        for j, c in enumerate(rule.clauses):
            p = f"rule-{i}-clause-{j}"
            one |= {
                f"{p}-id": c.id,
                f"{p}-attribute": c.attribute,
                f"{p}-op": c.op,
                f"{p}-values": c.values,
                f"{p}-contextKind": c.context_kind,
            }
            if c.negate:
                one[f"{p}-negate"] = "on"
            many[f"{p}-segments"] = c.segments
    one |= {
        "included": view.included,
        "excluded": view.excluded,
        "includedContexts": view.included_contexts,
        "excludedContexts": view.excluded_contexts,
        "salt": view.salt,
    }
    return one, many


def round_trip(definition: dict[str, Any]) -> dict[str, Any]:
    one, many = as_fields(definition)
    return definition_from_fields(lambda n: one.get(n, ""), lambda n: many.get(n, []), definition)


FULL: dict[str, Any] = {
    "rules": [
        {
            "id": "r1",
            "clauses": [
                {"id": "c1", "attribute": "plan", "op": "in", "values": ["vip", "42", 42, True, 1.5, " pad"]},
                {
                    "attribute": "seats",
                    "op": "greaterThan",
                    "values": [10],
                    "negate": True,
                    "contextKind": "org",
                },
            ],
            "weight": 50000,
            "bucketBy": "email",
            "rolloutContextKind": "user",
        },
        {"clauses": [{"attribute": "", "op": "segmentMatch", "values": ["other", "another"]}]},
    ],
    "included": ["u1", "u2"],
    "excluded": ["u3"],
    "includedContexts": [{"contextKind": "org", "values": ["o1", "o2"]}],
    "excludedContexts": [{"contextKind": "device", "values": ["d1"]}],
    "salt": "pepper",
    "unbounded": False,
}


def test_builder_fields_read_back_as_the_same_definition() -> None:
    assert round_trip(FULL) == FULL


def test_an_empty_definition_round_trips() -> None:
    empty = {"rules": [], "included": [], "excluded": [], "includedContexts": [], "excludedContexts": []}
    assert round_trip(empty) == empty


@pytest.mark.parametrize("value", ["vip", "42", 42, "true", True, 1.5, '"quoted"', " padded", "[1]"])
def test_a_value_keeps_its_type_through_its_line(value: Any) -> None:
    assert parse_value(format_value(value)) == value
    assert type(parse_value(format_value(value))) is type(value)


def test_a_line_that_is_not_a_json_scalar_is_a_string() -> None:
    assert parse_value("gold tier") == "gold tier"
    assert parse_value("[1, 2]") == "[1, 2]"
    assert parse_value("{}") == "{}"


def test_edits_add_and_remove_rules_and_clauses() -> None:
    one_rule = apply_edit({"rules": []}, "add-rule")
    assert one_rule["rules"] == [{"clauses": [{"attribute": "", "op": "in", "values": []}]}]
    two_clauses = apply_edit(one_rule, "add-clause:0")
    assert len(two_clauses["rules"][0]["clauses"]) == 2
    assert len(apply_edit(two_clauses, "remove-clause:0:1")["rules"][0]["clauses"]) == 1
    assert apply_edit(two_clauses, "remove-rule:0")["rules"] == []


@pytest.mark.parametrize(
    "edit", ["remove-rule:5", "add-clause:9", "remove-clause:0:7", "nonsense", "add-rule:x"]
)
def test_an_edit_out_of_range_changes_nothing(edit: str) -> None:
    definition = {"rules": [{"clauses": [{"attribute": "a", "op": "in", "values": [1]}]}]}
    assert apply_edit(definition, edit) == definition
