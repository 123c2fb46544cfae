"""Pure. LaunchDarkly's semantic-patch instructions for segments, applied to the rules model.

Instructions are frozen pydantic models in LaunchDarkly's wire shape (`kind` picks the type; unknown fields
are refused). `apply_patch(segment, instructions, new_id=...)` returns the patched segment or raises a
`PatchError` naming the instruction's index, its kind and what is wrong. Settled:
- rules and clauses are addressed by their `id`; `with_ids` gives one (from `new_id`) to every rule and
  clause without, which the API does on every save, so a segment saved there can always be patched;
- targets of kind `user` live in `included`/`excluded` (LaunchDarkly's user lists; user entries of the
  `*Contexts` lists are read and removed too), other kinds in `includedContexts`/`excludedContexts`;
- adding a target or clause value already there changes nothing; removing one that is not there, or naming
  a rule or clause that does not exist, is refused; so is a key both included and excluded for one kind;
- clause values are compared as JSON values (`1` is not `true`);
- `validate`, when given, sees the segment after each instruction, so that a refusal by the rules engine
  (unknown operator, bad regex, `segmentMatch` cycle) names the instruction that caused it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from segmentflow.rules.context import DEFAULT_KIND
from segmentflow.rules.errors import RuleError
from segmentflow.rules.model import Clause, Segment, parse_segment

__all__ = [
    "AddClauses",
    "AddExcludedTargets",
    "AddIncludedTargets",
    "AddRule",
    "AddValuesToClause",
    "Instruction",
    "PatchError",
    "RemoveClauses",
    "RemoveExcludedTargets",
    "RemoveIncludedTargets",
    "RemoveRule",
    "RemoveValuesFromClause",
    "ReorderRules",
    "UpdateClause",
    "UpdateDescription",
    "UpdateName",
    "apply_patch",
    "with_ids",
]

Json = dict[str, Any]
NewId = Callable[[], str]
_TEXT = r"^[^\x00]*$"  # names and descriptions are stored as text, which cannot hold NUL


class PatchError(ValueError):
    """An instruction that cannot be applied: names its index in the list, its kind and the problem."""

    def __init__(self, index: int, kind: str, detail: str) -> None:
        self.index = index
        self.kind = kind
        self.detail = detail
        super().__init__(f"instruction {index} ({kind}): {detail}")


class _Refused(Exception):
    """Raised inside one instruction; `apply_patch` adds the index."""


class _Instruction(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, populate_by_name=True)


class _RuleRef(_Instruction):
    rule_id: str = Field(alias="ruleId", min_length=1)


class _ClauseRef(_RuleRef):
    clause_id: str = Field(alias="clauseId", min_length=1)


class _Targets(_Instruction):
    context_kind: str = Field(alias="contextKind", min_length=1)
    values: list[str] = Field(min_length=1)


class AddRule(_Instruction):
    kind: Literal["addRule"]
    clauses: list[Clause]
    before_rule_id: str | None = Field(default=None, alias="beforeRuleId")
    description: str | None = None
    rollout_weight: int | None = Field(default=None, alias="rolloutWeight", ge=0, le=100000)
    rollout_bucket_by: str | None = Field(default=None, alias="rolloutBucketBy")
    rollout_context_kind: str | None = Field(default=None, alias="rolloutContextKind")


class RemoveRule(_RuleRef):
    kind: Literal["removeRule"]


class ReorderRules(_Instruction):
    kind: Literal["reorderRules"]
    rule_ids: list[str] = Field(alias="ruleIds")


class AddClauses(_RuleRef):
    kind: Literal["addClauses"]
    clauses: list[Clause] = Field(min_length=1)


class RemoveClauses(_RuleRef):
    kind: Literal["removeClauses"]
    clause_ids: list[str] = Field(alias="clauseIds", min_length=1)


class UpdateClause(_ClauseRef):
    kind: Literal["updateClause"]
    clause: Clause


class AddValuesToClause(_ClauseRef):
    kind: Literal["addValuesToClause"]
    values: list[Any] = Field(min_length=1)


class RemoveValuesFromClause(_ClauseRef):
    kind: Literal["removeValuesFromClause"]
    values: list[Any] = Field(min_length=1)


class AddIncludedTargets(_Targets):
    kind: Literal["addIncludedTargets"]


class RemoveIncludedTargets(_Targets):
    kind: Literal["removeIncludedTargets"]


class AddExcludedTargets(_Targets):
    kind: Literal["addExcludedTargets"]


class RemoveExcludedTargets(_Targets):
    kind: Literal["removeExcludedTargets"]


class UpdateName(_Instruction):
    kind: Literal["updateName"]
    value: str = Field(min_length=1, max_length=512, pattern=_TEXT)


class UpdateDescription(_Instruction):
    kind: Literal["updateDescription"]
    value: str | None = Field(default=None, pattern=_TEXT)


Instruction = Annotated[
    AddRule
    | RemoveRule
    | ReorderRules
    | AddClauses
    | RemoveClauses
    | UpdateClause
    | AddValuesToClause
    | RemoveValuesFromClause
    | AddIncludedTargets
    | RemoveIncludedTargets
    | AddExcludedTargets
    | RemoveExcludedTargets
    | UpdateName
    | UpdateDescription,
    Field(discriminator="kind"),
]


def _value_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _with_clause_id(clause: Json, new_id: NewId) -> Json:
    return clause if clause.get("id") else {**clause, "id": new_id()}


def with_ids(segment: Segment, new_id: NewId) -> Segment:
    """The segment with an `id` on every rule and clause (existing ids kept)."""
    data = segment.to_json()
    changed = False
    for rule in data.get("rules", []):
        if not rule.get("id"):
            rule["id"] = new_id()
            changed = True
        for i, clause in enumerate(rule.get("clauses", [])):
            if not clause.get("id"):
                rule["clauses"][i] = _with_clause_id(clause, new_id)
                changed = True
    return parse_segment(data) if changed else segment


def _rule(data: Json, rule_id: str) -> Json:
    for rule in data.get("rules", []):
        if rule.get("id") == rule_id:
            return rule  # type: ignore[no-any-return]
    raise _Refused(f'no rule has id "{rule_id}"')


def _clause_index(rule: Json, clause_id: str) -> int:
    for i, clause in enumerate(rule.get("clauses", [])):
        if clause.get("id") == clause_id:
            return i
    raise _Refused(f'rule "{rule["id"]}" has no clause with id "{clause_id}"')


def _new_clauses(rule: Json, clauses: Sequence[Clause], new_id: NewId) -> list[Json]:
    taken = {c.get("id") for c in rule.get("clauses", [])}
    out = []
    for clause in clauses:
        item = _with_clause_id(clause.to_json(), new_id)
        if item["id"] in taken:
            raise _Refused(f'rule "{rule.get("id")}" already has a clause with id "{item["id"]}"')
        taken.add(item["id"])
        out.append(item)
    return out


def _add_rule(data: Json, ins: AddRule, new_id: NewId) -> None:
    rule: Json = {"id": new_id(), "clauses": []}
    rule["clauses"] = _new_clauses(rule, ins.clauses, new_id)
    if ins.description is not None:
        rule["description"] = ins.description
    if ins.rollout_weight is not None:
        rule["weight"] = ins.rollout_weight
    if ins.rollout_bucket_by is not None:
        rule["bucketBy"] = ins.rollout_bucket_by
    if ins.rollout_context_kind is not None:
        rule["rolloutContextKind"] = ins.rollout_context_kind
    rules = data.setdefault("rules", [])
    at = len(rules)
    if ins.before_rule_id is not None:
        at = rules.index(_rule(data, ins.before_rule_id))
    rules.insert(at, rule)


def _remove_rule(data: Json, ins: RemoveRule, new_id: NewId) -> None:
    data["rules"].remove(_rule(data, ins.rule_id))


def _reorder_rules(data: Json, ins: ReorderRules, new_id: NewId) -> None:
    rules = data.get("rules", [])
    current = [r.get("id") for r in rules]
    if len(set(ins.rule_ids)) != len(ins.rule_ids) or sorted(ins.rule_ids) != sorted(map(str, current)):
        raise _Refused(
            "ruleIds must list every rule id exactly once (current: " + ", ".join(map(str, current)) + ")"
        )
    data["rules"] = [_rule(data, rule_id) for rule_id in ins.rule_ids]


def _add_clauses(data: Json, ins: AddClauses, new_id: NewId) -> None:
    rule = _rule(data, ins.rule_id)
    rule.setdefault("clauses", []).extend(_new_clauses(rule, ins.clauses, new_id))


def _remove_clauses(data: Json, ins: RemoveClauses, new_id: NewId) -> None:
    rule = _rule(data, ins.rule_id)
    drop = {_clause_index(rule, clause_id) for clause_id in ins.clause_ids}
    rule["clauses"] = [c for i, c in enumerate(rule["clauses"]) if i not in drop]


def _update_clause(data: Json, ins: UpdateClause, new_id: NewId) -> None:
    rule = _rule(data, ins.rule_id)
    rule["clauses"][_clause_index(rule, ins.clause_id)] = {**ins.clause.to_json(), "id": ins.clause_id}


def _add_values(data: Json, ins: AddValuesToClause, new_id: NewId) -> None:
    rule = _rule(data, ins.rule_id)
    clause = rule["clauses"][_clause_index(rule, ins.clause_id)]
    seen = {_value_key(v) for v in clause["values"]}
    for value in ins.values:
        if _value_key(value) not in seen:
            seen.add(_value_key(value))
            clause["values"].append(value)


def _remove_values(data: Json, ins: RemoveValuesFromClause, new_id: NewId) -> None:
    rule = _rule(data, ins.rule_id)
    clause = rule["clauses"][_clause_index(rule, ins.clause_id)]
    present = {_value_key(v) for v in clause["values"]}
    for value in ins.values:
        if _value_key(value) not in present:
            raise _Refused(f"clause {ins.clause_id!r} has no value {json.dumps(value)}")
    drop = {_value_key(v) for v in ins.values}
    clause["values"] = [v for v in clause["values"] if _value_key(v) not in drop]


def _target_keys(data: Json, side: str, kind: str) -> set[str]:
    keys: set[str] = set(data.get(side, [])) if kind == DEFAULT_KIND else set()
    for entry in data.get(f"{side}Contexts", []):
        if (entry.get("contextKind") or DEFAULT_KIND) == kind:
            keys.update(entry.get("values", []))
    return keys


def _add_targets(data: Json, side: str, ins: _Targets) -> None:
    kind = ins.context_kind
    present = _target_keys(data, side, kind)
    new = [v for v in dict.fromkeys(ins.values) if v not in present]
    if kind == DEFAULT_KIND:
        data.setdefault(side, []).extend(new)
    else:
        entries = data.setdefault(f"{side}Contexts", [])
        entry = next((e for e in entries if e.get("contextKind") == kind), None)
        if entry is None:
            entries.append({"contextKind": kind, "values": new})
        else:
            entry["values"].extend(new)
    other = "excluded" if side == "included" else "included"
    both = sorted(_target_keys(data, side, kind) & _target_keys(data, other, kind))
    if both:
        raise _Refused(f'"{both[0]}" would be both included and excluded for context kind "{kind}"')


def _remove_targets(data: Json, side: str, ins: _Targets) -> None:
    kind = ins.context_kind
    present = _target_keys(data, side, kind)
    missing = [v for v in ins.values if v not in present]
    if missing:
        raise _Refused(f'"{missing[0]}" is not {side} for context kind "{kind}"')
    drop = set(ins.values)
    if kind == DEFAULT_KIND:
        data[side] = [v for v in data.get(side, []) if v not in drop]
    entries = []
    for entry in data.get(f"{side}Contexts", []):
        if (entry.get("contextKind") or DEFAULT_KIND) == kind:
            entry = {**entry, "values": [v for v in entry["values"] if v not in drop]}
            if not entry["values"]:
                continue
        entries.append(entry)
    data[f"{side}Contexts"] = entries


def _apply(data: Json, ins: Instruction, new_id: NewId) -> None:
    match ins:
        case AddRule():
            _add_rule(data, ins, new_id)
        case RemoveRule():
            _remove_rule(data, ins, new_id)
        case ReorderRules():
            _reorder_rules(data, ins, new_id)
        case AddClauses():
            _add_clauses(data, ins, new_id)
        case RemoveClauses():
            _remove_clauses(data, ins, new_id)
        case UpdateClause():
            _update_clause(data, ins, new_id)
        case AddValuesToClause():
            _add_values(data, ins, new_id)
        case RemoveValuesFromClause():
            _remove_values(data, ins, new_id)
        case AddIncludedTargets():
            _add_targets(data, "included", ins)
        case AddExcludedTargets():
            _add_targets(data, "excluded", ins)
        case RemoveIncludedTargets():
            _remove_targets(data, "included", ins)
        case RemoveExcludedTargets():
            _remove_targets(data, "excluded", ins)
        case UpdateName():
            data["name"] = ins.value
        case UpdateDescription():
            if ins.value:
                data["description"] = ins.value
            else:
                data.pop("description", None)


def apply_patch(
    segment: Segment,
    instructions: Sequence[Instruction],
    *,
    new_id: NewId,
    validate: Callable[[Segment], None] | None = None,
) -> Segment:
    """The segment after every instruction in order; the first one that cannot apply (or that `validate`
    refuses with a `RuleError`) raises `PatchError`. The input is never changed."""
    current = with_ids(segment, new_id)
    for index, instruction in enumerate(instructions):
        data = current.to_json()
        try:
            _apply(data, instruction, new_id)
            current = parse_segment(data)
            if validate is not None:
                validate(current)
        except (_Refused, RuleError) as exc:
            raise PatchError(index, instruction.kind, str(exc)) from None
    return current
