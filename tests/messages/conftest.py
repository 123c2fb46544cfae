"""Message-handling fixtures: the shared engine with our tables emptied too, sample segments, contacts,
actions and instructions stored through the services, and a local HTTP server standing in for action
webhooks and an OpenAI-compatible chat-completions endpoint (it records every request)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import sqlalchemy as sa
from segmentflow.plugins import SegmentsPlugin
from segmentflow.workflows.message_models import HANDLE_MESSAGE, HandleMessageInput, HandleMessageResult
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from segmentflow.rules import parse_context, parse_segments
from segmentflow.services.contacts import upsert_contacts
from segmentflow.services.membership import recompute_all
from segmentflow.services.messages import (
    parse_actions,
    parse_instructions,
    upsert_actions,
    upsert_instructions,
)
from segmentflow.services.segment_admin import import_segments
from segmentflow.settings import Settings
from tests.api.conftest import app, client, make_token  # noqa: F401  (the API test fixtures)
from tests.temporal.conftest import dev_env, task_queue  # noqa: F401  (shared with the Temporal tests)

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)

#: What these tests open in the egress policy: the stand-in endpoint listens on loopback, which the policy
#: refuses by default (tests/services/test_egress.py runs without it, and shows the refusals).
EGRESS_ALLOW_LOOPBACK = "127.0.0.0/8,::1"


@pytest.fixture(autouse=True)
def egress_allows_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """`SEGMENTFLOW_EGRESS_ALLOW` for this package's tests: the local stand-in is on loopback."""
    monkeypatch.setenv("SEGMENTFLOW_EGRESS_ALLOW", EGRESS_ALLOW_LOOPBACK)


SEGMENTS: list[dict[str, Any]] = [
    {"key": "vip", "rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["vip"]}]}]},
    {"key": "eu", "rules": [{"clauses": [{"attribute": "country", "op": "in", "values": ["DE", "FR"]}]}]},
    {"key": "beta", "rules": [{"clauses": [{"attribute": "beta", "op": "in", "values": [True]}]}]},
]
CONTACTS: list[dict[str, Any]] = [
    {"key": "u-vip", "plan": "vip", "country": "US", "beta": True},
    {"key": "u-eu", "plan": "free", "country": "DE"},
    {"key": "u-free", "plan": "free", "country": "US"},
]


def actions_json(base_url: str) -> list[dict[str, Any]]:
    return [
        {
            "key": "order-status",
            "name": "Order status",
            "description": "Look up an order",
            "trigger_phrases": ["where is my order"],
            "parameters": {"type": "object", "properties": {"order": {"type": "string"}}},
            "webhook": {"url": f"{base_url}/hooks/order-status"},
        },
        {
            "key": "refund",
            "name": "Refund",
            "restricted_to_segments": ["vip"],
            "trigger_phrases": ["refund"],
            "webhook": {"url": f"{base_url}/hooks/refund"},
        },
        {
            "key": "book-call",
            "name": "Book a call",
            "restricted_to_segments": ["vip", "eu"],
            "trigger_phrases": ["book a call"],
            "webhook": {"url": f"{base_url}/hooks/book-call"},
        },
        {
            "key": "beta-feature",
            "restricted_to_segments": ["beta"],
            "trigger_phrases": ["beta"],
            "webhook": {"url": f"{base_url}/hooks/beta-feature"},
        },
    ]


INSTRUCTIONS: list[dict[str, Any]] = [
    {"key": "tone", "text": "Be brief."},
    {"key": "vip-tone", "text": "Thank them for being a VIP.", "restricted_to_segments": ["vip"]},
    {"key": "gdpr", "text": "Mention GDPR rights.", "restricted_to_segments": ["eu"]},
    {"key": "beta-note", "text": "Mention the beta.", "restricted_to_segments": ["beta"]},
]


@pytest.fixture
def engine(engine: Engine) -> Engine:
    """The shared engine fixture, with the message-handling tables emptied as well."""
    with engine.begin() as conn:
        for table in ("action_refusal", "action", "instruction"):
            conn.execute(sa.text(f"DELETE FROM {table}"))
    return engine


@dataclass
class StandIn:
    """A local HTTP server: records each request (and its headers); `/chat/completions` answers with
    `completion`. Each answer's status is the next of `statuses` while any are left, else `status`."""

    url: str
    requests: list[tuple[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    completion: dict[str, Any] = field(default_factory=dict)
    status: int = 200
    statuses: list[int] = field(default_factory=list)

    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]

    def hooks(self) -> list[tuple[str, Any]]:
        return [(p, body) for p, body in self.requests if p.startswith("/hooks/")]


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    state = StandIn(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"null")
            state.requests.append((self.path, body))
            state.headers.append({k.lower(): v for k, v in self.headers.items()})
            answer = state.completion if self.path.endswith("/chat/completions") else {"ok": True}
            data = json.dumps(answer).encode()
            self.send_response(state.statuses.pop(0) if state.statuses else state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def tool_call(
    name: str, arguments: dict[str, Any] | None = None, content: str | None = None
) -> dict[str, Any]:
    """A chat completion whose first tool call names `name`."""
    return {
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": content,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": name, "arguments": json.dumps(arguments or {})},
                        }
                    ],
                }
            }
        ]
    }


@pytest.fixture
def seeded(engine: Engine, stand_in: StandIn) -> None:
    """Store the sample segments, contacts (computed), actions and instructions."""
    with Session(engine) as session, session.begin():
        import_segments(recompute=False, session=session, segments=parse_segments(SEGMENTS), now=NOW)
        upsert_contacts(session=session, contexts=[parse_context(c) for c in CONTACTS], now=NOW)
        upsert_actions(session=session, actions=parse_actions(actions_json(stand_in.url)), now=NOW)
        upsert_instructions(session=session, instructions=parse_instructions(INSTRUCTIONS), now=NOW)
    recompute_all(engine)


def refusals(engine: Engine) -> list[tuple[str | None, str, str]]:
    """(contact, action, side) of every recorded refusal, oldest first."""
    with Session(engine) as session:
        rows = session.execute(
            sa.text("SELECT contact_key, action_key, side FROM action_refusal ORDER BY id")
        ).all()
    return [(r[0], r[1], r[2]) for r in rows]


def plugin_client(env: WorkflowEnvironment, engine: Engine, settings: Settings | None = None) -> Client:
    """A client of `env` with the real plugin (and so on its workers)."""
    config = env.client.config()
    config["plugins"] = [SegmentsPlugin(engine=engine, settings=settings or Settings())]
    return Client(**config)


async def handle(on: Client, queue: str, contact: str | None, text: str) -> HandleMessageResult:
    """Run `segmentflow.HandleMessage` for one message and return its result."""
    result: HandleMessageResult = await on.execute_workflow(
        HANDLE_MESSAGE,
        HandleMessageInput(contact_key=contact, conversation_id="conv-1", text=text),
        id=f"msg-{uuid.uuid4()}",
        task_queue=queue,
        result_type=HandleMessageResult,
    )
    return result
