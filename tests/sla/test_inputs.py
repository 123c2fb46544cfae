"""Ticket text the SLA tables cannot hold (longer than their columns, NUL) is refused by the payload models
with a clear error; a value the database still refuses is a non-retryable `InvalidInput`, not a retry loop."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import ValidationError
from segmentflow.activities.sla import SlaActivities
from segmentflow.workflows.sla_models import (
    PlanTicketSlaInput,
    SelectSlaPolicyInput,
    SlaTicket,
    TicketChange,
    TicketSlaInput,
)
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from segmentflow.db.tables import sla_policy_table
from segmentflow.policies.sla import parse_policies
from segmentflow.services.sla import import_policies, list_policies
from tests.sla.test_ticket_sla import POLICIES
from tests.temporal.helpers import contexts, load

CREATED = datetime(2026, 3, 2, 9, tzinfo=UTC)
TICKET = {"priority": "normal", "createdAt": CREATED.isoformat()}


@pytest.mark.parametrize(
    ("model", "data", "field"),
    [
        (SlaTicket, {**TICKET, "channel": "c" * 65}, "channel"),
        (SlaTicket, {**TICKET, "channel": "em\x00ail"}, "channel"),
        (SlaTicket, {**TICKET, "tags": ["t" * 257]}, "tags"),
        (SlaTicket, {**TICKET, "tags": ["a\x00"]}, "tags"),
        (SlaTicket, {**TICKET, "tags": [f"t{i}" for i in range(201)]}, "tags"),
        (SlaTicket, {**TICKET, "priority": "x" * 100}, "priority"),
        (SelectSlaPolicyInput, {"contactKey": "u" * 513, "ticket": TICKET}, "contactKey"),
        (SelectSlaPolicyInput, {"contactKey": "u\x00", "ticket": TICKET}, "contactKey"),
        (TicketSlaInput, {"ticketId": "t", "contactKey": "k" * 513, "ticket": TICKET}, "contactKey"),
        (TicketSlaInput, {"ticketId": "t\x00", "ticket": TICKET}, "ticketId"),
        (TicketChange, {"channel": "c" * 65}, "channel"),
        (TicketChange, {"tags": ["\x00"]}, "tags"),
    ],
)
def test_values_the_tables_cannot_hold_are_refused(model: Any, data: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    assert any(str(error["loc"][0]) in (field, "ticket") for error in caught.value.errors())


def test_values_at_the_limits_are_accepted() -> None:
    ticket = SlaTicket.model_validate({**TICKET, "channel": "c" * 64, "tags": ["t" * 256] * 200})
    assert ticket.channel == "c" * 64
    assert SelectSlaPolicyInput.model_validate({"contactKey": "u" * 512, "ticket": TICKET}).contact_key


async def test_a_value_the_database_refuses_is_a_final_invalid_input(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite stores over-long text; PostgreSQL refuses it with a DataError")
    ticket = SlaTicket.model_construct(priority="normal", channel="c" * 100, tags=[], created_at=CREATED)
    params = PlanTicketSlaInput.model_construct(
        ticket_id="t-long", contact_key=None, ticket=ticket, status="open", starts={}, pauses=[]
    )
    with pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(SlaActivities(engine).plan_ticket_sla, params)
    assert caught.value.type == "InvalidInput" and caught.value.non_retryable
    assert "database refused" in str(caught.value)


def test_the_stored_policies_are_validated_once_per_stored_set(engine: Engine) -> None:
    load(engine, contexts(1))
    with Session(engine) as session, session.begin():
        import_policies(session=session, policies=parse_policies(POLICIES), now=datetime.now(UTC))
    with Session(engine) as session:
        first, again = list_policies(session=session), list_policies(session=session)
    assert [p.key for p in first] == ["vip", "standard"]
    assert all(a is b for a, b in zip(first, again, strict=True))  # not validated again
    with engine.begin() as conn:  # an edit by hand is seen: the set's JSON changed
        conn.execute(
            sa.update(sla_policy_table)
            .where(sla_policy_table.c.key == "standard")
            .values(definition={**POLICIES[1], "warning_threshold": 0.5})
        )
    with Session(engine) as session:
        edited = list_policies(session=session)
    assert edited[1].warning_threshold == 0.5 and edited[1] is not first[1]
