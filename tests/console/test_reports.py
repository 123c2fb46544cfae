"""The console's Reports page under FastAPI's test client (SQLite and PostgreSQL): the window form, the
per-segment table (the same figures as `GET /reports/segments`), the daily charts, the scope, and a
hostile segment name kept as text."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from segmentflow.console.charts import series_lines
from segmentflow.rules import parse_segments
from segmentflow.services.conversations import parse_event, record_conversations
from segmentflow.services.segment_admin import import_segments
from tests.console.conftest import HOSTILE, READ_SCOPES, make_token

SignIn = Callable[..., str]


def record(engine: Engine, *events: dict[str, Any]) -> None:
    with Session(engine) as session, session.begin():
        record_conversations(session=session, events=[parse_event(e) for e in events], now=datetime.now(UTC))


def event(n: int, contact: str | None, at: datetime, **more: Any) -> dict[str, Any]:
    return {"id": f"e{n}", "contactKey": contact, "at": at.isoformat(), **more}


def rows_of(html: str) -> dict[str, dict[str, str]]:
    out = {}
    for key, body in re.findall(r'<tr data-report-segment="([^"]*)">(.*?)</tr>', html, re.S):
        cells = dict(re.findall(r"data-([a-z-]+)>([^<]*)<", body))
        out[key] = cells
    return out


def seed_events(engine: Engine) -> datetime:
    """Conversations just now (after the seed's memberships: u1 in vip and vip-eu, u2 in vip, u3 in none),
    and one 40 days ago (before any membership: no segment)."""
    now = datetime.now(UTC)
    record(
        engine,
        event(1, "u1", now, handoff=True, csat=5),
        event(2, "u1", now, handoff=False, csat=2),
        event(3, "u2", now, handoff=False, csat=4),
        event(4, "u3", now, handoff=True),
        event(5, None, now, csat=1),
        event(6, "u1", now - timedelta(days=40), csat=5),
    )
    return now


def test_reports_page_shows_the_default_window_and_the_figures(
    client: TestClient, sign_in: SignIn, engine: Engine
) -> None:
    now = seed_events(engine)
    sign_in()
    response = client.get("/ui/reports")
    assert response.status_code == 200
    html = response.text
    today = now.date()
    assert re.search(rf'name="since"[^>]*value="{(today - timedelta(days=29)).isoformat()}"', html)
    assert re.search(rf'name="until"[^>]*value="{today.isoformat()}"', html)
    rows = rows_of(html)
    assert list(rows) == ["vip", "vip-eu", "-"]
    assert rows["vip"]["conversations"] == "3"
    assert rows["vip"]["members"] == "2"
    assert rows["vip"]["handoff-rate"] == "33.3%"
    assert rows["vip"]["csat-average"] == "3.67"
    assert rows["vip"]["csat-satisfied"] == "66.7%"
    assert rows["vip-eu"]["conversations"] == "2" and rows["vip-eu"]["members"] == "1"
    assert rows["-"]["conversations"] == "2" and rows["-"]["members"] == "\u2013"  # u3 and the anonymous one
    overall = re.search(r"<tr data-report-overall.*?data-conversations>(\d+)<", html, re.S)
    assert overall is not None and overall.group(1) == "5"
    # A chart per figure and row; vip's conversations: one day with conversations, drawn as a tick.
    vip = re.search(r'data-chart-segment="vip">(.*?)</section>', html, re.S)
    assert vip is not None
    assert len(re.findall(r"<svg class=\"chart\"", vip.group(1))) == 3
    assert len(re.findall(r"<polyline", vip.group(1))) >= 3
    # the 40-day-old conversation shows only in a window that covers it
    old = (today - timedelta(days=40)).isoformat()
    wide = rows_of(client.get("/ui/reports", params={"since": old, "until": today.isoformat()}).text)
    assert wide["-"]["conversations"] == "3" and wide["vip"]["conversations"] == "3"


def test_reports_page_has_the_api_s_numbers(client: TestClient, sign_in: SignIn, engine: Engine) -> None:
    now = seed_events(engine)
    sign_in()
    first = (now - timedelta(days=6)).date()
    last = now.date()
    html = client.get("/ui/reports", params={"since": first.isoformat(), "until": last.isoformat()}).text
    token = make_token(engine, "reports:read")
    start = datetime.combine(first, datetime.min.time(), UTC)
    api = client.get(
        "/reports/segments",
        params={"since": start.isoformat(), "until": (start + timedelta(days=7)).isoformat()},
        headers={"authorization": f"Bearer {token}"},
    ).json()
    rows = rows_of(html)
    assert {r["segment"]: str(r["conversations"]) for r in api["data"]} == {
        k: v["conversations"] for k, v in rows.items()
    }
    assert {r["segment"]: str(r["csat"]["responses"]) for r in api["data"]} == {
        k: v["csat-responses"] for k, v in rows.items()
    }


def test_a_bad_window_is_refused_with_its_reason(client: TestClient, sign_in: SignIn) -> None:
    sign_in()
    late = client.get("/ui/reports", params={"since": "2026-12-05", "until": "2026-12-01"})
    assert late.status_code == 422 and "since must not be after until" in late.text
    assert 'value="2026-12-05"' in late.text  # kept as typed
    bad = client.get("/ui/reports", params={"since": "yesterday", "until": "2026-12-01"})
    assert bad.status_code == 422 and "since must be a date" in bad.text
    long = client.get("/ui/reports", params={"since": "2020-01-01", "until": "2026-12-01"})
    assert long.status_code == 422 and "at most 366 days" in long.text


def test_reports_need_the_reports_read_scope(client: TestClient, sign_in: SignIn) -> None:
    sign_in(*READ_SCOPES)
    assert 'href="/ui/reports"' not in client.get("/ui/segments").text
    assert client.get("/ui/reports").status_code == 403


def test_a_key_with_only_reports_read_lands_on_reports(client: TestClient, engine: Engine) -> None:
    from tests.console.conftest import csrf_of

    form = client.get("/ui/")
    token = make_token(engine, "reports:read")
    response = client.post(
        "/ui/sign-in", data={"token": token, "csrf": csrf_of(form.text)}, follow_redirects=False
    )
    assert response.headers["location"] == "/ui/reports"
    page = client.get("/ui/reports")
    assert page.status_code == 200 and 'href="/ui/reports"' in page.text


def test_a_hostile_segment_name_is_text(client: TestClient, sign_in: SignIn, engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        import_segments(
            recompute=False,
            session=session,
            segments=parse_segments([{"key": "hostile", "name": HOSTILE, "rules": []}]),
            now=datetime.now(UTC),
        )
    sign_in()
    html = client.get("/ui/reports").text
    assert HOSTILE not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "hostile" in rows_of(html)


def test_series_lines_break_at_unknown_days_and_keep_the_scale() -> None:
    lines = series_lines([1.0, 5.0, None, 3.0], low=1, high=5, width=30, height=12)
    assert len(lines) == 2
    first = [tuple(map(float, p.split(","))) for p in lines[0].split()]
    assert first == [(0.0, 10.0), (10.0, 2.0)]  # 1 at the bottom, 5 at the top (2 px padding)
    tick = [tuple(map(float, p.split(","))) for p in lines[1].split()]
    assert tick == [(24.0, 6.0), (30.0, 6.0)]  # a lone day: a short tick kept inside the box
    assert series_lines([None, None], low=0, high=1) == []
