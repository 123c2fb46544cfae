"""`segmentflow sla import` and `sla select` against a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from segmentflow.services.membership import recompute_all
from tests.sla.test_ticket_sla import POLICIES
from tests.temporal.helpers import contexts, load
from tests.test_cli import run, write

BUSINESS = {
    "key": "vip-office",
    "conditions": {"segments_any": ["vip"], "priority": ["urgent"]},
    "targets": {"urgent": {"first_reply": "PT2H", "resolution": "PT8H"}},
    "calendar": {
        "timezone": "Europe/Berlin",
        "hours": {d: ["09:00-17:00"] for d in ("mon", "tue", "wed", "thu", "fri")},
        "holidays": ["2026-12-25"],
    },
}


def _db(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


@pytest.fixture
def loaded(engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    load(engine, contexts(3))
    recompute_all(engine)
    code, out, err = run(
        capsys,
        "--database-url",
        _db(engine),
        "sla",
        "import",
        str(write(tmp_path, "p.json", [BUSINESS, *POLICIES])),
    )
    assert (code, err) == (0, "")
    assert "vip-office, vip, standard" in out
    return _db(engine)


def _select(capsys: pytest.CaptureFixture[str], url: str, *args: str) -> tuple[int, Any, str]:
    code, out, err = run(capsys, "--database-url", url, "sla", "select", *args)
    return code, json.loads(out) if code == 0 else None, err


def test_select_prints_the_vip_policy_with_business_hour_due_times(
    loaded: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, result, _ = _select(
        capsys, loaded, "--contact", "u0", "--priority", "urgent", "--created-at", "2026-11-27T16:30:00+01:00"
    )
    assert code == 0
    assert result == {
        "policy": "vip-office",
        "targets": {
            "first_reply": {"dueAt": "2026-11-30T09:30:00Z", "businessMinutes": 120},  # Monday 10:30 Berlin
            "resolution": {"dueAt": "2026-11-30T15:30:00Z", "businessMinutes": 480},  # Monday 16:30
        },
    }


def test_select_gives_a_regular_contact_the_next_policy_and_none_without_targets(
    loaded: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, result, _ = _select(
        capsys, loaded, "--contact", "u1", "--priority", "normal", "--created-at", "2026-11-27T16:30:00Z"
    )
    assert (code, result["policy"]) == (0, "standard")
    assert result["targets"]["first_reply"] == {"dueAt": "2026-11-28T00:30:00Z", "businessMinutes": 480}
    code, result, _ = _select(capsys, loaded, "--priority", "low", "--created-at", "2026-11-27T16:30:00Z")
    assert result == {"policy": "standard", "targets": {}}


def test_select_states_no_match_explicitly(
    engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load(engine, contexts(3))  # the policy names "vip": a stored segment
    url = _db(engine)
    assert (
        run(capsys, "--database-url", url, "sla", "import", str(write(tmp_path, "p.json", [BUSINESS])))[0]
        == 0
    )
    code, result, _ = _select(
        capsys, url, "--contact", "nobody", "--priority", "urgent", "--created-at", "2026-11-27T16:30:00Z"
    )
    assert (code, result) == (0, {"policy": None, "targets": {}})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--priority", "p1", "--created-at", "2026-11-27T16:30:00Z"], "--priority: Input should be"),
        (
            ["--priority", "low", "--created-at", "2026-11-27T16:30:00"],
            "--created-at: Input should have timezone",
        ),
        (["--priority", "low", "--created-at", "yesterday"], "--created-at:"),
    ],
)
def test_select_refuses_bad_options_with_status_2(
    loaded: str, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, _, err = _select(capsys, loaded, *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_import_refuses_a_bad_file_and_keeps_the_stored_policies(
    loaded: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = [POLICIES[0], {**POLICIES[1], "calendar": {"timezone": "Europe/Berlin", "hours": {}}}]
    code, _, err = run(
        capsys, "--database-url", loaded, "sla", "import", str(write(tmp_path, "bad.json", bad))
    )
    assert code == 2
    assert 'policy 1 ("standard"): calendar:' in err and "opening hours" in err
    code, out, _ = run(capsys, "--database-url", loaded, "sla", "list")
    assert [p["key"] for p in json.loads(out)] == ["vip-office", "vip", "standard"]
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    code, _, err = run(capsys, "--database-url", loaded, "sla", "import", str(broken))
    assert code == 2 and "not valid JSON" in err


def test_demo_shows_a_vip_and_a_regular_ticket_getting_different_policies(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = run(capsys, "demo", "--database-url", f"sqlite:///{tmp_path / 'demo.db'}", "--no-temporal")
    assert code == 0
    rows = {
        line.split()[1]: line.split("│")[2:5]
        for line in out.splitlines()
        if line.startswith(("│ VIP ", "│ regular "))
    }
    assert rows["VIP"][0].strip() == "vip" and "Fri 17:00 (30 min)" in rows["VIP"][1]
    # Friday 16:30 in Berlin plus two business hours of 09:00-17:00 is Monday 10:30.
    assert rows["regular"][0].strip() == "standard" and "Mon 10:30 (120 min)" in rows["regular"][1]


def test_import_refuses_a_policy_naming_an_unknown_segment(
    loaded: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = [*POLICIES, {**BUSINESS, "key": "ghost", "conditions": {"segments_none": ["vip", "no-such"]}}]
    code, _, err = run(capsys, "--database-url", loaded, "sla", "import", str(write(tmp_path, "b.json", bad)))
    assert code == 2
    assert err.count("\n") == 1 and 'policy 2 ("ghost"): unknown segment no-such' in err
    code, out, _ = run(capsys, "--database-url", loaded, "sla", "list")
    assert [p["key"] for p in json.loads(out)] == ["vip-office", "vip", "standard"]  # nothing written
