"""The change-feed watcher's cursor is stored per watcher id: a watcher started again (after it failed or
was terminated; `ensure_sla_watch` passes no cursor) resumes where the stored one is, not at the feed's
end, so no membership change in between is skipped. Only changes in segments a policy names signal."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from segmentflow.activities.sla import SlaActivities
from segmentflow.workflows.sla_models import DispatchSlaChangesInput
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from segmentflow.db.tables import SlaWatch, ticket_table
from segmentflow.services.membership import recompute_all
from segmentflow.services.sla import last_change_seq
from tests.sla.test_ticket_sla import _setup
from tests.temporal.helpers import contexts, load


def _stored(engine: Engine, watch_id: str) -> int | None:
    with Session(engine) as session:
        row = session.get(SlaWatch, watch_id)
        return None if row is None else row.cursor


async def test_a_restarted_watcher_resumes_from_its_stored_cursor(
    skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    _setup(engine)
    activities = SlaActivities(engine)
    env = ActivityEnvironment(client=skipping_env.client)
    first = DispatchSlaChangesInput(watch_id="w-restart", after=None, limit=100)
    started = await env.run(activities.dispatch_sla_membership_changes, first)
    with Session(engine) as session:
        end = last_change_seq(session=session)
    assert (started.next_after, started.changes) == (end, 0)
    assert _stored(engine, "w-restart") == end

    # While no watcher runs, u1 enters "vip" (a segment a policy names).
    load(engine, [{**contexts(3)[1], "plan": "vip"}])
    recompute_all(engine)

    # Started again without a cursor, as `ensure_sla_watch` does: the stored cursor is used.
    again = await env.run(activities.dispatch_sla_membership_changes, first)
    assert again.changes >= 1 and again.next_after > end
    assert _stored(engine, "w-restart") == again.next_after
    # A watcher that has no stored cursor yet starts at the feed's end, as before.
    other = await env.run(
        activities.dispatch_sla_membership_changes,
        DispatchSlaChangesInput(watch_id="w-other", after=None, limit=100),
    )
    assert (other.next_after, other.changes) == (again.next_after, 0)


async def test_only_changes_in_segments_a_policy_names_signal_tickets(
    dev_env: WorkflowEnvironment, engine: Engine
) -> None:
    _setup(engine)  # the policies name "vip" only
    client = dev_env.client  # (a workflow no worker runs upsets the time-skipping server)
    # The ticket's workflow: any running workflow takes the signal (no worker polls this queue).
    target = await client.start_workflow(
        "NoWorker", id=f"sla-target-{uuid.uuid4()}", task_queue=f"idle-{uuid.uuid4()}"
    )
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(ticket_table).values(
                id="t-u1",
                contact_key="u1",
                workflow_id=target.id,
                priority="normal",
                tags=[],
                status="open",
                created_at=now,
                updated_at=now,
            )
        )
    activities = SlaActivities(engine)
    env = ActivityEnvironment(client=client)
    params = DispatchSlaChangesInput(watch_id="w-named", after=None, limit=100)
    await env.run(activities.dispatch_sla_membership_changes, params)
    try:
        load(engine, [{**contexts(3)[1], "country": "DE"}])  # u1 enters "eu", which no policy names
        recompute_all(engine)
        moved = await env.run(activities.dispatch_sla_membership_changes, params)
        assert (moved.changes, moved.signalled) == (1, 0)
        load(engine, [{**contexts(3)[1], "country": "DE", "plan": "vip"}])  # enters "vip" (and "vip-eu")
        recompute_all(engine)
        moved = await env.run(activities.dispatch_sla_membership_changes, params)
        assert moved.changes == 2 and moved.signalled == 1
    finally:
        await target.terminate()
