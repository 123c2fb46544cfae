"""The API's cache of verified keys, on a clock the test moves: how long an entry is trusted, what is never
kept, and its bound."""

from __future__ import annotations

from segmentflow.api.key_cache import KeyCache
from segmentflow.services.keys import VerifiedKey

KEY = VerifiedKey("0123456789ab", "test", frozenset({"segments:read"}))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_entry_is_trusted_for_the_ttl_counted_from_before_the_read() -> None:
    clock = Clock()
    cache = KeyCache(0.5, clock=clock)
    read_at = cache.now()
    clock.now += 0.3  # the read took 0.3 s
    cache.put("sf_token", KEY, read_at=read_at)
    assert cache.get("sf_token") == KEY
    clock.now = read_at + 0.49
    assert cache.get("sf_token") == KEY
    clock.now = read_at + 0.5
    assert cache.get("sf_token") is None
    assert cache.get("sf_token") is None  # dropped: the next request reads the database


def test_only_the_exact_token_finds_its_key() -> None:
    cache = KeyCache(0.5, clock=Clock())
    cache.put("sf_token", KEY, read_at=cache.now())
    assert cache.get("sf_token") == KEY
    assert cache.get("sf_tokeN") is None
    assert cache.get("sf_token ") is None


def test_a_ttl_of_zero_keeps_nothing() -> None:
    cache = KeyCache(0, clock=Clock())
    cache.put("sf_token", KEY, read_at=cache.now())
    assert cache.get("sf_token") is None


def test_at_most_max_entries_are_kept_the_oldest_dropped_first() -> None:
    clock = Clock()
    cache = KeyCache(10, max_entries=3, clock=clock)
    for i in range(5):
        cache.put(f"sf_{i}", KEY, read_at=clock.now)
    assert [cache.get(f"sf_{i}") for i in range(5)] == [None, None, KEY, KEY, KEY]
    cache.put("sf_2", KEY, read_at=clock.now)  # read again: now the newest
    cache.put("sf_5", KEY, read_at=clock.now)
    assert cache.get("sf_3") is None and cache.get("sf_2") == KEY


def test_tokens_are_kept_only_as_digests() -> None:
    cache = KeyCache(1, clock=Clock())
    cache.put("sf_secret_token", KEY, read_at=0)
    assert "sf_secret_token" not in repr(vars(cache))
