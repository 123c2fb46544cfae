"""Client-side operations of SLA timing: start (or join) a ticket's `TicketSla` workflow, send it a change
or a reply (starting it first when it is not running: update-with-start), and the one membership-change
watcher that moves open tickets to the policy their contact's new segments select, and the firers of the
SLA timers kept in SQL."""

from __future__ import annotations

from datetime import timedelta

from segmentflow.workflows.sla_models import (
    FIRE_SLA_TIMERS,
    SLA_WATCH_ID,
    TICKET_SLA,
    WATCH_SLA_MEMBERSHIP_CHANGES,
    FireSlaTimersInput,
    SlaTicket,
    TicketChange,
    TicketReply,
    TicketSlaInput,
    TicketSlaState,
    WatchSlaChangesInput,
    firer_workflow_id,
    ticket_workflow_id,
)
from temporalio.client import Client, WithStartWorkflowOperation, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy

__all__ = [
    "SLA_FIRER_SHARDS",
    "change_ticket_sla",
    "ensure_sla_firers",
    "ensure_sla_watch",
    "reply_ticket_sla",
    "start_ticket_sla",
]

#: Firers `worker.py` starts per task queue (each fires its share of the timer slots).
SLA_FIRER_SHARDS = 2


async def start_ticket_sla(
    client: Client,
    *,
    task_queue: str,
    ticket_id: str,
    ticket: SlaTicket,
    contact_key: str | None = None,
    webhook_url: str | None = None,
    search_attributes: bool = False,
) -> WorkflowHandle[object, TicketSlaState]:
    """Start the ticket's one `segmentflow.TicketSla` workflow, or join the one already running.
    `search_attributes`: index the ticket for the Web UI (README, "Search attributes")."""
    return await client.start_workflow(
        TICKET_SLA,
        TicketSlaInput(
            ticket_id=ticket_id,
            contact_key=contact_key,
            ticket=ticket,
            webhook_url=webhook_url,
            search_attributes=search_attributes,
        ),
        id=ticket_workflow_id(ticket_id),
        task_queue=task_queue,
        result_type=TicketSlaState,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )


async def change_ticket_sla(
    client: Client,
    change: TicketChange,
    *,
    task_queue: str,
    ticket_id: str,
    ticket: SlaTicket,
    contact_key: str | None = None,
    webhook_url: str | None = None,
    search_attributes: bool = False,
) -> TicketSlaState:
    """Send the `change` Update to the ticket's `TicketSla`, starting it (with `ticket` as it was created)
    when none is running; returns the state once the change is planned (the new due times). A change the
    workflow refuses raises `WorkflowUpdateFailedError` naming why."""
    return await _update_with_start(
        client,
        "change",
        change,
        TicketSlaInput(
            ticket_id=ticket_id,
            contact_key=contact_key,
            ticket=ticket,
            webhook_url=webhook_url,
            search_attributes=search_attributes,
        ),
        task_queue,
    )


async def reply_ticket_sla(
    client: Client,
    reply: TicketReply,
    *,
    task_queue: str,
    ticket_id: str,
    ticket: SlaTicket,
    contact_key: str | None = None,
    webhook_url: str | None = None,
    search_attributes: bool = False,
) -> TicketSlaState:
    """Send the `reply` Update to the ticket's `TicketSla`, starting it first when none is running (a reply
    that reaches us before the ticket's creation event); returns the state with the clocks it fulfilled."""
    return await _update_with_start(
        client,
        "reply",
        reply,
        TicketSlaInput(
            ticket_id=ticket_id,
            contact_key=contact_key,
            ticket=ticket,
            webhook_url=webhook_url,
            search_attributes=search_attributes,
        ),
        task_queue,
    )


async def _update_with_start(
    client: Client, update: str, arg: TicketChange | TicketReply, start: TicketSlaInput, task_queue: str
) -> TicketSlaState:
    operation: WithStartWorkflowOperation[object, TicketSlaState] = WithStartWorkflowOperation(
        TICKET_SLA,
        start,
        id=ticket_workflow_id(start.ticket_id),
        task_queue=task_queue,
        result_type=TicketSlaState,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    state: TicketSlaState = await client.execute_update_with_start_workflow(
        update, arg, start_workflow_operation=operation, result_type=TicketSlaState
    )
    return state


async def ensure_sla_watch(
    client: Client,
    *,
    task_queue: str,
    poll_interval: timedelta = timedelta(seconds=30),
    workflow_id: str = SLA_WATCH_ID,
) -> WorkflowHandle[object, None]:
    """Start `segmentflow.WatchSlaMembershipChanges`, or join the one running (one watcher per id). Its
    cursor is stored under that id (table `sla_watch`): a watcher started again after it failed or was
    terminated resumes there; the first one starts at the change feed's current end."""
    return await client.start_workflow(
        WATCH_SLA_MEMBERSHIP_CHANGES,
        WatchSlaChangesInput(poll_interval=poll_interval),
        id=workflow_id,
        task_queue=task_queue,
        result_type=type(None),
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )


async def ensure_sla_firers(
    client: Client,
    *,
    task_queue: str,
    shards: int = SLA_FIRER_SHARDS,
    poll_interval: timedelta = timedelta(seconds=60),
) -> list[WorkflowHandle[object, None]]:
    """Start the `segmentflow.FireSlaTimers` firers of the task queue (share `i` of `shards`), or join those
    running. A plan starts the queue's default firer (share 0 of 1) itself when no firer covers its
    ticket, so tickets are timed without this too; the worker starts `shards` of them to spread the work."""
    return [
        await client.start_workflow(
            FIRE_SLA_TIMERS,
            FireSlaTimersInput(shard=shard, shards=shards, poll_interval=poll_interval),
            id=firer_workflow_id(task_queue, shard, shards),
            task_queue=task_queue,
            result_type=type(None),
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        for shard in range(shards)
    ]
