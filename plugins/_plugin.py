"""`SegmentsPlugin`: add it to your Temporal Client once; every worker built from that client gets
segmentflow's activities and workflows, the pydantic data converter and a sandbox that passes our pure
modules through (SQL, HTTP and template libraries never enter it)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from segmentflow.activities import MembershipActivities, MessageActivities, SequenceActivities
from segmentflow.activities.conversations import ConversationActivities
from segmentflow.activities.sla import SlaActivities
from segmentflow.plugins._interceptors import SegmentsInterceptor
from segmentflow.workflows import WORKFLOWS
from sqlalchemy.engine import Engine
from temporalio.contrib.pydantic import PydanticPayloadConverter
from temporalio.converter import DataConverter
from temporalio.plugin import SimplePlugin
from temporalio.worker import WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from segmentflow.db.engine import make_engine, migrate
from segmentflow.settings import Settings

__all__ = ["PASSTHROUGH_MODULES", "SegmentsPlugin"]

#: Deterministic modules imported once, outside the sandbox, instead of once per workflow run.
PASSTHROUGH_MODULES = (
    "pydantic",
    "pydantic_core",
    "annotated_types",
    "segmentflow.rules",
    "segmentflow.workflows",
)


def _data_converter(existing: DataConverter | None) -> DataConverter:
    """Pydantic payloads, keeping any codec or failure converter the host configured."""
    base = existing or DataConverter.default
    return dataclasses.replace(base, payload_converter_class=PydanticPayloadConverter)


def _workflow_runner(existing: WorkflowRunner | None) -> WorkflowRunner:
    if existing is None:
        return SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH_MODULES)
        )
    if isinstance(existing, SandboxedWorkflowRunner):
        return dataclasses.replace(
            existing, restrictions=existing.restrictions.with_passthrough_modules(*PASSTHROUGH_MODULES)
        )
    return existing  # an unsandboxed runner needs nothing


class SegmentsPlugin(SimplePlugin):
    """segmentflow for a Temporal Client (and so for every worker built from it).

    Give it a database URL, an engine, or settings (default: `SEGMENTFLOW_*` environment variables). The
    schema is migrated when a worker starts; an engine the plugin created is disposed when it stops."""

    def __init__(
        self,
        *,
        database_url: str | None = None,
        engine: Engine | None = None,
        settings: Settings | None = None,
    ) -> None:
        self._owns_engine = engine is None
        if engine is None:
            engine = make_engine(database_url or (settings or Settings()).database_url)
        self.engine = engine
        self.membership_activities = MembershipActivities(engine)
        self.message_activities = MessageActivities(engine, settings or Settings())
        self.sequence_activities = SequenceActivities(engine, settings or Settings())
        self.sla_activities = SlaActivities(engine)
        self.conversation_activities = ConversationActivities(engine)
        # Each feature's activity class holds the engine; `all()` lists its bound activity methods.
        activities = [
            *self.membership_activities.all(),
            *self.message_activities.all(),
            *self.sequence_activities.all(),
            *self.sla_activities.all(),
            *self.conversation_activities.all(),
        ]
        super().__init__(
            "segmentflow.SegmentsPlugin",
            data_converter=_data_converter,
            activities=activities,
            workflows=list(WORKFLOWS),
            workflow_runner=_workflow_runner,
            run_context=self._run_context,
            # Contact headers and the workflow- and worker-side checks of restricted actions.
            interceptors=[SegmentsInterceptor(self.message_activities.check_run_action)],
        )

    @asynccontextmanager
    async def _run_context(self) -> AsyncIterator[None]:
        await asyncio.to_thread(migrate, self.engine)
        try:
            yield
        finally:
            await self.message_activities.aclose()
            await self.sequence_activities.aclose()
            await self.sla_activities.aclose()
            if self._owns_engine:
                self.engine.dispose()
