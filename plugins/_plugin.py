"""`SegmentsPlugin`: add it to your Temporal Client once; every worker built from that client gets
segmentflow's activities and workflows (all feature groups, or the ones chosen), the pydantic data converter
and a sandbox that passes our pure payload modules through (SQL, HTTP and template libraries never enter
it). Or add it to one Worker only: that worker alone hosts segmentflow."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal, get_args

from segmentflow.activities import MembershipActivities, MessageActivities, SequenceActivities
from segmentflow.activities.conversations import ConversationActivities
from segmentflow.activities.sla import SlaActivities
from segmentflow.plugins._interceptors import SegmentsInterceptor
from segmentflow.workflows import HandleMessage, RecomputeMemberships, RunSequence
from segmentflow.workflows.sla import FireSlaTimers, TicketSla, WatchSlaMembershipChanges
from sqlalchemy.engine import Engine
from temporalio.client import Client
from temporalio.contrib.pydantic import PydanticPayloadConverter
from temporalio.converter import DataConverter, DefaultPayloadConverter
from temporalio.plugin import SimplePlugin
from temporalio.worker import WorkerConfig, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from segmentflow.db.engine import make_engine, migrate
from segmentflow.settings import Settings

__all__ = ["FEATURES", "PASSTHROUGH_MODULES", "Feature", "SegmentsPlugin"]

Feature = Literal["membership", "messages", "sequences", "sla", "reports"]
#: The feature groups a worker can host: each brings its activities and workflows.
FEATURES: tuple[Feature, ...] = get_args(Feature)

#: Deterministic modules imported once, outside the sandbox, instead of once per workflow run: pydantic and
#: our pure payload-model modules only. The workflow modules themselves (`segmentflow.workflows.sla`, ...)
#: are *not* passed through, so the sandbox checks them as it checks a host's: a `datetime.now()` or
#: `random.random()` there is refused. `segmentflow.rules` is the pure evaluator (`matches(...)` serves
#: workflows too), and holds no workflow.
PASSTHROUGH_MODULES = (
    "pydantic",
    "pydantic_core",
    "annotated_types",
    "segmentflow.rules",
    "segmentflow.workflows.models",
    "segmentflow.workflows.message_models",
    "segmentflow.workflows.sequence_models",
    "segmentflow.workflows.sla_models",
    # The tracing interceptor's workflow side (`tracing=True`) uses the host's OpenTelemetry context.
    "opentelemetry",
)


def _data_converter(existing: DataConverter | None) -> DataConverter:
    """Pydantic payloads over the default payload converter, keeping any codec or failure converter the
    host configured. A host's own payload converter is never replaced silently: a pydantic one (or a
    subclass) is kept, anything else is refused."""
    if existing is None:
        return dataclasses.replace(DataConverter.default, payload_converter_class=PydanticPayloadConverter)
    kind = existing.payload_converter_class
    if kind is DefaultPayloadConverter:
        return dataclasses.replace(existing, payload_converter_class=PydanticPayloadConverter)
    if issubclass(kind, PydanticPayloadConverter):
        return existing
    raise ValueError(
        f"SegmentsPlugin needs the pydantic payload converter, but the client's data converter uses "
        f"{kind.__module__}.{kind.__qualname__}; give the client the default data converter (the plugin "
        "installs temporalio.contrib.pydantic's over it) or a payload converter subclassing "
        "temporalio.contrib.pydantic.PydanticPayloadConverter"
    )


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


def _tracing_interceptor() -> Any:
    try:
        from temporalio.contrib.opentelemetry import TracingInterceptor
    except ImportError as exc:
        raise ImportError(
            f'SegmentsPlugin(tracing=True) needs OpenTelemetry: pip install "segmentflow[otel]" ({exc})'
        ) from exc
    return TracingInterceptor()


class SegmentsPlugin(SimplePlugin):
    """segmentflow for a Temporal Client (and so for every worker built from it), or for one Worker.

    Give it a database URL, an engine, or settings (default: `SEGMENTFLOW_*` environment variables).
    `features` chooses the groups a worker hosts (default: all of `FEATURES`): `membership`
    (`CheckContactInSegment`, `ListContactSegments`, `RecomputeMemberships`), `messages` (`HandleMessage`,
    `RunAction` and the message activities), `sequences` (`RunSequence`), `sla` (`TicketSla`, the watcher,
    `SelectSlaPolicy` and the SLA activities), `reports` (`RecordConversation`). The contact-header and
    action-check interceptors come with every choice. `migrate=False`: the worker does not migrate the schema
    when it starts (run `segmentflow db upgrade` or one migrating worker instead). `tracing=True` adds
    temporalio's OpenTelemetry `TracingInterceptor` (client and worker spans for starts, workflows and
    activities; needs `pip install "segmentflow[otel]"` and a tracer provider the host configures). An engine
    the plugin created is disposed when its worker stops.

    On a Client, the plugin also sets the pydantic data converter and the client-side interceptor. On a
    Worker only (`Worker(client, plugins=[SegmentsPlugin(...)])`), that worker's copy of the client gets the
    pydantic converter; the client you start workflows with should use it too
    (`temporalio.contrib.pydantic.pydantic_data_converter`)."""

    def __init__(
        self,
        *,
        database_url: str | None = None,
        engine: Engine | None = None,
        settings: Settings | None = None,
        features: Collection[Feature] = FEATURES,
        migrate: bool = True,
        tracing: bool = False,
    ) -> None:
        unknown = sorted(set(features) - set(FEATURES))
        if unknown:
            raise ValueError(f"unknown segmentflow feature(s) {unknown}; choose from {list(FEATURES)}")
        self.features = frozenset(features)
        self._migrate = migrate
        self._owns_engine = engine is None
        self._running = 0  # workers of this plugin running now
        settings = settings or Settings()
        if engine is None:
            engine = make_engine(database_url or settings.database_url)
        self.engine = engine
        self.membership_activities = MembershipActivities(engine)
        self.message_activities = MessageActivities(engine, settings)
        self.sequence_activities = SequenceActivities(engine, settings)
        self.sla_activities = SlaActivities(engine, settings=settings)
        self.conversation_activities = ConversationActivities(engine)
        hosted: dict[Feature, tuple[Sequence[Callable[..., Any]], Sequence[type]]] = {
            "membership": (self.membership_activities.all(), [RecomputeMemberships]),
            "messages": (self.message_activities.all(), [HandleMessage]),
            "sequences": (self.sequence_activities.all(), [RunSequence]),
            "sla": (self.sla_activities.all(), [TicketSla, FireSlaTimers, WatchSlaMembershipChanges]),
            "reports": (self.conversation_activities.all(), []),
        }
        chosen = [hosted[feature] for feature in FEATURES if feature in self.features]
        interceptors: list[Any] = [
            SegmentsInterceptor(
                self.message_activities.check_run_action, self.message_activities.admit_refusal
            )
        ]
        if tracing:
            interceptors.insert(0, _tracing_interceptor())
        super().__init__(
            "segmentflow.SegmentsPlugin",
            data_converter=_data_converter,
            activities=[a for activities, _ in chosen for a in activities],
            workflows=[w for _, workflows in chosen for w in workflows],
            workflow_runner=_workflow_runner,
            run_context=self._run_context,
            # Contact headers and the workflow- and worker-side checks of restricted actions (and spans).
            interceptors=interceptors,
        )

    def configure_worker(self, config: WorkerConfig) -> WorkerConfig:
        """Also on a Worker only: the worker's client decodes with the pydantic converter."""
        client = config["client"]
        converter = _data_converter(client.data_converter)
        if converter is not client.data_converter:
            client_config = client.config()
            client_config["data_converter"] = converter
            config["client"] = Client(**client_config)
        return super().configure_worker(config)

    @asynccontextmanager
    async def _run_context(self) -> AsyncIterator[None]:
        """Around each worker's run. Clients and the engine are shared by every worker of the plugin, so
        they are closed when the last running one stops (and open again on next use)."""
        if self._migrate:
            await asyncio.to_thread(migrate, self.engine)
        self._running += 1
        try:
            yield
        finally:
            self._running -= 1
            if not self._running:
                await self.message_activities.aclose()
                await self.sequence_activities.aclose()
                await self.sla_activities.aclose()
                if self._owns_engine:
                    self.engine.dispose()
