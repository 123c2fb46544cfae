"""Concurrent PATCHes from several threads (on PostgreSQL for real, and on SQLite) lose no update, and of
several writers holding the same version exactly one wins."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import bearer

pytestmark = pytest.mark.usefixtures("seeded")

THREADS = 6
PATCHES_EACH = 4


def run_together(work: Callable[[int], list[int]]) -> list[int]:
    """`work(i)` in THREADS threads released at once; their status codes."""
    barrier = threading.Barrier(THREADS)

    def start(i: int) -> list[int]:
        barrier.wait()
        return work(i)

    with ThreadPoolExecutor(THREADS) as pool:
        return [code for codes in pool.map(start, range(THREADS)) for code in codes]


def test_concurrent_patches_without_a_version_lose_no_update(
    client: TestClient, tokens: dict[str, str]
) -> None:
    auth = bearer(tokens["all"])

    def work(i: int) -> list[int]:
        codes = []
        for j in range(PATCHES_EACH):
            instruction = {"kind": "addIncludedTargets", "contextKind": "user", "values": [f"t{i}-{j}"]}
            response = client.patch(
                "/contacts/segments/vip", json={"instructions": [instruction]}, headers=auth
            )
            codes.append(response.status_code)
        return codes

    assert run_together(work) == [200] * (THREADS * PATCHES_EACH)
    segment = client.get("/contacts/segments/vip", headers=auth).json()
    expected = {f"t{i}-{j}" for i in range(THREADS) for j in range(PATCHES_EACH)}
    assert set(segment["definition"]["included"]) == expected
    assert segment["version"] == 1 + THREADS * PATCHES_EACH


def test_of_writers_holding_the_same_version_exactly_one_wins(
    client: TestClient, tokens: dict[str, str]
) -> None:
    auth = bearer(tokens["all"])

    def work(i: int) -> list[int]:
        body: dict[str, Any] = {
            "version": 1,
            "instructions": [{"kind": "updateName", "value": f"writer {i}"}],
        }
        return [client.patch("/contacts/segments/vip", json=body, headers=auth).status_code]

    codes = run_together(work)
    assert sorted(codes) == [200] + [409] * (THREADS - 1)
    segment = client.get("/contacts/segments/vip", headers=auth).json()
    assert segment["version"] == 2 and segment["name"].startswith("writer ")


def test_more_concurrent_requests_than_connections_all_complete(
    client: TestClient, tokens: dict[str, str]
) -> None:
    """More writers and readers at once than the pool has connections (and the threadpool has threads):
    admission keeps each request to one connection it never waits for, so none times out."""
    auth = bearer(tokens["all"])

    def work(i: int) -> list[int]:
        put = client.put(f"/contacts/load{i}", json={"key": f"load{i}", "plan": "vip"}, headers=auth)
        check = client.get(f"/contacts/segments/vip/contacts/load{i}", headers=auth)
        return [put.status_code, check.status_code if check.json()["isMember"] else 0]

    with ThreadPoolExecutor(50) as pool:
        codes = [c for pair in pool.map(work, range(100)) for c in pair]
    assert codes == [201, 200] * 100
