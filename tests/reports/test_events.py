"""Conversation events in: idempotent by id with duplicates counted, all or none over HTTP (422 naming the
index and field), and `segmentflow events import` (a bad line names file and line and writes nothing;
`--skip-invalid` reports it and imports the rest)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy.engine import Engine
from sqlmodel import Session

from segmentflow.db.tables import conversation_event_table
from segmentflow.services.conversations import describe_validation_error, parse_event, record_conversations
from tests.reports.conftest import at, token
from tests.test_cli import run

GOOD = {
    "id": "c1",
    "contactKey": "alice",
    "at": "2026-03-02T10:00:00Z",
    "channel": "chat",
    "handoff": True,
    "csat": 4,
    "messages": 7,
}


def stored(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        query = sa.select(conversation_event_table).order_by(conversation_event_table.c.id)
        return [dict(row._mapping) for row in conn.execute(query)]


def test_a_repeated_id_changes_nothing_and_counts_as_a_duplicate(engine: Engine) -> None:
    first = parse_event(GOOD)
    changed = parse_event({**GOOD, "csat": 1})
    other = parse_event({**GOOD, "id": "c2", "contactKey": None})
    with Session(engine) as session, session.begin():
        counts = record_conversations(session=session, events=[first, other, first], now=at(9))
    assert (counts.recorded, counts.duplicates) == (2, 1)
    with Session(engine) as session, session.begin():
        counts = record_conversations(session=session, events=[changed], now=at(9))
    assert (counts.recorded, counts.duplicates) == (0, 1)
    rows = stored(engine)
    assert [(r["id"], r["contact_key"], r["csat"]) for r in rows] == [("c1", "alice", 4), ("c2", None, 4)]
    assert rows[0]["at"] == first.at
    assert (rows[0]["channel"], rows[0]["handoff"], rows[0]["messages"]) == ("chat", True, 7)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"csat": 6}, "csat"),
        ({"csat": 0}, "csat"),
        ({"csat": True}, "csat"),
        ({"csat": 4.5}, "csat"),
        ({"handoff": "yes"}, "handoff"),
        ({"at": "2026-03-02T10:00:00"}, "at"),  # no offset
        ({"at": 1772445600}, "at"),  # a number is not RFC 3339
        ({"at": "yesterday"}, "at"),
        ({"id": ""}, "id"),
        ({"contactKey": "a\x00b"}, "contactKey"),
        ({"messages": -1}, "messages"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_a_bad_event_is_refused_naming_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_event({**GOOD, **change})
    assert describe_validation_error(caught.value).startswith(f"{field}:")


def test_contact_key_must_be_given_even_if_null() -> None:
    data = {k: v for k, v in GOOD.items() if k != "contactKey"}
    with pytest.raises(ValidationError) as caught:
        parse_event(data)
    assert describe_validation_error(caught.value).startswith("contactKey:")


def test_post_events_is_all_or_none_with_a_422_naming_index_and_field(
    engine: Engine, client: TestClient
) -> None:
    headers = token(engine, "events:write")
    body = [GOOD, {**GOOD, "id": "c2"}, {**GOOD, "id": "c3", "csat": 9}]
    response = client.post("/events", json=body, headers=headers)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", 2, "csat"]
    assert stored(engine) == []
    response = client.post("/events", json=[*body[:2], GOOD], headers=headers)
    assert response.status_code == 200
    assert response.json() == {"recorded": 2, "duplicates": 1}
    assert client.post("/events", json=[GOOD], headers=headers).json() == {"recorded": 0, "duplicates": 1}


def test_post_events_needs_events_write(engine: Engine, client: TestClient) -> None:
    assert client.post("/events", json=[GOOD]).status_code == 401
    denied = client.post("/events", json=[GOOD], headers=token(engine, "reports:read", "segments:write"))
    assert denied.status_code == 403
    assert "events:write" in denied.json()["detail"]
    assert stored(engine) == []


def write_lines(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "events.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_cli_import_stops_at_a_bad_line_naming_file_and_line_and_writes_nothing(
    engine: Engine, database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_lines(tmp_path, [json.dumps(GOOD), "", json.dumps({**GOOD, "id": "c2", "csat": 7}), "{oops"])
    code, _, err = run(capsys, "--database-url", database_url, "events", "import", str(path))
    assert code == 2
    assert f"{path}:3: csat:" in err
    assert stored(engine) == []


def test_cli_import_skip_invalid_reports_bad_lines_and_imports_the_rest(
    engine: Engine, database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [
        json.dumps(GOOD),
        json.dumps({**GOOD, "id": "c2", "csat": 7}),
        "{oops",
        json.dumps({**GOOD, "id": "c3"}),
        json.dumps(GOOD),
    ]
    path = write_lines(tmp_path, lines)
    code, out, err = run(
        capsys, "--database-url", database_url, "events", "import", str(path), "--skip-invalid"
    )
    assert code == 0, err
    assert f"{path}:2: skipped: csat:" in err
    assert f"{path}:3: skipped: not valid JSON" in err
    assert "recorded 2 event(s), 1 duplicate(s), 2 invalid line(s) skipped" in out
    assert [r["id"] for r in stored(engine)] == ["c1", "c3"]
    code, out, _ = run(
        capsys, "--database-url", database_url, "events", "import", str(path), "--skip-invalid"
    )
    assert "recorded 0 event(s), 3 duplicate(s)" in out


def test_cli_import_of_a_missing_file_is_a_clear_error(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        capsys, "--database-url", database_url, "events", "import", str(tmp_path / "nope.jsonl")
    )
    assert code == 2
    assert "nope.jsonl: cannot read" in err
