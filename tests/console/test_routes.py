"""The console's routes under FastAPI's test client: sign-in and sessions, headers, scopes, CSRF, and each
page reading and writing through the services (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from segmentflow.api import create_app
from segmentflow.db.tables import change_table, console_session_table, membership_table
from segmentflow.rules import parse_context
from segmentflow.services.keys import revoke_key
from segmentflow.services.membership import upsert_and_recompute
from segmentflow.services.segments import get_segment, load_index
from segmentflow.services.sequences import get_sequence
from segmentflow.settings import Settings
from tests.console.conftest import HOSTILE, NOW, READ_SCOPES, csrf_of, make_token

SignIn = Callable[..., str]


def members_of(html: str) -> dict[str, int]:
    rows = re.findall(r'<tr data-segment-key="([^"]+)">.*?data-members>(\d+)<', html, re.S)
    return {key: int(n) for key, n in rows}


def editor_form(csrf: str, **fields: Any) -> dict[str, Any]:
    base = {
        "csrf": csrf,
        "original": "",
        "version": "",
        "key": "",
        "name": "",
        "description": "",
        "source": "json",
    }
    return base | fields


def count(engine: Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(sa.select(sa.func.count()).select_from(table)) or 0)


def test_sign_in_page_has_the_token_field_and_the_security_headers(client: TestClient) -> None:
    page = client.get("/ui/")
    assert page.status_code == 200
    assert re.search(r'<input[^>]*name="token"', page.text)
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "same-origin"


def test_no_page_has_an_inline_script_or_event_handler(client: TestClient, sign_in: SignIn) -> None:
    sign_in()
    for path in ("/ui/segments", "/ui/segments/new", "/ui/segments/vip", "/ui/contacts/u2", "/ui/sla"):
        html = client.get(path).text
        assert re.findall(r"<script(?![^>]*\bsrc=)", html) == [], path
        assert not re.search(r"<[a-z]+[^>]*\son[a-z]+=", html), path


def test_an_unknown_key_is_refused_and_opens_no_session(client: TestClient, engine: Engine) -> None:
    form = client.get("/ui/")
    refused = client.post(
        "/ui/sign-in", data={"token": "sf_000000000000_" + "x" * 43, "csrf": csrf_of(form.text)}
    )
    assert refused.status_code == 401
    assert "Unknown or revoked API key" in refused.text
    assert count(engine, console_session_table) == 0


def test_sign_in_without_the_form_token_is_refused(client: TestClient, engine: Engine) -> None:
    token = make_token(engine, "segments:read")
    client.cookies.clear()
    assert client.post("/ui/sign-in", data={"token": token, "csrf": "forged"}).status_code == 403
    assert count(engine, console_session_table) == 0


def test_the_session_cookie_is_httponly_strict_and_secure_over_https(app: Any, engine: Engine) -> None:
    token = make_token(engine, "segments:read")
    with TestClient(app, base_url="https://console.test") as client:
        form = client.get("/ui/")
        response = client.post(
            "/ui/sign-in", data={"token": token, "csrf": csrf_of(form.text)}, follow_redirects=False
        )
    assert response.status_code == 303 and response.headers["location"] == "/ui/segments"
    cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith("sf_console="))
    assert (
        "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" in cookie and "Path=/ui" in cookie
    )


def test_pages_send_a_stranger_to_sign_in(client: TestClient) -> None:
    response = client.get("/ui/segments/vip", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/?next=%2Fui%2Fsegments%2Fvip"


def test_sign_in_goes_on_to_the_page_asked_for_but_never_off_site(client: TestClient, engine: Engine) -> None:
    for wanted, landed in (("/ui/segments/vip", "/ui/segments/vip"), ("//evil.test/x", "/ui/segments")):
        client.cookies.clear()
        form = client.get("/ui/")
        token = make_token(engine, "segments:read")
        response = client.post(
            "/ui/sign-in",
            data={"token": token, "csrf": csrf_of(form.text), "next": wanted},
            follow_redirects=False,
        )
        assert response.headers["location"] == landed


def test_sign_out_ends_the_session_server_side(client: TestClient, sign_in: SignIn, engine: Engine) -> None:
    csrf = sign_in()
    cookie = client.cookies.get("sf_console")
    assert client.post("/ui/sign-out", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    assert count(engine, console_session_table) == 0
    client.cookies.set("sf_console", cookie or "", path="/ui")
    assert client.get("/ui/segments", follow_redirects=False).status_code == 303


def test_an_idle_session_expires(engine: Engine, database_url: str) -> None:
    from tests.console.conftest import seed

    seed(engine)
    app = create_app(Settings(database_url=database_url, console_idle=timedelta(seconds=0)))
    token = make_token(engine, "segments:read")
    with TestClient(app) as client:
        form = client.get("/ui/")
        client.post("/ui/sign-in", data={"token": token, "csrf": csrf_of(form.text)})
        assert client.get("/ui/segments", follow_redirects=False).status_code == 303
    app.state.engine.dispose()
    assert count(engine, console_session_table) == 0


def test_revoking_the_key_ends_its_sessions(client: TestClient, sign_in: SignIn, engine: Engine) -> None:
    sign_in("segments:read")
    assert client.get("/ui/segments", follow_redirects=False).status_code == 200
    with Session(engine) as session, session.begin():
        key_id = session.execute(sa.text("SELECT key_id FROM console_session")).scalar_one()
        revoke_key(session=session, key_id=key_id, now=NOW)
    assert client.get("/ui/segments", follow_redirects=False).status_code == 303


def test_segments_list_shows_members_and_searches(client: TestClient, sign_in: SignIn) -> None:
    sign_in()
    html = client.get("/ui/segments").text
    assert members_of(html) == {"vip": 2, "vip-eu": 1}
    assert "<polyline" in html
    assert members_of(client.get("/ui/segments", params={"q": "VIPs"}).text) == {"vip": 2}
    assert set(members_of(client.get("/ui/segments", params={"q": "eu"}).text)) == {"vip-eu"}


def test_a_read_only_key_sees_no_edit_controls_and_its_writes_are_refused(
    client: TestClient, sign_in: SignIn, engine: Engine
) -> None:
    csrf = sign_in(*READ_SCOPES)
    assert "data-new-segment" not in client.get("/ui/segments").text
    assert "data-edit" not in client.get("/ui/segments/vip").text
    assert client.get("/ui/segments/new").status_code == 403
    definition = json.dumps({"rules": []})
    refused = client.post(
        "/ui/segments/editor",
        data=editor_form(csrf, original="vip", version="1", name="Hacked", definition=definition, save="1"),
    )
    assert refused.status_code == 403
    assert "segments:write" in refused.text
    assert client.post("/ui/sequences/welcome/launch", data={"csrf": csrf}).status_code == 403
    with Session(engine) as session:
        record = get_segment(session=session, ref="vip")
        sequence = get_sequence(session=session, key="welcome")
        assert record is not None and record.name == "VIPs" and sequence is not None
        assert sequence.status == "draft"


def test_a_write_without_the_csrf_token_is_refused(
    client: TestClient, sign_in: SignIn, engine: Engine
) -> None:
    sign_in()
    definition = json.dumps({"rules": []})
    response = client.post(
        "/ui/segments/editor", data=editor_form("forged", key="new-one", definition=definition, save="1")
    )
    assert response.status_code == 403
    with Session(engine) as session:
        assert get_segment(session=session, ref="new-one") is None


def test_preview_counts_the_audience_and_writes_nothing(
    client: TestClient, sign_in: SignIn, engine: Engine
) -> None:
    csrf = sign_in()
    changes, memberships = count(engine, change_table), count(engine, membership_table)
    # vip today holds u1 and u2; "region in eu, us" holds u1 and u2 too, "plan in free" u3 only
    definition = {
        "rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["free", "vip"]}]}],
        "excluded": ["u2"],
    }
    response = client.post(
        "/ui/segments/editor",
        data=editor_form(
            csrf, original="vip", version="1", key="vip", definition=json.dumps(definition), preview="1"
        ),
    )
    assert response.status_code == 200, response.text
    assert re.search(r"data-preview-count>(\d+)<", response.text).group(1) == "2"  # type: ignore[union-attr]
    assert re.search(r"data-preview-entering>(\d+)<", response.text).group(1) == "1"  # type: ignore[union-attr]
    assert re.search(r"data-preview-exiting>(\d+)<", response.text).group(1) == "1"  # type: ignore[union-attr]
    assert (count(engine, change_table), count(engine, membership_table)) == (changes, memberships)
    with Session(engine) as session:
        record = get_segment(session=session, ref="vip")
        assert record is not None and record.version == 1


def test_save_with_the_builder_creates_the_segment_and_its_members(
    client: TestClient, sign_in: SignIn
) -> None:
    csrf = sign_in()
    fields = editor_form(
        csrf,
        source="builder",
        key="free",
        name="Free plan",
        definition="",
        save="1",
        **{
            "rules-count": "1",
            "rule-0-clauses-count": "1",
            "rule-0-clause-0-attribute": "plan",
            "rule-0-clause-0-op": "in",
            "rule-0-clause-0-values": "free",
        },
    )
    response = client.post("/ui/segments/editor", data=fields, follow_redirects=False)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/ui/segments/free"
    page = client.get("/ui/segments/free").text
    assert re.findall(r'data-contact-key="([^"]+)"', page) == ["u3"]
    assert re.search(r"data-members>(\d+)<", page).group(1) == "1"  # type: ignore[union-attr]


def test_a_refused_definition_shows_the_api_message_beside_the_clause(
    client: TestClient, sign_in: SignIn, engine: Engine
) -> None:
    csrf = sign_in()
    definition = {"rules": [{"clauses": [{"attribute": "plan", "op": "sameAs", "values": ["x"]}]}]}
    api = client.post(
        "/contacts/segments",
        json={"key": "bad", "definition": definition},
        headers={"Authorization": f"Bearer {make_token(engine, 'segments:write')}"},
    )
    assert api.status_code == 422
    api_message = api.json()["detail"][0]["msg"]
    response = client.post(
        "/ui/segments/editor", data=editor_form(csrf, key="bad", definition=json.dumps(definition), save="1")
    )
    assert response.status_code == 422
    clause_error = re.search(r'data-clause-error="0-0">([^<]+)<', response.text)
    assert clause_error is not None
    assert api_message.split(": ")[-1] in clause_error.group(1).replace("&#34;", '"').replace("&quot;", '"')
    with Session(engine) as session:
        assert get_segment(session=session, ref="bad") is None


def test_a_stale_edit_shows_both_versions_and_loses_nothing(
    client: TestClient, sign_in: SignIn, engine: Engine
) -> None:
    csrf = sign_in()
    theirs = {"rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["gold"]}]}]}
    mine = {"rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["silver"]}]}]}
    first = client.post(
        "/ui/segments/editor",
        data=editor_form(
            csrf, original="vip", version="1", name="Theirs", definition=json.dumps(theirs), save="1"
        ),
        follow_redirects=False,
    )
    assert first.status_code == 303
    second = client.post(
        "/ui/segments/editor",
        data=editor_form(
            csrf, original="vip", version="1", name="Mine", definition=json.dumps(mine), save="1"
        ),
    )
    assert second.status_code == 409
    assert "data-conflict" in second.text
    assert "silver" in re.search(r"<pre data-mine>(.*?)</pre>", second.text, re.S).group(1)  # type: ignore[union-attr]
    assert "gold" in re.search(r"<pre data-theirs>(.*?)</pre>", second.text, re.S).group(1)  # type: ignore[union-attr]
    with Session(engine) as session:
        record = get_segment(session=session, ref="vip")
        assert record is not None and (record.version, record.name) == (2, "Theirs")


def test_a_hostile_contact_name_is_text(client: TestClient, sign_in: SignIn) -> None:
    sign_in()
    html = client.get("/ui/contacts/u2").text
    assert HOSTILE not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_contact_page_lists_segments_and_explains_each(client: TestClient, sign_in: SignIn) -> None:
    sign_in()
    html = client.get("/ui/contacts/u1").text
    assert re.findall(r'<li data-segment-key="([^"]+)"', html) == ["vip", "vip-eu"]
    vip = re.search(r'data-explain="vip">(.*?)</tr>', html, re.S).group(1)  # type: ignore[union-attr]
    assert "rule 1" in vip and "r-plan" in vip
    org = client.get("/ui/contacts/organization:o%2F1")
    assert org.status_code == 200 and "In no segment" in org.text
    assert client.get("/ui/contacts/nobody").status_code == 404
    lookup = client.get("/ui/lookup", params={"contact": "organization:o/1"}, follow_redirects=False)
    assert lookup.headers["location"] == "/ui/contacts/organization%3Ao%2F1"


def test_segment_page_pages_members_and_names_its_users(client: TestClient, sign_in: SignIn) -> None:
    sign_in()
    html = client.get("/ui/segments/vip").text
    assert re.findall(r'data-contact-key="([^"]+)"', html) == ["u1", "u2"]
    assert 'data-dependant="vip-eu"' in html
    assert "/ui/sequences/welcome" in html
    assert "Rule 1: in when user plan is one of “vip”." in html
    assert client.get("/ui/segments/nope").status_code == 404


def test_launch_and_pause_a_sequence_after_confirming(
    client: TestClient, sign_in: SignIn, engine: Engine
) -> None:
    csrf = sign_in()
    confirm = client.get("/ui/sequences/welcome/launch")
    assert confirm.status_code == 200 and 'data-confirm="launch"' in confirm.text
    assert (
        client.post("/ui/sequences/welcome/launch", data={"csrf": csrf}, follow_redirects=False).status_code
        == 303
    )
    page = client.get("/ui/sequences/welcome").text
    assert re.search(r"data-status>(\w+)<", page).group(1) == "active"  # type: ignore[union-attr]
    assert re.search(r'data-step="0">.*?data-enrolled>(\d+)<', page, re.S).group(1) == "2"  # type: ignore[union-attr]
    client.post("/ui/sequences/welcome/pause", data={"csrf": csrf})
    with Session(engine) as session:
        record = get_sequence(session=session, key="welcome")
        assert record is not None and record.status == "paused"


def test_template_preview_renders_for_a_contact_with_its_name_escaped(
    client: TestClient, sign_in: SignIn
) -> None:
    sign_in()
    html = client.get("/ui/sequences/welcome", params={"contact": "u2"}).text
    assert "Hi &lt;img src=x onerror=alert(1)&gt;" in html
    assert "No contact" in client.get("/ui/sequences/welcome", params={"contact": "ghost"}).text


def test_sla_what_if_picks_the_policy_by_segment(client: TestClient, sign_in: SignIn) -> None:
    sign_in()
    created = "2026-12-07T08:00:00+01:00"  # a Monday, before opening in Berlin
    vip = client.get("/ui/sla", params={"contact": "u1", "priority": "high", "created_at": created}).text
    assert re.search(r"data-whatif-policy>([^<]+)<", vip).group(1) == "vip-sla"  # type: ignore[union-attr]
    due = re.search(
        r'data-due="first_reply">.*?</td><td class="num">(\d+)</td><td>[^<]*</td><td>([^<]+)<', vip, re.S
    )
    assert due is not None and due.group(1) == "60" and due.group(2) == "2026-12-07T09:00:00+00:00"
    free = client.get("/ui/sla", params={"contact": "u3", "priority": "high", "created_at": created}).text
    assert re.search(r"data-whatif-policy>([^<]+)<", free).group(1) == "default"  # type: ignore[union-attr]
    bad = client.get("/ui/sla", params={"priority": "high", "created_at": "yesterday"})
    assert bad.status_code == 200 and "Invalid isoformat" in bad.text


def test_messages_page_lists_restrictions_as_a_contact(client: TestClient, sign_in: SignIn) -> None:
    sign_in()
    html = client.get("/ui/messages", params={"contact": "u1"}).text
    assert 'data-as-contact="u1"' in html
    assert re.findall(r'<span data-segment-key="([^"]+)"', html) == ["vip", "vip-eu"]
    assert re.findall(r'data-applies-action="([^"]+)"', html) == ["faq", "refund"]
    assert re.findall(r'data-applies-instruction="([^"]+)"', html) == ["eu-tone"]
    other = client.get("/ui/messages", params={"contact": "u3"}).text
    assert re.findall(r'data-applies-action="([^"]+)"', other) == ["faq"]
    assert re.findall(r'data-applies-instruction="([^"]+)"', other) == []
    assert other.count("<tr data-refusal>") == 1 and "not in vip" in other


def test_a_key_the_api_refuses_is_refused_with_its_message(
    client: TestClient, sign_in: SignIn, engine: Engine
) -> None:
    csrf = sign_in()
    for key in ("a/b", "changes"):
        response = client.post(
            "/ui/segments/editor", data=editor_form(csrf, key=key, definition='{"rules": []}', save="1")
        )
        assert response.status_code == 422, key
        assert "key" in re.search(r"data-errors>(.*?)</div>", response.text, re.S).group(1)  # type: ignore[union-attr]
        with Session(engine) as session:
            assert get_segment(session=session, ref=key) is None


def test_htmx_requests_get_a_browser_redirect_and_errors_in_place(
    client: TestClient, sign_in: SignIn
) -> None:
    stranger = client.post(
        "/ui/segments/editor", data={}, headers={"HX-Request": "true"}, follow_redirects=False
    )
    assert stranger.status_code == 204
    assert stranger.headers["hx-redirect"].startswith("/ui/?next=")
    sign_in(*READ_SCOPES)
    refused = client.post("/ui/segments/editor", data={"csrf": "x"}, headers={"HX-Request": "true"})
    assert refused.status_code == 403
    assert refused.headers["hx-retarget"] == "#main" and refused.headers["hx-reselect"] == "#main"


def test_a_session_survives_a_restart_of_the_server(
    client: TestClient, sign_in: SignIn, engine: Engine, database_url: str
) -> None:
    sign_in("segments:read")
    cookie = client.cookies.get("sf_console")
    restarted = create_app(Settings(database_url=database_url))
    with TestClient(restarted) as other:
        other.cookies.set("sf_console", cookie or "", path="/ui")
        assert other.get("/ui/segments", follow_redirects=False).status_code == 200
    restarted.state.engine.dispose()


def test_raw_json_that_does_not_parse_is_refused_and_kept_as_typed(
    client: TestClient, sign_in: SignIn, engine: Engine
) -> None:
    csrf = sign_in()
    typed = '{"rules": [ oops'
    response = client.post(
        "/ui/segments/editor", data=editor_form(csrf, key="typo", definition=typed, save="1")
    )
    assert response.status_code == 422
    assert "definition: not JSON" in response.text
    assert "{&#34;rules&#34;: [ oops</textarea>" in response.text
    with Session(engine) as session:
        assert get_segment(session=session, ref="typo") is None


def test_members_are_paged_by_cursor(client: TestClient, sign_in: SignIn, engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        contexts = [parse_context({"key": f"m{i:03d}", "plan": "vip"}) for i in range(60)]
        upsert_and_recompute(session=session, contexts=contexts, index=load_index(session=session), now=NOW)
    sign_in()
    first = client.get("/ui/segments/vip").text
    keys = re.findall(r'data-contact-key="([^"]+)"', first)
    assert len(keys) == 50 and keys[:2] == ["u1", "u2"]
    after = re.search(r'href="(/ui/segments/vip\?after=\d+)" data-next-page', first)
    assert after is not None
    rest = re.findall(r'data-contact-key="([^"]+)"', client.get(after.group(1)).text)
    assert keys + rest == ["u1", "u2", *(f"m{i:03d}" for i in range(60))]
    assert "data-next-page" not in client.get(after.group(1)).text


def test_segments_list_counts_the_last_24_hours(client: TestClient, sign_in: SignIn) -> None:
    sign_in()
    html = client.get("/ui/segments").text
    row = re.search(r'<tr data-segment-key="vip">(.*?)</tr>', html, re.S)
    assert row is not None
    entered = re.search(r"data-entered>(\d+)<", row.group(1))
    exited = re.search(r"data-exited>(\d+)<", row.group(1))
    assert entered is not None and exited is not None
    assert (entered.group(1), exited.group(1)) == ("2", "0")  # u1 and u2 entered when the seed recomputed


def test_a_key_without_segments_read_lands_on_a_page_it_may_see(client: TestClient, engine: Engine) -> None:
    form = client.get("/ui/")
    token = make_token(engine, "sla:read")
    response = client.post(
        "/ui/sign-in", data={"token": token, "csrf": csrf_of(form.text)}, follow_redirects=False
    )
    assert response.headers["location"] == "/ui/sla"
    assert client.get("/ui/sla").status_code == 200
    assert client.get("/ui/segments").status_code == 403


def test_every_field_on_every_page_has_a_label(client: TestClient, sign_in: SignIn) -> None:
    sign_in()
    pages = [
        "/ui/segments",
        "/ui/segments/new",
        "/ui/segments/vip/edit",
        "/ui/segments/vip",
        "/ui/contacts/u1",
        "/ui/sequences/welcome?contact=u1",
        "/ui/sla?priority=high",
        "/ui/messages?contact=u1",
    ]
    for path in pages:
        html = client.get(path).text
        labelled = set(re.findall(r'<label[^>]*\bfor="([^"]+)"', html))
        wrapped = re.findall(r"<label[^>]*>\s*<input[^>]*>", html)
        for tag in re.findall(r"<(?:input|select|textarea)\b[^>]*>", html):
            if 'type="hidden"' in tag or any(tag in w for w in wrapped):
                continue
            field_id = re.search(r'\bid="([^"]+)"', tag)
            assert field_id is not None and field_id.group(1) in labelled, (path, tag)
