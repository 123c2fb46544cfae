"""The plugin's sandbox passes through only pure payload-model modules: a workflow module inside
`segmentflow.workflows` that reads the wall clock is refused, as a host's would be."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType

import pytest
from segmentflow.plugins import PASSTHROUGH_MODULES
from sqlalchemy.engine import Engine
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from tests.temporal.conftest import plugin_client

PROBE = "segmentflow.workflows.clock_probe"
PROBE_SOURCE = """
from datetime import datetime

from temporalio import workflow


@workflow.defn(name="tests.ReadsTheWallClock", failure_exception_types=[workflow.NondeterminismError])
class ReadsTheWallClock:
    @workflow.run
    async def run(self) -> str:
        return datetime.now().isoformat()
"""


class _ProbeFinder(importlib.abc.MetaPathFinder):
    """Finds the probe module, as if it were a file of the installed `segmentflow.workflows` package (on the
    worker's and on the sandbox's imports alike)."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != PROBE:
            return None
        return importlib.util.spec_from_file_location(fullname, self._path)


@pytest.fixture
def probe(tmp_path: Path) -> Iterator[type]:
    source = tmp_path / "clock_probe.py"
    source.write_text(PROBE_SOURCE)
    finder = _ProbeFinder(source)
    sys.meta_path.insert(0, finder)
    try:
        module = importlib.import_module(PROBE)
        yield module.ReadsTheWallClock
    finally:
        sys.meta_path.remove(finder)
        sys.modules.pop(PROBE, None)
        sys.modules["segmentflow.workflows"].__dict__.pop("clock_probe", None)


def test_only_payload_model_modules_of_the_workflows_package_pass_through() -> None:
    ours = [m for m in PASSTHROUGH_MODULES if m.startswith("segmentflow.workflows")]
    assert ours and all(m.endswith("models") for m in ours)


async def test_a_workflow_module_in_the_package_reading_the_wall_clock_is_refused(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str, probe: type
) -> None:
    client = await plugin_client(dev_env, engine)
    async with Worker(client, task_queue=task_queue, workflows=[probe]):
        with pytest.raises(WorkflowFailureError) as caught:
            await client.execute_workflow(
                "tests.ReadsTheWallClock", id=f"wf-{uuid.uuid4()}", task_queue=task_queue
            )
    assert "datetime.datetime.now" in str(caught.value.cause)


async def test_the_same_module_passed_through_whole_would_read_the_clock(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str, probe: type
) -> None:
    """The control: with the whole package passed through (the old setting) nothing stops it."""
    client = await plugin_client(dev_env, engine)
    whole = SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules("segmentflow.workflows")
    )
    async with Worker(client, task_queue=task_queue, workflows=[probe], workflow_runner=whole):
        now = await client.execute_workflow(
            "tests.ReadsTheWallClock", id=f"wf-{uuid.uuid4()}", task_queue=task_queue, result_type=str
        )
    assert now[:4].isdigit()
