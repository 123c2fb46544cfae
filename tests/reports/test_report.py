"""The segment report: each conversation under the segments its contact was in at its time (rewound from
the memberships through the change feed), "-" for the rest, overall once per conversation; members at
`until`; CSAT, handoff and SLA figures; the daily series; the HTTP API (JSON and CSV) and the CLI."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from segmentflow.services.reporting import ReportError, segment_report
from tests.reports.conftest import at, record, sla_event, token
from tests.test_cli import run


def event(id: str, contact: str | None, days: float, **extra: Any) -> dict[str, Any]:
    return {"id": id, "contactKey": contact, "at": at(days).isoformat(), **extra}


EVENTS = [
    event("e1", "alice", 2, csat=5, handoff=False),  # vip + eu
    event("e2", "alice", 4, csat=2, handoff=True),  # eu (left vip on day 3)
    event("e3", "bob", 2, csat=4, handoff=True),  # eu
    event("e4", "bob", 4),  # "-": left eu on day 3
    event("e5", None, 2, csat=1),  # "-": anonymous
    event("e6", "ghost", 2),  # "-": never stored
    event("e7", "dave", 2),  # "-": stored only on day 3
    event("e8", "dave", 4),  # vip
    event("e9", "carol", 2),  # "-": in no segment
    event("e10", "alice", 1),  # vip + eu: at the very instant she entered
    event("e11", "bob", 3),  # "-": at the very instant he exited
    event("e12", "alice", 40),  # outside the window
]


def report(engine: Engine, since: float = 0, until: float = 5, interval: Any = None) -> dict[str, Any]:
    with Session(engine) as session, session.begin():  # as the API and CLI run it: the rollup is kept
        body = segment_report(session=session, since=at(since), until=at(until), interval=interval).to_json()
    return body


def rows(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["segment"]: row for row in body["data"]}


def test_conversations_count_under_the_segments_of_their_time_even_when_recorded_late(world: Engine) -> None:
    record(world, *EVENTS)
    body = report(world)
    by_key = rows(body)
    assert [row["segment"] for row in body["data"]] == ["eu", "vip", "-"]
    assert {k: r["conversations"] for k, r in by_key.items()} == {"vip": 3, "eu": 4, "-": 6}
    assert body["overall"]["conversations"] == 11  # alice's two vip+eu conversations count once here
    assert body["overall"]["segment"] is None
    assert (by_key["vip"]["name"], by_key["eu"]["name"]) == ("VIPs", "Europe")


def test_csat_and_handoff_figures_and_nulls_when_nothing_to_divide(world: Engine) -> None:
    record(world, *EVENTS)
    by_key = rows(report(world))
    assert by_key["eu"]["handoffRate"] == pytest.approx(2 / 3)
    assert by_key["eu"]["csat"] == {
        "responses": 3,
        "average": pytest.approx(11 / 3),
        "satisfied": pytest.approx(2 / 3),
    }
    assert by_key["vip"]["handoffRate"] == 0.0
    assert by_key["vip"]["csat"] == {"responses": 1, "average": 5.0, "satisfied": 1.0}
    assert by_key["-"]["handoffRate"] is None  # no "-" conversation says whether it was handed off
    assert by_key["-"]["csat"] == {"responses": 1, "average": 1.0, "satisfied": 0.0}
    empty = rows(report(world, since=10, until=11))
    assert empty["vip"]["conversations"] == 0
    assert empty["vip"]["handoffRate"] is None
    assert empty["vip"]["csat"] == {"responses": 0, "average": None, "satisfied": None}


def test_members_are_counted_at_until_not_now(world: Engine) -> None:
    later = report(world, until=5)
    assert {k: r["members"] for k, r in rows(later).items()} == {"vip": 1, "eu": 1, "-": None}
    assert later["overall"]["members"] == 2
    earlier = report(world, until=2)
    assert {k: r["members"] for k, r in rows(earlier).items()} == {"vip": 1, "eu": 2, "-": None}
    assert earlier["overall"]["members"] == 2  # alice and bob: distinct contacts


def test_a_segment_deleted_since_keeps_its_history(world: Engine) -> None:
    from segmentflow.services.segment_admin import delete_segment

    record(world, *EVENTS)
    with Session(world) as session, session.begin():
        delete_segment(session=session, ref="vip", expected_version=None, now=at(6))
    by_key = rows(report(world))
    assert by_key["vip"]["conversations"] == 3
    assert by_key["vip"]["members"] == 1  # dave, at until (day 5)
    assert by_key["vip"]["name"] == "vip"


def test_sla_events_count_by_the_segments_when_they_fired(world: Engine) -> None:
    sla_event(world, "t1", "warning", ["vip", "eu"], at(2))
    sla_event(world, "t2", "breach", ["eu"], at(2))
    sla_event(world, "t3", "breach", [], at(4))
    sla_event(world, "t4", "breach", ["vip"], at(9))  # outside the window
    body = report(world)
    by_key = rows(body)
    assert by_key["vip"]["sla"] == {"warnings": 1, "breaches": 0}
    assert by_key["eu"]["sla"] == {"warnings": 1, "breaches": 1}
    assert by_key["-"]["sla"] == {"warnings": 0, "breaches": 1}
    assert body["overall"]["sla"] == {"warnings": 1, "breaches": 2}


def test_daily_series_per_utc_day_adds_up_to_the_row(world: Engine) -> None:
    record(world, *EVENTS)
    sla_event(world, "t1", "warning", ["eu"], at(2.5))
    body = report(world, since=0.5, until=4.5, interval="day")
    eu = rows(body)["eu"]
    assert [point["date"] for point in eu["series"]] == [
        "2026-03-01",
        "2026-03-02",
        "2026-03-03",
        "2026-03-04",
        "2026-03-05",
    ]
    assert [point["conversations"] for point in eu["series"]] == [0, 1, 2, 0, 1]
    # at the end of each day: they entered at midnight ending day 1; bob left at the one ending day 3
    assert [point["members"] for point in eu["series"]] == [2, 2, 1, 1, 1]
    assert eu["series"][2]["sla"] == {"warnings": 1, "breaches": 0}
    assert sum(point["conversations"] for point in eu["series"]) == eu["conversations"]
    assert [point["conversations"] for point in body["overall"]["series"]] == [0, 1, 6, 1, 3]
    assert "series" not in rows(report(world))["eu"]


def test_an_empty_or_too_long_window_is_refused(world: Engine) -> None:
    with Session(world) as session, pytest.raises(ReportError, match="before"):
        segment_report(session=session, since=at(2), until=at(2))
    with Session(world) as session, pytest.raises(ReportError, match="366 days"):
        segment_report(session=session, since=at(0), until=at(400), interval="day")


def test_api_report_needs_reports_read_and_answers_json_and_csv(world: Engine, client: TestClient) -> None:
    record(world, *EVENTS)
    params = {"since": at(0).isoformat(), "until": at(5).isoformat()}
    assert client.get("/reports/segments", params=params).status_code == 401
    denied = client.get("/reports/segments", params=params, headers=token(world, "segments:read"))
    assert denied.status_code == 403
    assert "reports:read" in denied.json()["detail"]
    headers = token(world, "reports:read")
    response = client.get("/reports/segments", params=params, headers=headers)
    assert response.status_code == 200
    assert response.json() == report(world)
    assert set(response.json()) == {"since", "until", "data", "overall"}
    assert set(response.json()["overall"]) == {
        "segment",
        "name",
        "members",
        "conversations",
        "handoffRate",
        "csat",
        "sla",
    }
    as_csv = client.get("/reports/segments", params=params, headers={**headers, "Accept": "text/csv"})
    assert as_csv.headers["content-type"].startswith("text/csv")
    lines = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [(line["segment"], line["conversations"]) for line in lines] == [
        ("eu", "4"),
        ("vip", "3"),
        ("-", "6"),
        ("*", "11"),
    ]
    bad = client.get("/reports/segments", params={**params, "until": params["since"]}, headers=headers)
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["query", "since"]


def test_segments_read_keys_still_read_the_membership_report(world: Engine, client: TestClient) -> None:
    response = client.get("/contacts/segments/report", headers=token(world, "segments:read"))
    assert response.status_code == 200


def test_cli_report_json_is_the_api_body_and_csv_and_table_work(
    world: Engine, client: TestClient, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    record(world, *EVENTS)
    window = ("--since", at(0).isoformat(), "--until", at(5).isoformat())
    code, out, err = run(
        capsys, "--database-url", database_url, "report", *window, "--format", "json", "--interval", "day"
    )
    assert code == 0, err
    params = {"since": at(0).isoformat(), "until": at(5).isoformat(), "interval": "day"}
    api = client.get("/reports/segments", params=params, headers=token(world, "reports:read")).json()
    assert json.loads(out) == api
    code, out, _ = run(capsys, "--database-url", database_url, "report", *window, "--format", "csv")
    assert code == 0
    assert out.splitlines()[0].startswith("segment,name,date,members,conversations,handoffRate")
    code, out, _ = run(capsys, "--database-url", database_url, "report", *window)
    assert code == 0
    assert "overall" in out and "│ eu " in out and "│ -  " in out
    code, _, err = run(
        capsys, "--database-url", database_url, "report", "--since", "yesterday", "--until", "now"
    )
    assert code == 2
    assert "--since" in err


def test_an_event_recorded_after_a_report_is_counted_by_the_next(world: Engine) -> None:
    record(world, *EVENTS)
    assert rows(report(world))["vip"]["conversations"] == 3
    record(world, event("late", "alice", 2.5, csat=4))  # a week late, for day 2: she was a vip then
    by_key = rows(report(world))
    assert by_key["vip"]["conversations"] == 4
    assert by_key["vip"]["csat"]["responses"] == 2


def test_a_membership_change_written_later_for_an_earlier_time_rebuilds_the_days_after_it(
    world: Engine,
) -> None:
    from tests.reports.conftest import save_contacts

    record(world, *EVENTS, event("c-late", "carol", 2.7))
    assert rows(report(world))["vip"]["conversations"] == 3
    # carol's change reaches the feed only now, stamped day 2.5 (a recompute that ran then, committed late)
    save_contacts(world, [{"key": "carol", "plan": "vip", "region": "us"}], at(2.5))
    by_key = rows(report(world))
    assert by_key["vip"]["conversations"] == 4  # c-late, at day 2.7
    assert by_key["-"]["conversations"] == 6  # e9 (carol at day 2) still counts under "-"


def test_the_rollup_gives_what_live_attribution_gives(world: Engine) -> None:
    from segmentflow.services.reporting import live_figures

    record(world, *EVENTS)
    whole = report(world, since=0, until=5, interval="day")  # whole days: from the rollup
    with Session(world) as session:
        live = live_figures(session, at(0), at(5), True)
    for row in whole["data"]:
        for point in row["series"]:
            expected = live.get((row["segment"], point["date"]))
            assert point["conversations"] == (expected.conversations if expected else 0)


def test_days_a_later_change_cannot_affect_are_checked_once_not_rebuilt(world: Engine) -> None:
    import sqlalchemy as sa

    from segmentflow.db.tables import change_table, report_day_table
    from tests.reports.conftest import save_contacts

    record(world, *EVENTS)
    report(world, since=0, until=3)  # builds days 0-2
    save_contacts(world, [{"key": "carol", "plan": "vip", "region": "us"}], at(4.5))  # after them all
    with world.connect() as conn:
        top = conn.scalar(sa.select(sa.func.max(change_table.c.seq)))
        before = dict(conn.execute(sa.select(report_day_table.c.day, report_day_table.c.feed_seq)).all())
    assert all(seq < top for seq in before.values())
    assert rows(report(world, since=0, until=3))["vip"]["conversations"] == 2  # e1 and e10
    with world.connect() as conn:
        after = dict(conn.execute(sa.select(report_day_table.c.day, report_day_table.c.feed_seq)).all())
    window = {day: seq for day, seq in after.items() if "2026-03-01" <= day <= "2026-03-03"}
    assert window == {"2026-03-02": top, "2026-03-03": top}  # checked, not rebuilt: days with events only
    assert after["2026-04-10"] == before["2026-04-10"]  # outside the window: untouched


def test_csv_with_a_daily_series_has_a_line_per_day_after_each_row(world: Engine, client: TestClient) -> None:
    record(world, *EVENTS)
    params = {"since": at(0).isoformat(), "until": at(2).isoformat(), "interval": "day"}
    headers = {**token(world, "reports:read"), "Accept": "text/csv"}
    lines = list(
        csv.DictReader(io.StringIO(client.get("/reports/segments", params=params, headers=headers).text))
    )
    eu = [(line["date"], line["conversations"], line["members"]) for line in lines if line["segment"] == "eu"]
    assert eu == [("", "1", "2"), ("2026-03-01", "0", "2"), ("2026-03-02", "1", "2")]
    dash = next(line for line in lines if line["segment"] == "-" and not line["date"])
    assert (dash["members"], dash["handoffRate"], dash["csatAverage"]) == ("", "", "")
    assert lines[-1]["segment"] == "*"
