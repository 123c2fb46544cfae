"""Pure. The errors the rules engine raises and the warnings it reports, each naming what is wrong and
where."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ContextError", "CycleError", "RuleError", "RuleWarning"]


def _where(segment_key: str | None, rule_index: int | None, clause_index: int | None) -> list[str]:
    where = []
    if segment_key is not None:
        where.append(f'segment "{segment_key}"')
    if rule_index is not None:
        where.append(f"rule {rule_index}")
    if clause_index is not None:
        where.append(f"clause {clause_index}")
    return where


class RuleError(ValueError):
    """A segment definition the engine refuses: names the segment, rule index, clause index and problem."""

    def __init__(
        self,
        detail: str,
        *,
        segment_key: str | None = None,
        rule_index: int | None = None,
        clause_index: int | None = None,
        field: str | None = None,
    ) -> None:
        self.detail = detail
        self.segment_key = segment_key
        self.rule_index = rule_index
        self.clause_index = clause_index
        self.field = field
        super().__init__(self._render())

    def _render(self) -> str:
        where = _where(self.segment_key, self.rule_index, self.clause_index)
        if self.field is not None:
            where.append(self.field)
        return f"{' '.join(where)}: {self.detail}" if where else self.detail


class CycleError(RuleError):
    """`segmentMatch` references that loop back to a segment already on the path."""

    def __init__(self, path: list[str]) -> None:
        self.path = path
        super().__init__("segmentMatch references form a cycle: " + " -> ".join(path), segment_key=path[0])


class ContextError(ValueError):
    """A context LaunchDarkly deems invalid (no key, a bad kind, a non-string name...)."""


@dataclass(frozen=True, slots=True)
class RuleWarning:
    """A clause value the segment keeps although it can never match (LaunchDarkly loads such values and
    answers "no match" for them): `str()` is the one line shown to users, e.g.
    `segment "vip" rule 0 clause 1: semVerLessThan: 'v2.0.0' is not a valid semantic version; it never
    matches`."""

    segment_key: str
    rule_index: int
    clause_index: int
    detail: str

    def __str__(self) -> str:
        return " ".join(_where(self.segment_key, self.rule_index, self.clause_index)) + f": {self.detail}"
