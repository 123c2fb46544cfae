"""Pure. The clause operators: one table of small functions keyed by LaunchDarkly's wire names.

Each entry takes a clause's `values` once, when the segment compiles, and returns a test of one context
value. Settled edge cases, as in LaunchDarkly's Python SDK:
- a bool is never a number (`true` does not equal `1`, `in [1]` does not match `true`);
- `in` is equality of JSON values of one type; a null inside an array attribute equals a null clause value
  (a null attribute itself is absent and never matches);
- strings never compare as numbers (`"5"` is not greater than 4) and only strings match string operators;
- dates are epoch milliseconds (a number) or strings with date, time and offset as `pyrfc3339` reads them
  (it also takes ISO 8601 forms such as `20171206T000000Z`; a date alone or no offset is refused);
  anything else never matches; `before`/`after` are strict;
- semantic versions pad missing minor/patch (`2` -> `2.0.0`, `2.1` -> `2.1.0`) and refuse `v2` or `02.0.0`;
- `matches` answers as Python's `re.search` does, run in linear time on RE2 (`segmentflow.rules.regex`);
  a pattern that cannot run that way with Python's answers is refused like one that does not compile.
A clause value that can never match (an unparseable date or version, a value of the wrong type) is kept
and never matches, LaunchDarkly's behaviour; `never_matches` says why, so the compiler can report it as a
warning. A regex that does not compile is refused with `ValueError` unless `lenient` (LaunchDarkly drops it
too): it is more likely a typo than an export, and nothing could ever be matched by it. Tests never raise on
odd context data.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from numbers import Number
from typing import Any

import pyrfc3339
from semver import Version

from segmentflow.rules.regex import LinearRegex, RegexRefusedError, compile_linear

__all__ = [
    "OPERATORS",
    "SemverKey",
    "ValueTest",
    "never_matches",
    "parse_semver",
    "parse_time",
    "parse_time_text",
    "precedence_key",
    "regex_problem",
    "semver_key",
    "unusable_regex",
]

ValueTest = Callable[[Any], bool]
Prepare = Callable[[list[Any], bool], ValueTest]

_EPOCH = datetime.fromtimestamp(0, UTC)
_LEADING_NUMERIC = re.compile(r"^([0-9.]*)(.*)")


def _is_number(value: Any) -> bool:
    kind = type(value)
    if kind is int or kind is float:  # the JSON cases, without the slow ABC check
        return True
    return isinstance(value, Number) and not isinstance(value, bool)


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except OverflowError:  # an integer beyond float range still orders correctly
        return math.inf if value > 0 else -math.inf


@lru_cache(maxsize=65536)
def parse_time_text(text: str) -> float | None:
    """Epoch milliseconds of an RFC 3339 string (cached); None when it is not one."""
    # pyrfc3339 delegates to `datetime.fromisoformat`, so it also returns naive datetimes (`2017-12-06`)
    # whose subtraction raises; LaunchDarkly's SDK does both inside one `try` and calls them invalid.
    try:
        return float((pyrfc3339.parse(text) - _EPOCH).total_seconds() * 1000.0)
    except Exception:  # pyrfc3339 raises several types for malformed input
        return None


def parse_time(value: Any) -> float | None:
    """Epoch milliseconds from a number or an RFC 3339 string; None when it is neither."""
    if _is_number(value):
        return _as_float(value)
    if isinstance(value, str):
        return parse_time_text(value)
    return None


@lru_cache(maxsize=65536)
def _parse_semver_string(text: str) -> Version | None:
    candidate = text
    for _ in range(3):
        try:
            return Version.parse(candidate)
        except (ValueError, TypeError):
            match = _LEADING_NUMERIC.search(candidate)
            candidate = candidate + ".0" if match is None else match.group(1) + ".0" + match.group(2)
    return None


def parse_semver(value: Any) -> Version | None:
    """A semantic version, padding a missing minor or patch with zeros; None when it is not one."""
    return _parse_semver_string(value) if isinstance(value, str) else None


def _parsed(values: list[Any], parse: Callable[[Any], Any]) -> list[Any]:
    """The values that parse; the others never match (`never_matches` reports them)."""
    return [parsed for parsed in map(parse, values) if parsed is not None]


def _in(values: list[Any], lenient: bool) -> ValueTest:
    strings = frozenset(v for v in values if isinstance(v, str))
    numbers = frozenset(v for v in values if _is_number(v) and v == v)
    bools = frozenset(v for v in values if isinstance(v, bool))
    others = [v for v in values if isinstance(v, (list, dict))]
    # A null attribute is absent, but a null inside an array attribute is a value: `[null]` is in `[null]`.
    has_null = any(v is None for v in values)

    def test(value: Any) -> bool:
        kind = type(value)
        if kind is str:
            return value in strings
        if value is None:
            return has_null
        if kind is bool:
            return value in bools
        if kind is int or kind is float:
            return value in numbers
        if isinstance(value, (list, dict)):
            return any(value == other for other in others)
        if isinstance(value, bool):
            return value in bools
        if isinstance(value, str):
            return str(value) in strings
        return _is_number(value) and value in numbers

    return test


def _string_op(method: Callable[[str, str], bool]) -> Prepare:
    def prepare(values: list[Any], lenient: bool) -> ValueTest:
        operands = tuple(v for v in values if isinstance(v, str))

        def test(value: Any) -> bool:
            return isinstance(value, str) and any(method(value, operand) for operand in operands)

        return test

    return prepare


def _starts_with(values: list[Any], lenient: bool) -> ValueTest:
    prefixes = tuple(v for v in values if isinstance(v, str))
    return lambda value: isinstance(value, str) and value.startswith(prefixes)


def _ends_with(values: list[Any], lenient: bool) -> ValueTest:
    suffixes = tuple(v for v in values if isinstance(v, str))
    return lambda value: isinstance(value, str) and value.endswith(suffixes)


def regex_problem(pattern: str) -> str | None:
    """Why a `matches` pattern cannot be used (it does not compile in Python, or cannot run in linear time
    with Python's answers: `segmentflow.rules.regex`), or None."""
    try:
        re.compile(pattern)
    except Exception as exc:  # re.error, and OverflowError for a repeat count like `a{4294967296}`
        return f"bad regex {pattern!r}: {exc}"
    try:
        compile_linear(pattern)
    except RegexRefusedError as exc:
        return (
            f"regex {pattern!r} cannot run in linear time: {exc} (refused so that no value can make an "
            "evaluation take exponential time)"
        )
    except Exception as exc:  # what Python's parser accepts but its compiler refuses
        return f"bad regex {pattern!r}: {exc}"
    return None


def _compile_regex(value: Any) -> LinearRegex | None:
    if not isinstance(value, str) or regex_problem(value) is not None:
        return None
    return compile_linear(value)


def _matches(values: list[Any], lenient: bool) -> ValueTest:
    if not lenient:
        for value in values:
            if not isinstance(value, str):
                continue  # never matches: a warning, as LaunchDarkly keeps it
            problem = regex_problem(value)
            if problem is not None:
                raise ValueError(problem)
    searches = [p.search for p in map(_compile_regex, values) if p is not None]
    return lambda value: isinstance(value, str) and any(search(value) for search in searches)


def _numeric(compare: Callable[[float, float], bool], pick: Callable[[list[float]], float]) -> Prepare:
    # Any-of over several values reduces to one comparison against the loosest bound.
    def prepare(values: list[Any], lenient: bool) -> ValueTest:
        operands = [_as_float(v) for v in values if _is_number(v)]
        operands = [v for v in operands if v == v]
        if not operands:
            return lambda value: False
        bound = pick(operands)

        def test(value: Any) -> bool:
            return _is_number(value) and compare(_as_float(value), bound)

        return test

    return prepare


def _time(compare: Callable[[float, float], bool], pick: Callable[[list[float]], float]) -> Prepare:
    def prepare(values: list[Any], lenient: bool) -> ValueTest:
        operands = _parsed(values, parse_time)
        operands = [v for v in operands if v == v]
        if not operands:
            return lambda value: False
        bound = pick(operands)

        def test(value: Any) -> bool:
            parsed = parse_time(value)
            return parsed is not None and compare(parsed, bound)

        return test

    return prepare


SemverKey = tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]


def precedence_key(version: Version) -> SemverKey:
    """A tuple ordering exactly as semver precedence (`Version.compare`): build metadata ignored, a
    pre-release below its release, numeric identifiers below alphanumeric ones and compared as numbers."""
    if not version.prerelease:
        return (version.major, version.minor, version.patch, 1, ())
    parts = tuple((0, int(p)) if p.isdigit() else (1, p) for p in version.prerelease.split("."))
    return (version.major, version.minor, version.patch, 0, parts)


@lru_cache(maxsize=65536)
def semver_key(text: str) -> SemverKey | None:
    """The precedence key of a semantic version string (cached); None when it is not one."""
    version = _parse_semver_string(text)
    return None if version is None else precedence_key(version)


def _semver(accept: Callable[[SemverKey, list[SemverKey]], bool]) -> Prepare:
    def prepare(values: list[Any], lenient: bool) -> ValueTest:
        versions: list[Version] = _parsed(values, parse_semver)
        operands = [precedence_key(v) for v in versions]
        if not operands:
            return lambda value: False

        def test(value: Any) -> bool:
            if not isinstance(value, str):
                return False
            key = semver_key(value)
            return key is not None and accept(key, operands)

        return test

    return prepare


def _lt(a: float, b: float) -> bool:
    return a < b


def _le(a: float, b: float) -> bool:
    return a <= b


def _gt(a: float, b: float) -> bool:
    return a > b


def _ge(a: float, b: float) -> bool:
    return a >= b


#: Operator wire name -> prepare(values, lenient) -> test(context_value). `segmentMatch` is handled by the
#: compiler, since it needs the other segments; it is listed so that validation knows the name.
OPERATORS: dict[str, Prepare | None] = {
    "in": _in,
    "startsWith": _starts_with,
    "endsWith": _ends_with,
    "contains": _string_op(lambda value, operand: operand in value),
    "matches": _matches,
    "lessThan": _numeric(_lt, max),
    "lessThanOrEqual": _numeric(_le, max),
    "greaterThan": _numeric(_gt, min),
    "greaterThanOrEqual": _numeric(_ge, min),
    "before": _time(_lt, max),
    "after": _time(_gt, min),
    "semVerEqual": _semver(lambda key, operands: key in operands),
    "semVerLessThan": _semver(lambda key, operands: any(key < o for o in operands)),
    "semVerGreaterThan": _semver(lambda key, operands: any(key > o for o in operands)),
    "segmentMatch": None,
}


def _not_a_string(value: Any) -> str | None:
    return None if isinstance(value, str) else "is not a string"


def _not_a_number(value: Any) -> str | None:
    if not _is_number(value):
        return "is not a number"
    return "is not a number (NaN)" if value != value else None


def _not_a_date(value: Any) -> str | None:
    parsed = parse_time(value)
    if parsed is None or parsed != parsed:
        return "is not a valid date (epoch milliseconds, or RFC 3339 with a time and an offset)"
    return None


def _not_a_semver(value: Any) -> str | None:
    return None if parse_semver(value) is not None else "is not a valid semantic version"


_VALUE_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "startsWith": _not_a_string,
    "endsWith": _not_a_string,
    "contains": _not_a_string,
    "matches": _not_a_string,
    "lessThan": _not_a_number,
    "lessThanOrEqual": _not_a_number,
    "greaterThan": _not_a_number,
    "greaterThanOrEqual": _not_a_number,
    "before": _not_a_date,
    "after": _not_a_date,
    "semVerEqual": _not_a_semver,
    "semVerLessThan": _not_a_semver,
    "semVerGreaterThan": _not_a_semver,
}


def _show(value: Any) -> str:
    """A clause value as a user wrote it: a string quoted, anything else as JSON; cut when long."""
    if isinstance(value, str):
        text = repr(value)
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, allow_nan=True)
        except (TypeError, ValueError):
            text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def never_matches(op: str, value: Any) -> str | None:
    """Why clause value `value` can never match under operator `op` (LaunchDarkly keeps such a value and
    answers "no match" for it), as `"<op>: <value> <why>; it never matches"`; None when it can match.
    Every value can match under `in`; unknown operators and `segmentMatch` are the compiler's concern."""
    check = _VALUE_CHECKS.get(op)
    problem = None if check is None else check(value)
    return None if problem is None else f"{op}: {_show(value)} {problem}; it never matches"


def unusable_regex(value: Any) -> str | None:
    """For lenient loading: the warning for a `matches` pattern that never matches because it does not
    compile or cannot run in linear time (a save refuses it), or None."""
    problem = regex_problem(value) if isinstance(value, str) else None
    return None if problem is None else f"matches: {problem}; it never matches"
