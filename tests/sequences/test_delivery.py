"""The webhook channel's transport against real sockets: a refused connection and an unresolvable host are
httpx transport errors (so a send is rescheduled, never an exception out of the batch), a paced send does
not retry a response outside the pace, and one bad send in a batch does not sink the others."""

from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from segmentflow.activities import SequenceActivities
from segmentflow.workflows.sequence_models import ProcessSequenceInput
from sqlalchemy.engine import Engine
from temporalio.testing import ActivityEnvironment

from segmentflow.policies.egress import parse_allow
from segmentflow.services.delivery import post_webhook, webhook_client
from segmentflow.settings import Settings
from tests.sequences.conftest import EGRESS_ALLOW_LOOPBACK
from tests.sequences.helpers import (
    Provider,
    enrollments,
    load_segments,
    now,
    put_contacts,
    save_sequence,
    sends,
    webhook_provider,
)

SEGMENTS = [
    {"key": "vip", "rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["vip"]}]}]},
    {"key": "de", "rules": [{"clauses": [{"attribute": "country", "op": "in", "values": ["DE"]}]}]},
]


@pytest.fixture
def provider() -> Iterator[Provider]:
    with webhook_provider() as running:
        yield running


LOOPBACK = parse_allow(EGRESS_ALLOW_LOOPBACK)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "segmentflow-test.invalid"])
async def test_unreachable_hosts_are_transport_errors_and_a_retry(host: str) -> None:
    url = f"http://{host.format(port=closed_port())}/hook"
    async with webhook_client(policy=LOOPBACK, timeout=5.0) as client:
        with pytest.raises(httpx.TransportError):
            await client.post(url, json={})
        delivery = await post_webhook(client, url=url, payload={}, idempotency_key="k", attempts=2, backoff=0)
    assert (delivery.outcome, delivery.status_code) == ("retry", None)
    assert (delivery.response or "").startswith("Connect")


async def test_a_paced_send_reports_a_transient_status_without_retrying_it(provider: Provider) -> None:
    async with webhook_client(policy=LOOPBACK) as client:
        paced = await post_webhook(
            client, url=provider.url + "/flaky", payload={}, idempotency_key="a", retry_status=False
        )
        unpaced = await post_webhook(client, url=provider.url + "/flaky", payload={}, idempotency_key="b")
    assert (paced.outcome, paced.status_code) == ("retry", 503)
    assert unpaced.outcome == "sent"
    assert [r.key for r in provider.requests] == ["a", "b", "b"]


async def test_one_bad_send_becomes_a_retry_and_the_rest_of_the_batch_is_recorded(
    engine: Engine, provider: Provider
) -> None:
    load_segments(engine, SEGMENTS)
    put_contacts(
        engine,
        [
            {"kind": "user", "key": "ana", "plan": "vip", "country": "FR"},
            {"kind": "user", "key": "refused", "plan": "vip", "country": "DE"},
        ],
    )
    bad: dict[str, Any] = {
        "type": "send",
        "channel": "webhook",
        "url": f"http://127.0.0.1:{closed_port()}/hook",
        "template": "x",
    }
    good = {**bad, "url": provider.url + "/ok"}
    branch = {"type": "branch", "segment": "de", "then": [bad], "else": [good]}
    save_sequence(engine, {"key": "mixed", "name": "Mixed", "segment": "vip", "steps": [branch]})
    activities = SequenceActivities(engine)
    try:
        result = await ActivityEnvironment().run(
            activities.process_sequence, ProcessSequenceInput(sequence_key="mixed", now=now())
        )
    finally:
        await activities.aclose()
    assert (result.counts.sent, result.counts.retried) == (1, 1)
    assert provider.deliveries() == [("ana", 2)]
    by_step = {s.step: (s.status, s.attempts) for s in sends(engine, "mixed")}
    assert by_step == {1: ("pending", 1), 2: ("sent", 1)}
    state = {e.contact_key: e.status for e in enrollments(engine, "mixed")}
    assert state == {"ana": "completed", "refused": "active"}


async def run_round(engine: Engine, key: str, **options: Any) -> Any:
    activities = SequenceActivities(engine)
    try:
        return await ActivityEnvironment().run(
            activities.process_sequence, ProcessSequenceInput(sequence_key=key, now=now(), **options)
        )
    finally:
        await activities.aclose()


async def test_a_send_that_raises_is_a_retry_not_a_failed_batch(engine: Engine, provider: Provider) -> None:
    load_segments(engine, SEGMENTS)
    put_contacts(
        engine,
        [
            {"kind": "user", "key": "ana", "plan": "vip", "country": "FR"},
            {"kind": "user", "key": "odd", "plan": "vip", "country": "DE"},
        ],
    )
    # Port 99999 passes URL parsing but makes the socket layer raise OverflowError, not an OSError.
    bad = {"type": "send", "channel": "webhook", "url": "http://127.0.0.1:99999/hook", "template": "x"}
    good = {**bad, "url": provider.url + "/ok"}
    branch = {"type": "branch", "segment": "de", "then": [bad], "else": [good]}
    save_sequence(engine, {"key": "odd", "name": "Odd", "segment": "vip", "steps": [branch]})
    result = await run_round(engine, "odd")
    assert (result.counts.sent, result.counts.retried) == (1, 1)
    by_step = {s.step: (s.status, s.attempts, s.response_body or "") for s in sends(engine, "odd")}
    assert by_step[2][:2] == ("sent", 1)
    assert by_step[1][:2] == ("pending", 1) and "OverflowError" in by_step[1][2]


async def test_sends_still_in_flight_at_half_the_lease_are_rescheduled(
    engine: Engine, provider: Provider
) -> None:
    load_segments(engine, SEGMENTS)
    put_contacts(engine, [{"kind": "user", "key": "ana", "plan": "vip"}])
    step = {"type": "send", "channel": "webhook", "url": provider.url + "/hang", "template": "x"}
    save_sequence(engine, {"key": "hang", "name": "Hang", "segment": "vip", "steps": [step]})
    result = await run_round(engine, "hang", lease=timedelta(seconds=1))
    assert (result.counts.sent, result.counts.retried) == (0, 1)
    [send] = sends(engine, "hang")
    assert (send.status, send.attempts) == ("pending", 1)
    assert "not delivered within 0.5 s" in (send.response_body or "")
    [enrollment] = enrollments(engine, "hang")
    assert enrollment.status == "active" and enrollment.next_due_at is not None


async def test_the_round_heartbeats_while_a_send_is_in_flight(engine: Engine, provider: Provider) -> None:
    load_segments(engine, SEGMENTS)
    put_contacts(engine, [{"kind": "user", "key": "ana", "plan": "vip"}])
    step = {"type": "send", "channel": "webhook", "url": provider.url + "/hang", "template": "x"}
    save_sequence(engine, {"key": "beat", "name": "Beat", "segment": "vip", "steps": [step]})
    environment = ActivityEnvironment()
    environment.info = dataclasses.replace(environment.info, heartbeat_timeout=timedelta(seconds=0.4))
    beats: list[float] = []
    environment.on_heartbeat = lambda *details: beats.append(time.monotonic())
    activities = SequenceActivities(engine)
    try:
        result = await environment.run(
            activities.process_sequence, ProcessSequenceInput(sequence_key="beat", now=now())
        )
    finally:
        await activities.aclose()
    assert result.counts.sent == 1
    # One 1.5 s send: a beat every 0.1 s in the background (before: one at the end of the batch).
    assert len(beats) >= 5


async def test_a_paced_round_reads_membership_again_for_each_batch(
    engine: Engine, provider: Provider
) -> None:
    load_segments(engine, SEGMENTS)
    put_contacts(engine, [{"kind": "user", "key": f"u{i}", "plan": "vip"} for i in range(8)])
    step = {"type": "send", "channel": "webhook", "url": provider.url + "/ok", "template": "x"}
    # 4 per second: batches of 4, about a second of sends each.
    save_sequence(
        engine,
        {"key": "paced", "name": "Paced", "segment": "vip", "steps": [step], "rate_limit": {"webhook": 4}},
    )
    left: list[str] = []

    def leave_once(request: Any) -> None:  # u7 (second batch) leaves while the first batch is sending
        if not left:
            left.append(request.body["contactKey"])
            put_contacts(engine, [{"kind": "user", "key": "u7", "plan": "free"}])

    provider.on_request = leave_once
    result = await run_round(engine, "paced")
    assert left == ["u0"]
    assert (result.counts.sent, result.counts.exited) == (7, 1)
    assert ("u7", 0) not in provider.deliveries()
    status = {e.contact_key: (e.status, e.reason) for e in enrollments(engine, "paced")}
    assert status["u7"] == ("exited", "left_segment")


async def test_a_send_the_egress_policy_refuses_fails_for_good_with_the_reason_on_the_send(
    engine: Engine, provider: Provider
) -> None:
    """The worker's policy without this package's loopback allowance: a webhook at `localhost` (a name
    resolving to loopback) is refused on the address it would connect to; the send fails, never retried."""
    load_segments(engine, SEGMENTS)
    put_contacts(engine, [{"kind": "user", "key": "ana", "plan": "vip"}])
    port = provider.url.rsplit(":", 1)[1]
    step = {"type": "send", "channel": "webhook", "url": f"http://localhost:{port}/ok", "template": "x"}
    save_sequence(engine, {"key": "ssrf", "name": "SSRF", "segment": "vip", "steps": [step]})
    activities = SequenceActivities(engine, Settings(egress_allow=""))
    try:
        result = await ActivityEnvironment().run(
            activities.process_sequence, ProcessSequenceInput(sequence_key="ssrf", now=now())
        )
    finally:
        await activities.aclose()
    assert (result.counts.sent, result.counts.failed, result.counts.retried) == (0, 1, 0)
    assert provider.deliveries() == []
    [send] = sends(engine, "ssrf")
    assert (send.status, send.attempts, send.response_status) == ("failed", 1, None)
    assert "egress refused: localhost resolves to" in (send.response_body or "")
    assert "loopback" in (send.response_body or "")
    [enrollment] = enrollments(engine, "ssrf")
    assert enrollment.status == "failed" and "egress refused" in (enrollment.reason or "")
    assert result.next_due_at is None  # nothing left to retry
