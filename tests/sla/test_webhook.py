"""`segmentflow.PostSlaWebhook` through the webhook channel's helper against a local HTTP server: the
`Idempotency-Key` is `ticket:metric:kind:dueAt` on every try; 408, 425, 429 and 5xx are retried by
Temporal, other 4xx are final."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from segmentflow.activities.sla import SlaActivities
from segmentflow.workflows.sla_models import PostSlaWebhookInput, RecordSlaEventInput
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from segmentflow.services.sla import list_events
from segmentflow.settings import Settings
from tests.sla.conftest import WebhookServer

DUE = datetime(2026, 11, 27, 10, tzinfo=UTC)


def _notice(url: str) -> PostSlaWebhookInput:
    event = RecordSlaEventInput(
        ticket_id="t-9",
        contact_key="u0",
        policy="vip",
        metric="first_reply",
        kind="breach",
        due_at=DUE,
        fired_at=DUE,
    )
    return PostSlaWebhookInput(url=url, event=event, segments=["vip"])


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, "sent"),
        (404, "final"),
        (422, "final"),
        (408, "retry"),
        (425, "retry"),
        (429, "retry"),
        (503, "retry"),
    ],
)
async def test_answers_are_sent_final_or_retried_with_one_idempotency_key(
    engine: Engine, webhook: WebhookServer, status: int, outcome: str
) -> None:
    webhook.status = status
    activities = SlaActivities(engine)
    try:
        for _ in range(2):
            if outcome == "sent":
                await ActivityEnvironment().run(activities.post_sla_webhook, _notice(webhook.url))
                continue
            with pytest.raises(ApplicationError) as caught:
                await ActivityEnvironment().run(activities.post_sla_webhook, _notice(webhook.url))
            assert caught.value.non_retryable == (outcome == "final")
    finally:
        await activities.aclose()
    key = f"t-9:first_reply:breach:{webhook.requests[0][2]['dueAt']}"
    assert [(s, k) for s, k, _ in webhook.requests] == [(status, key)] * 2
    assert webhook.requests[0][2]["event"] == "sla.breach" and webhook.requests[0][2]["segments"] == ["vip"]


async def test_a_webhook_the_egress_policy_refuses_is_final_and_recorded_on_the_event(
    engine: Engine, webhook: WebhookServer
) -> None:
    """Without this package's loopback allowance: `localhost` resolves to a loopback address, refused on
    the address the worker would connect to; never retried, and the SLA event keeps the reason."""
    activities = SlaActivities(engine, settings=Settings(egress_allow=""))
    notice = _notice(webhook.url.replace("127.0.0.1", "localhost"))
    try:
        await ActivityEnvironment().run(activities.record_sla_event, notice.event)
        with pytest.raises(ApplicationError) as caught:
            await ActivityEnvironment().run(activities.post_sla_webhook, notice)
    finally:
        await activities.aclose()
    assert (caught.value.type, caught.value.non_retryable) == ("EgressRefused", True)
    assert "localhost resolves to" in str(caught.value) and "loopback" in str(caught.value)
    assert webhook.requests == []
    with Session(engine) as session:
        [event] = list_events(session=session, ticket_id="t-9")
    assert event.webhook_error is not None and "egress refused" in event.webhook_error


async def test_a_redirect_is_final_and_recorded_on_the_event(engine: Engine, webhook: WebhookServer) -> None:
    webhook.status = 302
    activities = SlaActivities(engine)
    try:
        await ActivityEnvironment().run(activities.record_sla_event, _notice(webhook.url).event)
        with pytest.raises(ApplicationError) as caught:
            await ActivityEnvironment().run(activities.post_sla_webhook, _notice(webhook.url))
    finally:
        await activities.aclose()
    assert (caught.value.type, caught.value.non_retryable) == ("WebhookRejected", True)
    assert len(webhook.requests) == 1
    with Session(engine) as session:
        [event] = list_events(session=session, ticket_id="t-9")
    assert "HTTP 302" in (event.webhook_error or "") and "redirect" in (event.webhook_error or "")
