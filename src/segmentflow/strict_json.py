"""Strict JSON, the one parser for everything a user hands us (HTTP bodies, CLI files, JSON lines).

Python's `json` accepts `NaN`, `Infinity` and `-Infinity` (which SQLite's JSON would then store and
PostgreSQL's refuse) and lone UTF-16 surrogates such as `"\\ud800"` (which no UTF-8 database, and no JSON
response echoing them, can hold). `loads_strict` refuses both, on every database alike, with a
`json.JSONDecodeError` saying what and where. Pure: no I/O, no web framework."""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["loads_strict"]

# What a lone surrogate needs in the raw body: a \uD800-\uDFFF escape, or its (invalid) UTF-8 bytes, which
# `json.loads` lets through. Bodies without either, nearly all of them, skip the walk below.
_SURROGATE_HINT = re.compile(r"\\u[dD][89a-fA-F]|[\ud800-\udfff]")
_NON_FINITE = re.compile(r"-?Infinity|NaN")


class _NonFinite(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise _NonFinite(name)


def _is_valid_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _surrogate_path(value: Any) -> list[str | int] | None:
    """The path to the first key or string holding a lone surrogate, or None."""
    stack: list[tuple[list[str | int], Any]] = [([], value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if not _is_valid_unicode(item):
                return path
        elif isinstance(item, dict):
            for key, child in item.items():
                if not _is_valid_unicode(key):
                    return [*path, "<key>"]
                stack.append(([*path, key], child))
        elif isinstance(item, list):
            stack.extend(([*path, i], child) for i, child in enumerate(item))
    return None


def loads_strict(body: bytes | str) -> Any:
    """`body` (bytes in any JSON encoding, or text already decoded) parsed as JSON; `json.JSONDecodeError`
    for anything `json.loads` refuses, and for a non-finite number or a lone surrogate anywhere in it."""
    text = body if isinstance(body, str) else body.decode(json.detect_encoding(body), "surrogatepass")
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except _NonFinite as exc:
        found = _NON_FINITE.search(text)
        msg = f"{exc.args[0]} is not valid JSON: numbers must be finite"
        raise json.JSONDecodeError(msg, text, found.start() if found else 0) from None
    hint = _SURROGATE_HINT.search(text)
    if hint is not None:
        path = _surrogate_path(value)
        if path is not None:
            where = ".".join(str(p) for p in path) or "the top level"
            msg = f"a string at {where} holds a lone UTF-16 surrogate (such as \\ud800): not valid Unicode"
            raise json.JSONDecodeError(msg, text, hint.start())
    return value
