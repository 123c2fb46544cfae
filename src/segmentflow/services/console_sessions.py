"""The operator console's server-side sessions: open one with an API key's token, resume it from the
cookie's token (ended after a spell of inactivity, or as soon as its API key is revoked), close it.
Never commits.

The cookie holds a random token; only its SHA-256 is stored, so a leaked table opens no session. The
session remembers which API key opened it, and that key's scopes are read afresh on every request.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session

from segmentflow.db.tables import ConsoleSession, api_key_table, console_session_table
from segmentflow.services.keys import VerifiedKey, verify_token

__all__ = ["ConsoleLogin", "close_session", "open_session", "resume_session"]

#: Sessions are touched at most this often (one write per page view would make reads contend with writers).
_TOUCH_EVERY = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class ConsoleLogin:
    """A live console session: the API key behind it and the session's CSRF token."""

    key: VerifiedKey
    csrf: str


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def open_session(*, session: Session, token: str, now: datetime) -> tuple[str, ConsoleLogin] | None:
    """A new session for a valid API key's token: the cookie's token and the login; None for a token the
    API would refuse (malformed, unknown, revoked)."""
    key = verify_token(session=session, token=token.strip())
    if key is None:
        return None
    cookie = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    session.add(
        ConsoleSession(id=_digest(cookie), key_id=key.id, csrf=csrf, created_at=now, last_seen_at=now)
    )
    session.flush()
    return cookie, ConsoleLogin(key, csrf)


def resume_session(*, session: Session, cookie: str, now: datetime, idle: timedelta) -> ConsoleLogin | None:
    """The login a cookie's token belongs to, or None: unknown, idle longer than `idle` (then deleted), or
    its API key revoked."""
    s, k = console_session_table.c, api_key_table.c
    row = session.execute(
        sa.select(s.id, s.csrf, s.last_seen_at, k.id.label("key_id"), k.name, k.scopes, k.revoked_at)
        .join(api_key_table, k.id == s.key_id)
        .where(s.id == _digest(cookie))
    ).first()
    if row is None:
        return None
    if row.revoked_at is not None or now - row.last_seen_at > idle:
        session.execute(console_session_table.delete().where(s.id == row.id))
        return None
    if now - row.last_seen_at > _TOUCH_EVERY:
        session.execute(console_session_table.update().where(s.id == row.id).values(last_seen_at=now))
    return ConsoleLogin(VerifiedKey(row.key_id, row.name, frozenset(row.scopes.split())), row.csrf)


def close_session(*, session: Session, cookie: str) -> None:
    """Sign out: the session is deleted (closing an unknown one does nothing)."""
    session.execute(console_session_table.delete().where(console_session_table.c.id == _digest(cookie)))
