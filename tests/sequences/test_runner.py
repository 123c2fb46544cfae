"""The runner workflow on the time-skipping server, with the real plugin and a local HTTP provider: waits
and local times, quiet hours, leaving and entering the segment, re-entry, the frequency cap across
sequences, the rate limit and branches on membership."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from segmentflow.workflows import RunSequence, RunSequenceInput
from sqlalchemy.engine import Engine
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from segmentflow.policies.sequences import local_time_after
from tests.sequences.helpers import (
    Provider,
    caught_up,
    enrollments,
    eventually,
    load_segments,
    pause,
    put_contacts,
    save_sequence,
    sends,
    webhook_provider,
)
from tests.temporal.conftest import plugin_client

SEGMENTS = [
    {"key": "vip", "rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["vip"]}]}]},
    {"key": "eu", "rules": [{"clauses": [{"attribute": "country", "op": "in", "values": ["DE", "FR"]}]}]},
]


@pytest.fixture
def provider() -> Iterator[Provider]:
    with webhook_provider() as running:
        yield running


def send(url: str, template: str = "Hi {{ contact.key }}") -> dict[str, Any]:
    return {"type": "send", "channel": "webhook", "url": url, "template": template}


def sequence(key: str, steps: list[dict[str, Any]], **options: Any) -> dict[str, Any]:
    return {"key": key, "name": key.title(), "segment": "vip", "steps": steps, **options}


def vip(key: str, **attributes: Any) -> dict[str, Any]:
    return {"kind": "user", "key": key, "plan": "vip", **attributes}


class Handles(dict[str, WorkflowHandle[Any, Any]]):
    """The runners by sequence key; `start` adds one."""

    def __init__(self, client: Client, task_queue: str) -> None:
        super().__init__()
        self._client, self._task_queue = client, task_queue

    async def start(self, key: str) -> None:
        self[key] = await self._client.start_workflow(
            RunSequence.run,
            RunSequenceInput(sequence_key=key, poll_interval=timedelta(hours=6)),
            id=f"seq-{key}-{uuid.uuid4()}",
            task_queue=self._task_queue,
        )


@asynccontextmanager
async def runners(
    env: WorkflowEnvironment, engine: Engine, task_queue: str, *keys: str
) -> AsyncIterator[Handles]:
    """A worker with the plugin, and one runner per sequence; on exit every one is paused and must stop
    (all paused and woken before any result is awaited: awaiting a result lets the server skip time)."""
    client = await plugin_client(env, engine)
    async with Worker(client, task_queue=task_queue):
        handles = Handles(client, task_queue)
        for key in keys:
            await handles.start(key)
        try:
            yield handles
        finally:
            for key, handle in handles.items():
                pause(engine, key)
                await handle.signal(RunSequence.wake)
            for handle in handles.values():
                assert (await handle.result()).status == "paused"


async def wake(handles: Handles, engine: Engine) -> None:
    """Run a round of every runner now and wait until each has read the whole change feed."""
    for handle in handles.values():
        await handle.signal(RunSequence.wake)
    for key in handles:
        await eventually(lambda key=key: caught_up(engine, key), what=f"{key} to read the change feed")


async def test_waits_follow_the_duration_and_the_contacts_local_time(
    skipping_env: WorkflowEnvironment, engine: Engine, task_queue: str, provider: Provider
) -> None:
    load_segments(engine, SEGMENTS)
    put_contacts(engine, [vip("tokyo", timezone="Asia/Tokyo")])
    steps = [
        send(provider.url + "/ok"),
        {"type": "wait", "duration": "P2D"},
        {"type": "wait_until", "time": "09:00"},
    ]
    save_sequence(
        engine,
        sequence("waits", [*steps, send(provider.url + "/ok")]),
        at=await skipping_env.get_current_time(),
    )
    async with runners(skipping_env, engine, task_queue, "waits"):
        await eventually(lambda: provider.deliveries() == [("tokyo", 0)], what="the first send")
        await skipping_env.sleep(timedelta(days=1))
        await asyncio.sleep(0.3)
        assert provider.deliveries() == [("tokyo", 0)]
        await skipping_env.sleep(timedelta(days=2))
        await eventually(lambda: len(provider.deliveries()) == 2, what="the second send")
    first, second = sends(engine, "waits")
    assert second.step == 3 and first.sent_at is not None and second.sent_at is not None
    assert second.sent_at - first.sent_at >= timedelta(days=2)
    assert second.sent_at.astimezone(ZoneInfo("Asia/Tokyo")).strftime("%H:%M") == "09:00"


async def test_quiet_hours_defer_a_send_until_they_end(
    skipping_env: WorkflowEnvironment, engine: Engine, task_queue: str, provider: Provider
) -> None:
    current = (await skipping_env.get_current_time()).astimezone(UTC)
    start, end = current - timedelta(hours=1), current + timedelta(hours=2)
    quiet = {"start": start.strftime("%H:%M"), "end": end.strftime("%H:%M")}
    expected = local_time_after(current, end.time().replace(second=0, microsecond=0), UTC)
    load_segments(engine, SEGMENTS)
    put_contacts(engine, [vip("night-owl")])
    save_sequence(engine, sequence("quiet", [send(provider.url + "/ok")], quiet_hours=quiet), at=current)
    async with runners(skipping_env, engine, task_queue, "quiet"):
        await eventually(
            lambda: enrollments(engine, "quiet")[0].next_due_at == expected, what="the send to be deferred"
        )
        assert provider.deliveries() == []
        await skipping_env.sleep(timedelta(hours=3))
        await eventually(
            lambda: provider.deliveries() == [("night-owl", 0)], what="the send after quiet hours"
        )
    [row] = sends(engine, "quiet")
    assert row.sent_at is not None and row.sent_at >= expected


async def test_leaving_mid_sequence_stops_sends_and_entering_later_enrolls(
    skipping_env: WorkflowEnvironment, engine: Engine, task_queue: str, provider: Provider
) -> None:
    load_segments(engine, SEGMENTS)
    put_contacts(engine, [vip("stays"), vip("leaves")])
    steps = [send(provider.url + "/ok"), {"type": "wait", "duration": "P1D"}, send(provider.url + "/ok")]
    save_sequence(engine, sequence("drip", steps), at=await skipping_env.get_current_time())
    async with runners(skipping_env, engine, task_queue, "drip") as handles:
        await eventually(lambda: len(provider.deliveries()) == 2, what="the first sends")
        put_contacts(engine, [{"kind": "user", "key": "leaves", "plan": "free"}, vip("joins")])
        await wake(handles, engine)
        await eventually(lambda: ("joins", 0) in provider.deliveries(), what="the newcomer's first send")
        await skipping_env.sleep(timedelta(days=1, hours=1))
        await eventually(lambda: len(provider.deliveries()) == 5, what="the second sends")
    assert provider.deliveries() == [("joins", 0), ("joins", 2), ("leaves", 0), ("stays", 0), ("stays", 2)]
    status = {e.contact_key: (e.status, e.reason) for e in enrollments(engine, "drip")}
    assert status["leaves"] == ("exited", "left_segment")
    assert status["stays"] == status["joins"] == ("completed", None)


async def test_reentry_never_or_after_a_cooldown(
    skipping_env: WorkflowEnvironment, engine: Engine, task_queue: str, provider: Provider
) -> None:
    load_segments(engine, SEGMENTS)
    put_contacts(engine, [vip("u0")])
    at = await skipping_env.get_current_time()
    save_sequence(engine, sequence("once", [send(provider.url + "/ok")]), at=at)
    save_sequence(engine, sequence("weekly", [send(provider.url + "/ok")], reentry="P7D"), at=at)

    def bounce() -> None:
        put_contacts(engine, [{"kind": "user", "key": "u0", "plan": "free"}])
        put_contacts(engine, [vip("u0")])

    async with runners(skipping_env, engine, task_queue, "once", "weekly") as handles:
        await eventually(lambda: len(provider.requests) == 2, what="both first sends")
        bounce()
        await wake(handles, engine)
        assert (len(enrollments(engine, "once")), len(enrollments(engine, "weekly"))) == (1, 1)
        await skipping_env.sleep(timedelta(days=8))
        bounce()
        await wake(handles, engine)
        await eventually(lambda: len(sends(engine, "weekly")) == 2, what="the re-entered contact's send")
        await eventually(
            lambda: {s.status for s in sends(engine, "weekly")} == {"sent"}, what="it to be sent"
        )
    assert len(enrollments(engine, "once")) == 1
    assert len(sends(engine, "once")) == 1


async def test_the_frequency_cap_counts_every_sequences_sends(
    skipping_env: WorkflowEnvironment, engine: Engine, task_queue: str, provider: Provider
) -> None:
    load_segments(engine, SEGMENTS)
    put_contacts(engine, [vip("u0")])
    cap = {"max": 1, "period": "P1D"}
    save_sequence(
        engine,
        sequence("first", [send(provider.url + "/ok")], frequency_cap=cap),
        at=await skipping_env.get_current_time(),
    )
    async with runners(skipping_env, engine, task_queue, "first") as handles:
        await eventually(lambda: len(provider.deliveries()) == 1, what="the first sequence's send")
        [earlier] = sends(engine, "first")
        released = earlier.created_at + timedelta(days=1)
        save_sequence(
            engine,
            sequence("second", [send(provider.url + "/ok")], frequency_cap=cap),
            at=await skipping_env.get_current_time(),
        )
        await handles.start("second")
        await eventually(
            lambda: enrollments(engine, "second")[0].next_due_at == released, what="the deferral"
        )
        assert sends(engine, "second") == []
        await skipping_env.sleep(timedelta(days=1, hours=1))
        await eventually(lambda: len(provider.deliveries()) == 2, what="the capped send")
    [later] = sends(engine, "second")
    assert later.created_at >= released


async def test_the_rate_limit_spaces_requests(
    skipping_env: WorkflowEnvironment, engine: Engine, task_queue: str, provider: Provider
) -> None:
    load_segments(engine, SEGMENTS)
    put_contacts(engine, [vip(f"u{i:02d}") for i in range(30)])
    limited = sequence("paced", [send(provider.url + "/ok")], rate_limit={"webhook": 20})
    save_sequence(engine, limited, at=await skipping_env.get_current_time())
    async with runners(skipping_env, engine, task_queue, "paced"):
        await eventually(lambda: len(provider.deliveries()) == 30, what="all sends")
    times = sorted(r.at for r in provider.requests)
    assert len(times) == 30
    # 30 starts 1/20 s apart span at least 29/20 s (a lower bound only: slower is never a failure).
    assert times[-1] - times[0] >= 29 / 20 * 0.95
    # Nor a burst: no one-second window holds more than the rate (plus a margin for scheduling jitter).
    busiest = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    assert busiest <= 20 + 4


async def test_a_branch_on_membership_picks_the_step(
    skipping_env: WorkflowEnvironment, engine: Engine, task_queue: str, provider: Provider
) -> None:
    load_segments(engine, SEGMENTS)
    put_contacts(engine, [vip("berlin", country="DE"), vip("boston", country="US")])
    branch = {
        "type": "branch",
        "segment": "eu",
        "then": [send(provider.url + "/ok", "Hallo {{ contact.key }}")],
        "else": [send(provider.url + "/ok", "Hello {{ contact.key }} ({{ segments | join(',') }})")],
    }
    save_sequence(engine, sequence("local", [branch]), at=await skipping_env.get_current_time())
    async with runners(skipping_env, engine, task_queue, "local"):
        await eventually(lambda: len(provider.deliveries()) == 2, what="both sends")
    assert provider.bodies() == {("berlin", 1): "Hallo berlin", ("boston", 2): "Hello boston (vip)"}
