"""The sequence services on SQLite and PostgreSQL: import, launch, the change feed, the two-transaction
send path (pending rows committed before the provider call) and status, against a local HTTP provider."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from segmentflow.policies.sequences import SequenceError, parse_sequences
from segmentflow.services.delivery import Delivery, post_webhook
from segmentflow.services.sequences import (
    DEFAULT_LEASE,
    ClaimResult,
    Outgoing,
    ProgramCache,
    UnknownSegmentForSequenceError,
    claim_and_render,
    claim_due,
    import_sequences,
    launch_sequence,
    list_sequences,
    record_deliveries,
    release_leases,
    sequence_status,
    sync_enrollments,
)
from tests.legacy import remove_segment_row
from tests.sequences.helpers import (
    Provider,
    enrollments,
    load_segments,
    now,
    pause,
    put_contacts,
    save_sequence,
    sends,
)

SEGMENTS = [{"key": "vip", "rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["vip"]}]}]}]


def people(n: int, plan: str = "vip") -> list[dict[str, Any]]:
    return [{"kind": "user", "key": f"u{i}", "name": f"User {i}", "plan": plan} for i in range(n)]


def welcome(url: str, **options: Any) -> dict[str, Any]:
    steps = options.pop("steps", None) or [
        {"type": "send", "channel": "webhook", "url": url, "template": "Hi {{ contact.name }}"}
    ]
    return {"key": "welcome", "name": "Welcome", "segment": "vip", "steps": steps, **options}


def transaction(engine: Engine) -> Callable[[Callable[[Session], ClaimResult]], ClaimResult]:
    def run(work: Callable[[Session], ClaimResult]) -> ClaimResult:
        with Session(engine) as session, session.begin():
            return work(session)

    return run


def claim(engine: Engine, *, limit: int = 100, at: Any = None, **options: Any) -> ClaimResult:
    with Session(engine) as session, session.begin():
        compiled = ProgramCache().get(session=session, key="welcome")
    return claim_and_render(transaction(engine), sequence=compiled, now=at or now(), limit=limit, **options)


def release(engine: Engine, owner: str) -> int:
    with Session(engine) as session, session.begin():
        compiled = ProgramCache().get(session=session, key="welcome")
        return release_leases(session=session, sequence_id=compiled.id, owner=owner, now=now())


async def deliver_and_record(engine: Engine, claimed: ClaimResult) -> dict[str, int]:
    async with httpx.AsyncClient() as client:
        results = [
            (
                o,
                await post_webhook(
                    client, url=o.url, payload=o.payload, idempotency_key=o.idempotency_key, backoff=0
                ),
            )
            for o in claimed.outgoing
        ]
    with Session(engine) as session, session.begin():
        compiled = ProgramCache().get(session=session, key="welcome")
        return record_deliveries(session=session, sequence=compiled, results=results, now=now())


def test_a_template_that_does_not_parse_is_refused_at_save(engine: Engine) -> None:
    bad = welcome("http://127.0.0.1:1/ok")
    bad["steps"][0]["template"] = "Hi {{ contact.name "
    with Session(engine) as session, session.begin(), pytest.raises(SequenceError, match="step 0: template"):
        import_sequences(session=session, sequences=parse_sequences(bad), now=now())
    with Session(engine) as session:
        assert list_sequences(session=session) == []


def test_reimport_bumps_the_version_only_when_the_definition_changes(engine: Engine) -> None:
    load_segments(engine, SEGMENTS)
    save_sequence(engine, welcome("http://127.0.0.1:1/ok"), launch=False)
    save_sequence(engine, welcome("http://127.0.0.1:1/ok"), launch=False)
    save_sequence(engine, welcome("http://127.0.0.1:1/ok", exit_on_leave=False), launch=False)
    with Session(engine) as session:
        [record] = list_sequences(session=session)
        assert (record.version, record.status) == (2, "draft")


def test_launch_enrolls_current_members_once(engine: Engine, provider: Provider) -> None:
    load_segments(engine, SEGMENTS)
    put_contacts(engine, [*people(3), {"kind": "user", "key": "free", "plan": "free"}])
    assert save_sequence(engine, welcome(provider.url + "/ok")) == 3
    with Session(engine) as session, session.begin():
        again = launch_sequence(session=session, key="welcome", now=now())
    assert (again.enrolled, again.changed) == (0, False)
    assert sorted(e.contact_key for e in enrollments(engine, "welcome")) == ["u0", "u1", "u2"]


def test_import_refuses_unknown_segments_and_writes_nothing(engine: Engine) -> None:
    load_segments(engine, SEGMENTS)
    branch = {"type": "branch", "segment": "ghost", "then": [], "else": [{"type": "exit"}]}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"segment": "ghost"}, 'sequence "welcome": segment: segment "ghost" is not stored'),
        ({"steps": [branch]}, 'sequence "welcome": step 0: branch segment "ghost" is not stored'),
    ]
    for options, message in cases:
        definition = {**welcome("http://127.0.0.1:1/ok"), **options}
        with Session(engine) as session, session.begin(), pytest.raises(SequenceError) as caught:
            import_sequences(session=session, sequences=parse_sequences(definition), now=now())
        assert str(caught.value) == message
        with Session(engine) as session:
            assert list_sequences(session=session) == []


def test_an_active_sequence_cannot_move_to_another_segment_but_a_draft_can(engine: Engine) -> None:
    load_segments(engine, [*SEGMENTS, {**SEGMENTS[0], "key": "eu"}])
    save_sequence(engine, welcome("http://127.0.0.1:1/ok"), launch=False)
    save_sequence(engine, {**welcome("http://127.0.0.1:1/ok"), "segment": "eu"}, launch=False)
    save_sequence(engine, welcome("http://127.0.0.1:1/ok"))  # back to vip, then launched
    with pytest.raises(SequenceError, match='it is active on segment "vip" and cannot move to "eu"'):
        save_sequence(engine, {**welcome("http://127.0.0.1:1/ok"), "segment": "eu"}, launch=False)
    with Session(engine) as session:
        [record] = list_sequences(session=session)
        assert (record.segment_key, record.version) == ("vip", 3)


def test_launch_refuses_a_segment_that_is_not_stored(engine: Engine) -> None:
    load_segments(engine, SEGMENTS)
    save_sequence(engine, welcome("http://127.0.0.1:1/ok"), launch=False)
    with Session(engine) as session, session.begin():
        remove_segment_row(session, "vip")  # the API refuses: the sequence still names it
    with (
        Session(engine) as session,
        session.begin(),
        pytest.raises(UnknownSegmentForSequenceError, match="vip"),
    ):
        launch_sequence(session=session, key="welcome", now=now())


async def test_pending_rows_are_committed_before_sending_and_resent_with_the_same_key(
    engine: Engine, provider: Provider
) -> None:
    load_segments(engine, SEGMENTS)
    put_contacts(engine, people(4))
    save_sequence(engine, welcome(provider.url + "/ok"))
    first = claim(engine)
    assert len(first.outgoing) == 4
    assert {s.status for s in sends(engine, "welcome")} == {"pending"}
    # A crash here (after the provider may have got some of them): the next claim finds the same rows.
    async with httpx.AsyncClient() as client:
        o = first.outgoing[0]
        await post_webhook(client, url=o.url, payload=o.payload, idempotency_key=o.idempotency_key)
    assert claim(engine).claimed == 0  # leased: an overlapping claim does not take them
    again = claim(engine, at=now() + DEFAULT_LEASE + timedelta(seconds=1))  # the lease ran out
    assert sorted(o.idempotency_key for o in again.outgoing) == sorted(
        o.idempotency_key for o in first.outgoing
    )
    assert len(sends(engine, "welcome")) == 4
    assert (await deliver_and_record(engine, again))["sent"] == 4
    assert provider.deliveries() == [(f"u{i}", 0) for i in range(4)]
    assert len(provider.requests) == 5  # one repeat, deduplicated by the provider
    assert claim(engine).claimed == 0
    assert {e.status for e in enrollments(engine, "welcome")} == {"completed"}
    assert provider.bodies()[("u2", 0)] == "Hi User 2"


async def test_a_template_failing_for_one_contact_fails_that_enrollment_and_sends_nothing(
    engine: Engine, provider: Provider
) -> None:
    load_segments(engine, SEGMENTS)
    put_contacts(engine, [{"kind": "user", "key": "named", "name": "Ana", "plan": "vip"}])
    put_contacts(engine, [{"kind": "user", "key": "nameless", "plan": "vip"}])
    save_sequence(engine, welcome(provider.url + "/ok"))
    claimed = claim(engine)
    assert (len(claimed.outgoing), claimed.failed) == (1, 1)
    await deliver_and_record(engine, claimed)
    by_key = {e.contact_key: e for e in enrollments(engine, "welcome")}
    assert by_key["nameless"].status == "failed"
    assert "UndefinedError" in (by_key["nameless"].reason or "")
    assert provider.deliveries() == [("named", 0)]


async def test_a_refused_send_is_failed_with_the_response_recorded(
    engine: Engine, provider: Provider
) -> None:
    load_segments(engine, SEGMENTS)
    put_contacts(engine, people(1))
    save_sequence(engine, welcome(provider.url + "/reject"))
    assert (await deliver_and_record(engine, claim(engine)))["failed"] == 1
    [send] = sends(engine, "welcome")
    assert (send.status, send.response_status, send.response_body) == ("failed", 422, "no such mailbox")
    [enrollment] = enrollments(engine, "welcome")
    assert enrollment.status == "failed" and "HTTP 422" in (enrollment.reason or "")


async def test_a_transient_failure_is_retried_with_the_same_key(engine: Engine, provider: Provider) -> None:
    load_segments(engine, SEGMENTS)
    put_contacts(engine, people(2))
    save_sequence(engine, welcome(provider.url + "/flaky"))
    assert (await deliver_and_record(engine, claim(engine)))["sent"] == 2  # retried in-process after 503
    assert [r.key for r in provider.requests].count(provider.requests[0].key) == 2
    assert {s.status for s in sends(engine, "welcome")} == {"sent"}


async def test_an_unreachable_provider_reschedules_the_send_and_keeps_it_pending(engine: Engine) -> None:
    load_segments(engine, SEGMENTS)
    put_contacts(engine, people(1))
    save_sequence(engine, welcome("http://127.0.0.1:9/ok"))
    assert (await deliver_and_record(engine, claim(engine)))["retry"] == 1
    [send] = sends(engine, "welcome")
    assert (send.status, send.attempts) == ("pending", 1)
    [enrollment] = enrollments(engine, "welcome")
    assert enrollment.status == "active" and enrollment.next_due_at is not None
    assert enrollment.next_due_at > now() + timedelta(seconds=20)
    assert claim(engine).claimed == 0


def test_the_change_feed_enrolls_entrants_and_exits_leavers(engine: Engine) -> None:
    load_segments(engine, SEGMENTS)
    put_contacts(engine, people(2))
    save_sequence(engine, welcome("http://127.0.0.1:1/ok", steps=[{"type": "wait", "duration": "P1D"}]))
    put_contacts(
        engine, [{"kind": "user", "key": "u0", "plan": "free"}, {"kind": "user", "key": "new", "plan": "vip"}]
    )
    with Session(engine) as session, session.begin():
        synced = sync_enrollments(session=session, key="welcome", now=now())
    assert (synced.entered, synced.exited) == (1, 1)
    status = {e.contact_key: (e.status, e.reason) for e in enrollments(engine, "welcome")}
    assert status == {"u0": ("exited", "left_segment"), "u1": ("active", None), "new": ("active", None)}
    with Session(engine) as session, session.begin():
        assert sync_enrollments(session=session, key="welcome", now=now()).entered == 0


async def test_status_counts_per_step(engine: Engine, provider: Provider) -> None:
    load_segments(engine, SEGMENTS)
    put_contacts(engine, people(3))
    send = {"type": "send", "channel": "webhook", "url": provider.url + "/ok", "template": "x"}
    save_sequence(engine, welcome("", steps=[send, {"type": "wait", "duration": "P1D"}, send]))
    await deliver_and_record(engine, claim(engine))
    claim(engine)  # moves them onto the wait
    put_contacts(engine, [{"kind": "user", "key": "u0", "plan": "free"}])
    with Session(engine) as session, session.begin():
        sync_enrollments(session=session, key="welcome", now=now())
    with Session(engine) as session:
        report = sequence_status(session=session, key="welcome")
    assert (report.enrollments, report.active, report.exited, report.sent) == (3, 2, 1, 3)
    assert [(s.step, s.type, s.enrolled, s.sent, s.exited) for s in report.steps] == [
        (0, "send", 0, 3, 0),
        (1, "wait", 0, 0, 0),
        (2, "send", 2, 0, 1),
    ]


@pytest.fixture
def provider() -> Any:
    from tests.sequences.helpers import webhook_provider

    with webhook_provider() as running:
        yield running


def compiled(engine: Engine) -> Any:
    with Session(engine) as session:
        return ProgramCache().get(session=session, key="welcome")


def record(engine: Engine, results: list[tuple[Outgoing, Delivery]], sequence: Any = None) -> dict[str, int]:
    with Session(engine) as session, session.begin():
        program = sequence or ProgramCache().get(session=session, key="welcome")
        return record_deliveries(session=session, sequence=program, results=results, now=now())


def test_two_consecutive_claims_never_return_the_same_row(engine: Engine) -> None:
    load_segments(engine, SEGMENTS)
    put_contacts(engine, people(5))
    save_sequence(engine, welcome("http://127.0.0.1:1/ok"))
    first, second, third = claim(engine, limit=3), claim(engine, limit=3), claim(engine, limit=3)
    ids = [o.enrollment_id for o in first.outgoing], [o.enrollment_id for o in second.outgoing]
    assert (len(ids[0]), len(ids[1]), third.claimed) == (3, 2, 0)
    assert not set(ids[0]) & set(ids[1])
    assert len(sends(engine, "welcome")) == 5


def test_batches_larger_than_one_id_list_claim_and_record_every_row_with_its_own_outcome(
    engine: Engine,
) -> None:
    # 1,200 rows: more than one IN list on SQLite (500 each), one array parameter and one UPDATE over
    # arrays on PostgreSQL; each row's own outcome, response and NULLs must land on that row.
    load_segments(engine, SEGMENTS)
    put_contacts(engine, people(1200))
    save_sequence(engine, welcome("http://127.0.0.1:1/ok"))
    first = claim(engine, limit=700)
    second = claim(engine, limit=1000, exclude=[o.enrollment_id for o in first.outgoing])
    assert (first.claimed, second.claimed, claim(engine, limit=10).claimed) == (700, 500, 0)
    assert not {o.enrollment_id for o in first.outgoing} & {o.enrollment_id for o in second.outgoing}
    outgoing = first.outgoing + second.outgoing
    assert sorted(o.payload["contactKey"] for o in outgoing) == sorted(f"u{i}" for i in range(1200))

    def outcome(i: int) -> Delivery:
        return [Delivery("sent", 200), Delivery("retry", 503, f"busy {i}"), Delivery("failed", 404)][i % 3]

    results = [(o, outcome(i)) for i, o in enumerate(outgoing)]
    assert record(engine, results) == {"sent": 400, "failed": 400, "retry": 400}
    rows = {s.idempotency_key: s for s in sends(engine, "welcome")}
    people_ = {e.id: e for e in enrollments(engine, "welcome")}
    for i, (o, _) in enumerate(results):
        send, enrollment = rows[o.idempotency_key], people_[o.enrollment_id]
        assert (send.status, send.attempts, send.response_status, send.response_body) == (
            ("sent", 1, 200, None),
            ("pending", 1, 503, f"busy {i}"),
            ("failed", 1, 404, None),
        )[i % 3]
        assert (send.sent_at is not None) == (i % 3 == 0)
        assert (enrollment.status, enrollment.lease_owner) == (("completed", "active", "failed")[i % 3], None)
        assert (enrollment.next_due_at is not None) == (i % 3 == 1)
        assert (enrollment.reason is not None) == (i % 3 == 2)
    assert claim(engine, limit=10).claimed == 0  # the retries wait for their backoff


def test_a_stale_retry_after_a_recorded_send_changes_nothing(engine: Engine) -> None:
    load_segments(engine, SEGMENTS)
    put_contacts(engine, people(1))
    save_sequence(engine, welcome("http://127.0.0.1:1/ok"))
    [outgoing] = claim(engine).outgoing
    assert record(engine, [(outgoing, Delivery("sent", 200))])["sent"] == 1
    # An overlapping attempt's late result for the same row: the row stays sent, the enrollment done.
    record(engine, [(outgoing, Delivery("retry", 503, "busy"))])
    [send] = sends(engine, "welcome")
    assert (send.status, send.attempts, send.response_status) == ("sent", 1, 200)
    [enrollment] = enrollments(engine, "welcome")
    assert (enrollment.status, enrollment.next_due_at) == ("completed", None)


def test_a_result_recorded_after_the_contact_exited_does_not_resurrect_it(engine: Engine) -> None:
    load_segments(engine, SEGMENTS)
    put_contacts(engine, people(1))
    step = {"type": "send", "channel": "webhook", "url": "http://127.0.0.1:1/ok", "template": "x"}
    save_sequence(engine, welcome("", steps=[step, step]))
    [outgoing] = claim(engine).outgoing
    put_contacts(engine, [{"kind": "user", "key": "u0", "plan": "free"}])
    with Session(engine) as session, session.begin():
        assert sync_enrollments(session=session, key="welcome", now=now()).exited == 1
    record(engine, [(outgoing, Delivery("sent", 200))])
    [enrollment] = enrollments(engine, "welcome")
    assert (enrollment.status, enrollment.position, enrollment.reason) == ("exited", 0, "left_segment")
    assert [s.status for s in sends(engine, "welcome")] == ["sent"]  # what the provider did is kept


def test_a_paused_sequence_claims_nothing_even_mid_round(engine: Engine) -> None:
    load_segments(engine, SEGMENTS)
    put_contacts(engine, people(2))
    save_sequence(engine, welcome("http://127.0.0.1:1/ok"))
    running = compiled(engine)  # what a round in progress holds: compiled while active
    pause(engine, "welcome")
    with Session(engine) as session, session.begin():
        late = claim_due(session=session, sequence=running, now=now(), limit=10)
    assert (late.claimed, late.outgoing) == (0, [])
    assert sends(engine, "welcome") == []


def test_membership_is_read_again_at_claim_without_a_change_feed_read(engine: Engine) -> None:
    load_segments(engine, SEGMENTS)
    put_contacts(engine, people(2))
    save_sequence(engine, welcome("http://127.0.0.1:1/ok"))
    put_contacts(engine, [{"kind": "user", "key": "u0", "plan": "free"}])  # left; the feed is not read
    claimed = claim(engine)
    assert ([o.payload["contactKey"] for o in claimed.outgoing], claimed.exited) == (["u1"], 1)
    status = {e.contact_key: (e.status, e.reason) for e in enrollments(engine, "welcome")}
    assert status["u0"] == ("exited", "left_segment")
    assert len(sends(engine, "welcome")) == 1


def test_without_exit_on_leave_a_leaver_still_gets_its_steps(engine: Engine) -> None:
    load_segments(engine, SEGMENTS)
    put_contacts(engine, people(2))
    save_sequence(engine, welcome("http://127.0.0.1:1/ok", exit_on_leave=False))
    put_contacts(engine, people(1, plan="free"))
    with Session(engine) as session, session.begin():
        assert sync_enrollments(session=session, key="welcome", now=now()).exited == 0
    claimed = claim(engine)
    assert sorted(o.payload["contactKey"] for o in claimed.outgoing) == ["u0", "u1"]
    assert claimed.exited == 0


def test_an_exit_step_is_reported_at_its_own_step(engine: Engine) -> None:
    load_segments(engine, SEGMENTS)
    put_contacts(engine, people(1))
    steps = [
        {"type": "branch", "segment": "vip", "then": [{"type": "exit"}], "else": []},
        {"type": "send", "channel": "webhook", "url": "http://127.0.0.1:1/ok", "template": "x"},
    ]
    save_sequence(engine, welcome("", steps=steps))
    assert claim(engine).exited == 1
    [enrollment] = enrollments(engine, "welcome")
    assert (enrollment.status, enrollment.position, enrollment.reason) == ("exited", 1, "exit_step")
    with Session(engine) as session:
        report = sequence_status(session=session, key="welcome")
    assert [(s.step, s.exited) for s in report.steps] == [(0, 0), (1, 1), (2, 0)]


async def test_a_retried_round_takes_back_its_own_leases_at_once_and_leaves_other_rounds_leases(
    engine: Engine, provider: Provider
) -> None:
    load_segments(engine, SEGMENTS)
    put_contacts(engine, people(4))
    save_sequence(engine, welcome(provider.url + "/ok"))
    dead = claim(engine, limit=2, owner="wf/run/1")  # the round whose worker dies mid-send
    live = claim(engine, limit=2, owner="wf/run/2")  # another round, still sending
    assert len(dead.outgoing) == len(live.outgoing) == 2
    assert claim(engine, owner="wf/run/1").claimed == 0  # leased, even to the same round
    assert release(engine, "wf/run/1") == 2
    again = claim(engine, owner="wf/run/1")  # well inside the lease
    assert sorted(o.idempotency_key for o in again.outgoing) == sorted(
        o.idempotency_key for o in dead.outgoing
    )
    assert release(engine, "wf/run/9") == 0
    assert claim(engine, owner="wf/run/9").claimed == 0  # the live round's rows stay leased
    assert (await deliver_and_record(engine, again))["sent"] == 2
    assert release(engine, "wf/run/1") == 0  # recorded: no longer leased to anyone
    assert {e.lease_owner for e in enrollments(engine, "welcome")} == {None, "wf/run/2"}
    assert len(sends(engine, "welcome")) == 4


def test_concurrent_claims_on_postgresql_skip_each_others_rows(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("row locks: SQLite serialises writers instead")
    load_segments(engine, SEGMENTS)
    put_contacts(engine, people(4))
    save_sequence(engine, welcome("http://127.0.0.1:1/ok"))
    program = compiled(engine)
    with Session(engine) as first, first.begin():
        held = claim_due(session=first, sequence=program, now=now(), limit=2)  # not committed yet
        with Session(engine) as second, second.begin():
            second.execute(sa.text("SET LOCAL lock_timeout = '5s'"))  # waiting on `first` would deadlock
            other = claim_due(session=second, sequence=program, now=now(), limit=4)
    assert len(held.to_render) == 2 and len(other.to_render) == 2
    assert not {o.enrollment_id for o in held.to_render} & {o.enrollment_id for o in other.to_render}
