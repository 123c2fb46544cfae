"""The Temporal fixtures, shared with tests/temporal (the `engine` fixture empties the sequence tables)."""

from __future__ import annotations

import pytest

from tests.temporal.conftest import dev_env, skipping_env, task_queue

__all__ = ["EGRESS_ALLOW_LOOPBACK", "dev_env", "egress_allows_loopback", "skipping_env", "task_queue"]


#: What these tests open in the egress policy: their stand-in endpoints listen on loopback, which the policy
#: refuses by default (tests/services/test_egress.py runs without it, and shows the refusals).
EGRESS_ALLOW_LOOPBACK = "127.0.0.0/8,::1"


@pytest.fixture(autouse=True)
def egress_allows_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """`SEGMENTFLOW_EGRESS_ALLOW` for this package's tests: the local HTTP/SMTP stand-ins are on loopback."""
    monkeypatch.setenv("SEGMENTFLOW_EGRESS_ALLOW", EGRESS_ALLOW_LOOPBACK)
