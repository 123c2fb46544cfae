"""Pure. `matches` regexes in linear time: Python's own parse of a pattern is translated into an RE2
pattern that gives exactly Python's answers, or the pattern is refused.

LaunchDarkly's SDK runs `matches` with Python's `re.search`, a backtracking engine: `(a+)+$` against forty
`a`s and a `!` takes minutes. RE2 (Google's linear-time engine, `google-re2`) answers any pattern it runs
in time linear in the value, but its syntax and some meanings differ (`$`, `\\d`, `\\w`, `\\s`, `\\b` and
case folding are Unicode-aware in Python, ASCII or otherwise different in RE2). So a pattern is not handed
to RE2 as written: `re`'s own parser reads it (what `re.compile` would run), and each node is rewritten:
- every single-character test (a literal, `.`, a set, `\\d`/`\\w`/`\\s`, any of them case-insensitive or
  ASCII-only) becomes an explicit RE2 class of exactly the code points Python's `re` matches, computed by
  running Python's own matcher over the code points that could differ;
- sequences, alternatives, groups and counted repetition carry over (lazy or greedy makes no difference to
  whether a match exists); `^`, `\\A`, `\\Z` and multi-line `^`/`$` have RE2 equivalents; a plain `$` (end,
  or before a final newline) is rewritten when nothing follows it (`\\n?\\z`).
Refused, with the construct named: lookahead and lookbehind, backreferences, conditionals, atomic groups
and possessive repeats (RE2 has none: only a backtracking engine runs them, and a backtracking engine is
what can take exponential time), a Unicode `\\b`/`\\B` (RE2's are ASCII-only: `(?a)\\b` is accepted), `$`
with more pattern after it, and repetition counts above 1000 or patterns too large for RE2.

A value that is not valid Unicode text (a lone surrogate, which JSON allows and the API refuses) cannot be
handed to RE2 and never matches. A short pattern with no repetition and no alternation (`@example\\.com$`,
`^vip`) has nothing to backtrack into, so Python's `re` runs it directly (faster per call than RE2, and
LaunchDarkly's engine itself).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from re import _constants as sre  # type: ignore[attr-defined]  # `re`'s own parser: what re.compile runs
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any

import re2

__all__ = ["MAX_PATTERN_LENGTH", "LinearRegex", "RegexRefusedError", "compile_linear"]

#: A longer pattern is refused: translation costs time per node, and no real rule needs more.
MAX_PATTERN_LENGTH = 4096
_MAX_REPEAT = 1000  # RE2's limit on a counted repetition
_LAST = 0x10FFFF
_SURROGATES = (0xD800, 0xDFFF)
Ranges = list[tuple[int, int]]


class RegexRefusedError(ValueError):
    """A pattern Python compiles but that cannot run in linear time with Python's answers."""


# --- code point sets as sorted, disjoint, inclusive ranges -------------------------------------------


def _normalise(ranges: Iterable[tuple[int, int]]) -> Ranges:
    out: Ranges = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def _complement(ranges: Ranges) -> Ranges:
    out: Ranges = []
    start = 0
    for lo, hi in ranges:
        if lo > start:
            out.append((start, lo - 1))
        start = hi + 1
    if start <= _LAST:
        out.append((start, _LAST))
    return out


def _intersect(a: Ranges, b: Ranges) -> Ranges:
    out: Ranges = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def _without_surrogates(ranges: Ranges) -> Ranges:
    return _intersect(ranges, _complement([_SURROGATES]))


# --- what Python's `re` matches, one character at a time ----------------------------------------------


@lru_cache(maxsize=1)
def _all_text() -> str:
    """Every code point but the surrogates, in order."""
    return "".join(map(chr, [*range(0xD800), *range(0xE000, _LAST + 1)]))


def _index_to_cp(index: int) -> int:
    return index if index < 0xD800 else index + 0x800


@lru_cache(maxsize=64)
def _scan(source: str, flags: int) -> tuple[tuple[int, int], ...]:
    """The code points a one-character Python pattern matches, by running it over every code point (runs
    of matches are ranges, so one `finditer` of `source+`)."""
    found = []
    for m in re.finditer(f"(?:{source})+", _all_text(), flags):
        found.append((_index_to_cp(m.start()), _index_to_cp(m.end() - 1)))
    return tuple(_without_surrogates(_normalise(found)))


@lru_cache(maxsize=1)
def _cased() -> tuple[Ranges, frozenset[int], dict[int, frozenset[int]]]:
    """Every code point taking part in a case mapping (mapped, or the image of one): the only ones a
    case-insensitive test can treat differently from a case-sensitive one; and, for each, its case family
    (the code points linked to it by lower, upper, title and casefold mappings, transitively). Python's
    case-insensitive match of two code points goes through those mappings (`re._casefix` pairs code points
    sharing one), so a literal can only match within its family."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(x, x) != root:
            parent[x], x = root, parent[x]
        return root

    def union(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[ra] = rb

    for ch in _all_text():
        for other in (ch.lower(), ch.upper(), ch.casefold(), ch.title()):
            if other != ch:
                parent.setdefault(ord(ch), ord(ch))
                for c in other:
                    parent.setdefault(ord(c), ord(c))
                    union(ord(ch), ord(c))
    points = frozenset(p for p in parent if not 0xD800 <= p <= 0xDFFF)
    families: dict[int, set[int]] = {}
    for p in points:
        families.setdefault(find(p), set()).add(p)
    family_of = {p: frozenset(families[find(p)]) for p in points}
    ranges = _normalise((p, p) for p in points)
    return ranges, points, family_of


def _escape_py(cp: int) -> str:
    return f"\\U{cp:08x}"


_CATEGORY_PY = {
    sre.CATEGORY_DIGIT: "\\d",
    sre.CATEGORY_NOT_DIGIT: "\\D",
    sre.CATEGORY_SPACE: "\\s",
    sre.CATEGORY_NOT_SPACE: "\\S",
    sre.CATEGORY_WORD: "\\w",
    sre.CATEGORY_NOT_WORD: "\\W",
}


def _set_source(items: list[tuple[Any, Any]]) -> str:
    parts = []
    for op, av in items:
        if op is sre.NEGATE:
            parts.append("^")
        elif op is sre.LITERAL:
            parts.append(_escape_py(av))
        elif op is sre.RANGE:
            parts.append(f"{_escape_py(av[0])}-{_escape_py(av[1])}")
        elif op is sre.CATEGORY and av in _CATEGORY_PY:
            parts.append(_CATEGORY_PY[av])
        else:
            raise RegexRefusedError(f"unsupported set item {op}")
    return "[" + "".join(parts) + "]"


def _case_sensitive_set(items: list[tuple[Any, Any]], flags: int) -> Ranges:
    """The set without IGNORECASE (ASCII still applies to categories), computed without a full scan for
    literals and ranges."""
    negate = False
    ranges: Ranges = []
    for op, av in items:
        if op is sre.NEGATE:
            negate = True
        elif op is sre.LITERAL:
            ranges.append((av, av))
        elif op is sre.RANGE:
            ranges.append((av[0], av[1]))
        else:  # a category
            ranges.extend(_scan(_CATEGORY_PY[av], flags & re.ASCII))
    result = _normalise(ranges)
    return _without_surrogates(_complement(result) if negate else result)


def _char_set(op: Any, av: Any, flags: int) -> Ranges:
    """Exactly the code points Python's `re` matches with this one-character node under `flags`."""
    return list(_char_set_cached(op, tuple(av) if op is sre.IN else av, flags))


@lru_cache(maxsize=4096)
def _char_set_cached(op: Any, av: Any, flags: int) -> tuple[tuple[int, int], ...]:
    if op is sre.ANY:
        return tuple(_without_surrogates([(0, _LAST)] if flags & re.DOTALL else _complement([(10, 10)])))
    if op is sre.LITERAL:
        items = [(sre.LITERAL, av)]
    elif op is sre.NOT_LITERAL:
        items = [(sre.NEGATE, None), (sre.LITERAL, av)]
    else:
        items = list(av)
    if not flags & re.IGNORECASE:
        return tuple(_case_sensitive_set(items, flags))
    cased_ranges, _, family_of = _cased()
    if op in (sre.LITERAL, sre.NOT_LITERAL):
        # A literal matches only within its case family: Python decides each member.
        test = re.compile(_set_source([(sre.LITERAL, av)]), flags & (re.IGNORECASE | re.ASCII))
        members = sorted(family_of.get(av, frozenset()) | {av})
        found = _normalise((cp, cp) for cp in members if test.fullmatch(chr(cp)))
        found = _without_surrogates(found)
        return tuple(found if op is sre.LITERAL else _without_surrogates(_complement(found)))
    # A set (Python negates a case-insensitive set as a whole, so the positive one is computed): only code
    # points in a case mapping can answer differently from the case-sensitive set, and only within the
    # families of its members, so Python decides those one by one and the rest keep their answer.
    negate = bool(items) and items[0][0] is sre.NEGATE
    positive = items[1:] if negate else items
    plain = _case_sensitive_set(positive, flags)
    test = re.compile(_set_source(positive), flags & (re.IGNORECASE | re.ASCII))
    candidates: set[int] = set()
    for lo, hi in _intersect(plain, cased_ranges):
        for cp in range(lo, hi + 1):
            candidates |= family_of.get(cp, frozenset())
    kept = _intersect(plain, _complement(cased_ranges))
    extra = [(cp, cp) for cp in sorted(candidates) if test.fullmatch(chr(cp))]
    found = _normalise([*kept, *extra])
    return tuple(_without_surrogates(_complement(found)) if negate else found)


def _class_re2(ranges: Ranges) -> str:
    if not ranges:
        return "[^\\x00-\\x{10FFFF}]"
    if ranges == _without_surrogates([(0, _LAST)]):
        return "(?s:.)"
    parts = [f"\\x{{{lo:X}}}" if lo == hi else f"\\x{{{lo:X}}}-\\x{{{hi:X}}}" for lo, hi in ranges]
    if sum(hi - lo + 1 for lo, hi in ranges) == 2:
        # RE2 turns a two-rune class such as [Ss] into a case-folded literal, which an alternation then
        # widens to every Unicode fold of it (`[Ss]|x` matches U+017F, the long s). A surrogate, which no
        # text handed to RE2 can hold, keeps it a plain class.
        parts.append("\\x{D800}")
    return "[" + "".join(parts) + "]"


# --- the translation ----------------------------------------------------------------------------------

_REFUSED = {
    sre.ASSERT: "a lookahead or lookbehind",
    sre.ASSERT_NOT: "a negative lookahead or lookbehind",
    sre.GROUPREF: "a backreference",
    sre.GROUPREF_EXISTS: "a conditional group",
    sre.ATOMIC_GROUP: "an atomic group",
    sre.POSSESSIVE_REPEAT: "a possessive repeat",
}


class _Translator:
    def __init__(self, flags: int) -> None:
        self.flags = flags

    def sequence(self, nodes: Any, flags: int, tail: bool) -> str:
        items = list(nodes)
        return "".join(
            self.node(op, av, flags, tail and i == len(items) - 1) for i, (op, av) in enumerate(items)
        )

    def node(self, op: Any, av: Any, flags: int, tail: bool) -> str:
        if op in (sre.LITERAL, sre.NOT_LITERAL, sre.ANY, sre.IN):
            if op is sre.LITERAL and not flags & re.IGNORECASE:
                return f"\\x{{{av:X}}}" if not 0xD800 <= av <= 0xDFFF else "[^\\x00-\\x{10FFFF}]"
            return _class_re2(_char_set(op, av, flags))
        if op is sre.BRANCH:
            return "(?:" + "|".join(self.sequence(alt, flags, tail) for alt in av[1]) + ")"
        if op is sre.SUBPATTERN:
            _group, add, remove, inner = av
            return "(?:" + self.sequence(inner, (flags | add) & ~remove, tail) + ")"
        if op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
            low, high, inner = av
            unbounded = high is sre.MAXREPEAT
            if low > _MAX_REPEAT or (not unbounded and high > _MAX_REPEAT):
                raise RegexRefusedError(f"a repetition count above {_MAX_REPEAT}")
            body = self.sequence(inner, flags, tail and not unbounded and high <= 1)
            count = f"{{{low},}}" if unbounded else f"{{{low},{high}}}"
            return f"(?:{body}){count}"
        if op is sre.AT:
            return self.at(av, flags, tail)
        reason = _REFUSED.get(op)
        raise RegexRefusedError(
            f"{reason} needs a backtracking engine" if reason else f"the construct {op} is not supported"
        )

    def at(self, code: Any, flags: int, tail: bool) -> str:
        multiline = flags & re.MULTILINE
        if code is sre.AT_BEGINNING:
            return "(?m:^)" if multiline else "\\A"
        if code is sre.AT_BEGINNING_STRING:
            return "\\A"
        if code is sre.AT_END_STRING:
            return "\\z"
        if code is sre.AT_END:
            if multiline:
                return "(?m:$)"
            if tail:
                return "(?:\\n?\\z)"  # Python's `$`: the end, or just before a final newline
            raise RegexRefusedError("`$` followed by more pattern (use \\Z, or end the pattern with `$`)")
        if code in (sre.AT_BOUNDARY, sre.AT_NON_BOUNDARY):
            if flags & re.ASCII:
                return "\\b" if code is sre.AT_BOUNDARY else "\\B"
            raise RegexRefusedError(
                "a Unicode word boundary (`\\b`, `\\B`) needs a backtracking engine; "
                "`(?a)\\b` (ASCII word characters) is accepted"
            )
        raise RegexRefusedError(f"the anchor {code} is not supported")


def _options() -> re2.Options:
    options = re2.Options()
    options.never_capture = True
    options.log_errors = False
    return options


_UNANCHORED = re2._Anchor.UNANCHORED
_NO_MATCH = (-1, -1)
#: Patterns of at most this many nodes without repetition or alternation run on Python's `re` itself:
#: with no choice to backtrack into, a search costs at most this many steps per position of the value.
_SIMPLE_NODES = 32
_SIMPLE = (sre.LITERAL, sre.NOT_LITERAL, sre.ANY, sre.IN, sre.AT)


def _simple_size(nodes: Any) -> int | None:
    """How many nodes a pattern without repetition or alternation has, or None when it has either."""
    size = 0
    for op, av in nodes:
        if op is sre.SUBPATTERN:
            inner = _simple_size(av[3])
            if inner is None:
                return None
            size += inner
        elif op in _SIMPLE:
            size += 1
        else:
            return None
    return size


class LinearRegex:
    """A `matches` pattern with Python's answers in time linear in the value: `search(text)` is
    `re.search(pattern, text) is not None`. RE2 runs the translated pattern (its binding's low-level
    `Match`, which skips the wrapper's offset bookkeeping), except for a short pattern with nothing to
    backtrack into, which Python's `re` runs as LaunchDarkly does."""

    __slots__ = ("_match", "_python", "pattern", "translated")

    def __init__(self, pattern: str, translated: str, simple: bool) -> None:
        self.pattern = pattern
        self.translated = translated
        regexp = re2.compile(translated.encode("utf-8"), _options())  # raises re2.error when too large
        self._match = regexp._regexp.Match
        self._python = re.compile(pattern).search if simple else None

    def search(self, text: str) -> bool:
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: not text RE2 can read, so never a match (either way)
            return False
        if self._python is not None:
            return self._python(text) is not None
        return bool(self._match(_UNANCHORED, data, 0, len(data))[0] != _NO_MATCH)

    def __repr__(self) -> str:
        return f"LinearRegex({self.pattern!r})"


@lru_cache(maxsize=4096)
def compile_linear(pattern: str) -> LinearRegex:
    """The linear-time form of a Python regex. `re.error` (or `OverflowError`) when Python refuses the
    pattern; `RegexRefusedError` naming the construct when it cannot run in linear time with Python's
    answers."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise RegexRefusedError(f"longer than {MAX_PATTERN_LENGTH} characters")
    parsed = sre_parse.parse(pattern, 0)
    flags = parsed.state.flags
    if flags & re.VERBOSE:
        flags &= ~re.VERBOSE  # already applied by the parser
    translated = _Translator(flags).sequence(parsed, flags, tail=True)
    size = _simple_size(parsed)
    try:
        return LinearRegex(pattern, translated, simple=size is not None and size <= _SIMPLE_NODES)
    except re2.error as exc:
        raise RegexRefusedError(f"too large or complex for the linear-time engine ({exc})") from None
