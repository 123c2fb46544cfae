"""The Temporal half of `segmentflow demo`: an embedded dev server, a worker with the plugin on its client,
the recompute workflow, and an example workflow branching on `isMember`."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from segmentflow.plugins import DEV_SERVER_ARGS, SegmentsPlugin, start_recompute, temporal_cli_path
from segmentflow.services.membership import RecomputeCounts
from segmentflow.workflows.examples import ChooseGreeting

__all__ = ["run_on_temporal"]


async def run_on_temporal(
    engine: Engine, contact_keys: Sequence[str]
) -> tuple[RecomputeCounts, dict[str, str]]:
    """Recompute through `segmentflow.RecomputeMemberships`, then run `ChooseGreeting` for each contact."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli_path(),
        dev_server_extra_args=DEV_SERVER_ARGS,
        plugins=[SegmentsPlugin(engine=engine)],
    )
    try:
        queue = f"segmentflow-demo-{uuid.uuid4()}"
        async with Worker(env.client, task_queue=queue, workflows=[ChooseGreeting]):
            result = await (await start_recompute(env.client, task_queue=queue)).result()
            branches = {
                key: await env.client.execute_workflow(
                    ChooseGreeting.run, key, id=f"demo-greeting-{uuid.uuid4()}", task_queue=queue
                )
                for key in contact_keys
            }
    finally:
        await env.shutdown()
    return RecomputeCounts(result.contacts, result.entered, result.exited), branches
