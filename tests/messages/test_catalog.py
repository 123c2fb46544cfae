"""The stores behind the checks, on SQLite and PostgreSQL: the catalog cache sees every write whatever
the writer's clock, the single-action check reads fresh, and the refusal audit always gets its row."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from pydantic import ValidationError
from segmentflow.workflows.message_models import HandleMessageInput, ResolveMessageInput, RunActionInput
from sqlalchemy.engine import Engine
from sqlmodel import Session

from segmentflow.rules import parse_segments
from segmentflow.services.messages import (
    CatalogAction,
    MessageCatalogCache,
    check_action,
    list_refusals,
    parse_actions,
    parse_instructions,
    record_refusal,
    resolve_message,
    upsert_actions,
    upsert_instructions,
)
from segmentflow.services.segment_admin import import_segments
from tests.legacy import remove_segment_row
from tests.messages.conftest import NOW

EARLIER = NOW - timedelta(days=1)


def _offered(engine: Engine, cache: MessageCatalogCache, contact: str | None) -> list[str]:
    with Session(engine) as session:
        found = resolve_message(session=session, catalog=cache.get(session=session), contact_key=contact)
    return [a.key for a in found.actions]


def _allowed(engine: Engine, action: str, contact: str | None) -> bool:
    with Session(engine) as session:
        return check_action(session=session, action_key=action, contact_key=contact)[1].allowed


def test_a_tightened_restriction_written_with_an_earlier_clock_is_seen_at_once(
    engine: Engine, seeded: None
) -> None:
    """A writer whose clock is behind re-imports `order-status` restricted to vip: the cache and the
    single-action check both refuse it at once (no fail-open on `updated_at` ordering)."""
    cache = MessageCatalogCache()
    assert "order-status" in _offered(engine, cache, "u-free")
    assert _allowed(engine, "order-status", "u-free")
    tightened = [{"key": "order-status", "restricted_to_segments": ["vip"]}]
    with Session(engine) as session, session.begin():
        upsert_actions(session=session, actions=parse_actions(tightened), now=EARLIER)
    assert "order-status" not in _offered(engine, cache, "u-free")
    assert not _allowed(engine, "order-status", "u-free")
    assert "order-status" in _offered(engine, cache, "u-vip") and _allowed(engine, "order-status", "u-vip")


def test_an_instruction_rewritten_with_an_earlier_clock_is_seen_at_once(engine: Engine, seeded: None) -> None:
    cache = MessageCatalogCache()
    with Session(engine) as session:
        assert "tone" in [
            i.key
            for i in resolve_message(
                session=session, catalog=cache.get(session=session), contact_key="u-free"
            ).instructions
        ]
    with Session(engine) as session, session.begin():
        restricted = [{"key": "tone", "text": "Be brief.", "restricted_to_segments": ["vip"]}]
        upsert_instructions(session=session, instructions=parse_instructions(restricted), now=EARLIER)
    with Session(engine) as session:
        found = resolve_message(session=session, catalog=cache.get(session=session), contact_key="u-free")
    assert [i.key for i in found.instructions] == []


def test_a_segment_deleted_and_another_created_with_an_earlier_clock_is_seen(
    engine: Engine, seeded: None
) -> None:
    """Same count of segments, same versions, no newer `updated_at`: book-call (vip or eu) still fails
    closed for a vip member once eu is gone."""
    cache = MessageCatalogCache()
    assert "book-call" in _offered(engine, cache, "u-vip")
    with Session(engine) as session, session.begin():
        remove_segment_row(session, "eu")  # the API refuses: actions still name it
        import_segments(
            recompute=False, session=session, segments=parse_segments([{"key": "eu-new"}]), now=EARLIER
        )
    assert "book-call" not in _offered(engine, cache, "u-vip")
    assert not _allowed(engine, "book-call", "u-vip")


def test_check_action_reads_the_action_fresh_not_from_a_catalog(engine: Engine, seeded: None) -> None:
    assert not _allowed(engine, "refund", "u-free")
    with Session(engine) as session, session.begin():
        upsert_actions(session=session, actions=parse_actions([{"key": "refund"}]), now=EARLIER)
    assert _allowed(engine, "refund", "u-free")


@pytest.mark.parametrize(
    ("action", "contact", "stored_action", "stored_contact"),
    [
        ("a" * 300, "c" * 600, "a" * 255 + "…", "c" * 511 + "…"),
        ("made\x00up", "nul\x00contact", "made\\x00up", "nul\\x00contact"),
        ("refund", None, "refund", None),
    ],
)
def test_record_refusal_always_writes_its_row(
    engine: Engine, action: str, contact: str | None, stored_action: str, stored_contact: str | None
) -> None:
    """Oversized keys and NUL (which PostgreSQL refuses) are cut and escaped, never a DataError."""
    with Session(engine) as session, session.begin():
        record_refusal(
            session=session,
            action_key=action,
            contact_key=contact,
            reason="why\x00not",
            side="workflow",
            now=NOW,
            workflow_id="w" * 600,
        )
    with Session(engine) as session:
        (row,) = list_refusals(session=session)
    assert (row.action_key, row.contact_key, row.reason) == (stored_action, stored_contact, "why\\x00not")
    assert row.workflow_id is not None and len(row.workflow_id) == 512


@pytest.mark.parametrize(
    "make",
    [
        lambda: RunActionInput(action="a" * 257),
        lambda: RunActionInput(action="a\x00b"),
        lambda: RunActionInput(action=""),
        lambda: RunActionInput(action="refund", contact_key="c" * 513),
        lambda: RunActionInput(action="refund", contact_key="c\x00"),
        lambda: HandleMessageInput(contact_key="c" * 513, conversation_id="c", text="t"),
        lambda: HandleMessageInput(contact_key="\x00", conversation_id="c", text="t"),
        lambda: ResolveMessageInput(contact_key="c" * 513),
    ],
)
def test_payloads_refuse_keys_the_store_cannot_hold(make: object) -> None:
    with pytest.raises(ValidationError):
        make()  # type: ignore[operator]


def test_action_argument_validator_is_reused_only_for_the_same_schema() -> None:
    def action(schema: dict[str, object]) -> CatalogAction:
        return CatalogAction("k", "k", "", (), (), schema, None, version=1)

    strict = action({"type": "object", "required": ["id"]})
    loose = action({"type": "object"})
    assert strict.argument_errors({}) == ["/: 'id' is a required property"]
    assert strict.argument_errors({}) == ["/: 'id' is a required property"]
    assert loose.argument_errors({}) == []  # same key and version, another schema (another database)


def test_every_upsert_bumps_the_version(engine: Engine, seeded: None) -> None:
    with Session(engine) as session, session.begin():
        upsert_actions(session=session, actions=parse_actions([{"key": "refund"}]), now=NOW)
    with Session(engine) as session:
        versions = dict(session.execute(sa.text("SELECT key, version FROM action")).all())
    assert versions["refund"] == 2 and versions["order-status"] == 1
