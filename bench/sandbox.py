"""Benchmark: what sandboxing our own workflow modules costs.

The plugin passes only the payload-model modules through the sandbox, so `segmentflow.workflows.*`
workflow modules are imported afresh in each workflow instance's sandbox (as a host's are). The peer, in
the same run, is the earlier setting: the whole `segmentflow.workflows` package passed through. Workload:
`--workflows` runs of `segmentflow.examples.ChooseGreeting` (a workflow module in the package: two
membership checks), started at once on one in-process worker over SQLite, on the dev server. Each is
measured with the sticky cache on (default) and off (`max_cached_workflows=0`: every workflow task builds
the instance again, the worst case), in three interleaved rounds. Printed: the median workflows/s of each
and the ratio sandboxed / passed through.

Usage: .venv/bin/python bench/sandbox.py [--workflows 100]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from segmentflow.plugins import DEV_SERVER_ARGS, SegmentsPlugin, temporal_cli_path
from segmentflow.workflows.examples import ChooseGreeting
from sqlalchemy.engine import Engine
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from segmentflow.db.engine import make_engine, reset
from segmentflow.services.membership import recompute_all
from tests.temporal.helpers import SEGMENTS, contexts, load

#: ChooseGreeting reads "vip", then "trial" for a non-VIP.
TRIAL = {"key": "trial", "rules": [{"clauses": [{"attribute": "country", "op": "in", "values": ["US"]}]}]}


async def _rate(client: Client, n: int, runner: WorkflowRunner | None, cached: bool) -> float:
    queue = f"bench-{uuid.uuid4()}"
    extra = {} if cached else {"max_cached_workflows": 0}
    kwargs = {} if runner is None else {"workflow_runner": runner}
    async with Worker(client, task_queue=queue, workflows=[ChooseGreeting], **kwargs, **extra):  # type: ignore[arg-type]
        started = time.perf_counter()
        handles = [
            await client.start_workflow(
                ChooseGreeting.run, f"u{i % 30}", id=f"g-{uuid.uuid4()}", task_queue=queue
            )
            for i in range(n)
        ]
        await asyncio.gather(*(h.result() for h in handles))
        return n / (time.perf_counter() - started)


async def main(n: int) -> None:
    engine: Engine = make_engine(f"sqlite:///{tempfile.mkdtemp()}/bench.db")
    reset(engine)
    load(engine, contexts(30), [*SEGMENTS, TRIAL])
    recompute_all(engine)
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli_path(), dev_server_extra_args=DEV_SERVER_ARGS
    )
    try:
        config = env.client.config()
        config["plugins"] = [SegmentsPlugin(engine=engine)]
        client = Client(**config)
        whole = SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_modules("segmentflow.workflows")
        )
        await _rate(client, 20, None, True)  # warm up: server, worker, imports
        for cached in (True, False):
            # Interleaved rounds, the median of each: the machine's load moves both alike.
            rounds = [
                (await _rate(client, n, None, cached), await _rate(client, n, whole, cached))
                for _ in range(3)
            ]
            sandboxed = statistics.median(r[0] for r in rounds)
            passed = statistics.median(r[1] for r in rounds)
            label = "sticky cache on " if cached else "sticky cache off"
            print(
                f"{label}: sandboxed {sandboxed:7.1f} workflows/s, passed through {passed:7.1f} workflows/s,"
                f" ratio {sandboxed / passed:.2f}"
            )
    finally:
        await env.shutdown()
        engine.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workflows", type=int, default=100)
    asyncio.run(main(parser.parse_args().workflows))
