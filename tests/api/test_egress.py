"""URLs written through the API under the egress policy (this package sets no `SEGMENTFLOW_EGRESS_ALLOW`):
a webhook URL that is literally a refused address is a 422 naming the field, and `GET /sequences/{key}`
shows webhook URLs with their secrets redacted."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.api.conftest import SEQUENCE, bearer


def _with_url(url: str, *, branch: bool = False) -> dict[str, Any]:
    send = {"type": "send", "channel": "webhook", "url": url, "template": "Hi"}
    steps: list[dict[str, Any]] = [send]
    if branch:
        steps = [{"type": "wait", "duration": "P1D"}, {"type": "branch", "segment": "vip", "then": [send]}]
    return {**SEQUENCE, "steps": steps}


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:5432/",
        "http://169.254.169.254/latest/meta-data/",
        "http://2130706433/",
        "http://0x7f.1/",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://100.64.1.1/",
    ],
)
def test_a_sequence_webhook_at_a_refused_address_is_a_422_naming_the_step(
    client: TestClient, tokens: dict[str, str], url: str
) -> None:
    answer = client.put("/sequences/welcome", json=_with_url(url), headers=bearer(tokens["sequences:write"]))
    assert answer.status_code == 422
    [detail] = answer.json()["detail"]
    assert detail["loc"] == ["body", "steps", 0, "url"] and "egress refused" in detail["msg"]
    nested = client.put(
        "/sequences/welcome", json=_with_url(url, branch=True), headers=bearer(tokens["sequences:write"])
    )
    assert nested.json()["detail"][0]["loc"] == ["body", "steps", 1, "then", 0, "url"]
    assert client.get("/sequences/welcome", headers=bearer(tokens["sequences:read"])).status_code == 404


def test_an_action_webhook_at_a_loopback_address_is_a_422_naming_it(
    client: TestClient, tokens: dict[str, str]
) -> None:
    answer = client.post(
        "/messages/actions",
        json=[{"key": "x", "webhook": {"url": "http://127.0.0.1:8080/x"}}],
        headers=bearer(tokens["messages:write"]),
    )
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", 0, "webhook", "url"]


def test_a_sequence_is_read_back_with_webhook_secrets_redacted(
    client: TestClient, tokens: dict[str, str], seeded: None
) -> None:
    url = "https://ops:hunter2@hooks.example/in/AbCdEf0123456789xyz?sig=s3cret&v=1"
    saved = client.put(
        "/sequences/welcome", json=_with_url(url, branch=True), headers=bearer(tokens["sequences:write"])
    )
    assert saved.status_code == 200, saved.text  # replaces the seeded one
    body = client.get("/sequences/welcome", headers=bearer(tokens["sequences:read"])).json()
    shown = body["definition"]["steps"][1]["then"][0]["url"]
    assert shown == "https://<redacted>@hooks.example/in/<redacted>?sig=<redacted>&v=<redacted>"
    assert "hunter2" not in str(body) and "s3cret" not in str(body)
