"""Template limits: the bounded sandbox refuses resource bombs before allocating them, a sequence whose
template cannot render within the limits is refused at save, a send whose template goes over a limit for
its contact fails for good, and rendering happens outside the claim's transaction."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from segmentflow.api import create_app
from segmentflow.policies.sequences import SequenceError, parse_sequences
from segmentflow.services.keys import create_key
from segmentflow.services.responders import render_reply
from segmentflow.services.sequences import (
    ClaimResult,
    ProgramCache,
    claim_and_render,
    claim_due,
    import_sequences,
    list_sequences,
    render_sends,
    write_sends,
)
from segmentflow.services.templates import (
    TemplateError,
    TemplateLimitError,
    TemplateLimits,
    compile_template,
    render_template,
    render_variables,
)
from segmentflow.settings import Settings
from tests.sequences.helpers import enrollments, load_segments, now, put_contacts, save_sequence, sends

SEGMENTS = [{"key": "vip", "rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["vip"]}]}]}]

BOMBS = {
    "string repetition": '{{ "A" * 30000000 }}',
    "list repetition": "{{ ['x' * 200000] * 100000 }}",
    "nested range loops": "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
    "nested loops under the range cap": (
        "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}"
    ),
    "%-format star width": "{{ '%*s' % (1000000000, 'x') }}",
    "%-format width": "{{ '%0999999999d' % 1 }}",
    "str.ljust": "{{ 'x'.ljust(10**9) }}",
    "str.center": "{{ 'x'.center(10**9) }}",
    "str.zfill": "{{ '1'.zfill(10**9) }}",
    "str.format width": "{{ '{:>999999999}'.format(1) }}",
    "str.format nested width": "{{ '{:>{}}'.format(1, 999999999) }}",
    "center filter": "{{ 'x'|center(10**9) }}",
    "indent filter": "{{ 'a\nb\nc'|indent(10**9) }}",
    "format filter": "{{ '%999999999s'|format('x') }}",
    "join of a huge range": "{{ range(99999)|join('x' * 30) }}",
    "join with a huge separator": "{{ ('y' * 200000).join(range(9999)|map('string')) }}",
    "replace amplification": "{{ 'abc'.replace('', 'y' * 200000) }}",
    "replace filter amplification": "{{ 'ab'|replace('', 'x' * 200000) }}",
    "wordwrap amplification": "{{ ('x' * 200000)|wordwrap(1, wrapstring='y' * 1000) }}",
    "doubling by ~": (
        "{% set ns = namespace(s='A') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}"
        "{{ ns.s|length }}"
    ),
    "doubling by +": (
        "{% set ns = namespace(s='A') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}"
        "{{ ns.s|length }}"
    ),
    "integer squaring": (
        "{% set ns = namespace(n=3) %}{% for i in range(40) %}{% set ns.n = ns.n * ns.n %}{% endfor %}"
        "{{ ns.n % 10 }}"
    ),
    "power": "{{ 2 ** 10000000 % 7 }}",
    "batch padding": "{{ [1]|batch(10**9, 'x')|list }}",
    "slice count": "{{ [1]|slice(10**9)|list }}",
    "printing a huge container": "{% set x = 'x' * 200000 %}{{ [x, x, x, x] }}",
    "churning in bounded pieces": "{% for i in range(9000) %}{% set y = ('x' * 100000) ~ i %}{% endfor %}",
    "rendered size": "{% for i in range(1000) %}{{ 'x' * 1000 }}{% endfor %}",
    "recursion": "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
}


@pytest.mark.parametrize("source", BOMBS.values(), ids=BOMBS.keys())
def test_a_resource_bomb_fails_with_a_limit_before_allocating_it(source: str) -> None:
    template = compile_template(source)
    tracemalloc.start()
    try:
        with pytest.raises(TemplateLimitError, match="over a limit"):
            render_template(template, contact={"name": "Ann"}, segments=["vip"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024, f"the render took {peak} bytes before it was stopped"


def test_recursive_loops_are_refused_when_compiled() -> None:
    with pytest.raises(TemplateError, match="recursive loops are not allowed"):
        compile_template("{% for i in [1] recursive %}{{ loop([1]) }}{% endfor %}")


def test_lipsum_is_not_available() -> None:
    with pytest.raises(TemplateError, match="lipsum"):
        render_template(compile_template("{{ lipsum(10**9) }}"), contact={}, segments=[])


def test_lists_cannot_be_modified() -> None:
    with pytest.raises(TemplateError, match="unsafe"):
        render_template(compile_template("{% set l = [] %}{{ l.append(1) }}"), contact={}, segments=[])


def test_ordinary_templates_render_as_before() -> None:
    source = (
        "Hi {{ contact.name }} ({{ segments|join(', ') }}) {{ '%5s|%-3d' % ('a', 2) }} "
        "{{ '{:>4}'.format('b') }} {{ 'x'|center(5) }} {{ [1, 2] * 2 }} {{ 'ab' * 2 }} "
        "{% for s in segments %}{{ loop.index }}/{{ loop.length }}{% endfor %} {{ 2 ** 10 }}"
    )
    rendered = render_template(compile_template(source), contact={"name": "Ann"}, segments=["a", "b"])
    assert rendered == "Hi Ann (a, b)     a|2      b   x   [1, 2, 1, 2] abab 1/22/2 1024"


def test_the_loop_cap_counts_iterations_across_nested_loops() -> None:
    limits = TemplateLimits(max_loop_iterations=100)
    nested = "{% for i in range(n) %}{% for j in range(9) %}{% endfor %}{% endfor %}done"
    template = compile_template(nested)
    assert render_variables(template, {"n": 10}, limits=limits) == "done"  # 10 + 90 = 100 iterations
    with pytest.raises(TemplateLimitError, match="more than 100 loop iterations"):
        render_variables(template, {"n": 11}, limits=limits)  # 11 + 99


def test_the_rendered_size_cap_is_a_setting() -> None:
    template = compile_template("{{ 'x' * contact.n }}")
    limits = Settings(template_max_output=2048).template_limits()
    assert len(render_template(template, contact={"n": 2048}, segments=[], limits=limits)) == 2048
    with pytest.raises(TemplateLimitError, match="2048"):
        render_template(template, contact={"n": 2049}, segments=[], limits=limits)


def test_a_reply_template_is_bounded_too() -> None:
    with pytest.raises(TemplateLimitError):
        render_reply("{{ text * 100000000 }}", {"text": "x"})


def welcome(template: str, url: str = "http://127.0.0.1:1/ok") -> dict[str, Any]:
    return {
        "key": "welcome",
        "name": "Welcome",
        "segment": "vip",
        "steps": [{"type": "send", "channel": "webhook", "url": url, "template": template}],
    }


@pytest.mark.parametrize(
    "template",
    [
        '{{ "A" * 30000000 }}',
        "{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}",
        "{{ contact.nickname ~ ('A' * 30000000) }}",  # behind an attribute the sample contact lacks
    ],
)
def test_a_template_over_the_limits_for_a_sample_contact_is_refused_at_save(
    engine: Engine, template: str
) -> None:
    load_segments(engine, SEGMENTS)
    with (
        Session(engine) as session,
        session.begin(),
        pytest.raises(SequenceError, match=r"step 0: template over a limit: .*sample contact"),
    ):
        import_sequences(session=session, sequences=parse_sequences(welcome(template)), now=now())
    with Session(engine) as session:
        assert list_sequences(session=session) == []  # nothing was written


@pytest.fixture
def client(engine: Engine, database_url: str) -> Iterator[TestClient]:
    app = create_app(Settings(database_url=database_url, template_max_output=4096))
    with TestClient(app) as test_client:
        yield test_client
    app.state.engine.dispose()


def test_the_api_refuses_a_template_over_the_configured_limit(engine: Engine, client: TestClient) -> None:
    load_segments(engine, SEGMENTS)
    with Session(engine) as session, session.begin():
        _, token = create_key(session=session, scopes=["sequences:write"], name="t", now=now())
    auth = {"Authorization": f"Bearer {token}"}
    refused = client.put("/sequences/welcome", json=welcome("{{ 'x' * 5000 }}"), headers=auth)
    assert refused.status_code == 422
    assert "over the limit of 4096" in refused.text and "sample contact" in refused.text
    assert client.put("/sequences/welcome", json=welcome("{{ 'x' * 4000 }}"), headers=auth).status_code == 201


def transaction(engine: Engine) -> Callable[[Callable[[Session], ClaimResult]], ClaimResult]:
    def run(work: Callable[[Session], ClaimResult]) -> ClaimResult:
        with Session(engine) as session, session.begin():
            return work(session)

    return run


def compiled(engine: Engine) -> Any:
    with Session(engine) as session:
        return ProgramCache().get(session=session, key="welcome")


def test_a_send_over_a_limit_for_its_contact_fails_for_good_and_others_go_out(engine: Engine) -> None:
    load_segments(engine, SEGMENTS)
    put_contacts(
        engine,
        [
            {"kind": "user", "key": "small", "plan": "vip", "bio": "x" * 10},
            {"kind": "user", "key": "huge", "plan": "vip", "bio": "x" * 3000},
        ],
    )
    save_sequence(engine, welcome("{{ contact.bio * 100 }}"))
    claimed = claim_and_render(transaction(engine), sequence=compiled(engine), now=now(), limit=10)
    assert [o.payload["contactKey"] for o in claimed.outgoing] == ["small"]
    assert claimed.failed == 1
    assert [s.body for s in sends(engine, "welcome")] == ["x" * 1000]  # nothing written for "huge"
    failed = {e.contact_key: e for e in enrollments(engine, "welcome") if e.status == "failed"}
    assert list(failed) == ["huge"]
    reason = failed["huge"].reason or ""
    assert "step 0: template over a limit" in reason and "300000" in reason
    later = claim_and_render(
        transaction(engine), sequence=compiled(engine), now=now() + timedelta(hours=1), limit=10
    )
    assert later.failed == 0 and "huge" not in [o.payload["contactKey"] for o in later.outgoing]


def test_the_claim_transaction_renders_nothing_and_writes_no_send_row(engine: Engine) -> None:
    load_segments(engine, SEGMENTS)
    put_contacts(engine, [{"kind": "user", "key": "u1", "plan": "vip", "name": "Ann"}])
    save_sequence(engine, welcome("Hi {{ contact.name }}"))
    sequence = compiled(engine)
    at = now()
    with Session(engine) as session, session.begin():
        claim = claim_due(session=session, sequence=sequence, now=at, limit=10)
    assert [(t.payload.get("body"), t.body) for t in claim.to_render] == [(None, None)]
    assert claim.outgoing == [] and sends(engine, "welcome") == []
    [leased] = enrollments(engine, "welcome")
    assert leased.next_due_at is not None and leased.next_due_at > at  # out of other claims meanwhile
    rendered = render_sends(sequence, claim.to_render)  # no session: it cannot hold a lock
    with Session(engine) as session, session.begin():
        written = write_sends(session=session, claim=claim, rendered=rendered, now=at)
    assert [o.payload["body"] for o in written.outgoing] == ["Hi Ann"]
    assert [(s.status, s.body) for s in sends(engine, "welcome")] == [("pending", "Hi Ann")]


def test_a_claim_whose_lease_ran_out_during_the_render_writes_nothing(engine: Engine) -> None:
    load_segments(engine, SEGMENTS)
    put_contacts(engine, [{"kind": "user", "key": "u1", "plan": "vip", "name": "Ann"}])
    save_sequence(engine, welcome("Hi {{ contact.name }}"))
    sequence = compiled(engine)
    at = now()
    with Session(engine) as session, session.begin():
        slow = claim_due(session=session, sequence=sequence, now=at, limit=10, lease=timedelta(seconds=1))
    # The lease runs out while `slow` renders; another claim takes the enrollment and sends it.
    taken = claim_and_render(transaction(engine), sequence=sequence, now=at + timedelta(seconds=2), limit=10)
    assert len(taken.outgoing) == 1
    rendered = render_sends(sequence, slow.to_render)
    with Session(engine) as session, session.begin():
        late = write_sends(session=session, claim=slow, rendered=rendered, now=at)
    assert late.outgoing == []
    assert len(sends(engine, "welcome")) == 1


def test_a_crash_between_claim_and_write_resends_nothing_twice(engine: Engine) -> None:
    load_segments(engine, SEGMENTS)
    put_contacts(engine, [{"kind": "user", "key": "u1", "plan": "vip", "name": "Ann"}])
    save_sequence(engine, welcome("Hi {{ contact.name }}"))
    sequence = compiled(engine)
    at = now()
    with Session(engine) as session, session.begin():
        claim_due(session=session, sequence=sequence, now=at, limit=10)  # then the worker dies
    assert claim_and_render(transaction(engine), sequence=sequence, now=at, limit=10).outgoing == []
    again = claim_and_render(transaction(engine), sequence=sequence, now=at + timedelta(minutes=11), limit=10)
    assert [o.payload["body"] for o in again.outgoing] == ["Hi Ann"]
    assert len(sends(engine, "welcome")) == 1
