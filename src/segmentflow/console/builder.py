"""Pure. The segment editor's rules builder: a stored `definition` object as form fields and back, and the
builder's edits (add or remove a rule or clause). The raw JSON tab holds the same object, so the two stay
in step by going through this one translation.

Clause values are one per line: a line that reads as a JSON number, boolean or quoted string is that
value (`42`, `true`, `"42"`); any other line is the string as typed. Values shown back are written the same
way, so a round trip keeps every type.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from segmentflow.rules.operators import OPERATORS

__all__ = [
    "DEFINITION_FIELDS",
    "OPERATOR_NAMES",
    "BuilderClause",
    "BuilderRule",
    "BuilderView",
    "apply_edit",
    "builder_view",
    "definition_from_fields",
    "format_value",
    "parse_value",
]

#: The `definition` object the API takes.
DEFINITION_FIELDS = ("rules", "included", "excluded", "includedContexts", "excludedContexts", "salt")
OPERATOR_NAMES = tuple(sorted(OPERATORS))
Get = Callable[[str], str]
GetAll = Callable[[str], Sequence[str]]


def parse_value(line: str) -> Any:
    try:
        value = json.loads(line)
    except ValueError:
        return line
    return value if isinstance(value, (str, int, float, bool)) else line


def format_value(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value) if parse_value(value) != value or value != value.strip() else value
    return json.dumps(value)


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _targets(text: str) -> list[dict[str, Any]]:
    """`kind: key1, key2` per line."""
    out: list[dict[str, Any]] = []
    for line in _lines(text):
        kind, _, keys = line.partition(":")
        values = [k.strip() for k in keys.split(",") if k.strip()]
        out.append({"contextKind": kind.strip(), "values": values})
    return out


def _format_targets(targets: Any) -> str:
    if not isinstance(targets, list):
        return ""
    return "\n".join(
        f"{t.get('contextKind') or 'user'}: {', '.join(str(v) for v in t.get('values') or [])}"
        for t in targets
        if isinstance(t, dict)
    )


@dataclass
class BuilderClause:
    id: str = ""
    attribute: str = ""
    op: str = "in"
    values: str = ""
    segments: list[str] = field(default_factory=list)
    negate: bool = False
    context_kind: str = ""


@dataclass
class BuilderRule:
    id: str = ""
    weight: str = ""
    bucket_by: str = ""
    rollout_context_kind: str = ""
    clauses: list[BuilderClause] = field(default_factory=list)


@dataclass
class BuilderView:
    rules: list[BuilderRule]
    included: str
    excluded: str
    included_contexts: str
    excluded_contexts: str
    salt: str


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def builder_view(definition: Mapping[str, Any]) -> BuilderView:
    """The builder's fields for a definition (odd shapes are shown as well as they can be: the JSON tab
    holds the exact object, and a save validates it)."""
    rules = []
    for raw_rule in definition.get("rules") or []:
        if not isinstance(raw_rule, dict):
            continue
        clauses = []
        for c in raw_rule.get("clauses") or []:
            if not isinstance(c, dict):
                continue
            raw_values = c.get("values")
            values: list[Any] = raw_values if isinstance(raw_values, list) else []
            segment_match = c.get("op") == "segmentMatch"
            clauses.append(
                BuilderClause(
                    id=_text(c.get("id")),
                    attribute=_text(c.get("attribute")),
                    op=_text(c.get("op")),
                    values="" if segment_match else "\n".join(format_value(v) for v in values),
                    segments=[str(v) for v in values] if segment_match else [],
                    negate=c.get("negate") is True,
                    context_kind=_text(c.get("contextKind")),
                )
            )
        rules.append(
            BuilderRule(
                id=_text(raw_rule.get("id")),
                weight=_text(raw_rule.get("weight")),
                bucket_by=_text(raw_rule.get("bucketBy")),
                rollout_context_kind=_text(raw_rule.get("rolloutContextKind")),
                clauses=clauses,
            )
        )
    return BuilderView(
        rules=rules,
        included="\n".join(str(v) for v in definition.get("included") or []),
        excluded="\n".join(str(v) for v in definition.get("excluded") or []),
        included_contexts=_format_targets(definition.get("includedContexts")),
        excluded_contexts=_format_targets(definition.get("excludedContexts")),
        salt=_text(definition.get("salt")),
    )


def _count(get: Get, name: str) -> int:
    text = get(name)
    return min(int(text), 200) if text.isdigit() else 0


def _weight(text: str) -> Any:
    text = text.strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        return text  # refused, with the field named, when the definition is validated


def definition_from_fields(get: Get, get_all: GetAll, base: Mapping[str, Any]) -> dict[str, Any]:
    """The definition the builder's fields describe. Fields the builder does not show (LaunchDarkly's extra
    ones) are kept from `base`, the object the JSON tab held."""
    rules: list[dict[str, Any]] = []
    for i in range(_count(get, "rules-count")):
        prefix = f"rule-{i}"
        clauses: list[dict[str, Any]] = []
        for j in range(_count(get, f"{prefix}-clauses-count")):
            cp = f"{prefix}-clause-{j}"
            op = get(f"{cp}-op").strip() or "in"
            if op == "segmentMatch":
                values: list[Any] = [*get_all(f"{cp}-segments"), *_lines(get(f"{cp}-values"))]
            else:
                values = [parse_value(line) for line in _lines(get(f"{cp}-values"))]
            clause: dict[str, Any] = {"attribute": get(f"{cp}-attribute").strip(), "op": op, "values": values}
            if get(f"{cp}-negate"):
                clause["negate"] = True
            if get(f"{cp}-contextKind").strip():
                clause["contextKind"] = get(f"{cp}-contextKind").strip()
            if get(f"{cp}-id"):
                clause["id"] = get(f"{cp}-id")
            clauses.append(clause)
        rule: dict[str, Any] = {"clauses": clauses}
        if get(f"{prefix}-id"):
            rule["id"] = get(f"{prefix}-id")
        weight = _weight(get(f"{prefix}-weight"))
        if weight is not None:
            rule["weight"] = weight
        for name, key in (("bucketBy", "bucketBy"), ("rolloutContextKind", "rolloutContextKind")):
            if get(f"{prefix}-{name}").strip():
                rule[key] = get(f"{prefix}-{name}").strip()
        rules.append(rule)
    out = {k: v for k, v in base.items() if k not in DEFINITION_FIELDS}
    out.update(
        {
            "rules": rules,
            "included": _lines(get("included")),
            "excluded": _lines(get("excluded")),
            "includedContexts": _targets(get("includedContexts")),
            "excludedContexts": _targets(get("excludedContexts")),
        }
    )
    if get("salt").strip():
        out["salt"] = get("salt").strip()
    return out


def apply_edit(definition: dict[str, Any], edit: str) -> dict[str, Any]:
    """One builder button: `add-rule`, `remove-rule:I`, `add-clause:I`, `remove-clause:I:J` (anything else,
    or an index out of range, changes nothing)."""
    rules = [dict(r) for r in definition.get("rules") or [] if isinstance(r, dict)]
    name, *parts = edit.split(":")
    try:
        index = [int(p) for p in parts]
    except ValueError:
        return definition
    empty = {"attribute": "", "op": "in", "values": []}
    if name == "add-rule" and not index:
        rules.append({"clauses": [dict(empty)]})
    elif name == "remove-rule" and len(index) == 1 and 0 <= index[0] < len(rules):
        del rules[index[0]]
    elif name in ("add-clause", "remove-clause") and index and 0 <= index[0] < len(rules):
        clauses = list(rules[index[0]].get("clauses") or [])
        if name == "add-clause" and len(index) == 1:
            clauses.append(dict(empty))
        elif name == "remove-clause" and len(index) == 2 and 0 <= index[1] < len(clauses):
            del clauses[index[1]]
        rules[index[0]] = {**rules[index[0]], "clauses": clauses}
    else:
        return definition
    return {**definition, "rules": rules}
