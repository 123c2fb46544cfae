"""`SegmentsPlugin` respects its host: the pydantic converter goes only over the default one (another is
refused, not replaced), a host chooses feature groups, and the plugin works on one Worker only."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from segmentflow.plugins import SegmentsPlugin
from sqlalchemy.engine import Engine
from temporalio.activity import _Definition as ActivityDefinition
from temporalio.client import Client
from temporalio.contrib.pydantic import PydanticPayloadConverter, pydantic_data_converter
from temporalio.converter import DataConverter, DefaultPayloadConverter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from temporalio.workflow import _Definition as WorkflowDefinition

from segmentflow.db.engine import make_engine
from segmentflow.services.membership import recompute_all
from tests.temporal.helpers import contexts, load
from tests.temporal.user_workflows import ChooseTemplateWithHelper


class HostPayloadConverter(DefaultPayloadConverter):
    """A host's own payload converter (say, one that encrypts or adds a type)."""


class HostPydanticConverter(PydanticPayloadConverter):
    pass


def _client(env: WorkflowEnvironment, converter: DataConverter, plugin: SegmentsPlugin | None) -> Client:
    config = env.client.config()
    config["data_converter"] = converter
    config["plugins"] = [plugin] if plugin else []
    return Client(**config)


async def test_the_pydantic_converter_goes_over_the_default_keeping_the_codec(
    dev_env: WorkflowEnvironment, engine: Engine
) -> None:
    client = _client(dev_env, DataConverter.default, SegmentsPlugin(engine=engine))
    assert client.data_converter.payload_converter_class is PydanticPayloadConverter
    kept = _client(
        dev_env, DataConverter(payload_converter_class=HostPydanticConverter), SegmentsPlugin(engine=engine)
    )
    assert kept.data_converter.payload_converter_class is HostPydanticConverter


async def test_a_hosts_own_payload_converter_is_refused_with_a_clear_error(
    dev_env: WorkflowEnvironment, engine: Engine
) -> None:
    own = DataConverter(payload_converter_class=HostPayloadConverter)
    with pytest.raises(ValueError, match=r"needs the pydantic payload converter.*HostPayloadConverter"):
        _client(dev_env, own, SegmentsPlugin(engine=engine))


def test_feature_groups_bring_only_their_workflows_and_activities(engine: Engine) -> None:
    plugin = SegmentsPlugin(engine=engine, features={"sla"})
    workflows = {WorkflowDefinition.must_from_class(w).name for w in plugin.workflows or []}
    activities = {ActivityDefinition.must_from_callable(a).name for a in plugin.activities or []}
    assert workflows == {
        "segmentflow.TicketSla",
        "segmentflow.FireSlaTimers",
        "segmentflow.WatchSlaMembershipChanges",
    }
    assert "segmentflow.PlanTicketSla" in activities
    assert not {"segmentflow.RunAction", "segmentflow.CheckContactInSegment"} & activities
    everything = SegmentsPlugin(engine=engine)
    assert len(everything.workflows or []) == 6 and len(everything.activities or []) > len(activities)
    with pytest.raises(ValueError, match=r"unknown segmentflow feature\(s\) \['billing'\]"):
        SegmentsPlugin(engine=engine, features={"sla", "billing"})  # type: ignore[arg-type]


async def test_the_plugin_on_one_worker_only_serves_its_feature(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    load(engine, contexts(3))
    recompute_all(engine)
    plain = _client(dev_env, DataConverter.default, None)  # no plugin on the client
    membership = SegmentsPlugin(engine=engine, features={"membership"})
    async with Worker(
        plain, task_queue=task_queue, workflows=[ChooseTemplateWithHelper], plugins=[membership]
    ):
        result = await plain.execute_workflow(
            ChooseTemplateWithHelper.run, ["vip", "u0"], id=f"wf-{uuid.uuid4()}", task_queue=task_queue
        )
    assert result == "member"
    assert plain.data_converter is DataConverter.default  # the host's client itself is left alone


async def test_a_worker_that_does_not_migrate_leaves_the_schema_alone(
    dev_env: WorkflowEnvironment, tmp_path: Path, task_queue: str
) -> None:
    fresh = make_engine(f"sqlite:///{tmp_path}/fresh.db")
    try:
        client = _client(dev_env, pydantic_data_converter, SegmentsPlugin(engine=fresh, migrate=False))
        async with Worker(client, task_queue=task_queue):
            pass
        assert sa.inspect(fresh).get_table_names() == []
    finally:
        fresh.dispose()
