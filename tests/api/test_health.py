"""Operations when the database is down: `/healthz` says so with a 503, and so does any other endpoint
(never a 500 or a hang)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from segmentflow.api import create_app
from segmentflow.settings import Settings

UNREACHABLE = "postgresql://postgres@127.0.0.1:1/nothing"  # nothing listens on port 1: refused at once


def test_healthz_is_503_when_the_database_is_unreachable() -> None:
    app = create_app(Settings(database_url=UNREACHABLE))
    client = TestClient(app)  # no lifespan: it would try to migrate
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "database": "OperationalError"}


def test_an_endpoint_is_503_when_the_database_is_unreachable() -> None:
    client = TestClient(create_app(Settings(database_url=UNREACHABLE)))
    response = client.get(
        "/contacts/segments", headers={"Authorization": "Bearer sf_000000000000_" + "A" * 43}
    )
    assert response.status_code == 503
    assert response.json() == {"detail": "the database is unavailable"}
