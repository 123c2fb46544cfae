"""The SLA tests' engine also empties the SLA tables; the Temporal fixtures are shared; a local HTTP server
stands in for a webhook endpoint."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import sqlalchemy as sa
from segmentflow.plugins import SLA_FIRER_SHARDS
from segmentflow.workflows.sla_models import firer_workflow_id
from sqlalchemy.engine import Engine
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from tests.temporal.conftest import dev_env, skipping_env, task_queue

__all__ = [
    "EGRESS_ALLOW_LOOPBACK",
    "WebhookServer",
    "dev_env",
    "egress_allows_loopback",
    "engine",
    "skipping_env",
    "stop_firers",
    "task_queue",
    "webhook",
]


@pytest.fixture(autouse=True)
async def stop_firers(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """After a test on the session's dev server, terminate the SLA firers of its task queue (a plan starts
    one): left running on a queue nobody serves, they would only add timers to the server. A time-skipping
    server is the test's own and goes with it."""
    if "dev_env" not in request.fixturenames or "task_queue" not in request.fixturenames:
        yield
        return
    env: WorkflowEnvironment = request.getfixturevalue("dev_env")
    queue: str = request.getfixturevalue("task_queue")
    yield
    for shard, shards in ((0, 1), *((i, SLA_FIRER_SHARDS) for i in range(SLA_FIRER_SHARDS))):
        with contextlib.suppress(RPCError):
            handle = env.client.get_workflow_handle(firer_workflow_id(queue, shard, shards))
            await handle.terminate()


@pytest.fixture
def engine(engine: Engine) -> Engine:
    with engine.begin() as conn:
        for table in ("sla_event", "ticket", "sla_policy", "sla_watch", "sla_timer", "sla_firer"):
            conn.execute(sa.text(f"DELETE FROM {table}"))
    return engine


class WebhookServer:
    """Collects the JSON bodies POSTed to it and accepted (`received`) and every request with the status
    answered and its `Idempotency-Key` (`requests`); answers `status` (200 unless a test changes it)."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.requests: list[tuple[int, str | None, dict[str, Any]]] = []
        self.status = 200
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                server.requests.append((server.status, self.headers.get("Idempotency-Key"), body))
                if server.status < 300:
                    server.received.append(body)
                self.send_response(server.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/hooks/sla"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


@pytest.fixture
def webhook() -> Iterator[WebhookServer]:
    server = WebhookServer()
    try:
        yield server
    finally:
        server.close()


#: What these tests open in the egress policy: their stand-in endpoints listen on loopback, which the policy
#: refuses by default (tests/services/test_egress.py runs without it, and shows the refusals).
EGRESS_ALLOW_LOOPBACK = "127.0.0.0/8,::1"


@pytest.fixture(autouse=True)
def egress_allows_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """`SEGMENTFLOW_EGRESS_ALLOW` for this package's tests: the local HTTP/SMTP stand-ins are on loopback."""
    monkeypatch.setenv("SEGMENTFLOW_EGRESS_ALLOW", EGRESS_ALLOW_LOOPBACK)
