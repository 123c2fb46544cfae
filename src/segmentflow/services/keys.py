"""HTTP API keys: create (the token is shown once, only its SHA-256 is stored), verify, list, revoke.
Never commits.

A token reads `sf_<id>_<secret>`: `id` (12 hex digits) is public and finds the row, `secret` is 32 random
bytes; the SHA-256 of the whole token is compared with `hmac.compare_digest`, in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal, get_args

import sqlalchemy as sa
from sqlmodel import Session, col, select

from segmentflow.db.tables import ApiKey, api_key_table

__all__ = [
    "SCOPES",
    "Scope",
    "UnknownKeyError",
    "VerifiedKey",
    "create_key",
    "get_key",
    "list_keys",
    "revoke_key",
    "verify_token",
]

Scope = Literal[
    "segments:read",
    "segments:write",
    "contacts:write",
    "sla:read",
    "sla:write",
    "messages:read",
    "messages:write",
    "sequences:read",
    "sequences:write",
    # Conversation events in, the segment report out (issue 14).
    "events:write",
    "reports:read",
]
SCOPES: Final[tuple[str, ...]] = get_args(Scope)
_TOKEN = re.compile(r"sf_([0-9a-f]{12})_[A-Za-z0-9_-]{43}")


class UnknownKeyError(LookupError):
    """No API key has that id."""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_key(*, session: Session, scopes: Iterable[str], name: str, now: datetime) -> tuple[ApiKey, str]:
    """A new key with these scopes, and its token (shown once: only its hash is stored)."""
    wanted = sorted(set(scopes))
    unknown = [s for s in wanted if s not in SCOPES]
    if unknown or not wanted:
        raise ValueError(
            f'unknown scope "{unknown[0]}" (known: {", ".join(SCOPES)})'
            if unknown
            else f"a key needs at least one scope ({', '.join(SCOPES)})"
        )
    key_id = secrets.token_hex(6)
    token = f"sf_{key_id}_{secrets.token_urlsafe(32)}"
    key = ApiKey(id=key_id, name=name, token_hash=_digest(token), scopes=" ".join(wanted), created_at=now)
    session.add(key)
    session.flush()
    return key, token


@dataclass(frozen=True, slots=True)
class VerifiedKey:
    """A live API key that a presented token proved: what a request may do."""

    id: str
    name: str
    scopes: frozenset[str]


# Built once: verifying runs on every request, and a prebuilt Core statement skips the ORM's identity map
# and the statement's construction (bench/api.py).
_LIVE_KEY = sa.select(api_key_table.c.name, api_key_table.c.token_hash, api_key_table.c.scopes).where(
    api_key_table.c.id == sa.bindparam("key_id"), api_key_table.c.revoked_at.is_(None)
)


def verify_token(*, session: Session, token: str) -> VerifiedKey | None:
    """The live key a presented token belongs to, or None (malformed, unknown, wrong secret, revoked).
    Read afresh on every call: a revocation applies to the very next call (the HTTP API caches a success
    for 0.5 s: `segmentflow.api.key_cache`)."""
    match = _TOKEN.fullmatch(token)
    if match is None:
        return None
    key_id = match.group(1)
    row = session.execute(_LIVE_KEY, {"key_id": key_id}).first()
    if row is None or not hmac.compare_digest(row.token_hash, _digest(token)):
        return None
    return VerifiedKey(key_id, row.name, frozenset(row.scopes.split()))


def get_key(*, session: Session, key_id: str) -> ApiKey | None:
    return session.get(ApiKey, key_id)


def list_keys(*, session: Session) -> list[ApiKey]:
    return list(session.exec(select(ApiKey).order_by(col(ApiKey.created_at), col(ApiKey.id))))


def revoke_key(*, session: Session, key_id: str, now: datetime) -> ApiKey:
    """Revoke a key by id (revoking twice keeps the first time)."""
    key = session.get(ApiKey, key_id)
    if key is None:
        raise UnknownKeyError(f'unknown API key "{key_id}"')
    if key.revoked_at is None:
        key.revoked_at = now
        session.add(key)
        session.flush()
    return key
