"""Pure. An action's `parameters` JSON Schema with every regex under the rules engine's linear-time bound.

`jsonschema` runs `pattern` and `patternProperties` (and `additionalProperties` beside them) with Python's
backtracking `re.search`, so a schema pattern like `(a+)+$` against a model-supplied argument of forty
`a`s and a `!` would hold a worker for minutes. Here every schema regex goes through
`segmentflow.rules.regex.compile_linear` (RE2 with Python's answers): a schema whose regex cannot run that
way is refused when the action is saved, naming where, and `ArgumentsValidator` (draft 2020-12) checks
arguments with the linear-time forms. `unevaluatedProperties` is refused beside `patternProperties`
(jsonschema evaluates those patterns with `re` inside its own helpers).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from jsonschema import Draft202012Validator, ValidationError
from jsonschema.validators import extend

from segmentflow.rules.operators import regex_problem
from segmentflow.rules.regex import compile_linear

__all__ = ["ArgumentsValidator", "schema_regex_problems"]


def _search(pattern: str, text: str) -> bool | None:
    """`re.search(pattern, text) is not None` in linear time; None for a pattern that cannot run so."""
    if regex_problem(pattern) is not None:
        return None
    return compile_linear(pattern).search(text)


def _pattern(validator: Any, pattern: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "string"):
        return
    found = _search(pattern, instance)
    if found is None:
        yield ValidationError(f"{instance!r} cannot be checked against {pattern!r}: the pattern is refused")
    elif not found:
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, pattern_properties: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in pattern_properties.items():
        for key, value in instance.items():
            found = _search(pattern, key)
            if found is None:
                yield ValidationError(
                    f"{key!r} cannot be checked against {pattern!r}: the pattern is refused"
                )
            elif found:
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional(instance: dict[str, Any], schema: dict[str, Any]) -> set[str]:
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    return {key for key in instance if key not in properties and not any(_search(p, key) for p in patterns)}


def _additional_properties(
    validator: Any, allowed: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    """jsonschema's `additionalProperties`, with the `patternProperties` matched in linear time."""
    if not validator.is_type(instance, "object"):
        return
    extras = _additional(instance, schema)
    if validator.is_type(allowed, "object"):
        for extra in sorted(extras):
            yield from validator.descend(instance[extra], allowed, path=extra)
    elif not allowed and extras:
        joined = ", ".join(repr(e) for e in sorted(extras))
        if "patternProperties" in schema:
            patterns = ", ".join(repr(p) for p in sorted(schema["patternProperties"]))
            verb = "does" if len(extras) == 1 else "do"
            yield ValidationError(f"{joined} {verb} not match any of the regexes: {patterns}")
        else:
            verb = "was" if len(extras) == 1 else "were"
            yield ValidationError(f"Additional properties are not allowed ({joined} {verb} unexpected)")


#: Draft 2020-12 with every regex keyword in linear time.
ArgumentsValidator: Any = extend(  # type: ignore[no-untyped-call]
    Draft202012Validator,
    validators={
        "pattern": _pattern,
        "patternProperties": _pattern_properties,
        "additionalProperties": _additional_properties,
    },
)


def schema_regex_problems(schema: Any) -> list[str]:
    """Why a schema's regexes cannot be used, one line each naming where (`/properties/code/pattern`):
    a `pattern` or `patternProperties` key that does not compile or cannot run in linear time, and
    `unevaluatedProperties` beside `patternProperties`. Empty when every regex is fine."""
    problems: list[str] = []
    uses = {"patternProperties": False, "unevaluatedProperties": False}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{path}/{i}")
            return
        if not isinstance(node, dict):
            return
        for key, value in node.items():
            where = f"{path}/{key}"
            if key == "pattern" and isinstance(value, str):
                problem = regex_problem(value)
                if problem is not None:
                    problems.append(f"{where}: {problem}")
            elif key == "patternProperties" and isinstance(value, dict):
                uses["patternProperties"] = True
                for pattern in value:
                    problem = regex_problem(pattern)
                    if problem is not None:
                        problems.append(f"{where}: {problem}")
            elif key == "unevaluatedProperties":
                uses["unevaluatedProperties"] = True
            walk(value, where)

    walk(schema, "")
    if uses["patternProperties"] and uses["unevaluatedProperties"]:
        problems.append(
            "unevaluatedProperties beside patternProperties is not supported: jsonschema would match "
            "those patterns with a backtracking engine"
        )
    return problems
