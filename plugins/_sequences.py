"""Client-side operations of outbound sequences: start (or join) a sequence's runner workflow, wake it."""

from __future__ import annotations

from segmentflow.workflows.sequence_models import (
    RUN_SEQUENCE,
    RunSequenceInput,
    RunSequenceResult,
    runner_workflow_id,
)
from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError

__all__ = ["start_sequence_runner", "wake_sequence_runner"]


async def start_sequence_runner(
    client: Client,
    *,
    sequence_key: str,
    task_queue: str,
    params: RunSequenceInput | None = None,
    search_attributes: bool | None = None,
) -> WorkflowHandle[object, RunSequenceResult]:
    """Start the sequence's one runner workflow, or join (and wake) the one already running.
    `search_attributes`: set `SegmentflowSequenceKey` (None: as `params` says, default off)."""
    update: dict[str, object] = {"sequence_key": sequence_key}
    if search_attributes is not None:
        update["search_attributes"] = search_attributes
    params = (params or RunSequenceInput(sequence_key=sequence_key)).model_copy(update=update)
    handle = await client.start_workflow(
        RUN_SEQUENCE,
        params,
        id=runner_workflow_id(sequence_key),
        task_queue=task_queue,
        result_type=RunSequenceResult,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    await wake_sequence_runner(client, sequence_key=sequence_key)
    return handle


async def wake_sequence_runner(client: Client, *, sequence_key: str) -> bool:
    """Signal the runner to run a round now; False when no runner is running."""
    try:
        await client.get_workflow_handle(runner_workflow_id(sequence_key)).signal("wake")
    except RPCError:
        return False
    return True
