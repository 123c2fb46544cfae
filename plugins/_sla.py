"""Client-side operations of SLA timing: start (or join) a ticket's `TicketSla` workflow, and the one
membership-change watcher that moves open tickets to the policy their contact's new segments select."""

from __future__ import annotations

from datetime import timedelta

from segmentflow.workflows.sla_models import (
    SLA_WATCH_ID,
    TICKET_SLA,
    WATCH_SLA_MEMBERSHIP_CHANGES,
    SlaTicket,
    TicketSlaInput,
    TicketSlaState,
    WatchSlaChangesInput,
    ticket_workflow_id,
)
from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy

__all__ = ["ensure_sla_watch", "start_ticket_sla"]


async def start_ticket_sla(
    client: Client,
    *,
    task_queue: str,
    ticket_id: str,
    ticket: SlaTicket,
    contact_key: str | None = None,
    webhook_url: str | None = None,
) -> WorkflowHandle[object, TicketSlaState]:
    """Start the ticket's one `segmentflow.TicketSla` workflow, or join the one already running."""
    return await client.start_workflow(
        TICKET_SLA,
        TicketSlaInput(ticket_id=ticket_id, contact_key=contact_key, ticket=ticket, webhook_url=webhook_url),
        id=ticket_workflow_id(ticket_id),
        task_queue=task_queue,
        result_type=TicketSlaState,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )


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
