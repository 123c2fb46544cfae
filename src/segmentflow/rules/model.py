"""Pure. LaunchDarkly's segment JSON as frozen pydantic models (wire names in, wire names out).

Unknown fields are kept, not refused: a segment exported from LaunchDarkly (with `_links`, `tags`,
`creationDate`...) imports unchanged and exports as it came. Types are strict: `"negate": "yes"` or
`"values": "a"` is refused with the field's path rather than coerced.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from segmentflow.rules.errors import RuleError

__all__ = ["Clause", "Rule", "Segment", "Target", "parse_segment", "parse_segments", "segment_items"]


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow", strict=True, populate_by_name=True)

    def to_json(self) -> dict[str, Any]:
        """Wire JSON: camelCase names, unset optional fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Clause(_Wire):
    attribute: str = ""
    op: str
    values: list[Any]
    negate: bool = False
    context_kind: str | None = Field(default=None, alias="contextKind")


class Rule(_Wire):
    id: str | None = None
    clauses: list[Clause] = Field(default_factory=list)
    weight: int | None = None
    bucket_by: str | None = Field(default=None, alias="bucketBy")
    rollout_context_kind: str | None = Field(default=None, alias="rolloutContextKind")


class Target(_Wire):
    # Optional as in LaunchDarkly's SDKs, where a target list without a kind is for users.
    context_kind: str | None = Field(default=None, alias="contextKind")
    values: list[str]


class Segment(_Wire):
    key: str = Field(min_length=1)
    name: str | None = None
    description: str | None = None
    version: int = 1
    salt: str | None = None
    included: list[str] = Field(default_factory=list)
    excluded: list[str] = Field(default_factory=list)
    included_contexts: list[Target] = Field(default_factory=list, alias="includedContexts")
    excluded_contexts: list[Target] = Field(default_factory=list, alias="excludedContexts")
    rules: list[Rule] = Field(default_factory=list)
    unbounded: bool = False

    def dependencies(self) -> set[str]:
        """Keys of the segments this one references through `segmentMatch`."""
        return {
            value
            for rule in self.rules
            for clause in rule.clauses
            if clause.op == "segmentMatch"
            for value in clause.values
            if isinstance(value, str)
        }


def _location(loc: tuple[int | str, ...]) -> tuple[int | None, int | None, str]:
    rule_index = clause_index = None
    rest: list[str] = []
    i = 0
    while i < len(loc):
        part = loc[i]
        if part == "rules" and i + 1 < len(loc) and isinstance(loc[i + 1], int):
            rule_index = int(loc[i + 1])
            i += 2
            continue
        if part == "clauses" and i + 1 < len(loc) and isinstance(loc[i + 1], int):
            clause_index = int(loc[i + 1])
            i += 2
            continue
        rest.append(str(part))
        i += 1
    return rule_index, clause_index, ".".join(rest)


def parse_segment(data: Any) -> Segment:
    """Validate one segment's JSON; a `RuleError` names segment key, rule, clause and field."""
    if not isinstance(data, dict):
        raise RuleError("a segment must be a JSON object")
    raw_key = data.get("key")
    key = raw_key if isinstance(raw_key, str) and raw_key else None
    try:
        return Segment.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        rule_index, clause_index, field = _location(tuple(err["loc"]))
        raise RuleError(
            err["msg"][:1].lower() + err["msg"][1:],
            segment_key=key,
            rule_index=rule_index,
            clause_index=clause_index,
            field=f'field "{field}"' if field else None,
        ) from None


def segment_items(data: Any) -> list[Any]:
    """The unparsed segment objects of a JSON list of segments, a `{"segments": {key: segment}}`
    LaunchDarkly export or an API listing's `{"items": [...]}`."""
    if isinstance(data, dict) and isinstance(data.get("segments"), dict):
        data = [{"key": k, **v} if isinstance(v, dict) else v for k, v in data["segments"].items()]
    if isinstance(data, dict) and isinstance(data.get("items"), list):
        data = data["items"]
    if not isinstance(data, list):
        raise RuleError("segments must be a JSON list of segment objects")
    return data


def parse_segments(data: Any) -> list[Segment]:
    """A JSON list of segments (or a `{"segments": {key: segment}}` LaunchDarkly export)."""
    return [parse_segment(item) for item in segment_items(data)]
