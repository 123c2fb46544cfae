"""The email channel (aiosmtplib) against a local SMTP server (aiosmtpd), through the sequence activity
run in Temporal's ActivityEnvironment: subject and body rendered, the key as Message-ID, a refused
recipient failed with the reply recorded, a contact without an address failed without sending."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from email import message_from_bytes
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from segmentflow.activities import SequenceActivities
from segmentflow.workflows.sequence_models import ProcessSequenceInput
from sqlalchemy.engine import Engine
from temporalio.testing import ActivityEnvironment

from segmentflow.settings import Settings
from tests.sequences.helpers import enrollments, load_segments, now, put_contacts, save_sequence, sends

SEGMENTS = [{"key": "vip", "rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["vip"]}]}]}]


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address.startswith("bounce@"):
            return "550 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        return "250 Message accepted"


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


async def test_email_steps_are_mailed_and_failures_recorded(
    engine: Engine, mailbox: tuple[Mailbox, int]
) -> None:
    box, port = mailbox
    load_segments(engine, SEGMENTS)
    put_contacts(
        engine,
        [
            {"kind": "user", "key": "ana", "name": "Ana", "email": "ana@example.org", "plan": "vip"},
            {"kind": "user", "key": "bob", "name": "Bob", "email": "bounce@example.org", "plan": "vip"},
            {"kind": "user", "key": "cy", "name": "Cy", "plan": "vip"},
        ],
    )
    step = {
        "type": "send",
        "channel": "email",
        "subject": "Welcome, {{ contact.name }}",
        "template": "Hello {{ contact.name }}!",
    }
    save_sequence(engine, {"key": "mail", "name": "Mail", "segment": "vip", "steps": [step]})
    activities = SequenceActivities(engine, Settings(smtp_host="127.0.0.1", smtp_port=port))
    try:
        result = await ActivityEnvironment().run(
            activities.process_sequence, ProcessSequenceInput(sequence_key="mail", now=now())
        )
    finally:
        await activities.aclose()
    assert (result.counts.sent, result.counts.failed) == (1, 2)
    [message] = box.messages
    assert (message["To"], message["Subject"]) == ("ana@example.org", "Welcome, Ana")
    assert message.get_payload().strip() == "Hello Ana!"
    by_contact = {e.contact_key: e for e in enrollments(engine, "mail")}
    ana_send = next(s for s in sends(engine, "mail") if s.enrollment_id == by_contact["ana"].id)
    assert message["Message-ID"] == f"<{ana_send.idempotency_key}@segmentflow>"
    bob_send = next(s for s in sends(engine, "mail") if s.enrollment_id == by_contact["bob"].id)
    assert (bob_send.status, bob_send.response_status) == ("failed", 550)
    assert by_contact["cy"].status == "failed" and "recipient" in (by_contact["cy"].reason or "")
    assert len(sends(engine, "mail")) == 2  # nothing written for the contact without an address


async def test_without_an_smtp_server_email_sends_fail_with_the_reason(engine: Engine) -> None:
    load_segments(engine, SEGMENTS)
    put_contacts(engine, [{"kind": "user", "key": "ana", "email": "ana@example.org", "plan": "vip"}])
    step = {"type": "send", "channel": "email", "subject": "Hi", "template": "Hi"}
    save_sequence(engine, {"key": "mail", "name": "Mail", "segment": "vip", "steps": [step]})
    activities = SequenceActivities(engine, Settings(smtp_host=None))
    try:
        await ActivityEnvironment().run(
            activities.process_sequence, ProcessSequenceInput(sequence_key="mail", now=now())
        )
    finally:
        await activities.aclose()
    [send] = sends(engine, "mail")
    assert send.status == "failed" and "SEGMENTFLOW_SMTP_HOST" in (send.response_body or "")


async def test_one_contact_reaches_exactly_one_mailbox(engine: Engine, mailbox: tuple[Mailbox, int]) -> None:
    """An address list, a header injection or a display name in the contact's email attribute fails that
    send for good (never retried) and nothing reaches the SMTP server; a plain address is mailed."""
    box, port = mailbox
    load_segments(engine, SEGMENTS)
    put_contacts(
        engine,
        [
            {
                "kind": "user",
                "key": "fan",
                "email": "me@x.example, v1@y.example, v2@z.example",
                "plan": "vip",
            },
            {"kind": "user", "key": "crlf", "email": "me@x.example\r\nBcc: v1@y.example", "plan": "vip"},
            {"kind": "user", "key": "named", "email": "Me <me@x.example>", "plan": "vip"},
            {"kind": "user", "key": "ok", "email": "ok@x.example", "plan": "vip"},
        ],
    )
    step = {"type": "send", "channel": "email", "subject": "Hi", "template": "Hi"}
    save_sequence(engine, {"key": "mail", "name": "Mail", "segment": "vip", "steps": [step]})
    activities = SequenceActivities(engine, Settings(smtp_host="127.0.0.1", smtp_port=port))
    try:
        result = await ActivityEnvironment().run(
            activities.process_sequence, ProcessSequenceInput(sequence_key="mail", now=now())
        )
    finally:
        await activities.aclose()
    assert (result.counts.sent, result.counts.failed, result.counts.retried) == (1, 3, 0)
    assert [m["To"] for m in box.messages] == ["ok@x.example"]
    by_contact = {e.contact_key: e for e in enrollments(engine, "mail")}
    assert {k: e.status for k, e in by_contact.items()} == {
        "fan": "failed",
        "crlf": "failed",
        "named": "failed",
        "ok": "completed",
    }
    failed = [s for s in sends(engine, "mail") if s.status == "failed"]
    assert len(failed) == 3 and all(s.attempts == 1 for s in failed)
    assert all("address" in (s.response_body or "") for s in failed)
