"""What an operator sees: `TicketSla` and `RunSequence` carry search attributes the Web UI finds them by,
the optional OpenTelemetry interceptor traces workflows and activities, and a versioned worker runs each
workflow auto-upgrading."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import set_tracer_provider
from segmentflow.plugins import (
    SegmentsPlugin,
    missing_search_attributes,
    start_sequence_runner,
    start_ticket_sla,
    temporal_cli_path,
)
from segmentflow.workflows.message_models import HANDLE_MESSAGE, HandleMessageInput, HandleMessageResult
from segmentflow.workflows.sequence_models import SA_SEQUENCE_KEY
from segmentflow.workflows.sla import TicketSla
from segmentflow.workflows.sla_models import (
    SA_CONTACT_KEY,
    SA_SLA_POLICY,
    SA_TICKET_ID,
    SA_TICKET_STATE,
    SlaTicket,
    TicketChange,
)
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.api.workflowservice.v1 import SetWorkerDeploymentCurrentVersionRequest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.common import VersioningBehavior
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from segmentflow.policies.sla import parse_policies
from segmentflow.services.membership import recompute_all
from segmentflow.services.sla import import_policies
from segmentflow.settings import Settings
from tests.sla.test_ticket_sla import POLICIES, _eventually
from tests.temporal.conftest import plugin_client
from tests.temporal.helpers import contexts, load
from tests.temporal.user_workflows import ChooseTemplateWithHelper
from worker import deployment_config

# The process's tracer provider, set once as an application does at start (OpenTelemetry allows one).
_EXPORTER = InMemorySpanExporter()
_PROVIDER = TracerProvider()
_PROVIDER.add_span_processor(SimpleSpanProcessor(_EXPORTER))
set_tracer_provider(_PROVIDER)


async def test_the_dev_server_registers_our_search_attributes(dev_env: WorkflowEnvironment) -> None:
    assert await missing_search_attributes(dev_env.client) == []


async def test_a_ticket_is_found_by_id_contact_policy_and_state(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    load(engine, contexts(3))
    recompute_all(engine)
    with Session(engine) as session, session.begin():
        import_policies(session=session, policies=parse_policies(POLICIES), now=datetime.now().astimezone())
    client = await plugin_client(dev_env, engine)
    ticket_id = f"t-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=task_queue):
        handle = await start_ticket_sla(
            client,
            task_queue=task_queue,
            ticket_id=ticket_id,
            ticket=SlaTicket(priority="normal", created_at=await dev_env.get_current_time()),
            contact_key="u0",
            search_attributes=True,
        )

        async def indexed() -> dict[str, object]:
            found = (await handle.describe()).typed_search_attributes
            return {
                key.name: found.get(key)
                for key in (SA_TICKET_ID, SA_CONTACT_KEY, SA_SLA_POLICY, SA_TICKET_STATE)
            }

        assert await _eventually(indexed, lambda a: a[SA_SLA_POLICY.name] == "vip") == {
            "SegmentflowTicketId": ticket_id,
            "SegmentflowContactKey": "u0",
            "SegmentflowSlaPolicy": "vip",
            "SegmentflowTicketState": "open",
        }
        await handle.execute_update(TicketSla.change, TicketChange(status="pending"))
        await _eventually(indexed, lambda a: a[SA_TICKET_STATE.name] == "pending")
        await handle.execute_update(TicketSla.change, TicketChange(status="solved"))
        await handle.result()
        assert (await indexed())[SA_TICKET_STATE.name] == "solved"


async def test_tracing_spans_the_workflow_and_our_activity(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    load(engine, contexts(3))
    recompute_all(engine)
    exporter = _EXPORTER
    exporter.clear()
    config = dev_env.client.config()
    config["plugins"] = [SegmentsPlugin(engine=engine, tracing=True)]
    client = Client(**config)
    async with Worker(client, task_queue=task_queue, workflows=[ChooseTemplateWithHelper]):
        await client.execute_workflow(
            ChooseTemplateWithHelper.run, ["vip", "u0"], id=f"wf-{uuid.uuid4()}", task_queue=task_queue
        )
    names = {span.name for span in exporter.get_finished_spans()}
    assert {
        "StartWorkflow:tests.ChooseTemplateWithHelper",
        "RunActivity:segmentflow.CheckContactInSegment",
    } <= names, names


async def test_a_versioned_worker_auto_upgrades_messages_and_tickets(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    """`worker.py`'s deployment config (SEGMENTFLOW_DEPLOYMENT_NAME, SEGMENTFLOW_BUILD_ID) on the dev server:
    every workflow auto-upgrades, as README "Deploying changes" says."""
    load(engine, contexts(3))
    recompute_all(engine)
    with Session(engine) as session, session.begin():
        import_policies(session=session, policies=parse_policies(POLICIES), now=datetime.now().astimezone())
    deployment = f"segmentflow-{uuid.uuid4().hex[:8]}"
    config = deployment_config(Settings(deployment_name=deployment, build_id="b1"))
    assert config is not None and deployment_config(Settings(deployment_name=deployment)) is None
    client = await plugin_client(dev_env, engine)
    async with Worker(client, task_queue=task_queue, deployment_config=config):
        request = SetWorkerDeploymentCurrentVersionRequest(
            namespace=client.namespace, deployment_name=deployment, build_id="b1"
        )

        async def made_current() -> bool:
            try:
                await client.workflow_service.set_worker_deployment_current_version(request)
            except RPCError:  # the deployment appears once the worker has polled
                return False
            return True

        await _eventually(made_current, bool)
        message = await client.start_workflow(
            HANDLE_MESSAGE,
            HandleMessageInput(contact_key="u1", conversation_id="c", text="hi"),
            id=f"msg-{uuid.uuid4()}",
            task_queue=task_queue,
            result_type=HandleMessageResult,
        )
        await message.result()
        ticket = await start_ticket_sla(
            client,
            task_queue=task_queue,
            ticket_id=f"t-{uuid.uuid4().hex[:8]}",
            ticket=SlaTicket(priority="normal", created_at=await dev_env.get_current_time()),
            contact_key="u1",
        )
        await _eventually(lambda: ticket.query(TicketSla.state), lambda s: s.policy is not None)

        async def behaviour(handle: WorkflowHandle[Any, Any]) -> int:
            info = (await handle.describe()).raw_description.workflow_execution_info.versioning_info
            return int(info.behavior)

        assert await behaviour(message) == VersioningBehavior.AUTO_UPGRADE
        assert await behaviour(ticket) == VersioningBehavior.AUTO_UPGRADE
        await ticket.execute_update(TicketSla.change, TicketChange(status="solved"))
        await ticket.result()


async def test_a_sequence_runner_is_found_by_its_sequence_key(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    client = await plugin_client(dev_env, engine)
    key = f"seq-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=task_queue):
        handle = await start_sequence_runner(
            client, sequence_key=key, task_queue=task_queue, search_attributes=True
        )
        with pytest.raises(WorkflowFailureError):  # no such sequence: the runner stops at once
            await handle.result()
    found = (await handle.describe()).typed_search_attributes
    assert found.get(SA_SEQUENCE_KEY) == key


async def test_the_worker_refuses_to_start_when_the_search_attributes_are_not_registered(
    tmp_path: Path, repo_root: Path
) -> None:
    bare = await WorkflowEnvironment.start_local(dev_server_existing_path=temporal_cli_path())
    try:
        environment = {
            **os.environ,
            "SEGMENTFLOW_TEMPORAL_ADDRESS": bare.client.service_client.config.target_host,
            "SEGMENTFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}",
            "SEGMENTFLOW_SEARCH_ATTRIBUTES": "true",
        }
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, str(repo_root / "worker.py"), "--no-schedule"],
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        await bare.shutdown()
    assert done.returncode != 0
    assert "lacks ['SegmentflowTicketId'" in done.stderr
    assert (
        "temporal operator search-attribute create --namespace default --name SegmentflowSequenceKey"
        in done.stderr
    )
