"""Read endpoints on SQLite and PostgreSQL: paths and shapes of the public API, paging, 404s and 422s."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from segmentflow.db.tables import contact_table
from tests.api.conftest import bearer

pytestmark = pytest.mark.usefixtures("seeded")

MULTI_KEY = "organization:o2:user:u2"
SEGMENT_FIELDS = {
    "id",
    "key",
    "name",
    "description",
    "version",
    "definition",
    "created_at",
    "updated_at",
    "member_count",
}


@pytest.fixture
def read(client: TestClient, tokens: dict[str, str]) -> dict[str, str]:
    return bearer(tokens["segments:read"])


def test_list_pages_segments_in_key_order_with_member_counts(
    client: TestClient, read: dict[str, str]
) -> None:
    first = client.get("/contacts/segments", params={"page": 1, "limit": 2}, headers=read)
    assert first.status_code == 200
    body = first.json()
    assert [s["key"] for s in body["data"]] == ["orgs", "vip"]
    assert [s["member_count"] for s in body["data"]] == [2, 2]
    assert (body["total"], body["page"], body["limit"], body["next_page"]) == (3, 1, 2, 2)
    second = client.get("/contacts/segments", params={"page": 2, "limit": 2}, headers=read).json()
    assert [s["key"] for s in second["data"]] == ["vip-org"]
    assert second["next_page"] is None


def test_list_defaults_to_page_1_of_20(client: TestClient, read: dict[str, str]) -> None:
    body = client.get("/contacts/segments", headers=read).json()
    assert (body["page"], body["limit"], body["total"], len(body["data"])) == (1, 20, 3, 3)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"page": 0}, "page"),
    ],
)
def test_list_paging_out_of_range_is_422_naming_the_field(
    client: TestClient, read: dict[str, str], params: dict[str, object], field: str
) -> None:
    response = client.get("/contacts/segments", params=params, headers=read)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", field]


def test_limit_100_is_accepted(client: TestClient, read: dict[str, str]) -> None:
    assert client.get("/contacts/segments", params={"limit": 100}, headers=read).status_code == 200


def test_segment_by_key_or_id_carries_every_field(client: TestClient, read: dict[str, str]) -> None:
    by_key = client.get("/contacts/segments/vip", headers=read)
    assert by_key.status_code == 200
    segment = by_key.json()
    assert set(segment) == SEGMENT_FIELDS
    assert (segment["key"], segment["name"], segment["description"]) == ("vip", "VIPs", "Paying a lot")
    assert segment["definition"]["rules"][0]["clauses"][0]["op"] == "in"
    assert segment["member_count"] == 2
    for field in ("created_at", "updated_at"):
        assert datetime.fromisoformat(segment[field]).utcoffset() == timedelta(0)
    assert by_key.headers["ETag"] == f'"{segment["version"]}"'
    by_id = client.get(f"/contacts/segments/{segment['id']}", headers=read)
    assert by_id.json() == segment


@pytest.mark.parametrize("ref", ["nope", str(uuid.UUID(int=7))])
def test_unknown_segment_is_404(client: TestClient, read: dict[str, str], ref: str) -> None:
    response = client.get(f"/contacts/segments/{ref}", headers=read)
    assert response.status_code == 404
    assert ref in response.json()["detail"]


def test_contact_segments_list_the_segments_a_contact_is_in(client: TestClient, read: dict[str, str]) -> None:
    response = client.get(f"/contacts/segments/contacts/{quote(MULTI_KEY, safe='')}", headers=read)
    assert response.status_code == 200
    body = response.json()
    assert [s["key"] for s in body["data"]] == ["orgs", "vip", "vip-org"]
    assert all(set(s) == SEGMENT_FIELDS for s in body["data"])
    assert body["contact_key"] == MULTI_KEY
    plain = client.get("/contacts/segments/contacts/u3", headers=read).json()
    assert plain["data"] == []


def test_contact_segments_of_an_unknown_contact_is_404(client: TestClient, read: dict[str, str]) -> None:
    assert client.get("/contacts/segments/contacts/ghost", headers=read).status_code == 404


def test_check_membership_answers_with_segment_contact_and_computed_time(
    client: TestClient, read: dict[str, str]
) -> None:
    member = client.get("/contacts/segments/vip/contacts/u1", headers=read)
    assert member.status_code == 200
    body = member.json()
    assert body["isMember"] is True
    assert (body["segmentKey"], body["contactKey"]) == ("vip", "u1")
    uuid.UUID(body["segmentId"])
    assert datetime.fromisoformat(body["computedAt"]).utcoffset() == timedelta(0)
    by_id = client.get(f"/contacts/segments/{body['segmentId']}/contacts/u3", headers=read).json()
    assert by_id["isMember"] is False
    multi = client.get(f"/contacts/segments/vip-org/contacts/{quote(MULTI_KEY, safe='')}", headers=read)
    assert multi.json()["isMember"] is True


@pytest.mark.parametrize(
    "path", ["/contacts/segments/nope/contacts/u1", "/contacts/segments/vip/contacts/ghost"]
)
def test_check_membership_of_unknown_segment_or_contact_is_404(
    client: TestClient, read: dict[str, str], path: str
) -> None:
    assert client.get(path, headers=read).status_code == 404


def test_reads_come_from_the_precomputed_tables(
    client: TestClient, read: dict[str, str], engine: Engine
) -> None:
    with engine.begin() as conn:  # the stored context changes, its memberships are not recomputed
        conn.execute(
            contact_table.update()
            .where(contact_table.c.key == "u1")
            .values(context={"key": "u1", "plan": "free"})
        )
    assert client.get("/contacts/segments/vip/contacts/u1", headers=read).json()["isMember"] is True


def test_members_are_cursor_paged(client: TestClient, read: dict[str, str]) -> None:
    first = client.get("/contacts/segments/vip/members", params={"limit": 1}, headers=read).json()
    assert len(first["data"]) == 1 and first["next_cursor"] is not None
    second = client.get(
        "/contacts/segments/vip/members", params={"limit": 1, "cursor": first["next_cursor"]}, headers=read
    ).json()
    assert second["next_cursor"] is None
    assert sorted(m["key"] for m in first["data"] + second["data"]) == sorted(["u1", MULTI_KEY])
    whole = client.get("/contacts/segments/vip/members", headers=read).json()
    assert [m["key"] for m in whole["data"]] == [m["key"] for m in first["data"] + second["data"]]


def test_members_cursor_must_be_one_we_gave(client: TestClient, read: dict[str, str]) -> None:
    response = client.get("/contacts/segments/vip/members", params={"cursor": "abc"}, headers=read)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "cursor"]
    assert client.get("/contacts/segments/nope/members", headers=read).status_code == 404


def test_change_feed_pages_by_sequence_number(client: TestClient, read: dict[str, str]) -> None:
    first = client.get("/contacts/segments/changes", params={"after": 0, "limit": 3}, headers=read).json()
    assert len(first["data"]) == 3
    seqs = [c["seq"] for c in first["data"]]
    assert seqs == sorted(seqs) and first["next_after"] == seqs[-1]
    rest = client.get(
        "/contacts/segments/changes", params={"after": first["next_after"]}, headers=read
    ).json()
    changes = first["data"] + rest["data"]
    assert len(changes) == 5  # vip: 2, orgs: 2, vip-org: 1
    assert {c["change"] for c in changes} == {"entered"}
    assert {(c["segment_key"], c["contact_key"]) for c in changes} >= {("vip", "u1"), ("vip-org", MULTI_KEY)}
    end = client.get("/contacts/segments/changes", params={"after": rest["next_after"]}, headers=read).json()
    assert end == {"data": [], "limit": 100, "next_after": rest["next_after"]}


def test_report_counts_members_and_moves_in_the_window(client: TestClient, read: dict[str, str]) -> None:
    body = client.get("/contacts/segments/report", headers=read).json()
    rows = {r["segment_key"]: r for r in body["data"]}
    assert rows["vip"]["members"] == 2 and rows["vip"]["entered"] == 2 and rows["vip"]["exited"] == 0
    assert rows["vip-org"]["entered"] == 1
    past = client.get(
        "/contacts/segments/report",
        params={"since": "2020-01-01T00:00:00Z", "until": "2020-01-02T00:00:00+00:00"},
        headers=read,
    ).json()
    assert {r["segment_key"]: (r["members"], r["entered"]) for r in past["data"]}["vip"] == (2, 0)


def test_report_window_must_be_ordered(client: TestClient, read: dict[str, str]) -> None:
    response = client.get(
        "/contacts/segments/report",
        params={"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
        headers=read,
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "since"]


def test_healthz_needs_no_token(client: TestClient, database_url: str) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": database_url.split(":")[0]}


def test_metrics_count_requests_by_route_template(client: TestClient, read: dict[str, str]) -> None:
    client.get("/contacts/segments/vip/contacts/u1", headers=read)
    text = client.get("/metrics", headers=read).text
    assert (
        'segmentflow_http_requests_total{method="GET",route="/contacts/segments/{segment_id}/contacts/{contact_id}",'
        'status="200"} 1.0' in text
    )
    assert "segmentflow_http_request_duration_seconds_bucket" in text


def test_openapi_schema_lists_the_public_paths(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {
        "/contacts/segments",
        "/contacts/segments/{segment_id}",
        "/contacts/segments/contacts/{contact_id}",
        "/contacts/segments/{segment_id}/contacts/{contact_id}",
        "/contacts/segments/{segment_id}/members",
        "/contacts/segments/changes",
        "/contacts/segments/report",
        "/contacts/{contact_id}",
        "/healthz",
        "/metrics",
    } <= set(paths)
