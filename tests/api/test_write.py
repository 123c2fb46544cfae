"""Write endpoints on SQLite and PostgreSQL: segments (create, replace, semantic patch, delete) with
optimistic concurrency and recompute, and contact upserts visible on the very next read."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import bearer

pytestmark = pytest.mark.usefixtures("seeded")

PLAN_VIP = {"rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["vip"]}]}]}


@pytest.fixture
def auth(client: TestClient, tokens: dict[str, str]) -> dict[str, str]:
    return bearer(tokens["all"])


def is_member(client: TestClient, auth: dict[str, str], segment: str, contact: str) -> bool:
    response = client.get(f"/contacts/segments/{segment}/contacts/{contact}", headers=auth)
    assert response.status_code == 200, response.text
    return bool(response.json()["isMember"])


def changes(client: TestClient, auth: dict[str, str]) -> list[tuple[str, str, str]]:
    body = client.get("/contacts/segments/changes", params={"limit": 1000}, headers=auth).json()
    return [(c["change"], c["segment_key"], c["contact_key"]) for c in body["data"]]


def test_create_stores_version_1_with_rule_ids_and_computes_members(
    client: TestClient, auth: dict[str, str]
) -> None:
    response = client.post(
        "/contacts/segments",
        json={"key": "paying", "name": "Paying", "description": "d", "definition": PLAN_VIP},
        headers=auth,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["key"], body["name"], body["description"], body["version"]) == ("paying", "Paying", "d", 1)
    assert body["member_count"] == 2
    rule = body["definition"]["rules"][0]
    assert rule["id"] and rule["clauses"][0]["id"]
    assert response.headers["Location"] == f"/contacts/segments/{body['id']}"
    assert is_member(client, auth, "paying", "u1") and not is_member(client, auth, "paying", "u3")


def test_create_an_existing_key_is_409(client: TestClient, auth: dict[str, str]) -> None:
    response = client.post("/contacts/segments", json={"key": "vip"}, headers=auth)
    assert response.status_code == 409
    assert "already exists" in response.json()["detail"]


@pytest.mark.parametrize("key", ["changes", "report", "contacts", "a/b", "", "-lead", "x" * 257])
def test_create_refuses_keys_the_paths_cannot_address_naming_key(
    client: TestClient, auth: dict[str, str], key: str
) -> None:
    response = client.post("/contacts/segments", json={"key": key}, headers=auth)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "key"]


@pytest.mark.parametrize(
    ("clause", "message"),
    [
        ({"attribute": "plan", "op": "isIn", "values": ["vip"]}, 'unknown operator "isIn"'),
        ({"attribute": "email", "op": "matches", "values": ["("]}, "bad regex"),
        ({"op": "segmentMatch", "values": ["ghost"]}, 'missing segment "ghost"'),
    ],
)
def test_create_refuses_a_bad_segment_with_the_rules_engine_message(
    client: TestClient, auth: dict[str, str], clause: dict[str, Any], message: str
) -> None:
    definition = {"rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["x"]}, clause]}]}
    response = client.post("/contacts/segments", json={"key": "bad", "definition": definition}, headers=auth)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert message in error["msg"] and 'segment "bad" rule 0 clause 1' in error["msg"]
    assert error["loc"] == ["body", "definition", "rules", 0, "clauses", 1]
    assert client.get("/contacts/segments/bad", headers=auth).status_code == 404


def test_never_matching_values_are_saved_and_returned_as_warnings_beside_the_segment(
    client: TestClient, auth: dict[str, str]
) -> None:
    version = {"attribute": "version", "op": "semVerLessThan", "values": ["v2.0.0"]}
    seen = {"attribute": "seen", "op": "after", "values": ["yesterday", 0], "negate": True}
    definition = {"rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["vip"]}, version]}]}
    created = client.post("/contacts/segments", json={"key": "odd", "definition": definition}, headers=auth)
    assert created.status_code == 201, created.text
    assert created.json()["warnings"] == [
        "segment \"odd\" rule 0 clause 1: semVerLessThan: 'v2.0.0' is not a valid semantic version; "
        "it never matches"
    ]
    assert created.json()["definition"]["rules"][0]["clauses"][1]["values"] == ["v2.0.0"]
    assert created.json()["member_count"] == 0  # the only version never matches
    replaced = client.put(
        "/contacts/segments/odd", json={"definition": {"rules": [{"clauses": [seen]}]}}, headers=auth
    )
    assert replaced.status_code == 200, replaced.text
    [warning] = replaced.json()["warnings"]
    assert warning.startswith("segment \"odd\" rule 0 clause 0: after: 'yesterday' is not a valid date")
    patched = client.patch(
        "/contacts/segments/odd",
        json={"instructions": [{"kind": "addRule", "clauses": [version]}]},
        headers=auth,
    )
    assert patched.status_code == 200, patched.text
    assert len(patched.json()["warnings"]) == 2
    clean = client.put("/contacts/segments/odd", json={"definition": PLAN_VIP}, headers=auth)
    assert clean.json()["warnings"] == []
    assert "warnings" not in client.get("/contacts/segments/odd", headers=auth).json()


def test_a_catastrophic_regex_cannot_stall_a_contact_put_that_recomputes_in_the_request(
    client: TestClient, auth: dict[str, str]
) -> None:
    clause = {"attribute": "code", "op": "matches", "values": ["(a+)+$", "(a|aa)+$"]}
    definition = {"rules": [{"clauses": [clause]}]}
    created = client.post("/contacts/segments", json={"key": "evil", "definition": definition}, headers=auth)
    assert created.status_code == 201, created.text
    # Python's `re` would take minutes to years on this value, inside the request.
    hostile = client.put("/contacts/u9", json={"key": "u9", "code": "a" * 40 + "!"}, headers=auth)
    assert hostile.status_code == 201, hostile.text
    assert "evil" not in hostile.json()["segments"]
    matching = client.put("/contacts/u9", json={"key": "u9", "code": "a" * 50_000}, headers=auth)
    assert "evil" in matching.json()["segments"]


def test_a_regex_that_needs_backtracking_is_422_saying_why(client: TestClient, auth: dict[str, str]) -> None:
    clause = {"attribute": "email", "op": "matches", "values": ["(a)\\1"]}
    response = client.post(
        "/contacts/segments",
        json={"key": "bad", "definition": {"rules": [{"clauses": [clause]}]}},
        headers=auth,
    )
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert "cannot run in linear time: a backreference needs a backtracking engine" in error["msg"]
    assert error["loc"] == ["body", "definition", "rules", 0, "clauses", 0]


def test_a_malformed_rule_is_422_naming_the_field(client: TestClient, auth: dict[str, str]) -> None:
    definition = {
        "rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["x"], "negate": "yes"}]}]
    }
    response = client.post("/contacts/segments", json={"key": "bad", "definition": definition}, headers=auth)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "definition", "rules", 0, "clauses", 0, "negate"]


def test_definition_key_must_be_the_segments(client: TestClient, auth: dict[str, str]) -> None:
    response = client.post("/contacts/segments", json={"key": "a", "definition": {"key": "b"}}, headers=auth)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "definition", "key"]


def test_a_cycle_is_refused_with_its_path(client: TestClient, auth: dict[str, str]) -> None:
    definition = {"rules": [{"clauses": [{"op": "segmentMatch", "values": ["vip-org"]}]}]}
    response = client.put("/contacts/segments/vip", json={"definition": definition}, headers=auth)
    assert response.status_code == 422
    assert "cycle" in response.json()["detail"][0]["msg"]
    assert client.get("/contacts/segments/vip", headers=auth).json()["version"] == 1


def test_replace_bumps_the_version_and_recomputes_dependents(
    client: TestClient, auth: dict[str, str]
) -> None:
    assert is_member(client, auth, "vip-org", "organization:o2:user:u2")
    definition = {"rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["free"]}]}]}
    response = client.put(
        "/contacts/segments/vip", json={"name": "Free", "definition": definition, "version": 1}, headers=auth
    )
    assert response.status_code == 200, response.text
    assert (response.json()["version"], response.json()["name"], response.headers["ETag"]) == (
        2,
        "Free",
        '"2"',
    )
    assert response.json()["description"] is None  # a replacement, not a merge
    assert is_member(client, auth, "vip", "u3") and not is_member(client, auth, "vip", "u1")
    assert not is_member(client, auth, "vip-org", "organization:o2:user:u2")
    assert ("exited", "vip-org", "organization:o2:user:u2") in changes(client, auth)


@pytest.mark.parametrize("how", ["body", "if-match"])
def test_a_stale_version_is_409_and_writes_nothing(
    client: TestClient, auth: dict[str, str], how: str
) -> None:
    patch = {"instructions": [{"kind": "updateName", "value": "first"}]}
    assert client.patch("/contacts/segments/vip", json=patch, headers=auth).status_code == 200
    stale: dict[str, Any] = {"instructions": [{"kind": "updateName", "value": "second"}]}
    headers = dict(auth)
    if how == "body":
        stale["version"] = 1
    else:
        headers["If-Match"] = '"1"'
    response = client.patch("/contacts/segments/vip", json=stale, headers=headers)
    assert response.status_code == 409
    assert "version 2, not 1" in response.json()["detail"]
    current = client.get("/contacts/segments/vip", headers=auth)
    assert (current.json()["name"], current.json()["version"]) == ("first", 2)
    fresh = client.put(
        "/contacts/segments/vip",
        json={"definition": PLAN_VIP},
        headers={**auth, "If-Match": current.headers["ETag"]},
    )
    assert fresh.status_code == 200 and fresh.json()["version"] == 3


def test_version_and_if_match_must_agree(client: TestClient, auth: dict[str, str]) -> None:
    response = client.put(
        "/contacts/segments/vip",
        json={"definition": PLAN_VIP, "version": 1},
        headers={**auth, "If-Match": '"2"'},
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["header", "if-match"]


def test_patch_applies_instructions_and_recomputes(client: TestClient, auth: dict[str, str]) -> None:
    response = client.patch(
        "/contacts/segments/vip",
        json={
            "version": 1,
            "comment": "tidy up",
            "instructions": [
                {"kind": "addValuesToClause", "ruleId": "r-plan", "clauseId": "c-plan", "values": ["free"]},
                {"kind": "addExcludedTargets", "contextKind": "user", "values": ["u1"]},
                {"kind": "updateDescription", "value": "plans"},
            ],
        },
        headers={**auth, "Content-Type": "application/json; domain-model=launchdarkly.semanticpatch"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["version"] == 2 and body["description"] == "plans"
    assert body["definition"]["rules"][0]["clauses"][0]["values"] == ["vip", "free"]
    assert is_member(client, auth, "vip", "u3") and not is_member(client, auth, "vip", "u1")


def test_a_failing_instruction_is_422_naming_its_index_and_nothing_applies(
    client: TestClient, auth: dict[str, str]
) -> None:
    response = client.patch(
        "/contacts/segments/vip",
        json={
            "instructions": [{"kind": "updateName", "value": "new"}, {"kind": "removeRule", "ruleId": "nope"}]
        },
        headers=auth,
    )
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "instructions", 1]
    assert error["msg"] == 'instruction 1 (removeRule): no rule has id "nope"'
    assert client.get("/contacts/segments/vip", headers=auth).json()["name"] == "VIPs"


def test_a_patch_leaving_a_bad_rule_names_the_instruction(client: TestClient, auth: dict[str, str]) -> None:
    bad = {"kind": "addRule", "clauses": [{"attribute": "x", "op": "isIn", "values": [1]}]}
    response = client.patch("/contacts/segments/vip", json={"instructions": [bad]}, headers=auth)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "instructions", 0]
    assert 'unknown operator "isIn"' in response.json()["detail"][0]["msg"]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"instructions": []}, ["body", "instructions"]),
        ({"instructions": [{"kind": "explode"}]}, ["body", "instructions", 0]),
        ({"instructions": [{"kind": "removeRule"}]}, ["body", "instructions", 0, "removeRule", "ruleId"]),
        ({"instructions": [{"kind": "updateName", "value": "x"}], "version": 0}, ["body", "version"]),
    ],
)
def test_a_malformed_patch_is_422_naming_the_field(
    client: TestClient, auth: dict[str, str], body: dict[str, Any], loc: list[Any]
) -> None:
    response = client.patch("/contacts/segments/vip", json=body, headers=auth)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == loc


def test_writes_to_an_unknown_segment_are_404(client: TestClient, auth: dict[str, str]) -> None:
    patch = {"instructions": [{"kind": "updateName", "value": "x"}]}
    assert client.patch("/contacts/segments/ghost", json=patch, headers=auth).status_code == 404
    assert client.put("/contacts/segments/ghost", json={"definition": {}}, headers=auth).status_code == 404
    assert client.delete("/contacts/segments/ghost", headers=auth).status_code == 404


def test_deleting_a_referenced_segment_is_409_naming_the_referrers(
    client: TestClient, auth: dict[str, str]
) -> None:
    response = client.delete("/contacts/segments/vip", headers=auth)
    assert response.status_code == 409
    assert '"vip-org"' in response.json()["detail"]
    assert client.get("/contacts/segments/vip", headers=auth).status_code == 200


def test_deleting_a_segment_writes_exit_events_for_its_members(
    client: TestClient, auth: dict[str, str]
) -> None:
    response = client.delete("/contacts/segments/vip-org", headers={**auth, "If-Match": '"1"'})
    assert response.status_code == 200
    assert response.json() == {"key": "vip-org", "exited": 1}
    assert ("exited", "vip-org", "organization:o2:user:u2") in changes(client, auth)
    assert client.get("/contacts/segments/vip-org", headers=auth).status_code == 404
    assert client.delete("/contacts/segments/vip", headers={**auth, "If-Match": '"7"'}).status_code == 409
    in_use = client.delete("/contacts/segments/vip", headers=auth)  # the seeded sequence targets it
    assert in_use.status_code == 409 and 'sequences "welcome"' in in_use.json()["detail"]


def test_contact_upsert_is_visible_on_the_very_next_read(client: TestClient, auth: dict[str, str]) -> None:
    created = client.put("/contacts/u9", json={"kind": "user", "key": "u9", "plan": "vip"}, headers=auth)
    assert created.status_code == 201
    assert created.json()["segments"] == ["vip"] and created.json()["computed_at"] is not None
    assert is_member(client, auth, "vip", "u9")
    replaced = client.put("/contacts/u9", json={"key": "u9", "plan": "free"}, headers=auth)
    assert replaced.status_code == 200 and replaced.json()["segments"] == []
    assert not is_member(client, auth, "vip", "u9")
    assert [c for c in changes(client, auth) if c[2] == "u9"] == [
        ("entered", "vip", "u9"),
        ("exited", "vip", "u9"),
    ]


def test_a_multi_kind_contact_is_addressed_by_its_fully_qualified_key(
    client: TestClient, auth: dict[str, str]
) -> None:
    context = {
        "kind": "multi",
        "user": {"key": "u8", "plan": "vip"},
        "organization": {"key": "o8", "seats": 99},
    }
    response = client.put("/contacts/organization:o8:user:u8", json=context, headers=auth)
    assert response.status_code == 201, response.text
    assert response.json()["segments"] == ["orgs", "vip", "vip-org"]
    assert response.json()["kinds"] == ["organization", "user"]


def test_contact_key_must_equal_the_path(client: TestClient, auth: dict[str, str]) -> None:
    response = client.put("/contacts/u1", json={"kind": "organization", "key": "u1"}, headers=auth)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["path", "contact_id"] and '"organization:u1", not "u1"' in error["msg"]


@pytest.mark.parametrize("context", [{"kind": "user"}, {"kind": "user", "key": 5}, {"kind": "multi"}])
def test_an_invalid_context_is_422(client: TestClient, auth: dict[str, str], context: dict[str, Any]) -> None:
    response = client.put("/contacts/u1", json=context, headers=auth)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body"]
    assert response.json()["detail"][0]["msg"].startswith("invalid context: ")


def test_deleting_a_contact_writes_exit_events_first(client: TestClient, auth: dict[str, str]) -> None:
    response = client.delete("/contacts/organization:o2:user:u2", headers=auth)
    assert response.status_code == 200
    assert response.json() == {"key": "organization:o2:user:u2", "exited": 3}
    exits = [c for c in changes(client, auth) if c[0] == "exited"]
    assert sorted(c[1] for c in exits) == ["orgs", "vip", "vip-org"]
    assert client.get("/contacts/segments/contacts/organization:o2:user:u2", headers=auth).status_code == 404
    assert client.delete("/contacts/organization:o2:user:u2", headers=auth).status_code == 404


def test_a_contact_key_holding_slashes_is_addressed_in_the_path(
    client: TestClient, auth: dict[str, str]
) -> None:
    created = client.put("/contacts/team/eu/u5", json={"key": "team/eu/u5", "plan": "vip"}, headers=auth)
    assert created.status_code == 201, created.text
    assert is_member(client, auth, "vip", "team/eu/u5")
    listed = client.get("/contacts/segments/contacts/team%2Feu%2Fu5", headers=auth).json()
    assert [s["key"] for s in listed["data"]] == ["vip"]
    assert client.delete("/contacts/team/eu/u5", headers=auth).json() == {"key": "team/eu/u5", "exited": 1}
