"""`segmentflow actions import/list` and `instructions import/list` against SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from segmentflow.services.messages import list_actions, list_instructions
from tests.messages.conftest import INSTRUCTIONS, SEGMENTS, actions_json
from tests.test_cli import run, write


def _db(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


@pytest.fixture
def url(engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    db = _db(engine)
    code, _, err = run(
        capsys, "--database-url", db, "segments", "import", str(write(tmp_path, "s.json", SEGMENTS))
    )
    assert (code, err) == (0, "")
    return db


def test_actions_import_stores_every_field_and_defaults_the_rest(
    url: str, engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data: list[dict[str, Any]] = [*actions_json("http://hooks.test"), {"key": "bare"}]
    code, out, err = run(
        capsys, "--database-url", url, "actions", "import", str(write(tmp_path, "a.json", data))
    )
    assert (code, err) == (0, "")
    assert out.strip() == "imported 5 action(s): order-status, refund, book-call, beta-feature, bare"
    with Session(engine) as session:
        stored = {a.key: a for a in list_actions(session=session)}
    assert stored["book-call"].restricted_to_segments == ["vip", "eu"]
    assert stored["order-status"].parameters["properties"] == {"order": {"type": "string"}}
    assert stored["refund"].webhook == {"url": "http://hooks.test/hooks/refund", "headers": {}}
    bare = stored["bare"]
    assert (bare.name, bare.description, bare.restricted_to_segments, bare.trigger_phrases, bare.webhook) == (
        "bare",
        "",
        [],
        [],
        None,
    )
    assert bare.parameters == {"type": "object", "properties": {}}


def test_import_reports_unknown_segment_keys_and_list_shows_the_item_withheld(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = [{"key": "legacy", "restricted_to_segments": ["vip", "old-plan"]}]
    code, out, err = run(
        capsys, "--database-url", url, "actions", "import", str(write(tmp_path, "a.json", data))
    )
    assert code == 0
    assert 'action "legacy" is restricted to unknown segment(s) old-plan' in err
    code, out, _ = run(capsys, "--database-url", url, "actions", "list")
    assert code == 0 and "legacy" in out and "withheld" in out and "old-plan" in out


def test_instructions_import_and_list(
    url: str, engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = [*INSTRUCTIONS, {"key": "ghost", "text": "Boo.", "restricted_to_segments": ["nope"]}]
    path = write(tmp_path, "i.json", data)
    code, out, err = run(capsys, "--database-url", url, "instructions", "import", str(path))
    assert code == 0
    assert out.strip() == "imported 5 instruction(s): tone, vip-tone, gdpr, beta-note, ghost"
    assert 'instruction "ghost" is restricted to unknown segment(s) nope' in err
    # Importing again replaces by key.
    data[0] = {"key": "tone", "text": "Be very brief."}
    code, _, _ = run(
        capsys, "--database-url", url, "instructions", "import", str(write(tmp_path, "i.json", data))
    )
    assert code == 0
    with Session(engine) as session:
        stored = {i.key: i for i in list_instructions(session=session)}
    assert len(stored) == 5 and stored["tone"].text == "Be very brief."
    code, out, _ = run(capsys, "--database-url", url, "instructions", "list")
    assert code == 0 and "Be very brief." in out and "(everyone)" in out and "nope" in out


@pytest.mark.parametrize(
    ("command", "content", "message"),
    [
        ("actions", {"key": "x"}, "expected a JSON list of actions"),
        ("actions", [{"name": "no key"}], "action #0: key: Field required"),
        ("actions", [{"key": "x", "colour": "red"}], 'action "x": colour: Extra inputs are not permitted'),
        ("actions", [{"key": "x", "webhook": {"url": "ftp://x"}}], 'action "x": webhook.url'),
        ("actions", [{"key": "x"}, {"key": "x"}], 'action "x" appears twice'),
        ("actions", [{"key": "x", "webhook": {"url": "http://:80"}}], "with a host is required"),
        ("actions", [{"key": "x", "webhook": {"url": "http://h.test:70000/"}}], "port 70000 is out of range"),
        ("actions", [{"key": "x", "webhook": {"url": "http://h.test/\x01"}}], "control characters"),
        ("actions", [{"key": "x", "webhook": {"url": "gopher://h.test/"}}], 'action "x": webhook.url'),
        (
            "actions",
            [{"key": "x", "webhook": {"url": "http://h.test", "headers": {"X-A": "v\r\nX-B: w"}}}],
            "CR, LF and NUL are not allowed",
        ),
        (
            "actions",
            [{"key": "x", "webhook": {"url": "http://h.test", "headers": {"X A": "v"}}}],
            "not a valid HTTP header name",
        ),
        ("actions", [{"key": "x", "restricted_to_segments": [""]}], "restricted_to_segments.0"),
        ("actions", [{"key": "x", "restricted_to_segments": ["a\x00"]}], "restricted_to_segments.0"),
        ("actions", [{"key": "x", "restricted_to_segments": ["s" * 257]}], "restricted_to_segments.0"),
        (
            "instructions",
            [{"key": "i", "text": "t", "restricted_to_segments": [""]}],
            "restricted_to_segments.0",
        ),
        ("instructions", [{"key": "i"}], 'instruction "i": text: Field required'),
        (
            "instructions",
            [{"key": "i", "text": "t", "restricted_to_segments": "vip"}],
            "restricted_to_segments",
        ),
    ],
)
def test_bad_files_exit_2_with_one_line_naming_the_item(
    url: str,
    engine: Engine,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
    content: Any,
    message: str,
) -> None:
    path = write(tmp_path, "bad.json", content)
    code, _, err = run(capsys, "--database-url", url, command, "import", str(path))
    assert code == 2
    assert err.startswith(f"segmentflow: error: {path}: ") and message in err
    assert len(err.strip().splitlines()) == 1
    with Session(engine) as session:  # the whole file is refused: nothing was stored
        assert list_actions(session=session) == [] and list_instructions(session=session) == []


def test_actions_import_refuses_a_webhook_at_a_refused_address(
    capsys: pytest.CaptureFixture[str], engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SEGMENTFLOW_EGRESS_ALLOW")  # this package's loopback allowance, taken away
    url = engine.url.render_as_string(hide_password=False)
    data = [
        {"key": "ok", "webhook": {"url": "https://hooks.example/x"}},
        {"key": "x", "webhook": {"url": "http://[::1]:8/x"}},
    ]
    code, _, err = run(
        capsys, "--database-url", url, "actions", "import", str(write(tmp_path, "a.json", data))
    )
    assert code == 2 and 'action "x": webhook.url: egress refused: ::1 is loopback' in err
    with Session(engine) as session:
        assert list_actions(session=session) == []  # the whole file or nothing
