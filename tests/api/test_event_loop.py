"""No database work blocks the event loop: while another process holds SQLite's write lock and a request
waits on it (a membership check that must first compute a contact never computed), `/healthz` and other
reads are answered at once, and the waiting request completes once the lock is released."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from fastapi.testclient import TestClient
from sqlmodel import Session

from segmentflow.api import create_app
from segmentflow.rules import parse_context, parse_segments
from segmentflow.services.contacts import upsert_contacts
from segmentflow.services.keys import create_key
from segmentflow.services.segment_admin import import_segments
from segmentflow.settings import Settings
from tests.api.conftest import SEGMENTS, bearer

NOW = datetime(2026, 11, 1, tzinfo=UTC)
# Holds the write lock (BEGIN IMMEDIATE) until a line arrives on stdin.
HOLD_WRITE_LOCK = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
connection.execute("ROLLBACK")
"""


def test_healthz_answers_at_once_while_another_process_holds_the_write_lock(tmp_path: Path) -> None:
    path = tmp_path / "segmentflow.db"
    app = create_app(Settings(database_url=f"sqlite:///{path}"))
    with TestClient(app) as client:
        with Session(app.state.engine) as session, session.begin():
            import_segments(recompute=False, session=session, segments=parse_segments(SEGMENTS), now=NOW)
            fresh = parse_context({"key": "fresh", "plan": "vip"})
            upsert_contacts(session=session, contexts=[fresh], now=NOW)  # stored, never computed
            _, token = create_key(session=session, scopes=["segments:read"], name="t", now=NOW)
        auth = bearer(token)
        with subprocess.Popen(
            [sys.executable, "-c", HOLD_WRITE_LOCK, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        ) as holder:
            assert holder.stdin is not None and holder.stdout is not None
            assert holder.stdout.readline() == "locked\n"
            with ThreadPoolExecutor(3) as pool:
                check = pool.submit(client.get, "/contacts/segments/vip/contacts/fresh", headers=auth)
                time.sleep(0.5)
                try:
                    assert not check.done(), "the check should be waiting for the write lock"
                    health = pool.submit(client.get, "/healthz")
                    read = pool.submit(client.get, "/contacts/segments/vip", headers=auth)
                    # Answered while the lock is held (the check waits up to SQLite's 10 s busy timeout).
                    assert health.result(timeout=4).json() == {"status": "ok", "database": "sqlite"}
                    assert read.result(timeout=4).status_code == 200
                    assert not check.done()
                finally:
                    holder.stdin.write("release\n")
                    holder.stdin.flush()
                answer = check.result(timeout=10)
        assert answer.status_code == 200, answer.text
        assert answer.json()["isMember"] is True
    app.state.engine.dispose()
