"""Reading segment and contact files at the edge: every problem becomes an `InputError` naming the file,
the line or the segment, and what is wrong."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from segmentflow.rules import (
    CompiledSegment,
    Context,
    ContextError,
    RuleError,
    RuleWarning,
    Segment,
    compile_segments,
    lint_segments,
    parse_context,
    parse_segment,
    parse_segments,
    segment_problems,
)
from segmentflow.rules.model import segment_items
from segmentflow.strict_json import loads_strict

__all__ = [
    "InputError",
    "LineError",
    "iter_context_lines",
    "iter_json_lines",
    "lint_segments_file",
    "read_compiled_segments",
    "read_contexts",
    "read_json",
    "read_segments",
    "segment_warnings",
]


class InputError(ValueError):
    """Bad input: the message is one line, ready to show a user."""


def read_json(path: Path) -> Any:
    """The file's JSON value, read strictly (`loads_strict`: no `NaN`/`Infinity`, no lone surrogates)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return loads_strict(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{path}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None


def read_segments(path: Path) -> list[Segment]:
    try:
        return parse_segments(read_json(path))
    except RuleError as exc:
        raise InputError(f"{path}: {exc}") from None


def read_compiled_segments(path: Path) -> dict[str, CompiledSegment]:
    """Segments of a file, compiled strictly, in the file's order (each one's `warnings` name the values it
    keeps that never match); any refusal names the file."""
    segments = read_segments(path)
    try:
        compiled = compile_segments(segments)
    except RuleError as exc:
        raise InputError(f"{path}: {exc}") from None
    return {seg.key: compiled[seg.key] for seg in segments}  # the file's order


def segment_warnings(segments: list[Segment]) -> list[RuleWarning]:
    """Every clause value of these segments that loads but never matches, in file order."""
    return [w for seg in segments for w in segment_problems(seg)[1]]


def lint_segments_file(path: Path) -> tuple[int, list[RuleError], list[RuleWarning]]:
    """(segments read, errors, warnings) of a segments file checked as an import checks it, without
    stopping at the first problem: each segment that does not parse is one error, then the rest are
    checked together (`segmentMatch` targets must be in the file). An unreadable file is an `InputError`."""
    try:
        items = segment_items(read_json(path))
    except RuleError as exc:
        raise InputError(f"{path}: {exc}") from None
    errors: list[RuleError] = []
    segments: list[Segment] = []
    for item in items:
        try:
            segments.append(parse_segment(item))
        except RuleError as exc:
            errors.append(exc)
    more_errors, warnings = lint_segments(segments)
    return len(items), errors + more_errors, warnings


class LineError(str):
    """Why one line of a JSON-lines file could not be decoded (a `str`, told apart from decoded JSON)."""


def iter_json_lines(lines: Iterable[bytes], *, skip_blank: bool = False) -> Iterator[tuple[int, Any]]:
    """(line number, decoded JSON value or a `LineError`) for each line of a JSON-lines file (raw bytes);
    `skip_blank`: blank lines are passed over instead of being an error. Read strictly, as `read_json`."""
    for number, line in enumerate(lines, start=1):
        if skip_blank and not line.strip():
            continue
        try:
            yield number, loads_strict(line.decode("utf-8"))
        except UnicodeDecodeError:
            yield number, LineError("not UTF-8 text")
        except json.JSONDecodeError as exc:
            yield number, LineError(f"not valid JSON: {exc.msg} at column {exc.colno}")


def iter_context_lines(path: Path) -> Iterator[tuple[int, Context | str]]:
    """(line number, parsed context or the error message) for each line of a JSON-lines file."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    with handle:
        for number, data in iter_json_lines(handle):
            if isinstance(data, LineError):
                yield number, str(data)
                continue
            try:
                yield number, parse_context(data)
            except ContextError as exc:
                yield number, f"invalid context: {exc}"


def read_contexts(path: Path) -> list[Context]:
    """Every context of a JSON-lines file, or an `InputError` for the first bad line."""
    out = []
    for number, item in iter_context_lines(path):
        if isinstance(item, str):
            raise InputError(f"{path}:{number}: {item}")
        out.append(item)
    return out
