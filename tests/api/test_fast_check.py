"""The membership check's fast path (`segmentflow.api.fast_check`) answers exactly as the route: the same
status, headers and body bytes as an app without it, on the same database, for the plain case and for
every case it leaves to the route (refusals, unknowns, bad parameters, a contact never computed, a path
that belongs to an earlier route)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from segmentflow.api import create_app
from segmentflow.rules import parse_context
from segmentflow.services.contacts import upsert_contacts
from segmentflow.services.segments import get_segment
from segmentflow.settings import Settings
from tests.api.conftest import bearer

pytestmark = pytest.mark.usefixtures("seeded")

MULTI_KEY = "organization:o2:user:u2"
CHECK_ROUTE = 'route="/contacts/segments/{segment_id}/contacts/{contact_id}"'


@pytest.fixture
def routed(engine: Engine, database_url: str) -> Iterator[TestClient]:
    """The same API with the check left to its route: what every check was before the fast path."""
    app = create_app(Settings(database_url=database_url), fast_check=False)
    with TestClient(app) as client:
        yield client
    app.state.engine.dispose()


def _answer(
    client: TestClient, path: str, headers: dict[str, str]
) -> tuple[int, list[tuple[str, str]], bytes]:
    response = client.get(path, headers=headers)
    return response.status_code, list(response.headers.multi_items()), response.content


def _segment_id(engine: Engine, key: str) -> str:
    with Session(engine) as session:
        record = get_segment(session=session, ref=key)
        assert record is not None
        return str(record.id)


@pytest.mark.parametrize(
    "path",
    [
        "/contacts/segments/vip/contacts/u1",  # member
        "/contacts/segments/vip/contacts/u3",  # not a member
        f"/contacts/segments/vip-org/contacts/{quote(MULTI_KEY, safe='')}",  # a key holding ":"
        "/contacts/segments/vip/contacts/u1?unused=1",
        "/contacts/segments/nope/contacts/u1",  # 404 unknown segment
        "/contacts/segments/vip/contacts/ghost",  # 404 unknown contact
        "/contacts/segments/contacts/contacts/u1",  # the earlier route /contacts/segments/contacts/{contact}
        "/contacts/segments/vip/contacts/",  # 422: empty contact
        "/contacts/segments/vip/contacts/u%001",  # 422: NUL
        f"/contacts/segments/{'s' * 257}/contacts/u1",  # 422: segment too long
        f"/contacts/segments/vip/contacts/{'c' * 513}",  # 422: contact too long
    ],
)
def test_the_fast_path_answers_byte_for_byte_as_the_route(
    client: TestClient, routed: TestClient, tokens: dict[str, str], path: str
) -> None:
    for token in (tokens["segments:read"], tokens["all"]):
        assert _answer(client, path, bearer(token)) == _answer(routed, path, bearer(token))


def test_a_check_by_segment_id_is_the_routes_answer(
    client: TestClient, routed: TestClient, tokens: dict[str, str], engine: Engine
) -> None:
    path = f"/contacts/segments/{_segment_id(engine, 'vip')}/contacts/u1"
    fast = _answer(client, path, bearer(tokens["segments:read"]))
    assert fast == _answer(routed, path, bearer(tokens["segments:read"]))
    assert fast[0] == 200 and b'"isMember":true' in fast[2]


@pytest.mark.parametrize("token", ["segments:write", None, "not-a-key"])
def test_refusals_are_the_routes_and_the_guards(
    client: TestClient, routed: TestClient, tokens: dict[str, str], token: str | None
) -> None:
    headers = {} if token is None else bearer(tokens.get(token, token))
    path = "/contacts/segments/vip/contacts/u1"
    fast = _answer(client, path, headers)
    assert fast == _answer(routed, path, headers)
    assert fast[0] == (403 if token == "segments:write" else 401)


def test_a_contact_never_computed_is_computed_by_the_route_then_read_fast(
    client: TestClient, routed: TestClient, tokens: dict[str, str], engine: Engine
) -> None:
    now = datetime(2026, 11, 2, tzinfo=UTC)
    with Session(engine) as session, session.begin():
        upsert_contacts(
            session=session,
            contexts=[parse_context({"key": f"fresh{n}", "plan": "vip"}) for n in (1, 2)],
            now=now,
        )
    read = bearer(tokens["segments:read"])
    first = _answer(client, "/contacts/segments/vip/contacts/fresh1", read)
    assert first[0] == 200 and b'"isMember":true' in first[2]
    assert _answer(client, "/contacts/segments/vip/contacts/fresh1", read) == first  # now the fast read
    assert _answer(routed, "/contacts/segments/vip/contacts/fresh1", read) == first
    # The other way round: computed by the routed app, then read by the fast path.
    computed = _answer(routed, "/contacts/segments/vip/contacts/fresh2", read)
    assert _answer(client, "/contacts/segments/vip/contacts/fresh2", read) == computed


def test_checks_are_counted_under_the_routes_template(client: TestClient, tokens: dict[str, str]) -> None:
    read = bearer(tokens["segments:read"])
    for _ in range(3):
        assert client.get("/contacts/segments/vip/contacts/u1", headers=read).status_code == 200
    metrics = client.get("/metrics", headers=read).text
    [line] = [
        line
        for line in metrics.splitlines()
        if line.startswith("segmentflow_http_requests_total")
        and CHECK_ROUTE in line
        and 'status="200"' in line
    ]
    assert line.endswith(" 3.0")


@pytest.mark.postgres
def test_on_postgresql_the_check_reads_over_the_apps_async_connections(
    client: TestClient, tokens: dict[str, str], database_url: str
) -> None:
    if not database_url.startswith("postgres"):
        pytest.skip("the async read pool is PostgreSQL's")
    pool = client.app.state.read_pool  # type: ignore[attr-defined]
    assert pool is not None and pool.idle == 0
    assert client.get("/contacts/segments/vip/contacts/u1", headers=bearer(tokens["segments:read"])).json()[
        "isMember"
    ]
    assert pool.idle == 1  # the connection that answered, kept for the next check
