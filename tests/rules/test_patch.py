"""LaunchDarkly semantic-patch instructions applied to the rules model (pure: no database)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import count
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from segmentflow.rules import Segment, compile_segments, parse_segment
from segmentflow.rules.patch import Instruction, PatchError, apply_patch, with_ids

INSTRUCTIONS = TypeAdapter(list[Instruction])

BASE: dict[str, Any] = {
    "key": "vip",
    "name": "VIPs",
    "description": "big spenders",
    "included": ["u1"],
    "excluded": ["u9"],
    "includedContexts": [{"contextKind": "organization", "values": ["o1"]}],
    "rules": [
        {
            "id": "r1",
            "clauses": [
                {"id": "c1", "attribute": "plan", "op": "in", "values": ["vip", 1]},
                {"id": "c2", "attribute": "country", "op": "in", "values": ["DE"]},
            ],
        },
        {"id": "r2", "clauses": [{"id": "c3", "attribute": "ltv", "op": "greaterThan", "values": [1000]}]},
    ],
}


@pytest.fixture
def new_id() -> Callable[[], str]:
    ids: Iterator[int] = count(1)
    return lambda: f"new{next(ids)}"


def patch(instructions: list[dict[str, Any]], new_id: Callable[[], str], **kwargs: Any) -> dict[str, Any]:
    patched = apply_patch(
        parse_segment(BASE), INSTRUCTIONS.validate_python(instructions), new_id=new_id, **kwargs
    )
    return patched.to_json()


def refusal(instructions: list[dict[str, Any]], new_id: Callable[[], str]) -> PatchError:
    with pytest.raises(PatchError) as info:
        patch(instructions, new_id)
    return info.value


def test_add_rule_appends_with_fresh_ids_description_and_rollout(new_id: Callable[[], str]) -> None:
    out = patch(
        [
            {
                "kind": "addRule",
                "clauses": [{"attribute": "email", "op": "endsWith", "values": ["@x.com"]}],
                "description": "x staff",
                "rolloutWeight": 50000,
                "rolloutBucketBy": "email",
                "rolloutContextKind": "user",
            }
        ],
        new_id,
    )
    rule = out["rules"][2]
    assert rule["id"] == "new1" and rule["clauses"][0]["id"] == "new2"
    assert (rule["description"], rule["weight"], rule["bucketBy"], rule["rolloutContextKind"]) == (
        "x staff",
        50000,
        "email",
        "user",
    )


def test_add_rule_before_a_rule_inserts_there(new_id: Callable[[], str]) -> None:
    out = patch([{"kind": "addRule", "clauses": [], "beforeRuleId": "r2"}], new_id)
    assert [r["id"] for r in out["rules"]] == ["r1", "new1", "r2"]


def test_remove_and_reorder_rules(new_id: Callable[[], str]) -> None:
    assert [r["id"] for r in patch([{"kind": "removeRule", "ruleId": "r1"}], new_id)["rules"]] == ["r2"]
    reordered = patch([{"kind": "reorderRules", "ruleIds": ["r2", "r1"]}], new_id)
    assert [r["id"] for r in reordered["rules"]] == ["r2", "r1"]


def test_clauses_are_added_removed_and_updated_by_id(new_id: Callable[[], str]) -> None:
    out = patch(
        [
            {
                "kind": "addClauses",
                "ruleId": "r2",
                "clauses": [{"attribute": "age", "op": "lessThan", "values": [30]}],
            },
            {"kind": "removeClauses", "ruleId": "r1", "clauseIds": ["c1"]},
            {
                "kind": "updateClause",
                "ruleId": "r1",
                "clauseId": "c2",
                "clause": {"attribute": "country", "op": "in", "values": ["FR"], "negate": True},
            },
        ],
        new_id,
    )
    assert [c["id"] for c in out["rules"][1]["clauses"]] == ["c3", "new1"]
    assert out["rules"][0]["clauses"] == [
        {"id": "c2", "attribute": "country", "op": "in", "values": ["FR"], "negate": True}
    ]


def test_clause_values_are_added_once_and_removed_as_json_values(new_id: Callable[[], str]) -> None:
    out = patch(
        [
            {"kind": "addValuesToClause", "ruleId": "r1", "clauseId": "c1", "values": ["vip", True, "pro"]},
            {"kind": "removeValuesFromClause", "ruleId": "r1", "clauseId": "c1", "values": [1]},
        ],
        new_id,
    )
    assert out["rules"][0]["clauses"][0]["values"] == ["vip", True, "pro"]  # true is not 1


def test_user_targets_use_the_user_lists_and_other_kinds_the_context_lists(new_id: Callable[[], str]) -> None:
    out = patch(
        [
            {"kind": "addIncludedTargets", "contextKind": "user", "values": ["u2", "u1"]},
            {"kind": "addIncludedTargets", "contextKind": "organization", "values": ["o2"]},
            {"kind": "addExcludedTargets", "contextKind": "device", "values": ["d1"]},
            {"kind": "removeIncludedTargets", "contextKind": "organization", "values": ["o1"]},
            {"kind": "removeExcludedTargets", "contextKind": "user", "values": ["u9"]},
        ],
        new_id,
    )
    assert out["included"] == ["u1", "u2"]
    assert out["excluded"] == []
    assert out["includedContexts"] == [{"contextKind": "organization", "values": ["o2"]}]
    assert out["excludedContexts"] == [{"contextKind": "device", "values": ["d1"]}]


def test_name_and_description_are_updated_and_cleared(new_id: Callable[[], str]) -> None:
    out = patch(
        [{"kind": "updateName", "value": "Top"}, {"kind": "updateDescription", "value": None}], new_id
    )
    assert out["name"] == "Top" and "description" not in out


@pytest.mark.parametrize(
    ("instruction", "problem"),
    [
        ({"kind": "removeRule", "ruleId": "r7"}, 'no rule has id "r7"'),
        ({"kind": "addRule", "clauses": [], "beforeRuleId": "r7"}, 'no rule has id "r7"'),
        ({"kind": "reorderRules", "ruleIds": ["r1"]}, "every rule id exactly once"),
        ({"kind": "reorderRules", "ruleIds": ["r1", "r1"]}, "every rule id exactly once"),
        ({"kind": "removeClauses", "ruleId": "r1", "clauseIds": ["c9"]}, 'no clause with id "c9"'),
        (
            {"kind": "addClauses", "ruleId": "r1", "clauses": [{"id": "c2", "op": "in", "values": []}]},
            'already has a clause with id "c2"',
        ),
        (
            {"kind": "removeValuesFromClause", "ruleId": "r1", "clauseId": "c1", "values": ["x"]},
            'no value "x"',
        ),
        (
            {"kind": "addIncludedTargets", "contextKind": "user", "values": ["u9"]},
            "both included and excluded",
        ),
        ({"kind": "addExcludedTargets", "contextKind": "organization", "values": ["o1"]}, "both included"),
        ({"kind": "removeIncludedTargets", "contextKind": "user", "values": ["u5"]}, '"u5" is not included'),
    ],
)
def test_an_instruction_that_cannot_apply_names_its_index_and_problem(
    new_id: Callable[[], str], instruction: dict[str, Any], problem: str
) -> None:
    error = refusal([{"kind": "updateName", "value": "ok"}, instruction], new_id)
    assert error.index == 1 and error.kind == instruction["kind"]
    assert problem in str(error) and str(error).startswith(f"instruction 1 ({instruction['kind']}): ")


def test_the_input_segment_is_never_changed(new_id: Callable[[], str]) -> None:
    segment = parse_segment(BASE)
    before = segment.to_json()
    apply_patch(
        segment, INSTRUCTIONS.validate_python([{"kind": "removeRule", "ruleId": "r1"}]), new_id=new_id
    )
    assert segment.to_json() == before


def test_validate_sees_each_step_and_its_refusal_names_the_instruction(new_id: Callable[[], str]) -> None:
    def strict(segment: Segment) -> None:
        compile_segments([segment])

    instructions = [
        {"kind": "updateName", "value": "fine"},
        {"kind": "addRule", "clauses": [{"attribute": "email", "op": "matches", "values": ["("]}]},
    ]
    with pytest.raises(PatchError) as info:
        patch(instructions, new_id, validate=strict)
    assert info.value.index == 1 and "bad regex" in str(info.value)


def test_with_ids_fills_only_missing_ids(new_id: Callable[[], str]) -> None:
    segment = parse_segment(
        {
            "key": "s",
            "rules": [{"clauses": [{"op": "in", "attribute": "a", "values": [1]}]}, BASE["rules"][1]],
        }
    )
    out = with_ids(segment, new_id).to_json()
    assert out["rules"][0]["id"] == "new1" and out["rules"][0]["clauses"][0]["id"] == "new2"
    assert (out["rules"][1]["id"], out["rules"][1]["clauses"][0]["id"]) == ("r2", "c3")
    assert with_ids(parse_segment(BASE), new_id) == parse_segment(BASE)


@pytest.mark.parametrize(
    "instruction",
    [
        {"kind": "renameEverything"},
        {"kind": "removeRule"},
        {"kind": "removeRule", "ruleId": "r1", "extra": 1},
        {"kind": "addIncludedTargets", "contextKind": "user", "values": []},
        {"kind": "addRule", "clauses": [{"attribute": "a", "op": "in", "values": [1], "negate": "yes"}]},
        {"kind": "updateName", "value": ""},
    ],
)
def test_malformed_instructions_are_refused_when_parsed(instruction: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        INSTRUCTIONS.validate_python([instruction])
