"""Re-record the histories the replay tests replay: run after an intentional, versioned workflow change,
never to make a failing replay pass. One command re-records them all:

    .venv/bin/python tests/temporal/record_histories.py

It writes one history per workflow type and per interceptor path into `tests/temporal/histories/`, and
re-records `tests/sequences/histories/run-sequence.json` through its pytest
(`SEGMENTFLOW_RECORD_HISTORIES=1`).
Files under `tests/temporal/histories/frozen/` are histories of *earlier* code (before a `workflow.patched`
change); they are never re-recorded, since they stand for workflows already in flight.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from segmentflow.plugins import (
    DEV_SERVER_ARGS,
    SegmentsPlugin,
    temporal_cli_path,
    temporal_test_server_path,
)
from segmentflow.workflows import RecomputeMemberships, RecomputeMembershipsInput
from segmentflow.workflows.examples import ChooseGreeting
from segmentflow.workflows.message_models import HANDLE_MESSAGE, HandleMessageInput, HandleMessageResult
from segmentflow.workflows.sla_models import (
    TICKET_SLA,
    WATCH_SLA_MEMBERSHIP_CHANGES,
    SlaTicket,
    TicketSlaInput,
    TicketSlaState,
    WatchSlaChangesInput,
)
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from segmentflow.db.engine import make_engine, reset
from segmentflow.policies.sla import parse_policies
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
from segmentflow.services.sla import import_policies
from tests.messages import conftest as messages
from tests.messages.host_workflows import HostRunsAction
from tests.sla.conftest import WebhookServer
from tests.sla.test_ticket_sla import POLICIES
from tests.temporal.helpers import contexts, load
from tests.temporal.user_workflows import ChooseTemplateWithHelper

OUT = Path(__file__).with_name("histories")
#: Workflows the recorded histories run besides the plugin's own (the Replayer needs them too): hosts
#: and the example `segmentflow demo` registers.
HOST_WORKFLOWS: list[type] = [ChooseTemplateWithHelper, HostRunsAction, ChooseGreeting]
T = TypeVar("T")


def write(name: str, history_json: str, out: Path = OUT) -> None:
    (out / f"{name}.json").write_text(json.dumps(json.loads(history_json), indent=1) + "\n")


async def eventually(probe: Callable[[], Awaitable[T]], done: Callable[[T], bool]) -> T:
    for _ in range(400):
        value = await probe()
        if done(value):
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"never reached; last value: {value!r}")


def seed(engine: Engine, hooks_url: str) -> None:
    """Contacts u0..u19 (every third a vip), the message-handling catalog, the SLA policies."""
    now = datetime.now(UTC)
    load(engine, contexts(20))
    with Session(engine) as session, session.begin():
        import_segments(recompute=False, session=session, segments=parse_segments(messages.SEGMENTS), now=now)
        upsert_contacts(session=session, contexts=[parse_context(c) for c in messages.CONTACTS], now=now)
        upsert_actions(session=session, actions=parse_actions(messages.actions_json(hooks_url)), now=now)
        upsert_instructions(session=session, instructions=parse_instructions(messages.INSTRUCTIONS), now=now)
        import_policies(session=session, policies=parse_policies(POLICIES), now=now)
    recompute_all(engine)


async def record_recompute(client: Client, queue: str, out: Path) -> None:
    handle = await client.start_workflow(
        RecomputeMemberships.run,
        RecomputeMembershipsInput(range_size=6, ranges_per_run=2, parallelism=2),
        id="recompute-continue-as-new",
        task_queue=queue,
    )
    await handle.result()
    first = client.get_workflow_handle("recompute-continue-as-new", run_id=handle.first_execution_run_id)
    write("recompute-first-run", (await first.fetch_history()).to_json(), out)
    write("recompute-last-run", (await handle.fetch_history()).to_json(), out)


async def record_branch(client: Client, queue: str, out: Path) -> None:
    handle = await client.start_workflow(
        ChooseTemplateWithHelper.run, ["vip", "u0"], id="branch-on-is-member", task_queue=queue
    )
    await handle.result()
    write("branch-on-is-member", (await handle.fetch_history()).to_json(), out)
    greeting = await client.start_workflow(ChooseGreeting.run, "u0", id="choose-greeting", task_queue=queue)
    assert await greeting.result() == "vip-welcome"
    write("choose-greeting", (await greeting.fetch_history()).to_json(), out)


async def record_messages(client: Client, queue: str, out: Path) -> None:
    """`HandleMessage` running an offered action; and a host workflow calling `RunAction` without resolving
    first, where the interceptor inserts `ResolveMessage` (then runs it) or swaps in `RefuseAction`."""
    result: HandleMessageResult = await client.execute_workflow(
        HANDLE_MESSAGE,
        HandleMessageInput(contact_key="u-vip", conversation_id="conv-1", text="I want a refund"),
        id="handle-message",
        task_queue=queue,
        result_type=HandleMessageResult,
    )
    assert result.ran == "refund", result
    write(
        "handle-message", (await client.get_workflow_handle("handle-message").fetch_history()).to_json(), out
    )
    for name, contact in (("host-resolve-inserted", "u-vip"), ("host-refuse-swapped", "u-free")):
        outcome = await client.execute_workflow(
            HostRunsAction.run,
            {"action": "refund", "contactKey": contact},
            id=name,
            task_queue=queue,
        )
        assert outcome["outcome"] == ("ran" if contact == "u-vip" else "SegmentRestricted"), outcome
        write(name, (await client.get_workflow_handle(name).fetch_history()).to_json(), out)


async def record_watch(client: Client, queue: str, out: Path) -> None:
    """One watcher run: a dispatch, a sleep between polls, then continue-as-new (one poll per run)."""
    handle: WorkflowHandle[Any, None] = await client.start_workflow(
        WATCH_SLA_MEMBERSHIP_CHANGES,
        WatchSlaChangesInput(poll_interval=timedelta(seconds=1), polls_per_run=1),
        id="watch-sla-membership-changes",
        task_queue=queue,
    )
    first = client.get_workflow_handle(handle.id, run_id=handle.first_execution_run_id)

    async def run_id() -> str | None:
        return (await handle.describe()).run_id

    await eventually(run_id, lambda r: r != handle.first_execution_run_id)
    await handle.terminate()
    write("watch-sla-membership-changes", (await first.fetch_history()).to_json(), out)


async def record_ticket(
    env: WorkflowEnvironment, client: Client, queue: str, out: Path, send: TicketSender
) -> None:
    """A vip ticket: planned, changed, warned (first reply at 48 min), replied to, paused, solved."""
    created = await env.get_current_time()
    handle: WorkflowHandle[Any, TicketSlaState] = await client.start_workflow(
        TICKET_SLA,
        TicketSlaInput(
            ticket_id="t-recorded",
            contact_key="u0",
            ticket=SlaTicket(priority="normal", channel="email", created_at=created),
        ),
        id="ticket-sla",
        task_queue=queue,
        result_type=TicketSlaState,
    )

    async def state() -> TicketSlaState:
        return await handle.query("state", result_type=TicketSlaState)

    await eventually(state, lambda s: s.policy == "vip")
    await send(handle, "change", {"tags": ["billing"]})
    await env.sleep(timedelta(minutes=50))
    await eventually(state, lambda s: s.metrics["first_reply"].warned)
    await send(handle, "reply", {"by": "agent", "at": (created + timedelta(minutes=49)).isoformat()})
    await send(handle, "change", {"status": "pending"})
    await send(handle, "change", {"status": "open"})
    await send(handle, "change", {"status": "solved"})
    await handle.result()
    write("ticket-sla", (await handle.fetch_history()).to_json(), out)


TicketSender = Callable[[WorkflowHandle[Any, TicketSlaState], str, dict[str, Any]], Awaitable[object]]


async def send_update(handle: WorkflowHandle[Any, TicketSlaState], name: str, arg: dict[str, Any]) -> object:
    return await handle.execute_update(name, arg, result_type=TicketSlaState)


async def main(out: Path = OUT, send: TicketSender = send_update) -> None:
    engine = make_engine(f"sqlite:///{tempfile.mkdtemp()}/record.db")
    reset(engine)
    hooks = WebhookServer()
    seed(engine, hooks.url.rsplit("/hooks", 1)[0])
    dev = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli_path(), dev_server_extra_args=DEV_SERVER_ARGS
    )
    skipping = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=temporal_test_server_path()
    )
    try:
        client = Client(**{**dev.client.config(), "plugins": [SegmentsPlugin(engine=engine)]})
        async with Worker(client, task_queue="rec", workflows=HOST_WORKFLOWS):
            await record_recompute(client, "rec", out)
            await record_branch(client, "rec", out)
            await record_messages(client, "rec", out)
            await record_watch(client, "rec", out)
        timed = Client(**{**skipping.client.config(), "plugins": [SegmentsPlugin(engine=engine)]})
        async with Worker(timed, task_queue="rec-sla"):
            await record_ticket(skipping, timed, "rec-sla", out, send)
    finally:
        await skipping.shutdown()
        await dev.shutdown()
        hooks.close()
        engine.dispose()


def rerecord_sequence_history() -> None:
    """The runner's history is recorded by its own test (it needs the sequence fixtures)."""
    root = Path(__file__).resolve().parents[2]
    test = "tests/sequences/test_replay.py::test_a_fresh_runner_history_replays"
    env = {**os.environ, "SEGMENTFLOW_RECORD_HISTORIES": "1"}
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", test, "-k", "sqlite"],
        cwd=root,
        env=env,
        check=True,
    )


if __name__ == "__main__":
    asyncio.run(main())
    rerecord_sequence_history()
