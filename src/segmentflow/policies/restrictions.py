"""Pure. "Restricted to segments": which actions and AI instructions apply to a contact, given the keys of
the segments it is in. No I/O.

The rules, settled once here:
- An empty restriction means every contact; a non-empty one, a member of at least one listed segment.
- An anonymous contact (no contact key yet, `segments=None`) gets unrestricted items only. A contact that
  is not stored is a contact in no segment: the same outcome, reached honestly.
- A restriction naming a segment that no longer exists fails closed: the item is withheld from everyone,
  members of the other listed segments included, and reported (`Withheld`), never opened to everyone
  because the list lost a name.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeVar

__all__ = [
    "Decision",
    "Restricted",
    "RestrictionIndex",
    "Withheld",
    "decide",
    "missing_segments",
]


class Restricted(Protocol):
    """Anything with a key and a "Restricted to segments" list (an action, an instruction)."""

    @property
    def key(self) -> str: ...

    @property
    def restricted_to_segments(self) -> Sequence[str]: ...


T = TypeVar("T", bound=Restricted)

Reason = Literal["anonymous", "not-in-segments", "unknown-segment"]


@dataclass(frozen=True, slots=True)
class Withheld:
    """An item withheld from everyone because its restriction names segments that do not exist."""

    key: str
    missing_segments: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether one contact may use one item, and if not, why (a reason code and a sentence)."""

    allowed: bool
    reason: Reason | None = None
    detail: str = ""


_ALLOWED = Decision(True)


def missing_segments(restricted_to: Iterable[str], existing: Collection[str]) -> tuple[str, ...]:
    """The listed segment keys that name no existing segment, in list order."""
    return tuple(key for key in restricted_to if key not in existing)


def decide(
    key: str,
    restricted_to: Sequence[str],
    segments: Collection[str] | None,
    existing: Collection[str],
) -> Decision:
    """May a contact in `segments` (None: anonymous) use the item `key` restricted to `restricted_to`,
    when the stored segments are `existing`?"""
    missing = missing_segments(restricted_to, existing)
    if missing:
        names = ", ".join(missing)
        return Decision(
            False, "unknown-segment", f'"{key}" is restricted to segments that no longer exist: {names}'
        )
    if not restricted_to:
        return _ALLOWED
    if segments is None:
        return Decision(
            False, "anonymous", f'"{key}" is restricted to segments; an anonymous contact is in none'
        )
    if any(s in segments for s in restricted_to):
        return _ALLOWED
    names = ", ".join(restricted_to)
    return Decision(
        False, "not-in-segments", f'"{key}" is restricted to segments the contact is not in: {names}'
    )


class RestrictionIndex(Generic[T]):
    """Items compiled once against the stored segment keys, then filtered per contact in time proportional
    to what it may see: unrestricted items are one list, restricted ones are listed under each segment they
    name, and items naming missing segments are set aside (`withheld`) when the index is built.

    `applicable(segments)` keeps the items' original order."""

    __slots__ = ("_by_segment", "_items", "_open", "withheld")

    def __init__(self, items: Iterable[T], existing: Collection[str]) -> None:
        self._items: list[T] = list(items)
        self._open: list[int] = []
        self._by_segment: dict[str, list[int]] = {}
        withheld: list[Withheld] = []
        for position, item in enumerate(self._items):
            restricted_to = item.restricted_to_segments
            missing = missing_segments(restricted_to, existing)
            if missing:
                withheld.append(Withheld(item.key, missing))
            elif not restricted_to:
                self._open.append(position)
            else:
                for segment in set(restricted_to):
                    self._by_segment.setdefault(segment, []).append(position)
        self.withheld: tuple[Withheld, ...] = tuple(withheld)

    def __len__(self) -> int:
        return len(self._items)

    def applicable(self, segments: Collection[str] | None) -> list[T]:
        """The items a contact in `segments` may use (None: an anonymous contact)."""
        items = self._items
        if not segments:
            return [items[i] for i in self._open]
        by_segment = self._by_segment
        chosen = set(self._open)
        for segment in segments:
            positions = by_segment.get(segment)
            if positions is not None:
                chosen.update(positions)
        return [items[i] for i in sorted(chosen)]
