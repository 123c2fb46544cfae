"""`GET /sla/report` with an `until` too early to open the default 7-day window before it is a 422 naming
`until`, not a 500 (the subtraction overflows `datetime`)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.api.conftest import app, bearer, client, seeded, tokens

__all__ = ["app", "client", "seeded", "tokens"]


def test_an_until_at_the_start_of_time_is_422_naming_it(client: TestClient, tokens: dict[str, str]) -> None:
    response = client.get("/sla/report?until=0001-01-01T00:00:00Z", headers=bearer(tokens["sla:read"]))
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["query", "until"]
    explicit = "/sla/report?since=0001-01-01T00:00:00Z&until=0001-01-02T00:00:00Z"
    assert client.get(explicit, headers=bearer(tokens["sla:read"])).status_code == 200
