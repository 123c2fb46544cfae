"""The editor's long operations under htmx: the preview and the save run in a thread of their own while
the page polls `/ui/jobs/{token}` for progress, then shows the outcome (the same figures as a plain post,
the segment's page, or the editor with what went wrong). SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from segmentflow.db.tables import change_table, membership_table
from segmentflow.rules import parse_segment
from segmentflow.services.preview import SegmentPreview, preview_segment
from segmentflow.services.segment_admin import recompute_segments
from segmentflow.services.segments import get_segment
from tests.console.conftest import NOW
from tests.console.test_routes import SignIn, count, editor_form

HX = {"HX-Request": "true"}
#: vip today holds u1 and u2; this holds u1 and u3 (one enters, one exits).
DEFINITION: dict[str, Any] = {
    "rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["free", "vip"]}]}],
    "excluded": ["u2"],
}


def started(response: httpx.Response, kind: str) -> str:
    assert response.status_code == 200, response.text
    match = re.search(rf'data-job="{kind}"[^>]*hx-get="/ui/jobs/([^"]+)"', response.text, re.S)
    assert match, response.text
    return match.group(1)


def outcome(client: TestClient, token: str) -> httpx.Response:
    """Poll as the page does until the job has ended (a bounded wait, not a timing)."""
    for _ in range(2000):
        response = client.get(f"/ui/jobs/{token}", headers=HX)
        if 'data-job="' not in response.text:
            return response
        done, total = (int(n) for n in re.findall(r'data-job-(?:done|total)="(\d+)"', response.text))
        assert 0 <= done <= total == 4
        time.sleep(0.01)
    raise AssertionError("the job never ended")


def test_a_preview_under_htmx_polls_its_progress_then_shows_the_plain_post_s_figures(
    client: TestClient, sign_in: SignIn, engine: Engine
) -> None:
    csrf = sign_in()
    before = count(engine, change_table), count(engine, membership_table)
    fields = editor_form(csrf, original="vip", version="1", key="vip", definition=json.dumps(DEFINITION))
    posted = client.post("/ui/segments/editor", data={**fields, "preview": "1"}, headers=HX)
    token = started(posted, "preview")
    shown = outcome(client, token)
    plain = client.post("/ui/segments/editor", data={**fields, "preview": "1"}).text
    for hook in ("data-preview-count", "data-preview-entering", "data-preview-exiting"):
        number = re.compile(rf"{hook}>(\d+)<")
        assert number.search(shown.text).group(1) == number.search(plain).group(1)  # type: ignore[union-attr]
    assert re.search(r"data-preview-count>(\d+)<", shown.text).group(1) == "2"  # type: ignore[union-attr]
    assert (count(engine, change_table), count(engine, membership_table)) == before
    # Another operator's session cannot read it.
    client.cookies.clear()
    sign_in()
    assert "data-job-gone" in client.get(f"/ui/jobs/{token}", headers=HX).text


def test_a_save_under_htmx_recomputes_in_a_job_then_goes_to_the_segment(
    client: TestClient, sign_in: SignIn, engine: Engine
) -> None:
    csrf = sign_in()
    fields = editor_form(csrf, original="vip", version="1", key="vip", definition=json.dumps(DEFINITION))
    token = started(client.post("/ui/segments/editor", data={**fields, "save": "1"}, headers=HX), "save")
    done = outcome(client, token)
    assert done.headers["hx-redirect"] == "/ui/segments/vip"
    page = client.get("/ui/segments/vip").text
    assert sorted(re.findall(r'data-contact-key="([^"]+)"', page)) == ["u1", "u3"]
    with Session(engine) as session:
        record = get_segment(session=session, ref="vip")
        assert record is not None and record.version == 2
    # The same editor again is stale now: the job ends in the conflict page, swapped over the editor.
    token = started(client.post("/ui/segments/editor", data={**fields, "save": "1"}, headers=HX), "save")
    stale = outcome(client, token)
    assert stale.status_code == 409 and "data-conflict" in stale.text
    assert stale.headers["hx-retarget"] == "#editor"


def test_a_refused_definition_ends_the_job_with_the_message(client: TestClient, sign_in: SignIn) -> None:
    csrf = sign_in()
    definition = {"rules": [{"clauses": [{"op": "segmentMatch", "values": ["vip-eu"]}]}]}  # a cycle
    fields = editor_form(csrf, original="vip", version="1", key="vip", definition=json.dumps(definition))
    token = started(client.post("/ui/segments/editor", data={**fields, "save": "1"}, headers=HX), "save")
    refused = outcome(client, token)
    assert refused.status_code == 422 and "data-errors" in refused.text


def test_preview_and_recompute_report_progress_page_by_page(engine: Engine, client: TestClient) -> None:
    segment = parse_segment({"key": "vip", **DEFINITION})
    seen: list[tuple[int, int]] = []

    def step(so_far: SegmentPreview) -> None:
        seen.append((so_far.contacts, so_far.members))

    with Session(engine) as session:
        result = preview_segment(session=session, segment=segment, page_size=1, progress=step)
    assert [c for c, _ in seen] == [1, 2, 3, 4] and seen[-1] == (4, result.members) == (4, 2)
    done: list[int] = []
    with Session(engine) as session, session.begin():
        recompute_segments(session=session, keys=["vip"], now=NOW, page_size=3, progress=done.append)
        session.rollback()
    assert done == [3, 4]
