"""Action webhooks and the chat-completions responder under the egress policy, with the worker's policy
built without this package's loopback allowance: a webhook that would connect to loopback is refused for
good and audited; the API refuses a literally refused URL (422 naming the field) and redacts secrets in
the URLs it returns; a webhook answer over the cap reaches workflow history cut and marked."""

from __future__ import annotations

from typing import Any

import pytest
from segmentflow.activities import MessageActivities
from segmentflow.workflows.message_models import RunActionInput
from sqlalchemy.engine import Engine
from sqlmodel import Session
from starlette.testclient import TestClient
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from segmentflow.services.messages import parse_actions, upsert_actions
from segmentflow.settings import Settings
from tests.messages.conftest import NOW, StandIn, refusals


def _store(engine: Engine, url: str) -> None:
    with Session(engine) as session, session.begin():
        upsert_actions(
            session=session, actions=parse_actions([{"key": "lookup", "webhook": {"url": url}}]), now=NOW
        )


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::ffff:127.0.0.1]"])
async def test_an_action_webhook_the_policy_refuses_is_final_and_audited(
    engine: Engine, seeded: None, stand_in: StandIn, host: str
) -> None:
    port = stand_in.url.rsplit(":", 1)[1]
    _store(engine, f"http://{host}:{port}/hooks/lookup?token=s3cret")
    activities = MessageActivities(engine, Settings(egress_allow=""))
    try:
        with pytest.raises(ApplicationError) as caught:
            await ActivityEnvironment().run(
                activities.run_action, RunActionInput(action="lookup", contact_key="u-free")
            )
    finally:
        await activities.aclose()
    assert (caught.value.type, caught.value.non_retryable) == ("EgressRefused", True)
    assert "loopback" in str(caught.value) and "s3cret" not in str(caught.value)
    assert stand_in.hooks() == []
    assert refusals(engine) == [("u-free", "lookup", "egress")]


async def test_a_large_action_answer_reaches_the_workflow_cut_and_marked(
    engine: Engine, seeded: None, stand_in: StandIn
) -> None:
    _store(engine, f"{stand_in.url}/chat/completions")  # the stand-in answers this path with `completion`
    stand_in.completion = {"blob": "A" * 200_000}
    activities = MessageActivities(engine, Settings(max_response_bytes=4096))
    try:
        result = await ActivityEnvironment().run(
            activities.run_action, RunActionInput(action="lookup", contact_key="u-free")
        )
    finally:
        await activities.aclose()
    assert result.response_truncated is True
    assert isinstance(result.response, str) and len(result.response) == 4096


def test_the_api_refuses_literally_refused_webhook_urls_naming_the_field(
    client: TestClient, make_token: Any
) -> None:
    headers = {"Authorization": f"Bearer {make_token('messages:write')}"}
    # (loopback is allowed in this package; tests/api/test_egress.py shows it refused without that)
    for url in (
        "http://169.254.169.254/latest",
        "http://2852039166/x",
        "http://[fe80::1]/x",
        "http://10.0.0.8/",
    ):
        answer = client.post(
            "/messages/actions",
            json=[
                {"key": "ok", "webhook": {"url": "https://hooks.example/x"}},
                {"key": "x", "webhook": {"url": url}},
            ],
            headers=headers,
        )
        assert answer.status_code == 422, url
        [detail] = answer.json()["detail"]
        assert detail["loc"] == ["body", 1, "webhook", "url"] and "egress refused" in detail["msg"]
    listed = client.get(
        "/messages/actions", headers={"Authorization": f"Bearer {make_token('messages:read')}"}
    )
    assert listed.json()["data"] == []  # all or none


def test_listed_webhook_urls_have_their_secrets_redacted(client: TestClient, make_token: Any) -> None:
    url = "https://bot:pw@hooks.slack.com/services/T0AAAA1/B0BBBB2/vCvXwrKDeDq9kdXbQbnvMBcd?token=abc"
    posted = client.post(
        "/messages/actions",
        json=[{"key": "x", "webhook": {"url": url}}],
        headers={"Authorization": f"Bearer {make_token('messages:write')}"},
    )
    assert posted.status_code == 200, posted.text
    listed = client.get(
        "/messages/actions", headers={"Authorization": f"Bearer {make_token('messages:read')}"}
    )
    shown = listed.json()["data"][0]["webhook"]["url"]
    assert shown == "https://<redacted>@hooks.slack.com/services/T0AAAA1/B0BBBB2/<redacted>?token=<redacted>"
