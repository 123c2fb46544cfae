"""Pure. The errors the rules engine raises, each naming what is wrong and where."""

from __future__ import annotations

__all__ = ["ContextError", "CycleError", "RuleError"]


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
        where = []
        if self.segment_key is not None:
            where.append(f'segment "{self.segment_key}"')
        if self.rule_index is not None:
            where.append(f"rule {self.rule_index}")
        if self.clause_index is not None:
            where.append(f"clause {self.clause_index}")
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
