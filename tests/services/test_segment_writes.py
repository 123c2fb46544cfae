"""Segment writes through their one path (`services.segment_admin`), on SQLite and PostgreSQL: keys that
would shadow an id are refused and an id reference only matches ids, a CLI import racing an API write
stores neither a cycle nor loses an update, and a segment something still names is not deleted."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from segmentflow.activities.membership import MembershipActivities
from segmentflow.workflows.models import CheckContactInSegmentInput
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.testing import ActivityEnvironment

from segmentflow.api import create_app
from segmentflow.cli import main
from segmentflow.db.tables import segment_table
from segmentflow.policies.sequences import parse_sequences
from segmentflow.policies.sla import parse_policies
from segmentflow.rules import RuleError, compile_segments, parse_context, parse_segments
from segmentflow.services.keys import create_key
from segmentflow.services.membership import check_membership, upsert_and_recompute
from segmentflow.services.messages import (
    parse_actions,
    parse_instructions,
    upsert_actions,
    upsert_instructions,
)
from segmentflow.services.segment_admin import (
    SegmentInUseError,
    delete_segment,
    import_segments,
    replace_segment,
)
from segmentflow.services.segments import get_segment, list_segments, load_index
from segmentflow.services.sequences import import_sequences
from segmentflow.services.sla import import_policies
from segmentflow.settings import Settings

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
VIP = {"key": "vip", "rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["vip"]}]}]}


def store(engine: Engine, *segments: dict[str, Any]) -> None:
    with Session(engine) as session, session.begin():
        import_segments(session=session, segments=parse_segments(list(segments)), now=NOW)


def put(engine: Engine, *contexts: dict[str, Any]) -> None:
    with Session(engine) as session, session.begin():
        index = load_index(session=session)
        upsert_and_recompute(
            session=session, contexts=[parse_context(c) for c in contexts], index=index, now=NOW
        )


def segment_id(engine: Engine, key: str) -> uuid.UUID:
    with Session(engine) as session:
        record = get_segment(session=session, ref=key)
        assert record is not None
        return record.id


def cli(capsys: pytest.CaptureFixture[str], database_url: str, *args: str) -> tuple[int, str, str]:
    try:
        main(["--database-url", database_url, *args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def client(engine: Engine, database_url: str) -> Iterator[TestClient]:
    app = create_app(Settings(database_url=database_url))
    with TestClient(app) as test_client:
        yield test_client
    app.state.engine.dispose()


@pytest.fixture
def auth(engine: Engine) -> dict[str, str]:
    scopes = ["segments:read", "segments:write"]
    with Session(engine) as session, session.begin():
        _, token = create_key(session=session, scopes=scopes, name="t", now=NOW)
    return {"Authorization": f"Bearer {token}"}


# ---- 16.3: a key cannot shadow an id -------------------------------------------------------------------

UUID_SHAPES = [
    "8c4a0f3e-2b1d-4e5f-9a6b-7c8d9e0f1a2b",
    "8c4a0f3e2b1d4e5f9a6b7c8d9e0f1a2b",
    "{8c4a0f3e-2b1d-4e5f-9a6b-7c8d9e0f1a2b}",
    "urn:uuid:8c4a0f3e-2b1d-4e5f-9a6b-7c8d9e0f1a2b",
]


@pytest.mark.parametrize("key", UUID_SHAPES)
def test_an_import_refuses_a_uuid_shaped_key_and_writes_nothing(engine: Engine, key: str) -> None:
    with (
        Session(engine) as session,
        session.begin(),
        pytest.raises(RuleError, match="looks like a segment id"),
    ):
        import_segments(session=session, segments=parse_segments([VIP, {"key": key}]), now=NOW)
    with Session(engine) as session:
        assert list_segments(session=session) == []


def test_the_api_refuses_a_key_equal_to_another_segments_id(
    engine: Engine, client: TestClient, auth: dict[str, str]
) -> None:
    store(engine, VIP)
    vip_id = str(segment_id(engine, "vip"))
    for key in (vip_id, uuid.UUID(vip_id).hex):
        refused = client.post("/contacts/segments", json={"key": key}, headers=auth)
        assert refused.status_code == 422, refused.text
        assert "looks like a segment id" in refused.text


def test_the_cli_import_refuses_a_uuid_shaped_key(
    capsys: pytest.CaptureFixture[str], engine: Engine, database_url: str, tmp_path: Path
) -> None:
    file = tmp_path / "segments.json"
    file.write_text(json.dumps([VIP, {"key": UUID_SHAPES[0]}]))
    code, _, err = cli(capsys, database_url, "segments", "import", str(file))
    assert code == 2 and "looks like a segment id" in err
    with Session(engine) as session:
        assert list_segments(session=session) == []


def test_an_id_reference_only_ever_matches_ids(
    engine: Engine, client: TestClient, auth: dict[str, str]
) -> None:
    """A segment whose key is vip's id (stored before keys were checked) cannot answer for vip: not in the
    API's membership check, not in a read, not in `CheckContactInSegment` by `segmentId`."""
    store(engine, VIP)
    put(engine, {"kind": "user", "key": "u-0002", "plan": "vip"})
    vip_id = segment_id(engine, "vip")
    with Session(engine) as session, session.begin():  # the impostor, written behind the service's back
        session.execute(
            segment_table.insert().values(
                id=uuid.uuid4(),
                key=str(vip_id),
                name="impostor",
                version=1,
                definition={"key": str(vip_id), "version": 1},
                created_at=NOW,
                updated_at=NOW,
            )
        )
    answer = client.get(f"/contacts/segments/{vip_id}/contacts/u-0002", headers=auth).json()
    assert (answer["segmentKey"], answer["isMember"]) == ("vip", True)
    assert client.get(f"/contacts/segments/{vip_id}", headers=auth).json()["key"] == "vip"
    with Session(engine) as session, session.begin():
        assert check_membership(session=session, segment_ref=str(vip_id), contact_key="u-0002").is_member


async def test_check_contact_in_segment_by_id_never_matches_a_key(engine: Engine) -> None:
    store(engine, VIP)
    put(engine, {"kind": "user", "key": "u-0002", "plan": "vip"})
    vip_id = segment_id(engine, "vip")
    with Session(engine) as session, session.begin():
        session.execute(
            segment_table.insert().values(
                id=uuid.uuid4(),
                key=str(vip_id),
                name="impostor",
                version=1,
                definition={"key": str(vip_id), "version": 1},
                created_at=NOW,
                updated_at=NOW,
            )
        )
    activities = MembershipActivities(engine)
    found = await ActivityEnvironment().run(
        activities.check_contact_in_segment,
        CheckContactInSegmentInput(segment_id=vip_id, contact_key="u-0002"),
    )
    assert (found.segment_key, found.is_member) == ("vip", True)


# ---- 16.4: CLI imports and API writes share one lock and version check ---------------------------------


class _Writer(threading.Thread):
    """Runs `work(session)` in its own transaction; holds the transaction open after the work until
    `commit` is set (when given), and publishes its PostgreSQL backend pid first."""

    def __init__(self, engine: Engine, work: Callable[[Session], Any], commit: threading.Event | None = None):
        super().__init__(daemon=True)
        self.engine, self.work, self.commit = engine, work, commit
        self.pid: int | None = None
        self.written = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with Session(self.engine) as session, session.begin():
                self.pid = session.scalar(sa.text("SELECT pg_backend_pid()"))
                self.result = self.work(session)
                self.written.set()
                if self.commit is not None:
                    assert self.commit.wait(30)
        except BaseException as exc:  # reported to the test
            self.error = exc
        finally:
            self.written.set()


def _finished_or_waiting_on_a_lock(engine: Engine, writer: _Writer, timeout: float = 20.0) -> str:
    """Wait until `writer` is done, or is waiting on a lock (a PostgreSQL lock it has not been granted)."""
    deadline = time.monotonic() + timeout
    with engine.connect() as connection:
        while time.monotonic() < deadline:
            if not writer.is_alive():
                return "finished"
            if writer.pid is not None and connection.scalar(
                sa.text("SELECT count(*) FROM pg_locks WHERE pid = :pid AND NOT granted"), {"pid": writer.pid}
            ):
                return "waiting"
            connection.rollback()
            time.sleep(0.02)
    raise AssertionError("the second writer neither finished nor waited on a lock")


@pytest.fixture
def postgresql(engine: Engine) -> Engine:
    if engine.dialect.name != "postgresql":
        pytest.skip("the race is a PostgreSQL one: SQLite has a single writer")
    return engine


def test_an_import_racing_an_api_write_stores_no_segment_match_cycle(postgresql: Engine) -> None:
    engine = postgresql
    store(engine, {"key": "a"}, {"key": "b"})
    commit = threading.Event()
    importer = _Writer(
        engine,
        lambda s: import_segments(
            session=s,
            segments=parse_segments([{"key": "b", "rules": [{"clauses": [_match("a")]}]}]),
            now=NOW,
            recompute=False,
        ),
        commit,
    )
    importer.start()
    assert importer.written.wait(30) and importer.error is None  # b -> a written, not committed yet
    api = _Writer(
        engine,
        lambda s: replace_segment(
            session=s,
            ref="a",
            name=None,
            description=None,
            definition={"rules": [{"clauses": [_match("b")]}]},
            expected_version=None,
            now=NOW,
        ),
    )
    api.start()
    state = _finished_or_waiting_on_a_lock(engine, api)
    commit.set()
    importer.join(30)
    api.join(30)
    assert state == "waiting"  # the API write waited for the import's lock
    assert importer.error is None
    assert isinstance(api.error, RuleError) and "cycle" in str(api.error)
    with Session(engine) as session:
        stored = [r.definition_model() for r in list_segments(session=session)]
    compile_segments(stored)  # no cycle stored
    assert {s.key: sorted(s.dependencies()) for s in stored} == {"a": [], "b": ["a"]}


def test_an_import_racing_an_api_write_loses_no_update(postgresql: Engine) -> None:
    engine = postgresql
    store(engine, {"key": "s", "included": ["u1"]})
    commit = threading.Event()
    api = _Writer(
        engine,
        lambda s: (
            replace_segment(
                session=s,
                ref="s",
                name=None,
                description=None,
                definition={"included": ["u2"]},
                expected_version=1,
                now=NOW,
            ).record.version
        ),
        commit,
    )
    api.start()
    assert api.written.wait(30) and api.error is None  # version 2 written, not committed yet
    importer = _Writer(
        engine,
        lambda s: (
            import_segments(
                session=s,
                segments=parse_segments([{"key": "s", "included": ["u3"]}]),
                now=NOW,
                recompute=False,
            )[0].record.version
        ),
    )
    importer.start()
    state = _finished_or_waiting_on_a_lock(engine, importer)
    commit.set()
    api.join(30)
    importer.join(30)
    assert (api.error, importer.error) == (None, None)
    assert state == "waiting"
    assert (api.result, importer.result) == (2, 3)  # two writes, two versions: the import came after
    with Session(engine) as session:
        record = get_segment(session=session, ref="s")
        assert record is not None
        assert (record.version, record.definition["included"]) == (3, ["u3"])


def test_many_racing_imports_and_api_writes_never_share_a_version(postgresql: Engine) -> None:
    engine = postgresql
    store(engine, {"key": "s"})
    versions: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def write(n: int) -> None:
        start.wait(10)
        with Session(engine) as session, session.begin():
            if n % 2:
                saved = import_segments(
                    session=session, segments=parse_segments([{"key": "s", "included": [f"u{n}"]}]), now=NOW
                )[0]
            else:
                saved = replace_segment(
                    session=session,
                    ref="s",
                    name=None,
                    description=None,
                    definition={"included": [f"u{n}"]},
                    expected_version=None,
                    now=NOW,
                )
            with lock:
                versions.append(saved.record.version)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(versions) == list(range(2, 10))


def _match(key: str) -> dict[str, Any]:
    return {"attribute": "segmentMatch", "op": "segmentMatch", "values": [key]}


# ---- 16.10: a segment still named elsewhere is not deleted ---------------------------------------------


def _everything_naming_vip(engine: Engine) -> None:
    store(engine, VIP, {"key": "eu"}, {"key": "vip-eu", "rules": [{"clauses": [_match("vip")]}]})
    with Session(engine) as session, session.begin():
        import_policies(
            session=session,
            policies=parse_policies(
                [
                    {
                        "key": "gold",
                        "conditions": {"segments_none": ["vip"]},
                        "targets": {"normal": {"first_reply": "PT1H"}},
                        "calendar": "24/7",
                    }
                ]
            ),
            now=NOW,
        )
        send = {"type": "send", "channel": "webhook", "url": "http://127.0.0.1:9/x", "template": "Hi"}
        import_sequences(
            session=session,
            sequences=parse_sequences(
                [
                    {
                        "key": "welcome",
                        "name": "W",
                        "segment": "eu",
                        "steps": [{"type": "branch", "segment": "vip", "then": [send]}],
                    },
                ]
            ),
            now=NOW,
        )
        upsert_actions(
            session=session,
            actions=parse_actions(
                [{"key": "refund", "name": "Refund", "restricted_to_segments": ["eu", "vip"]}]
            ),
            now=NOW,
        )
        upsert_instructions(
            session=session,
            instructions=parse_instructions(
                [{"key": "tone", "text": "Be kind", "restricted_to_segments": ["vip"]}]
            ),
            now=NOW,
        )


def test_deleting_a_segment_still_named_anywhere_is_refused_naming_each(engine: Engine) -> None:
    _everything_naming_vip(engine)
    with (
        Session(engine) as session,
        session.begin(),
        pytest.raises(SegmentInUseError) as refused,
    ):
        delete_segment(session=session, ref="vip", expected_version=None, now=NOW)
    message = str(refused.value)
    for named in (
        'segmentMatch in segments "vip-eu"',
        'SLA policies "gold"',
        'sequences "welcome"',
        'actions "refund"',
        'instructions "tone"',
    ):
        assert named in message
    with Session(engine) as session:
        assert get_segment(session=session, ref="vip") is not None


def test_the_api_answers_409_and_the_cli_exits_2_naming_the_references(
    engine: Engine,
    database_url: str,
    client: TestClient,
    auth: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    _everything_naming_vip(engine)
    refused = client.delete("/contacts/segments/vip", headers=auth)
    assert refused.status_code == 409 and 'SLA policies "gold"' in refused.json()["detail"]
    code, _, err = cli(capsys, database_url, "segments", "delete", "vip")
    assert code == 2 and 'sequences "welcome"' in err and 'instructions "tone"' in err
    assert client.get("/contacts/segments/vip", headers=auth).status_code == 200
    code, out, _ = cli(capsys, database_url, "segments", "delete", "vip-eu")  # nothing names this one
    assert code == 0 and 'deleted segment "vip-eu"' in out
