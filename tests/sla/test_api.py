"""The SLA endpoints: replace and read the policies, select (the SelectSlaPolicy shapes), events, report."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from segmentflow.services.sla import record_event
from tests.api.conftest import app, bearer, client, seeded, tokens
from tests.sla.test_ticket_sla import POLICIES

__all__ = ["app", "client", "seeded", "tokens"]

CREATED = "2026-11-27T16:30:00Z"


def _select(client: TestClient, token: str, contact: str | None) -> dict[str, object]:
    body = {"contactKey": contact, "ticket": {"priority": "normal", "channel": "email", "createdAt": CREATED}}
    response = client.post("/sla/select", json=body, headers=bearer(token))
    assert response.status_code == 200, response.text
    result: dict[str, object] = response.json()
    return result


def test_policies_replace_then_select_by_segment(
    client: TestClient, tokens: dict[str, str], seeded: None
) -> None:
    put = client.put("/sla/policies", json=POLICIES, headers=bearer(tokens["sla:write"]))
    assert put.status_code == 200
    listed = client.get("/sla/policies", headers=bearer(tokens["sla:read"])).json()
    assert [p["key"] for p in listed] == ["vip", "standard"]
    assert listed[0]["targets"]["normal"]["first_reply"] == "PT1H"

    vip = _select(client, tokens["sla:read"], "u1")
    assert vip == {
        "policy": "vip",
        "targets": {
            "first_reply": {"dueAt": "2026-11-27T17:30:00Z", "businessMinutes": 60},
            "next_reply": {"dueAt": "2026-11-27T17:00:00Z", "businessMinutes": 30},
            "resolution": {"dueAt": "2026-11-28T00:30:00Z", "businessMinutes": 480},
        },
    }
    assert _select(client, tokens["sla:read"], "u3")["policy"] == "standard"
    assert _select(client, tokens["sla:read"], None)["policy"] == "standard"


def test_no_match_is_null_policy(client: TestClient, tokens: dict[str, str], seeded: None) -> None:
    assert (
        client.put("/sla/policies", json=POLICIES[:1], headers=bearer(tokens["sla:write"])).status_code == 200
    )
    assert _select(client, tokens["sla:read"], "u3") == {"policy": None, "targets": {}}


def test_a_refused_policy_is_a_422_naming_it_and_nothing_changes(
    client: TestClient, tokens: dict[str, str], seeded: None
) -> None:
    client.put("/sla/policies", json=POLICIES, headers=bearer(tokens["sla:write"]))
    bad = [
        POLICIES[0],
        {**POLICIES[1], "calendar": {"timezone": "Nowhere/City", "hours": {"mon": ["09:00-17:00"]}}},
    ]
    response = client.put("/sla/policies", json=bad, headers=bearer(tokens["sla:write"]))
    assert response.status_code == 422
    detail = response.json()["detail"][0]
    assert detail["loc"] == ["body", 1] and 'unknown time zone "Nowhere/City"' in detail["msg"]
    listed = client.get("/sla/policies", headers=bearer(tokens["sla:read"])).json()
    assert [p["key"] for p in listed] == ["vip", "standard"]

    unknown = [POLICIES[0], {**POLICIES[1], "conditions": {"segments_all": ["no-such"]}}]
    response = client.put("/sla/policies", json=unknown, headers=bearer(tokens["sla:write"]))
    assert response.status_code == 422
    detail = response.json()["detail"][0]
    assert detail["loc"] == ["body", 1] and 'policy 1 ("standard"): unknown segment no-such' in detail["msg"]
    listed = client.get("/sla/policies", headers=bearer(tokens["sla:read"])).json()
    assert [p["key"] for p in listed] == ["vip", "standard"]


def test_events_of_a_ticket_and_the_report_by_segment(
    client: TestClient, tokens: dict[str, str], seeded: None, engine: Engine
) -> None:
    fired = datetime(2026, 11, 20, 10, tzinfo=UTC)
    with Session(engine) as session, session.begin():
        for ticket, contact, kind in (
            ("t1", "u1", "warning"),
            ("t1", "u1", "breach"),
            ("t2", "u3", "breach"),
        ):
            record_event(
                session=session,
                ticket_id=ticket,
                contact_key=contact,
                policy_key="vip",
                metric="first_reply",
                kind=kind,
                due_at=fired,
                fired_at=fired,
            )
        # A retried activity records nothing twice.
        record_event(
            session=session,
            ticket_id="t1",
            contact_key="u1",
            policy_key="vip",
            metric="first_reply",
            kind="breach",
            due_at=fired,
            fired_at=fired,
        )
    events = client.get("/sla/tickets/t1/events", headers=bearer(tokens["sla:read"])).json()["data"]
    assert [(e["kind"], e["segments"]) for e in events] == [("warning", ["vip"]), ("breach", ["vip"])]
    report = client.get(
        "/sla/report",
        params={"since": "2026-11-19T00:00:00Z", "until": "2026-11-21T00:00:00Z"},
        headers=bearer(tokens["sla:read"]),
    ).json()
    assert report["data"] == [
        {"segment": "-", "warnings": 0, "breaches": 1},
        {"segment": "vip", "warnings": 1, "breaches": 1},
    ]


def test_a_due_time_past_the_year_9999_is_a_422(
    client: TestClient, tokens: dict[str, str], seeded: None
) -> None:
    client.put("/sla/policies", json=POLICIES, headers=bearer(tokens["sla:write"]))
    body = {"contactKey": None, "ticket": {"priority": "normal", "createdAt": "9999-12-31T20:00:00Z"}}
    response = client.post("/sla/select", json=body, headers=bearer(tokens["sla:read"]))
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "ticket", "createdAt"]
