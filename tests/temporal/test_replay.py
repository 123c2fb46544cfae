"""Determinism guard: recorded histories of our workflows replay against the current code.

`histories/` holds one history per workflow type and per interceptor path (re-recorded by
`record_histories.py` after an intentional change); `histories/frozen/` holds histories of earlier code,
never re-recorded, which must keep replaying (the `workflow.patched` gates and deprecated handlers)."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path

import pytest
from segmentflow.plugins import SegmentsPlugin
from segmentflow.workflows import RecomputeMemberships, RecomputeMembershipsInput
from segmentflow.workflows.sla import AGENT_REPLY_SKIPS_PLAN, PLAN_DURING_DRAIN
from sqlalchemy.engine import Engine
from temporalio.client import WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from tests.temporal.conftest import plugin_client
from tests.temporal.helpers import contexts, load
from tests.temporal.record_histories import HOST_WORKFLOWS
from tests.temporal.user_workflows import ChooseTemplateWithHelper

HISTORIES = Path(__file__).with_name("histories")


def _recorded() -> list[Path]:
    return sorted([*HISTORIES.glob("*.json"), *HISTORIES.glob("frozen/*.json")])


def test_every_workflow_type_and_interceptor_path_has_a_recorded_history() -> None:
    types = {
        json.loads(p.read_text())["events"][0]["workflowExecutionStartedEventAttributes"]["workflowType"][
            "name"
        ]
        for p in _recorded()
    }
    assert {
        "segmentflow.RecomputeMemberships",
        "segmentflow.HandleMessage",
        "segmentflow.TicketSla",
        "segmentflow.WatchSlaMembershipChanges",
        "tests.HostRunsAction",
        "segmentflow.examples.ChooseGreeting",
    } <= types
    scheduled = {
        path.stem: {
            e["activityTaskScheduledEventAttributes"]["activityType"]["name"]
            for e in json.loads(path.read_text())["events"]
            if "activityTaskScheduledEventAttributes" in e
        }
        for path in _recorded()
    }
    assert {"segmentflow.ResolveMessage", "segmentflow.RunAction"} <= scheduled["host-resolve-inserted"]
    assert {"segmentflow.ResolveMessage", "segmentflow.RefuseAction"} <= scheduled["host-refuse-swapped"]


@pytest.mark.parametrize("path", _recorded(), ids=lambda p: str(p.relative_to(HISTORIES)))
async def test_recorded_history_replays_on_current_code(path: Path, engine: Engine) -> None:
    history = WorkflowHistory.from_json(path.stem, json.loads(path.read_text()))
    replayer = Replayer(workflows=HOST_WORKFLOWS, plugins=[SegmentsPlugin(engine=engine)])
    await replayer.replay_workflow(history)


async def test_fresh_histories_replay(dev_env: WorkflowEnvironment, engine: Engine, task_queue: str) -> None:
    load(engine, contexts(20))
    client = await plugin_client(dev_env, engine)
    async with Worker(client, task_queue=task_queue, workflows=[ChooseTemplateWithHelper]):
        recompute = await client.start_workflow(
            RecomputeMemberships.run,
            RecomputeMembershipsInput(range_size=6, ranges_per_run=2),
            id=f"rc-{uuid.uuid4()}",
            task_queue=task_queue,
        )
        await recompute.result()
        branch = await client.start_workflow(
            ChooseTemplateWithHelper.run, ["vip", "u0"], id=f"wf-{uuid.uuid4()}", task_queue=task_queue
        )
        await branch.result()
    replayer = Replayer(workflows=[ChooseTemplateWithHelper], plugins=[SegmentsPlugin(engine=engine)])
    for handle in (recompute, branch):
        await replayer.replay_workflow(await handle.fetch_history())


def _patches(path: Path) -> list[str]:
    """The `workflow.patched` ids a history recorded."""
    found = []
    for event in json.loads(path.read_text())["events"]:
        marker = event.get("markerRecordedEventAttributes", {})
        if marker.get("markerName") == "core_patch":
            data = marker["details"]["patch-data"]["payloads"][0]["data"]
            found.append(json.loads(base64.b64decode(data))["id"])
    return found


def test_the_patches_divide_the_recorded_ticket_histories() -> None:
    """The frozen history (signals, a plan after the agent's reply) predates the patches; the current one
    (updates) took the patched paths. Both replay (test_recorded_history_replays_on_current_code), which is
    what the patch is for: without the `workflow.patched` gate the frozen one fails with a nondeterminism
    error (a `PlanTicketSla` marker the code no longer schedules)."""
    frozen = HISTORIES / "frozen" / "ticket-sla-signals.json"
    assert _patches(frozen) == []
    assert "EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED" in frozen.read_text()
    assert set(_patches(HISTORIES / "ticket-sla.json")) == {AGENT_REPLY_SKIPS_PLAN, PLAN_DURING_DRAIN}
