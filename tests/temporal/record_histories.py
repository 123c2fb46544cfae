"""Re-record the histories that test_replay replays: run after an intentional, versioned workflow change
(`python tests/temporal/record_histories.py`), never to make a failing replay pass."""

import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from segmentflow.plugins import SegmentsPlugin, temporal_cli_path
from segmentflow.workflows import RecomputeMemberships, RecomputeMembershipsInput
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from segmentflow.db.engine import make_engine, reset
from tests.temporal.helpers import contexts, load
from tests.temporal.user_workflows import ChooseTemplateWithHelper

out = Path(__file__).with_name("histories")


async def main():
    e = make_engine(f"sqlite:///{tempfile.mkdtemp()}/record.db")
    reset(e)
    load(e, contexts(20))
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli_path(), plugins=[SegmentsPlugin(engine=e)]
    )
    try:
        async with Worker(env.client, task_queue="rec", workflows=[ChooseTemplateWithHelper]):
            h = await env.client.start_workflow(
                RecomputeMemberships.run,
                RecomputeMembershipsInput(range_size=6, ranges_per_run=2, parallelism=2),
                id="recompute-continue-as-new",
                task_queue="rec",
            )
            await h.result()
            first = env.client.get_workflow_handle(
                "recompute-continue-as-new", run_id=h.first_execution_run_id
            )
            (out / "recompute-first-run.json").write_text((await first.fetch_history()).to_json())
            (out / "recompute-last-run.json").write_text((await h.fetch_history()).to_json())
            b = await env.client.start_workflow(
                ChooseTemplateWithHelper.run, ["vip", "u0"], id="branch-on-is-member", task_queue="rec"
            )
            await b.result()
            (out / "branch-on-is-member.json").write_text((await b.fetch_history()).to_json())
    finally:
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
