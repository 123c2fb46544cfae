"""Client-side operations of outbound sequences: start (or join) a sequence's runner workflow, wake it."""

from __future__ import annotations

from segmentflow.workflows.sequence_models import (
    RUN_SEQUENCE,
    RunSequenceInput,
    RunSequenceResult,
    runner_workflow_id,
)
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

__all__ = ["start_sequence_runner", "wake_sequence_runner"]


async def start_sequence_runner(
    client: Client,
    *,
    sequence_key: str,
    task_queue: str,
    params: RunSequenceInput | None = None,
    search_attributes: bool | None = None,
) -> WorkflowHandle[object, RunSequenceResult]:
    """Start the sequence's one runner workflow, or join (and wake) the one already running: one
    signal-with-start call, so there is no moment between a start and a wake for a runner to end in.
    `search_attributes`: set `SegmentflowSequenceKey` (None: as `params` says, default off)."""
    update: dict[str, object] = {"sequence_key": sequence_key}
    if search_attributes is not None:
        update["search_attributes"] = search_attributes
    params = (params or RunSequenceInput(sequence_key=sequence_key)).model_copy(update=update)
    return await client.start_workflow(
        RUN_SEQUENCE,
        params,
        id=runner_workflow_id(sequence_key),
        task_queue=task_queue,
        result_type=RunSequenceResult,
        start_signal="wake",
    )


async def wake_sequence_runner(client: Client, *, sequence_key: str) -> bool:
    """Signal the runner to run a round now; False when no runner is running. Any other server error
    (unreachable, refused) is raised."""
    try:
        await client.get_workflow_handle(runner_workflow_id(sequence_key)).signal("wake")
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True
