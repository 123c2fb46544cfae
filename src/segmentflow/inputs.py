"""Reading segment and contact files at the edge: every problem becomes an `InputError` naming the file,
the line or the segment, and what is wrong."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from segmentflow.rules import (
    CompiledSegment,
    Context,
    ContextError,
    RuleError,
    Segment,
    compile_segments,
    parse_context,
    parse_segments,
)

__all__ = [
    "InputError",
    "iter_context_lines",
    "read_compiled_segments",
    "read_contexts",
    "read_json",
    "read_segments",
]


class InputError(ValueError):
    """Bad input: the message is one line, ready to show a user."""


def read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    try:
        return json.loads(text)
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
    """Segments of a file, compiled strictly; any refusal names the file."""
    segments = read_segments(path)
    try:
        return compile_segments(segments)
    except RuleError as exc:
        raise InputError(f"{path}: {exc}") from None


def iter_context_lines(path: Path) -> Iterator[tuple[int, Context | str]]:
    """(line number, parsed context or the error message) for each line of a JSON-lines file."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            try:
                data = json.loads(line.decode("utf-8"))
            except UnicodeDecodeError:
                yield number, "not UTF-8 text"
                continue
            except json.JSONDecodeError as exc:
                yield number, f"not valid JSON: {exc.msg} at column {exc.colno}"
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
