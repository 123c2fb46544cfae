"""Pure. A segment definition in plain words, for people who do not read its JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["describe_clause", "describe_definition"]

_OPS = {
    "in": "is one of",
    "endsWith": "ends with",
    "startsWith": "starts with",
    "matches": "matches the pattern",
    "contains": "contains",
    "lessThan": "is less than",
    "lessThanOrEqual": "is at most",
    "greaterThan": "is greater than",
    "greaterThanOrEqual": "is at least",
    "before": "is before",
    "after": "is after",
    "semVerEqual": "is version",
    "semVerLessThan": "is a version below",
    "semVerGreaterThan": "is a version above",
}


def _values(values: Any) -> str:
    if not isinstance(values, list) or not values:
        return "(nothing)"
    shown = [json.dumps(v) if not isinstance(v, str) else f"“{v}”" for v in values[:10]]
    more = f" and {len(values) - 10} more" if len(values) > 10 else ""
    return " or ".join(shown) + more


def describe_clause(clause: Mapping[str, Any]) -> str:
    op = clause.get("op")
    negate = clause.get("negate") is True
    if op == "segmentMatch":
        return ("is not in" if negate else "is in") + " segment " + _values(clause.get("values"))
    kind = clause.get("contextKind")
    subject = f"{kind or 'user'} {clause.get('attribute') or '?'}"
    verb = _OPS.get(str(op), f"[{op}]")
    return f"{subject} {'does not hold: ' if negate else ''}{verb} {_values(clause.get('values'))}"


def describe_definition(definition: Mapping[str, Any]) -> list[str]:
    """One sentence per target list and rule, in the order they decide."""
    out: list[str] = []
    for name, verb in (("included", "Always in"), ("excluded", "Never in (unless included)")):
        keys = definition.get(name) or []
        if keys:
            out.append(f"{verb}: user {_values(keys)}.")
    for name, verb in (("includedContexts", "Always in"), ("excludedContexts", "Never in (unless included)")):
        for target in definition.get(name) or []:
            if isinstance(target, dict):
                out.append(f"{verb}: {target.get('contextKind') or 'user'} {_values(target.get('values'))}.")
    for index, rule in enumerate(definition.get("rules") or []):
        if not isinstance(rule, dict):
            continue
        clauses = [describe_clause(c) for c in rule.get("clauses") or [] if isinstance(c, dict)]
        text = f"Rule {index + 1}: in when " + (" and ".join(clauses) if clauses else "(no clause: always)")
        weight = rule.get("weight")
        if isinstance(weight, int):
            text += f", for {weight / 1000:g}% of them by {rule.get('bucketBy') or 'key'}"
        out.append(text + ".")
    if not out:
        out.append("No targets and no rules: nobody is in this segment.")
    return out
