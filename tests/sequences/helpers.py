"""A local webhook provider that records every request and deduplicates by `Idempotency-Key` as real
providers do, and data loading through the services (as an operator's import would)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from segmentflow.db.tables import Enrollment, Send, change_table
from segmentflow.policies.sequences import parse_sequences
from segmentflow.rules import parse_context, parse_segments
from segmentflow.services.membership import upsert_and_recompute
from segmentflow.services.segment_admin import import_segments
from segmentflow.services.segments import load_index
from segmentflow.services.sequences import get_sequence, import_sequences, launch_sequence, pause_sequence


@dataclass(frozen=True)
class Request:
    path: str
    key: str | None
    body: dict[str, Any]
    at: float


@dataclass
class Provider:
    """`/ok` accepts; `/reject` answers 422; `/flaky` answers 503 to the first try of each key; `/slow`
    takes 20 ms, `/hang` 1.5 s. `delivered` holds the first accepted request per key: what a real
    provider delivers."""

    url: str = ""
    requests: list[Request] = field(default_factory=list)
    delivered: dict[str, Request] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: Called (in the server's thread) with each request before it is answered.
    on_request: Callable[[Request], None] | None = None

    def deliveries(self) -> list[tuple[str, int]]:
        with self.lock:
            return sorted((r.body["contactKey"], r.body["step"]) for r in self.delivered.values())

    def bodies(self) -> dict[tuple[str, int], str]:
        with self.lock:
            return {(r.body["contactKey"], r.body["step"]): r.body["body"] for r in self.delivered.values()}


@contextmanager
def webhook_provider() -> Iterator[Provider]:
    provider = Provider()
    tries: dict[str, int] = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            key = self.headers.get("Idempotency-Key")
            request = Request(self.path, key, body, time.monotonic())
            status = 200
            with provider.lock:
                provider.requests.append(request)
                tries[key or ""] = tries.get(key or "", 0) + 1
                if self.path == "/reject":
                    status = 422
                elif self.path == "/flaky" and tries[key or ""] == 1:
                    status = 503
                elif key is not None and key not in provider.delivered:
                    provider.delivered[key] = request
            if provider.on_request is not None:
                provider.on_request(request)
            if self.path == "/slow":
                time.sleep(0.02)
            elif self.path == "/hang":
                time.sleep(1.5)
            payload = b"no such mailbox" if status == 422 else b"{}"
            self.send_response(status)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.handle_error = lambda request, address: None  # type: ignore[method-assign]  # clients that hung up
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    provider.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield provider
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def now() -> datetime:
    return datetime.now(UTC)


def load_segments(engine: Engine, segments: list[dict[str, Any]]) -> None:
    with Session(engine) as session, session.begin():
        import_segments(recompute=False, session=session, segments=parse_segments(segments), now=now())


def put_contacts(engine: Engine, contexts: list[dict[str, Any]]) -> None:
    """Store contacts and recompute them (which writes the change feed)."""
    with Session(engine) as session, session.begin():
        index = load_index(session=session)
        upsert_and_recompute(session=session, contexts=[parse_context(c) for c in contexts], index=index)


def save_sequence(
    engine: Engine, definition: dict[str, Any], *, launch: bool = True, at: datetime | None = None
) -> int:
    """Import (and launch, at `at`: a time-skipping server's clock) a sequence; returns how many contacts
    launching enrolled."""
    at = at or now()
    with Session(engine) as session, session.begin():
        import_sequences(session=session, sequences=parse_sequences(definition), now=at)
        if launch:
            return launch_sequence(session=session, key=definition["key"], now=at).enrolled
    return 0


def pause(engine: Engine, key: str) -> None:
    with Session(engine) as session, session.begin():
        pause_sequence(session=session, key=key, now=now())


def sends(engine: Engine, key: str) -> list[Send]:
    with Session(engine) as session:
        record = get_sequence(session=session, key=key)
        assert record is not None
        return list(session.exec(select(Send).where(Send.sequence_id == record.id).order_by(Send.id)))


def enrollments(engine: Engine, key: str) -> list[Enrollment]:
    with Session(engine) as session:
        record = get_sequence(session=session, key=key)
        assert record is not None
        query = select(Enrollment).where(Enrollment.sequence_id == record.id).order_by(Enrollment.id)
        return list(session.exec(query))


def caught_up(engine: Engine, key: str) -> bool:
    """The sequence has read the whole change feed (a runner round ran since the last membership change)."""
    with Session(engine) as session:
        record = get_sequence(session=session, key=key)
        last = session.scalar(sa.select(sa.func.coalesce(sa.func.max(change_table.c.seq), 0)))
        return record is not None and record.feed_cursor == last


async def eventually(check: Callable[[], bool], *, timeout: float = 30.0, what: str = "condition") -> None:
    """Poll until `check()` holds (a bound on waiting, never a speed assertion)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
