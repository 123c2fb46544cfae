"""Pure. LaunchDarkly evaluation contexts: parsing, validation, fully-qualified keys.

Accepted JSON, as LaunchDarkly's SDKs accept it:
- single-kind `{"kind": "org", "key": "o1", "name": ..., "anonymous": ..., "_meta": {...}, ...}`;
- multi-kind `{"kind": "multi", "user": {"key": ...}, "org": {"key": ...}}` (one kind collapses to single);
- the legacy user shape with no `kind` (`{"key": ..., "custom": {...}, "email": ...}`), read as a `user`.
  LaunchDarkly's Python SDK 9 dropped that shape, its other SDKs and its test harness still use it; an
  empty key is allowed there only, as it was in the user model.

`null` attribute values mean "absent". `anonymous` is always present (default false), `name` only when
set, so a clause on `anonymous in [false]` matches a context that never mentions it, as in LaunchDarkly.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from segmentflow.rules.errors import ContextError

__all__ = ["DEFAULT_KIND", "Context", "Individual", "parse_context"]

DEFAULT_KIND = "user"
_BAD_KIND_CHARS = re.compile(r"[^-a-zA-Z0-9._]")
_LEGACY_STRING_ATTRS = frozenset({"name", "firstName", "lastName", "email", "country", "avatar", "ip"})


def _escape_key(key: str) -> str:
    return key.replace("%", "%25").replace(":", "%3A")


@dataclass(frozen=True, slots=True)
class Individual:
    """One kind's part of a context. `attributes` holds the built-ins too, ready for clause lookups."""

    kind: str
    key: str
    attributes: Mapping[str, Any]
    private_attributes: tuple[str, ...] = ()

    @property
    def fully_qualified_key(self) -> str:
        return self.key if self.kind == DEFAULT_KIND else f"{self.kind}:{_escape_key(self.key)}"

    def to_dict(self, *, with_kind: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if with_kind:
            out["kind"] = self.kind
        out["key"] = self.key
        for name, value in self.attributes.items():
            if name in ("kind", "key") or (name == "anonymous" and value is False):
                continue
            out[name] = value
        if self.private_attributes:
            out["_meta"] = {"privateAttributes": list(self.private_attributes)}
        return out


@dataclass(frozen=True, slots=True)
class Context:
    """A valid context: its individual kinds sorted by kind, and LaunchDarkly's fully-qualified key."""

    individuals: tuple[Individual, ...]
    fully_qualified_key: str
    by_kind: Mapping[str, Mapping[str, Any]]

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(i.kind for i in self.individuals)

    def individual(self, kind: str) -> Individual | None:
        for ind in self.individuals:
            if ind.kind == kind:
                return ind
        return None

    def to_dict(self) -> dict[str, Any]:
        """The context in LaunchDarkly's (non-legacy) JSON shape."""
        if len(self.individuals) == 1:
            return self.individuals[0].to_dict(with_kind=True)
        out: dict[str, Any] = {"kind": "multi"}
        for ind in self.individuals:
            out[ind.kind] = ind.to_dict(with_kind=False)
        return out


def _validate_kind(kind: str) -> None:
    if kind == "":
        raise ContextError("context kind must not be empty")
    if kind == "kind":
        raise ContextError('"kind" is not a valid context kind')
    if kind == "multi":
        raise ContextError('a context of kind "multi" must hold the individual contexts')
    if _BAD_KIND_CHARS.search(kind):
        raise ContextError(f'context kind "{kind}" contains disallowed characters')


def _type_error(name: str) -> ContextError:
    return ContextError(f'invalid data type for "{name}"')


def _private_attributes(meta: Any) -> tuple[str, ...]:
    if meta is None:
        return ()
    if not isinstance(meta, dict):
        raise _type_error("_meta")
    private = meta.get("privateAttributes")
    if private is None:
        return ()
    if not isinstance(private, list) or not all(isinstance(p, str) for p in private):
        raise _type_error("privateAttributes")
    return tuple(private)


_SPECIAL = frozenset({"_meta", "key", "kind", "name", "anonymous", ""})
_VALID_KINDS: set[str] = {DEFAULT_KIND}


def _build(
    kind: str,
    key: str,
    name: Any,
    anonymous: bool,
    custom: dict[str, Any],
    private: tuple[str, ...],
    *,
    allow_empty_key: bool,
) -> Individual:
    """The individual context; `custom` (a fresh dict the caller hands over) becomes its attributes."""
    if kind not in _VALID_KINDS:
        _validate_kind(kind)
        if len(_VALID_KINDS) < 1024:  # remember the few kinds a deployment uses
            _VALID_KINDS.add(kind)
    if key == "" and not allow_empty_key:
        raise ContextError("context key must not be empty")
    attrs = custom
    attrs["key"] = key
    attrs["kind"] = kind
    attrs["anonymous"] = anonymous
    if name is not None:
        attrs["name"] = name
    return Individual(kind=kind, key=key, attributes=attrs, private_attributes=private)


def _parse_single(props: dict[str, Any], kind: str) -> Individual:
    # One pass builds the attributes; the few special names are then checked by lookup. (A null value
    # means "absent", as in LaunchDarkly, so it is simply left out.)
    attrs = {k: v for k, v in props.items() if v is not None and k not in _SPECIAL}
    if "" in props:
        raise _type_error("")
    key = props.get("key", "")
    if not isinstance(key, str):
        raise _type_error("key")
    if "kind" in props:
        kind = props["kind"]
        if not isinstance(kind, str):
            raise _type_error("kind")
    name = props.get("name")
    if name is not None and not isinstance(name, str):
        raise _type_error("name")
    anonymous = props.get("anonymous", False)
    if not isinstance(anonymous, bool):
        raise _type_error("anonymous")
    private = _private_attributes(props["_meta"]) if "_meta" in props else ()
    return _build(kind, key, name, anonymous, attrs, private, allow_empty_key=False)


def _parse_legacy_user(props: dict[str, Any]) -> Individual:
    if "key" not in props or not isinstance(props["key"], str):
        raise ContextError(
            'a user without "kind" needs a string "key"' if "key" in props else 'context has no "key"'
        )
    name: Any = None
    anonymous = False
    private: tuple[str, ...] = ()
    custom: dict[str, Any] = {}
    for attr, value in props.items():
        if attr in ("key", "kind"):
            continue
        if attr == "custom":
            if value is None:
                continue
            if not isinstance(value, dict):
                raise _type_error("custom")
            for cname, cvalue in value.items():
                if cname in ("key", "kind", "name", "anonymous", "_meta", ""):
                    continue
                if cvalue is not None:
                    custom[cname] = cvalue
        elif attr == "privateAttributeNames":
            if value is None:
                continue
            if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
                raise _type_error("privateAttributeNames")
            private = tuple(value)
        elif attr == "anonymous":
            if value is not None and not isinstance(value, bool):
                raise _type_error("anonymous")
            anonymous = bool(value)
        elif attr in _LEGACY_STRING_ATTRS:
            if value is not None and not isinstance(value, str):
                raise _type_error(attr)
            if attr == "name":
                name = value
            elif value is not None:
                custom[attr] = value
        elif attr in ("_meta", ""):
            raise _type_error(attr)
        elif value is not None:
            custom[attr] = value
    return _build(DEFAULT_KIND, props["key"], name, anonymous, custom, private, allow_empty_key=True)


def _assemble(individuals: list[Individual]) -> Context:
    if len(individuals) == 1:
        one = individuals[0]
        return Context(
            individuals=(one,),
            fully_qualified_key=one.fully_qualified_key,
            by_kind={one.kind: one.attributes},
        )
    individuals.sort(key=lambda i: i.kind)
    for a, b in pairwise(individuals):
        if a.kind == b.kind:
            raise ContextError(f'multi-kind context has kind "{a.kind}" more than once')
    if len(individuals) == 1:
        fq = individuals[0].fully_qualified_key
    else:
        fq = ":".join(f"{i.kind}:{_escape_key(i.key)}" for i in individuals)
    return Context(
        individuals=tuple(individuals),
        fully_qualified_key=fq,
        by_kind={i.kind: i.attributes for i in individuals},
    )


def parse_context(data: Any) -> Context:
    """Parse and validate a context's JSON; raises `ContextError` naming the problem."""
    if not isinstance(data, dict):
        raise ContextError("a context must be a JSON object")
    if "kind" not in data:
        return _assemble([_parse_legacy_user(data)])
    kind = data["kind"]
    if not isinstance(kind, str):
        raise _type_error("kind")
    if kind != "multi":
        return _assemble([_parse_single(data, kind)])
    parts: list[Individual] = []
    errors: list[str] = []
    for sub_kind, sub in data.items():
        if sub_kind == "kind":
            continue
        if not isinstance(sub, dict):
            raise _type_error(sub_kind)
        try:
            parts.append(_parse_single(sub, sub_kind))
        except ContextError as exc:
            errors.append(str(exc))
    if errors:
        raise ContextError(", ".join(errors))
    if not parts:
        raise ContextError("a multi-kind context must contain at least one kind")
    return _assemble(parts)
