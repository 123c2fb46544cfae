"""`segmentflow sequences import/launch/pause/status` on both databases, and the demo's sequence step."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from segmentflow.workflows import RunSequence
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tests.legacy import remove_segment_row
from tests.sequences.helpers import load_segments, put_contacts
from tests.temporal.conftest import plugin_client
from tests.test_cli import run

SEGMENTS = [{"key": "vip", "rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["vip"]}]}]}]
SEND = {
    "type": "send",
    "channel": "webhook",
    "url": "http://127.0.0.1:9/hook",
    "template": "Hi {{ contact.key }}",
}


def sequence_file(tmp_path: Path, data: Any) -> str:
    path = tmp_path / "sequences.json"
    path.write_text(json.dumps(data))
    return str(path)


def cli(capsys: pytest.CaptureFixture[str], engine: Engine, *args: str) -> tuple[int, str, str]:
    return run(capsys, "--database-url", engine.url.render_as_string(hide_password=False), "sequences", *args)


def test_import_launch_status_pause(
    capsys: pytest.CaptureFixture[str], engine: Engine, tmp_path: Path
) -> None:
    load_segments(engine, SEGMENTS)
    put_contacts(engine, [{"kind": "user", "key": f"u{i}", "plan": "vip"} for i in range(2)])
    steps = [SEND, {"type": "wait", "duration": "P1D"}, SEND]
    file = sequence_file(tmp_path, [{"key": "drip", "name": "Drip", "segment": "vip", "steps": steps}])
    code, out, _ = cli(capsys, engine, "import", file)
    assert (code, out.strip()) == (0, "imported 1 sequence(s): drip (v1, created)")
    code, out, _ = cli(capsys, engine, "launch", "drip", "--no-start")
    assert (code, out.strip()) == (0, "launched drip: enrolled 2 contact(s)")
    code, out, _ = cli(capsys, engine, "status", "drip", "--json")
    report = json.loads(out)
    assert (report["status"], report["active"]) == ("active", 2)
    assert [(s["step"], s["type"], s["enrolled"]) for s in report["steps"]] == [
        (0, "send", 2),
        (1, "wait", 0),
        (2, "send", 0),
    ]
    code, out, _ = cli(capsys, engine, "status", "drip")
    assert code == 0 and "enrollments=2 active=2" in out and "wait" in out
    code, out, _ = cli(capsys, engine, "pause", "drip")
    assert (code, out.strip()) == (0, "paused drip")
    code, out, _ = cli(capsys, engine, "launch", "drip", "--no-start")
    assert out.strip() == "launched drip: enrolled 0 contact(s)"  # resumed: members are not enrolled twice


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        (b"\xff\xfe{}", "not UTF-8 text"),
        ([], "no sequence: expected a sequence object or a non-empty list"),
        ([1], "item 0 of the list is not a sequence: expected a JSON object, got a number"),
        ('"text"', "the document is not a sequence: expected a JSON object, got a string"),
        ({"key": "x", "name": "X", "segment": "ghost", "steps": [SEND]}, 'segment "ghost" is not stored'),
        (
            {
                "key": "x",
                "name": "X",
                "segment": "vip",
                "steps": [SEND, {"type": "branch", "segment": "ghost", "then": [SEND]}],
            },
            'sequence "x": step 1: branch segment "ghost" is not stored',
        ),
        (
            {
                "key": "x",
                "name": "X",
                "segment": "vip",
                "steps": [{"type": "wait", "duration": "P9999999999D"}],
            },
            "longer than the longest duration allowed",
        ),
        ({"key": "x", "name": "X", "segment": "vip", "steps": []}, 'sequence "x": steps'),
        (
            {"key": "x", "name": "X", "segment": "vip", "steps": [{**SEND, "template": "{{ oops"}]},
            'sequence "x": step 0: template',
        ),
    ],
)
def test_bad_files_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], engine: Engine, tmp_path: Path, content: Any, message: str
) -> None:
    load_segments(engine, SEGMENTS)
    path = tmp_path / "bad.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    code, out, err = cli(capsys, engine, "import", str(path))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err
    code, out, _ = cli(capsys, engine, "status", "x")
    assert code == 2  # nothing was written


def test_unknown_sequence_or_segment_exits_2(
    capsys: pytest.CaptureFixture[str], engine: Engine, tmp_path: Path
) -> None:
    code, _, err = cli(capsys, engine, "status", "nope")
    assert code == 2 and 'unknown sequence "nope"' in err
    load_segments(engine, [{**SEGMENTS[0], "key": "ghost"}])
    file = sequence_file(tmp_path, {"key": "x", "name": "X", "segment": "ghost", "steps": [SEND]})
    assert cli(capsys, engine, "import", file)[0] == 0
    with Session(engine) as session, session.begin():  # the segment goes away after the import
        remove_segment_row(session, "ghost")  # the API refuses: the sequence still names it
    code, _, err = cli(capsys, engine, "launch", "x", "--no-start")
    assert code == 2 and 'segment "ghost", which is not stored' in err


def test_the_demo_sends_a_sequence_to_a_local_webhook(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SEGMENTFLOW_EGRESS_ALLOW")  # the demo opens its own loopback webhook itself
    code, out, _ = run(capsys, "demo", "--database-url", f"sqlite:///{tmp_path / 'demo.db'}", "--no-temporal")
    assert code == 0
    line = next(x for x in out.splitlines() if x.startswith("sequence welcome-vip:"))
    sent = int(line.split("sent=")[1].split()[0])
    assert sent > 0 and f"the webhook got {sent} distinct message(s)" in line
    # The demo's template has a default for multi-kind contacts' names: every enrolled member gets it.
    assert "failed=0" in line and f"enrolled={sent} " in line


async def test_launch_starts_the_runner_workflow_and_pause_stops_it(
    capsys: pytest.CaptureFixture[str],
    engine: Engine,
    tmp_path: Path,
    dev_env: WorkflowEnvironment,
    task_queue: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    load_segments(engine, SEGMENTS)
    put_contacts(engine, [{"kind": "user", "key": "u0", "plan": "vip"}])
    cli(
        capsys,
        engine,
        "import",
        sequence_file(tmp_path, {"key": "live", "name": "Live", "segment": "vip", "steps": [SEND]}),
    )
    monkeypatch.setenv("SEGMENTFLOW_TEMPORAL_ADDRESS", dev_env.client.service_client.config.target_host)
    monkeypatch.setenv("SEGMENTFLOW_TASK_QUEUE", task_queue)
    code, out, err = await asyncio.to_thread(cli, capsys, engine, "launch", "live")
    assert code == 0, err
    assert f"runner workflow segmentflow-sequence-live on task queue {task_queue}" in out
    handle = dev_env.client.get_workflow_handle("segmentflow-sequence-live")
    assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
    client = await plugin_client(dev_env, engine)
    async with Worker(client, task_queue=task_queue):
        code, out, _ = await asyncio.to_thread(cli, capsys, engine, "pause", "live")
        assert out.strip() == "paused live"
        result = await client.get_workflow_handle_for(RunSequence.run, "segmentflow-sequence-live").result()
    assert result.status == "paused"


@pytest.mark.parametrize("allow", ["", "127.0.0.0/8"])
def test_import_refuses_a_webhook_at_a_refused_address_naming_the_step(
    capsys: pytest.CaptureFixture[str],
    engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    allow: str,
) -> None:
    monkeypatch.setenv("SEGMENTFLOW_EGRESS_ALLOW", allow)
    load_segments(engine, SEGMENTS)
    bad = {**SEND, "url": "http://169.254.169.254/latest/meta-data/"}
    loopback = {**SEND, "url": "http://2130706433:9/hook"}
    steps = [{**SEND, "url": "https://hooks.example/x"}, {"type": "branch", "segment": "vip", "then": [bad]}]
    file = sequence_file(tmp_path, {"key": "drip", "name": "Drip", "segment": "vip", "steps": steps})
    code, _, err = cli(capsys, engine, "import", file)
    assert code == 2 and 'sequence "drip": steps[1].then[0].url: egress refused' in err
    assert "169.254.169.254 is link-local" in err
    file = sequence_file(tmp_path, {"key": "drip", "name": "Drip", "segment": "vip", "steps": [loopback]})
    code, _, err = cli(capsys, engine, "import", file)
    assert code == (0 if allow else 2), err  # the allow list opens loopback, and only loopback


def test_a_bad_egress_allow_entry_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEGMENTFLOW_EGRESS_ALLOW", "127.0.0.0/8, not a host")
    file = sequence_file(tmp_path, {"key": "drip", "name": "Drip", "segment": "vip", "steps": [SEND]})
    code, _, err = cli(capsys, engine, "import", file)
    assert code == 2 and "SEGMENTFLOW_EGRESS_ALLOW: 'not a host' is neither a CIDR nor a host name" in err
