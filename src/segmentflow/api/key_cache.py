"""The API's in-process cache of verified keys: a token the database proved live is trusted again, with no
database read, for `ttl` seconds, so a busy client costs one key read per `ttl` instead of one per request.

Revocation stays effective within `ttl` (0.5 s in the app), whichever process revokes (`segmentflow keys
revoke` or another server): an entry's lifetime counts from before the read that proved it, so no answer
the database gave before a revocation is trusted more than `ttl` after that read began. Only successes are
kept (a refused token is read again every time, and counted by the guard's failure limiter), keyed by the
token's SHA-256, never the token itself; at most `max_entries` are kept, the oldest dropped first, so memory
stays bounded whatever the number of tokens presented."""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable

from segmentflow.services.keys import VerifiedKey

__all__ = ["KeyCache"]


class KeyCache:
    """See the module docstring. `ttl` 0 turns it off. Used from the event loop only (no lock)."""

    def __init__(
        self, ttl: float, *, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self._max_entries = max_entries
        self._clock = clock
        # token digest -> (expiry, key)
        self._entries: OrderedDict[bytes, tuple[float, VerifiedKey]] = OrderedDict()

    @staticmethod
    def _digest(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def now(self) -> float:
        """The cache's clock: read it before verifying a token, and pass it to `put`."""
        return self._clock()

    def get(self, token: str) -> VerifiedKey | None:
        """The key `token` proved less than `ttl` ago, or None (never proved, or to be read again)."""
        digest = self._digest(token)
        entry = self._entries.get(digest)
        if entry is None:
            return None
        expires, key = entry
        if self._clock() >= expires:
            del self._entries[digest]
            return None
        return key

    def put(self, token: str, key: VerifiedKey, *, read_at: float) -> None:
        """Trust `key` for `token` until `ttl` after `read_at`, the clock read before the database was."""
        if self.ttl <= 0:
            return
        digest = self._digest(token)
        self._entries.pop(digest, None)  # re-inserted last: oldest first
        self._entries[digest] = (read_at + self.ttl, key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
