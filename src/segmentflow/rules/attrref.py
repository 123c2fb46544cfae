"""Pure. LaunchDarkly attribute references: `/a/b` paths with `~1`/`~0` escapes, or literal names.

A clause's attribute is a path only when the clause names a `contextKind`; without one it is a literal
attribute name (so `/a/b` means the attribute called "/a/b"), exactly as LaunchDarkly's SDKs read it.
"""

from __future__ import annotations

import re

__all__ = ["AttributeRefError", "parse_attribute"]

_BAD_ESCAPE = re.compile(r"~[^01]|~$")


class AttributeRefError(ValueError):
    """An attribute reference LaunchDarkly treats as malformed."""


def parse_path(path: str) -> tuple[str, ...]:
    """Components of a reference in path syntax; a name without a leading slash is one component."""
    if path in ("", "/"):
        raise AttributeRefError("attribute reference cannot be empty")
    if path[0] != "/":
        return (path,)
    components = []
    for part in path[1:].split("/"):
        if part == "":
            raise AttributeRefError(
                f'attribute reference "{path}" contains a double slash or a trailing slash'
            )
        if _BAD_ESCAPE.search(part):
            raise AttributeRefError(f'attribute reference "{path}" has a "~" not followed by 0 or 1')
        components.append(part.replace("~1", "/").replace("~0", "~"))
    return tuple(components)


def parse_attribute(attribute: str, context_kind: str | None) -> tuple[str, ...]:
    """The lookup path for a clause attribute (or a rollout's `bucketBy`)."""
    if not context_kind:
        if attribute == "":
            raise AttributeRefError("attribute reference cannot be empty")
        return (attribute,)
    return parse_path(attribute)
