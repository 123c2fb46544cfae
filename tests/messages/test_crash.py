"""Kill a real worker process (SIGKILL) while `segmentflow.HandleMessage` waits on an outside endpoint, on
the dev server, and start a new worker process at once: with the default timeouts the call is made again
within 30 s of the new worker's start and the message completes. Two places to die: `RunAction` (a
regular activity) waiting on the action's webhook (called again with the same `Idempotency-Key`), and
`Respond` (a local activity, inside a workflow task) waiting on the chat-completions responder."""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from segmentflow.workflows.message_models import HANDLE_MESSAGE, HandleMessageInput, HandleMessageResult
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.testing import WorkflowEnvironment

from segmentflow.rules import parse_context, parse_segments
from segmentflow.services.contacts import upsert_contacts
from segmentflow.services.membership import recompute_all
from segmentflow.services.messages import parse_actions, upsert_actions
from segmentflow.services.segment_admin import import_segments
from tests.messages.conftest import CONTACTS, NOW, SEGMENTS, actions_json, plugin_client
from tests.sequences.helpers import eventually
from tests.temporal.helpers import RESUME_BOUND, kill, worker_process

pytestmark = pytest.mark.timeout(180)


@dataclass
class Hook:
    """An endpoint whose first call hangs (until the test ends): the worker dies waiting on it. It answers
    `/chat/completions` with a reply and no tool call, anything else with `{"ok": true}`."""

    url: str = ""
    calls: list[tuple[float, str | None, Any]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


@contextmanager
def hanging_hook() -> Iterator[Hook]:
    hook = Hook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"null")
            hook.calls.append((time.monotonic(), self.headers.get("Idempotency-Key"), body))
            if len(hook.calls) == 1:
                hook.release.wait(60)
            answer = {"choices": [{"message": {"content": "on its way"}}]}
            data = json.dumps(answer).encode() if self.path.endswith("/chat/completions") else b'{"ok": true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.handle_error = lambda request, address: None  # type: ignore[method-assign]  # the killed client
    hook.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        hook.release.set()
        server.shutdown()
        server.server_close()
        thread.join()


def _seed(engine: Engine, hook_url: str) -> None:
    """The segments, contacts and actions (webhook at `hook_url`), stored and computed."""
    with Session(engine) as session, session.begin():
        import_segments(recompute=False, session=session, segments=parse_segments(SEGMENTS), now=NOW)
        upsert_contacts(session=session, contexts=[parse_context(c) for c in CONTACTS], now=NOW)
        upsert_actions(session=session, actions=parse_actions(actions_json(hook_url)), now=NOW)
    recompute_all(engine)


async def _kill_mid_call_and_resume(
    dev_env: WorkflowEnvironment,
    engine: Engine,
    task_queue: str,
    repo_root: Path,
    hook: Hook,
    first_call: str,
    retry: str,
) -> HandleMessageResult:
    """Start `HandleMessage` on a worker process, SIGKILL it once the hook has its first call, start a new
    worker at once, and assert the retried call reaches the hook within `RESUME_BOUND` of that start."""
    client = plugin_client(dev_env, engine)
    process = worker_process(dev_env, engine, task_queue, repo_root)
    try:
        handle = await client.start_workflow(
            HANDLE_MESSAGE,
            HandleMessageInput(contact_key="u-free", conversation_id="c1", text="where is my order"),
            id=f"msg-{uuid.uuid4()}",
            task_queue=task_queue,
            result_type=HandleMessageResult,
        )
        await eventually(lambda: len(hook.calls) == 1, timeout=60, what=first_call)
    finally:
        kill(process)

    started = time.monotonic()
    replacement = worker_process(dev_env, engine, task_queue, repo_root)
    try:
        await eventually(lambda: len(hook.calls) > 1, timeout=RESUME_BOUND, what=retry)
        assert hook.calls[1][0] - started < RESUME_BOUND
        return await handle.result()
    finally:
        kill(replacement, signal.SIGTERM)


async def test_worker_killed_during_run_action_retries_within_bound_with_same_key(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str, repo_root: Path
) -> None:
    with hanging_hook() as hook:
        _seed(engine, hook.url)
        result = await _kill_mid_call_and_resume(
            dev_env, engine, task_queue, repo_root, hook, "the action's webhook call", "RunAction's retry"
        )

    assert result.ran == "order-status" and result.refused is None
    # The retry is the same call: the webhook can deduplicate it by its key.
    first, second = hook.calls[0], hook.calls[1]
    assert first[1] is not None and first[1] == second[1]
    assert first[2] == second[2] == {"action": "order-status", "contactKey": "u-free", "arguments": {}}


async def test_worker_killed_during_the_responder_local_activity_resumes_within_bound(
    dev_env: WorkflowEnvironment,
    engine: Engine,
    task_queue: str,
    repo_root: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with hanging_hook() as hook:
        _seed(engine, hook.url)
        monkeypatch.setenv("SEGMENTFLOW_OPENAI_BASE_URL", hook.url + "/v1")  # the worker processes' responder
        result = await _kill_mid_call_and_resume(
            dev_env, engine, task_queue, repo_root, hook, "the responder's call", "Respond's retry"
        )

    assert result.ran is None and result.refused is None
    assert result.actions == ["order-status"]
