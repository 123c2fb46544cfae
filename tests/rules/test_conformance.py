"""LaunchDarkly's server-side evaluation cases (its SDK test harness data) run through our evaluator.

The files are expanded as the harness expands them (`constants`/`parameters` replaced in the raw text,
YAML read as the harness's yaml.v3 reads it), then each evaluation maps onto segments: every flag rule is
compiled as a one-rule segment together with the file's `segments`, and the first rule whose segment the
context is in must be the expected `RULE_MATCH` rule; `FALLTHROUGH` means none is; an `ERROR`/`MALFORMED_FLAG`
means we refuse the data with a `RuleError` (a `segmentMatch` cycle, a malformed attribute reference).

Each case compiles as a save would (strictly): bad-syntax and bad-type clause values must load, with
warnings, and answer as LaunchDarkly does. Only what we refuse at save on purpose (an unknown operator, a
`segmentMatch` to a missing segment, a regex that does not compile) falls back to `lenient=True`, which is
LaunchDarkly's semantics for those.

A flag rule serving a rollout still matches by its clauses, so its `RULE_MATCH` cases run too; and a
`MALFORMED_FLAG` error from a bad variation on rules alone says that one of those rules matched first.

Skipped, each with its reason, because they test flags rather than clauses:
- the flag is off, or has prerequisites;
- the context hits the flag's own `targets`/`contextTargets` (the rules are never reached);
- the expectation is a flag-only error: an `errorKind` other than `MALFORMED_FLAG` (`FLAG_NOT_FOUND`,
  `WRONG_TYPE`), or `MALFORMED_FLAG` from a bad fallthrough (or one that says nothing about the rules).
"""

from __future__ import annotations

import itertools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from segmentflow.rules import (
    CompiledSegment,
    CycleError,
    RuleError,
    compile_segments,
    parse_context,
    parse_segment,
)


def _data_dir() -> Path:
    """`../shared/conformance/...` beside the project; in a git worktree, also beside its main checkout;
    `SEGMENTFLOW_CONFORMANCE_DIR` overrides both."""
    override = os.environ.get("SEGMENTFLOW_CONFORMANCE_DIR")
    if override:
        return Path(override)
    root = Path(__file__).resolve().parents[2]
    candidates = [root.parent]
    git = root / ".git"
    if git.is_file():  # a worktree: ".git" names <main>/.git/worktrees/<name>
        text = git.read_text(encoding="utf-8").strip()
        if text.startswith("gitdir:"):
            candidates.append(Path(text.removeprefix("gitdir:").strip()).parents[2].parent)
    found = [c / "shared" / "conformance" / "launchdarkly-server-side-eval" for c in candidates]
    return next((d for d in found if d.is_dir()), found[0])


DATA_DIR = _data_dir()


class _HarnessLoader(yaml.SafeLoader):  # type: ignore[misc]  # yaml ships no types here
    """YAML read as the harness's yaml.v3 reads it into JSON: only `true`/`false` are booleans (`on:` is a
    key, not `True`), timestamps stay strings, and `1e3` is a number."""


_HarnessLoader.yaml_implicit_resolvers = {
    first: [
        (tag, rx)
        for tag, rx in resolvers
        if tag.rsplit(":", 1)[-1] not in ("bool", "int", "float", "timestamp")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_HarnessLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_HarnessLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
_HarnessLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def _as_json_numbers(value: Any) -> Any:
    """JSON as Go writes it: every number is a float64, and an integral one prints without a fraction."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    if isinstance(value, list):
        return [_as_json_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_json_numbers(v) for k, v in value.items()}
    return value


def _load(text: str) -> Any:
    return _as_json_numbers(
        yaml.load(text, Loader=_HarnessLoader)
    )  # a SafeLoader subclass: no arbitrary objects


def _replace(text: str, substitutions: dict[str, Any]) -> str:
    """The harness's `replaceVariables`: `"<NAME>"` becomes the value's JSON, then a bare `<NAME>` becomes a
    string's own text (any other value's JSON)."""
    text = text.replace("\\u003c", "<").replace("\\u003e", ">")
    for name, value in substitutions.items():
        as_json = json.dumps(value, ensure_ascii=False)
        text = text.replace(f'"<{name}>"', as_json)
        text = text.replace(f"<{name}>", value if isinstance(value, str) else as_json)
    return text


def _parameter_sets(parameters: list[Any]) -> list[dict[str, Any]]:
    """A list of objects, or a list of lists whose permutations are taken (the first list varies fastest)."""
    if not parameters:
        return []
    if isinstance(parameters[0], dict):
        return [dict(p) for p in parameters]
    sets = []
    for combo in itertools.product(*reversed(parameters)):
        merged: dict[str, Any] = {}
        for part in reversed(combo):
            merged.update(part)
        sets.append(merged)
    return sets


def expand(text: str) -> list[tuple[dict[str, Any], Any]]:
    """Each (parameters, document) the harness would produce from one file's text."""
    header = _load(text) or {}
    constants = header.get("constants") or {}
    parameter_sets = _parameter_sets(header.get("parameters") or [])
    if not constants and not parameter_sets:
        return [({}, _load(text))]
    if not parameter_sets:
        return [({}, _load(_replace(text, constants)))]
    docs = []
    for params in parameter_sets:
        expanded = _replace(_replace(_replace(text, constants), params), constants)
        docs.append((params, _load(expanded)))
    return docs


@dataclass(frozen=True)
class Case:
    file: str
    params: dict[str, Any]
    name: str
    flag_key: str
    flag: dict[str, Any] | None
    segments: dict[str, Any]
    context: Any
    expect: dict[str, Any]


def _params_label(params: dict[str, Any]) -> str:
    if isinstance(params.get("NAME"), str):  # the harness's own label for a parameter set
        return str(params["NAME"])
    parts = []
    for name, value in params.items():
        shown = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        parts.append(f"{name}={shown[:40]}")
    return ",".join(parts)


def _collect() -> list[Any]:
    if not DATA_DIR.is_dir():
        return [
            pytest.param(
                None,
                marks=pytest.mark.skip(reason=f"conformance data not found at {DATA_DIR}"),
                id="conformance-data-absent",
            )
        ]
    params: list[Any] = []
    seen: set[str] = set()
    for path in sorted(DATA_DIR.glob("*.yml")):
        for values, doc in expand(path.read_text(encoding="utf-8")):
            sdk = doc.get("sdkData") or {}
            flags = sdk.get("flags") or {}
            segments = sdk.get("segments") or {}
            for index, evaluation in enumerate(doc.get("evaluations") or []):
                name = str(evaluation.get("name") or f"evaluation {index}")
                case = Case(
                    file=path.stem,
                    params=values,
                    name=name,
                    flag_key=evaluation["flagKey"],
                    flag=flags.get(evaluation["flagKey"]),
                    segments=segments,
                    context=evaluation.get("context", evaluation.get("user")),
                    expect=evaluation["expect"],
                )
                case_id = "/".join(p for p in (path.stem, _params_label(values), name) if p)
                unique, n = case_id, 2
                while unique in seen:
                    unique, n = f"{case_id}#{n}", n + 1
                seen.add(unique)
                params.append(pytest.param(case, id=unique))
    return params


def _in_range(index: Any, variations: list[Any]) -> bool:
    return isinstance(index, int) and 0 <= index < len(variations)


def _serves_badly(served: dict[str, Any], variations: list[Any]) -> bool:
    rollout = served.get("rollout")
    if rollout is not None:
        return not rollout.get("variations")
    return not _in_range(served.get("variation"), variations)


def _variation_problem(flag: dict[str, Any]) -> bool:
    """Would the flag fail to pick a variation (index out of range, empty rollout) on some path?"""
    variations = flag.get("variations") or []
    served = [flag.get("fallthrough") or {}, *(flag.get("rules") or [])]
    return any(_serves_badly(s, variations) for s in served)


def _bad_rules(flag: dict[str, Any]) -> set[int]:
    variations = flag.get("variations") or []
    return {i for i, r in enumerate(flag.get("rules") or []) if _serves_badly(r, variations)}


def _bad_rules_only(flag: dict[str, Any]) -> bool:
    """Only rules serve badly, so a `MALFORMED_FLAG` says the first matching rule is one of them."""
    return bool(_bad_rules(flag)) and not _serves_badly(
        flag.get("fallthrough") or {}, flag.get("variations") or []
    )


def _hits_flag_targets(flag: dict[str, Any], context: Any) -> bool:
    """LaunchDarkly's `check_targets`: does the context hit the flag's own target lists?"""
    ctx = parse_context(context)
    targets = flag.get("targets") or []
    context_targets = flag.get("contextTargets") or []
    user = ctx.individual("user")
    if not context_targets:
        return user is not None and any(user.key in t.get("values", []) for t in targets)
    for t in context_targets:
        kind = t.get("contextKind") or "user"
        individual = ctx.individual(kind)
        if individual is None:
            continue
        if kind == "user":
            same_variation = [u for u in targets if u.get("variation") == t.get("variation")]
            if same_variation and individual.key in same_variation[0].get("values", []):
                return True
        elif individual.key in t.get("values", []):
            return True
    return False


def _skip_reason(case: Case) -> str | None:
    reason = case.expect.get("reason") or {}
    if reason.get("kind") == "ERROR" and reason.get("errorKind") != "MALFORMED_FLAG":
        return f"flag-only error {reason.get('errorKind')}"
    flag = case.flag
    if flag is None:
        return "flag-only: the flag does not exist"
    if not flag.get("on"):
        return "flag-only: the flag is off"
    if flag.get("prerequisites"):
        return "flag-only: the flag has prerequisites"
    if _hits_flag_targets(flag, case.context):
        return "flag-only: the context hits the flag's own targets"
    if reason.get("kind") == "ERROR" and _variation_problem(flag) and not _bad_rules_only(flag):
        return "flag-only: MALFORMED_FLAG that a bad fallthrough variation or rollout explains as well"
    if reason.get("kind") not in ("RULE_MATCH", "FALLTHROUGH", "ERROR"):
        return f"flag-only reason {reason.get('kind')}"
    return None


#: What a save refuses on purpose although LaunchDarkly evaluates it (as "no match").
_REFUSED_AT_SAVE = ("unknown operator", "segmentMatch refers to missing segment", "matches: bad regex")


def compile_case(case: Case, *, lenient: bool) -> tuple[list[str], dict[str, CompiledSegment]]:
    """The rule segments' keys and the compiled set (the file's segments plus one segment per flag rule)."""
    assert case.flag is not None
    rule_keys = [f"{case.flag_key} rule {i}" for i in range(len(case.flag.get("rules") or []))]
    definitions = [{"key": key, **seg} for key, seg in case.segments.items()]
    definitions += [
        {"key": key, "rules": [{"clauses": rule.get("clauses", [])}]}
        for key, rule in zip(rule_keys, case.flag.get("rules") or [], strict=True)
    ]
    return rule_keys, compile_segments([parse_segment(d) for d in definitions], lenient=lenient)


def first_matching_rule(case: Case) -> int | None:
    """Index of the first flag rule whose clauses match, each rule compiled as a one-rule segment; strictly
    (as a save would) unless the data holds what a save refuses on purpose."""
    try:
        rule_keys, compiled = compile_case(case, lenient=False)
    except CycleError:
        raise
    except RuleError as exc:
        if not any(what in exc.detail for what in _REFUSED_AT_SAVE):
            raise
        rule_keys, compiled = compile_case(case, lenient=True)
    ctx = parse_context(case.context)
    return next((i for i, key in enumerate(rule_keys) if compiled[key].matches(ctx)), None)


@pytest.mark.parametrize("case", _collect())
def test_launchdarkly_server_side_eval_case(case: Case) -> None:
    reason = _skip_reason(case)
    if reason is not None:
        pytest.skip(reason)
    expected = case.expect["reason"]
    if expected["kind"] == "ERROR":
        assert case.flag is not None
        if _variation_problem(case.flag):  # a bad variation on rules alone: one of them matched first
            assert first_matching_rule(case) in _bad_rules(case.flag)
            return
        with pytest.raises(RuleError):
            first_matching_rule(case)
        return
    want = expected.get("ruleIndex") if expected["kind"] == "RULE_MATCH" else None
    assert first_matching_rule(case) == want


def _bad_value_cases() -> list[Any]:
    return [
        p for p in _collect() if p.values[0] is not None and re.search(r"bad-(syntax|type)", p.values[0].file)
    ]


def test_bad_syntax_and_bad_type_files_load_strictly_and_warn() -> None:
    """Every flag of LaunchDarkly's bad-syntax and bad-type files loads as a save would, and a clause
    value that can never match is reported, once, as a warning."""
    cases = _bad_value_cases()
    if not cases:
        pytest.skip(f"conformance data not found at {DATA_DIR}")
    warned = 0
    for param in cases:
        case = param.values[0]
        rule_keys, compiled = compile_case(case, lenient=False)
        for key in rule_keys:
            for warning in compiled[key].warnings:
                assert str(warning).startswith(f'segment "{key}" rule 0 clause ')
                assert str(warning).endswith("; it never matches")
                warned += 1
    assert warned > 0


def test_expansion_permutes_parameter_lists_like_the_harness() -> None:
    text = 'parameters:\n  - [{A: 1}, {A: 2}]\n  - [{B: "x"}, {B: "y"}]\nv: ["<A>", "<B>", "<B>-<A>"]\n'
    assert [doc["v"] for _, doc in expand(text)] == [
        [1, "x", "x-1"],
        [2, "x", "x-2"],
        [1, "y", "y-1"],
        [2, "y", "y-2"],
    ]


def test_expansion_substitutes_constants_inside_parameters() -> None:
    text = 'constants:\n  C: {k: true}\nparameters:\n  - P: "<C>"\non: "<P>"\nwhen: 2017-12-06T00:00:00Z\n'
    [(_, doc)] = expand(text)
    assert doc["on"] == {"k": True}
    assert doc["when"] == "2017-12-06T00:00:00Z"
