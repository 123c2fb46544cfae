"""Determinism guard for the runner workflow: a recorded history of `segmentflow.RunSequence` (sends, a
wait, a wake signal, a pause) replays on the current code, and so does a fresh one.
`SEGMENTFLOW_RECORD_HISTORIES=1` rewrites the recorded file from the fresh run."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

from segmentflow.plugins import SegmentsPlugin
from segmentflow.workflows import RunSequence
from sqlalchemy.engine import Engine
from temporalio.client import WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from tests.sequences.helpers import eventually, load_segments, put_contacts, save_sequence, webhook_provider
from tests.sequences.test_runner import runners

RECORDED = Path(__file__).with_name("histories") / "run-sequence.json"
SEGMENTS = [{"key": "vip", "rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["vip"]}]}]}]


async def test_recorded_runner_history_replays_on_current_code(engine: Engine) -> None:
    history = WorkflowHistory.from_json("run-sequence", json.loads(RECORDED.read_text()))
    await Replayer(workflows=[], plugins=[SegmentsPlugin(engine=engine)]).replay_workflow(history)


async def test_a_fresh_runner_history_replays(
    skipping_env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    load_segments(engine, SEGMENTS)
    put_contacts(engine, [{"kind": "user", "key": f"u{i}", "plan": "vip"} for i in range(3)])
    with webhook_provider() as provider:
        send = {"type": "send", "channel": "webhook", "url": provider.url + "/ok", "template": "Hi"}
        steps = [send, {"type": "wait", "duration": "P1D"}, send]
        save_sequence(
            engine,
            {"key": "replayed", "name": "Replayed", "segment": "vip", "steps": steps},
            at=await skipping_env.get_current_time(),
        )
        async with runners(skipping_env, engine, task_queue, "replayed") as handles:
            await eventually(lambda: len(provider.deliveries()) == 3, what="the first sends")
            await handles["replayed"].signal(RunSequence.wake)
            await skipping_env.sleep(timedelta(days=1, hours=1))
            await eventually(lambda: len(provider.deliveries()) == 6, what="the second sends")
        history = await handles["replayed"].fetch_history()
    if os.environ.get("SEGMENTFLOW_RECORD_HISTORIES") == "1" and engine.dialect.name == "sqlite":
        RECORDED.write_text(json.dumps(json.loads(history.to_json()), indent=1) + "\n")
    await Replayer(workflows=[], plugins=[SegmentsPlugin(engine=engine)]).replay_workflow(history)
