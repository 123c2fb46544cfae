"""Kill a real worker process (SIGKILL) in the middle of a batch of sends, on the dev server, and start a
new worker process at once: with the default timeouts sending resumes within 30 s of the new worker's
start, and every member gets each step exactly once, as a provider deduplicating by `Idempotency-Key`
delivers them."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import Counter
from pathlib import Path

from segmentflow.workflows import RunSequence, RunSequenceInput
from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment

from tests.sequences.helpers import (
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
from tests.temporal.helpers import RESUME_BOUND, kill, worker_process

MEMBERS = 300
BATCH = 50


async def test_worker_killed_mid_batch_resumes_within_bound_and_sends_each_step_exactly_once(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str, repo_root: Path
) -> None:
    load_segments(
        engine,
        [{"key": "vip", "rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["vip"]}]}]}],
    )
    put_contacts(engine, [{"kind": "user", "key": f"u{i:03d}", "plan": "vip"} for i in range(MEMBERS)])
    with webhook_provider() as provider:
        step = {
            "type": "send",
            "channel": "webhook",
            "url": provider.url + "/slow",
            "template": "{{ contact.key }}",
        }
        save_sequence(engine, {"key": "burst", "name": "Burst", "segment": "vip", "steps": [step, step]})
        process = worker_process(dev_env, engine, task_queue, repo_root)
        client = await plugin_client(dev_env, engine)
        try:
            # The default heartbeat timeout and lease: what a deployment runs with.
            handle = await client.start_workflow(
                RunSequence.run,
                RunSequenceInput(sequence_key="burst", batch_size=BATCH, concurrency=4),
                id=f"seq-burst-{uuid.uuid4()}",
                task_queue=task_queue,
            )
            deadline = time.monotonic() + 90
            while len(provider.delivered) < 60:
                assert time.monotonic() < deadline, "the worker process never sent"
                assert process.poll() is None, "the worker process exited early"
                await asyncio.sleep(0.01)
        finally:
            kill(process)
        at_kill = len(provider.requests)
        assert 0 < len(provider.delivered) < 2 * MEMBERS, "the kill must land mid-run"

        started = time.monotonic()
        replacement = worker_process(dev_env, engine, task_queue, repo_root)
        try:
            await eventually(
                lambda: len(provider.requests) > at_kill, timeout=RESUME_BOUND, what="sending to resume"
            )
            resumed = provider.requests[at_kill].at - started
            assert resumed < RESUME_BOUND
            await eventually(
                lambda: {e.status for e in enrollments(engine, "burst")} == {"completed"},
                timeout=120,
                what="every enrollment to complete",
            )
            pause(engine, "burst")
            await handle.signal(RunSequence.wake)
            assert (await handle.result()).status == "paused"
        finally:
            kill(replacement, signal.SIGTERM)

        members = [f"u{i:03d}" for i in range(MEMBERS)]
        assert provider.deliveries() == sorted((m, s) for m in members for s in (0, 1))
        rows = sends(engine, "burst")
        assert len(rows) == 2 * MEMBERS and {r.status for r in rows} == {"sent"}
        # Only what was in flight at the kill went out twice: at most the batch on the wire and the one
        # claimed behind it.
        assert len(provider.requests) - len(provider.delivered) <= 2 * BATCH
        # Every repeated request carried a key the provider had already seen, with the same body.
        repeats = Counter(r.key for r in provider.requests)
        assert set(repeats) == set(provider.delivered)
        for request in provider.requests:
            assert request.key is not None
            assert request.body == provider.delivered[request.key].body
