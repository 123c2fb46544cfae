"""The `segmentflow` command end to end, in process, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from segmentflow.cli import main

SEGMENTS = [
    {"key": "vip", "rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["vip"]}]}]},
    {
        "key": "orgs",
        "rules": [
            {
                "clauses": [
                    {"contextKind": "organization", "attribute": "seats", "op": "greaterThan", "values": [10]}
                ]
            }
        ],
    },
    {
        "key": "vip-org",
        "rules": [
            {
                "clauses": [
                    {"op": "segmentMatch", "values": ["vip"]},
                    {"op": "segmentMatch", "values": ["orgs"]},
                ]
            }
        ],
    },
]
CONTEXTS = [
    {"key": "u1", "plan": "vip"},
    {"kind": "organization", "key": "o:1", "seats": 50},
    {"kind": "multi", "user": {"key": "u2", "plan": "vip"}, "organization": {"key": "o%2", "seats": 11}},
    {"kind": "user", "key": "u3", "plan": "free"},
]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write(tmp_path: Path, name: str, content: Any) -> Path:
    path = tmp_path / name
    if name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(c) + "\n" for c in content))
    else:
        path.write_text(json.dumps(content))
    return path


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    return write(tmp_path, "segments.json", SEGMENTS), write(tmp_path, "contexts.jsonl", CONTEXTS)


def test_evaluate_prints_one_line_per_context_with_fully_qualified_keys(
    capsys: pytest.CaptureFixture[str], files: tuple[Path, Path]
) -> None:
    code, out, _ = run(capsys, "evaluate", "--segments", str(files[0]), "--contexts", str(files[1]))
    assert code == 0
    assert [json.loads(line) for line in out.splitlines()] == [
        {"key": "u1", "segments": ["vip"]},
        {"key": "organization:o%3A1", "segments": ["orgs"]},
        {"key": "organization:o%252:user:u2", "segments": ["orgs", "vip", "vip-org"]},
        {"key": "u3", "segments": []},
    ]


def test_evaluate_stops_at_a_bad_line_naming_file_and_line(
    capsys: pytest.CaptureFixture[str], files: tuple[Path, Path]
) -> None:
    files[1].write_text('{"key": "u1"}\n{not json\n{"key": "u2"}\n')
    code, _out, err = run(capsys, "evaluate", "--segments", str(files[0]), "--contexts", str(files[1]))
    assert code == 2
    assert f"{files[1]}:2: not valid JSON" in err
    assert "Traceback" not in err
    assert err.count("\n") == 1


def test_evaluate_skip_invalid_reports_each_bad_line_and_goes_on(
    capsys: pytest.CaptureFixture[str], files: tuple[Path, Path]
) -> None:
    files[1].write_text(
        '{"key": "u1", "plan": "vip"}\n[1]\n{"kind": "user"}\n{"key": "u2", "name": 5}\n'
        '{"kind": "kind", "key": "k"}\n{"key": "u3"}\n'
    )
    code, out, _ = run(
        capsys, "evaluate", "--segments", str(files[0]), "--contexts", str(files[1]), "--skip-invalid"
    )
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0] == {"key": "u1", "segments": ["vip"]}
    assert [line["line"] for line in lines[1:5]] == [2, 3, 4, 5]
    assert "key" in lines[2]["error"] and "name" in lines[3]["error"] and "kind" in lines[4]["error"]
    assert lines[5] == {"key": "u3", "segments": []}


@pytest.mark.parametrize(
    ("segment", "message"),
    [
        (
            {"key": "s", "rules": [{"clauses": [{"attribute": "a", "op": "isIn", "values": [1]}]}]},
            'segment "s" rule 0 clause 0: unknown operator "isIn"',
        ),
        (
            {"key": "s", "rules": [{}, {"clauses": [{"attribute": "a", "op": "matches", "values": ["("]}]}]},
            'segment "s" rule 1 clause 0: matches: bad regex',
        ),
        (
            {"key": "s", "rules": [{"clauses": [{"attribute": "a", "op": "in", "values": "x"}]}]},
            'segment "s" rule 0 clause 0 field "values"',
        ),
        (
            {"key": "s", "rules": [{"clauses": [{"op": "segmentMatch", "values": ["nope"]}]}]},
            'segment "s" rule 0 clause 0: segmentMatch refers to missing segment "nope"',
        ),
        ({"key": "s", "rules": [{"clauses": [{"op": "segmentMatch", "values": ["s"]}]}]}, "cycle: s -> s"),
    ],
)
def test_evaluate_refuses_bad_segments_with_a_message_naming_the_place(
    capsys: pytest.CaptureFixture[str], files: tuple[Path, Path], segment: dict[str, Any], message: str
) -> None:
    files[0].write_text(json.dumps([segment]))
    code, out, err = run(capsys, "evaluate", "--segments", str(files[0]), "--contexts", str(files[1]))
    assert code == 2
    assert out == ""
    assert message in err and str(files[0]) in err


WARNED = [
    {
        "key": "vip",
        "rules": [
            {
                "clauses": [
                    {"attribute": "plan", "op": "in", "values": ["vip"]},
                    {"attribute": "version", "op": "semVerLessThan", "values": ["v2.0.0", "3.0.0"]},
                ]
            }
        ],
    },
    {
        "key": "old",
        "rules": [
            {"clauses": [{"attribute": "joined", "op": "before", "values": ["not-a-date"], "negate": True}]}
        ],
    },
]
WARNINGS = [
    'segment "vip" rule 0 clause 1: '
    "semVerLessThan: 'v2.0.0' is not a valid semantic version; it never matches",
    'segment "old" rule 0 clause 0: '
    "before: 'not-a-date' is not a valid date (epoch milliseconds, or RFC 3339 with a time and an offset); "
    "it never matches",
]
WARNED_CONTEXTS = [
    {"key": "u1", "plan": "vip", "version": "2.5.0", "joined": 1},
    {"key": "u2", "plan": "vip", "version": "v2.0.0"},
    {"key": "u3", "plan": "vip", "version": "3.5.0", "joined": "2020-01-01T00:00:00Z"},
]


def test_evaluate_loads_never_matching_values_with_one_warning_line_each(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    segments = write(tmp_path, "warned.json", WARNED)
    contexts = write(tmp_path, "warned.jsonl", WARNED_CONTEXTS)
    code, out, err = run(capsys, "evaluate", "--segments", str(segments), "--contexts", str(contexts))
    assert code == 0
    assert err.splitlines() == WARNINGS
    # "v2.0.0" never matches, "3.0.0" still does; the negated bad date matches any present `joined`.
    assert [json.loads(line) for line in out.splitlines()] == [
        {"key": "u1", "segments": ["old", "vip"]},
        {"key": "u2", "segments": []},
        {"key": "u3", "segments": ["old"]},
    ]


def test_segments_import_keeps_never_matching_values_and_warns(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, engine: Engine, database_url: str
) -> None:
    db = ("--database-url", database_url)
    segments = write(tmp_path, "warned.json", WARNED)
    code, out, err = run(capsys, *db, "segments", "import", str(segments))
    assert code == 0, err
    assert err.splitlines() == WARNINGS
    assert "vip (v1)" in out
    _, exported, _ = run(capsys, *db, "segments", "export")
    stored = {s["key"]: s for s in json.loads(exported)}
    assert stored["vip"]["rules"][0]["clauses"][1]["values"] == ["v2.0.0", "3.0.0"]  # imported unchanged
    run(capsys, *db, "contacts", "import", str(write(tmp_path, "warned.jsonl", WARNED_CONTEXTS)))
    _, members, _ = run(capsys, *db, "memberships", "export")
    _, evaluated, _ = run(
        capsys, "evaluate", "--segments", str(segments), "--contexts", str(tmp_path / "warned.jsonl")
    )
    assert members == evaluated


def test_segments_lint_prints_warnings_and_exits_0_when_there_are_only_warnings(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    segments = write(tmp_path, "warned.json", WARNED)
    code, out, err = run(capsys, "segments", "lint", str(segments))
    assert code == 0
    assert err.splitlines() == WARNINGS
    assert out.strip() == f"{segments}: 2 segment(s), 2 warning(s), 0 error(s)"


def test_segments_lint_reports_every_error_and_warning_exits_2_and_writes_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, engine: Engine, database_url: str
) -> None:
    db = ("--database-url", database_url)
    run(capsys, *db, "segments", "import", str(write(tmp_path, "ok.json", SEGMENTS)))
    _, before, _ = run(capsys, *db, "segments", "export")
    bad = write(
        tmp_path,
        "bad.json",
        [
            *WARNED,
            {"key": "a", "rules": [{"clauses": [{"attribute": "x", "op": "isIn", "values": [1]}]}]},
            {"key": "b", "rules": [{"clauses": [{"attribute": "x", "op": "matches", "values": ["[a-"]}]}]},
            {"key": "c", "rules": [{"clauses": [{"attribute": "x", "op": "in", "values": "x"}]}]},
            {"key": "d", "rules": [{"clauses": [{"op": "segmentMatch", "values": ["nope"]}]}]},
        ],
    )
    code, out, err = run(capsys, "segments", "lint", str(bad))
    assert code == 2
    lines = err.splitlines()
    assert lines[:2] == WARNINGS
    errors = lines[2:]
    assert len(errors) == 4 and all(
        line.startswith(f"segmentflow: error: {bad}: segment ") for line in errors
    )
    assert {line.removeprefix(f"segmentflow: error: {bad}: ")[:11] for line in errors} == {
        f'segment "{key}"' for key in "abcd"
    }
    assert out.strip() == f"{bad}: 6 segment(s), 2 warning(s), 4 error(s)"
    _, after, _ = run(capsys, *db, "segments", "export")
    assert after == before


def test_malformed_segments_json_names_file_line_and_column(
    capsys: pytest.CaptureFixture[str], files: tuple[Path, Path]
) -> None:
    files[0].write_text('[{"key": "a",}]')
    code, _, err = run(capsys, "evaluate", "--segments", str(files[0]), "--contexts", str(files[1]))
    assert code == 2
    assert "not valid JSON" in err and "line 1 column" in err


def test_import_then_memberships_export_equals_evaluate(
    capsys: pytest.CaptureFixture[str], files: tuple[Path, Path], engine: Engine, database_url: str
) -> None:
    db = ("--database-url", database_url)
    assert run(capsys, *db, "segments", "import", str(files[0]))[0] == 0
    assert run(capsys, *db, "contacts", "import", str(files[1]))[0] == 0
    _, exported, _ = run(capsys, *db, "memberships", "export")
    _, evaluated, _ = run(capsys, "evaluate", "--segments", str(files[0]), "--contexts", str(files[1]))
    assert exported == evaluated


def test_refused_segment_import_leaves_the_store_exactly_as_it_was(
    capsys: pytest.CaptureFixture[str],
    files: tuple[Path, Path],
    engine: Engine,
    database_url: str,
    tmp_path: Path,
) -> None:
    db = ("--database-url", database_url)
    run(capsys, *db, "segments", "import", str(files[0]))
    _, before, _ = run(capsys, *db, "segments", "export")
    bad = write(
        tmp_path,
        "bad.json",
        [
            {"key": "vip", "rules": []},
            {"key": "new", "rules": [{"clauses": [{"attribute": "x", "op": "matches", "values": ["[a-"]}]}]},
        ],
    )
    code, _, err = run(capsys, *db, "segments", "import", str(bad))
    assert code == 2 and 'segment "new" rule 0 clause 0' in err
    # Removing "orgs" would strand vip-org's reference: refused too.
    dangling = write(
        tmp_path,
        "dangling.json",
        [{"key": "orgs", "rules": [{"clauses": [{"op": "segmentMatch", "values": ["vip-org"]}]}]}],
    )
    code, _, err = run(capsys, *db, "segments", "import", str(dangling))
    assert code == 2 and "cycle" in err
    _, after, _ = run(capsys, *db, "segments", "export")
    assert after == before


def test_reimport_bumps_version_and_recomputes_dependents(
    capsys: pytest.CaptureFixture[str],
    files: tuple[Path, Path],
    engine: Engine,
    database_url: str,
    tmp_path: Path,
) -> None:
    db = ("--database-url", database_url)
    run(capsys, *db, "segments", "import", str(files[0]))
    run(capsys, *db, "contacts", "import", str(files[1]))
    changed = write(
        tmp_path,
        "vip.json",
        [{"key": "vip", "rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["free"]}]}]}],
    )
    code, out, _ = run(capsys, *db, "segments", "import", str(changed))
    assert code == 0 and "vip (v2)" in out
    _, exported, _ = run(capsys, *db, "memberships", "export")
    rows = {json.loads(line)["key"]: json.loads(line)["segments"] for line in exported.splitlines()}
    assert rows["u3"] == ["vip"]
    assert rows["organization:o%252:user:u2"] == ["orgs"]  # left vip, so vip-org too


def test_check_computes_a_never_computed_contact_on_first_read(
    capsys: pytest.CaptureFixture[str], files: tuple[Path, Path], engine: Engine, database_url: str
) -> None:
    db = ("--database-url", database_url)
    run(capsys, *db, "segments", "import", str(files[0]))
    run(capsys, *db, "contacts", "import", str(files[1]), "--no-recompute")
    code, out, _ = run(capsys, *db, "check", "vip", "u1")
    assert code == 0
    result = json.loads(out)
    assert result["isMember"] is True and result["computedAt"] is not None
    code, out, _ = run(capsys, *db, "check", "vip-org", "u1")
    assert json.loads(out)["isMember"] is False


def test_check_unknown_segment_or_contact_is_a_clear_error(
    capsys: pytest.CaptureFixture[str], files: tuple[Path, Path], engine: Engine, database_url: str
) -> None:
    db = ("--database-url", database_url)
    run(capsys, *db, "segments", "import", str(files[0]))
    assert run(capsys, *db, "check", "nope", "u1")[2].strip() == 'segmentflow: error: unknown segment "nope"'
    assert run(capsys, *db, "check", "vip", "u9")[2].strip() == 'segmentflow: error: unknown contact "u9"'


def test_contacts_import_refuses_whole_file_on_a_bad_line(
    capsys: pytest.CaptureFixture[str], files: tuple[Path, Path], engine: Engine, database_url: str
) -> None:
    db = ("--database-url", database_url)
    files[1].write_text('{"key": "u1"}\n{"kind": "multi"}\n')
    code, _, err = run(capsys, *db, "contacts", "import", str(files[1]))
    assert code == 2 and f"{files[1]}:2: invalid context" in err
    _, exported, _ = run(capsys, *db, "memberships", "export")
    assert exported == ""


def test_recompute_single_segment_and_unknown_segment(
    capsys: pytest.CaptureFixture[str], files: tuple[Path, Path], engine: Engine, database_url: str
) -> None:
    db = ("--database-url", database_url)
    run(capsys, *db, "segments", "import", str(files[0]), "--no-recompute")
    run(capsys, *db, "contacts", "import", str(files[1]), "--no-recompute")
    code, out, _ = run(capsys, *db, "recompute", "--segment", "orgs")
    assert code == 0 and "entered=3" in out  # orgs: 2 contacts, vip-org (dependent): 1
    assert run(capsys, *db, "recompute", "--segment", "nope")[0] == 2


def test_recompute_over_several_processes_counts_what_one_process_counts(
    capsys: pytest.CaptureFixture[str], files: tuple[Path, Path], engine: Engine, database_url: str
) -> None:
    db = ("--database-url", database_url)
    run(capsys, *db, "segments", "import", str(files[0]), "--no-recompute")
    run(capsys, *db, "contacts", "import", str(files[1]), "--no-recompute")
    code, out, _ = run(capsys, *db, "recompute", "--processes", "2")
    assert code == 0 and "recomputed: contacts=" in out and "exited=0" in out
    first = out.strip().splitlines()[-1]
    assert " entered=0 " not in first
    code, out, _ = run(capsys, *db, "recompute")
    assert code == 0 and out.strip().splitlines()[-1] == first.split(" entered=")[0] + " entered=0 exited=0"
    assert run(capsys, *db, "recompute", "--processes", "0")[0] == 2


def test_db_reset_requires_yes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "--database-url", f"sqlite:///{tmp_path / 'x.db'}", "db", "reset")
    assert code == 2 and "--yes" in err


def test_demo_without_temporal_builds_a_fresh_database_and_prints_memberships(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = run(capsys, "demo", "--database-url", f"sqlite:///{tmp_path / 'demo.db'}", "--no-temporal")
    assert code == 0
    assert "vip-eu" in out and "recomputed: contacts=188" in out
    assert "workflow branch" not in out


def test_demo_runs_the_recompute_workflow_and_a_workflow_branching_on_is_member(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = run(capsys, "demo", "--database-url", f"sqlite:///{tmp_path / 'demo.db'}")
    assert code == 0, out
    assert "recomputed: contacts=188" in out and "workflow branch" in out
    # u-0005 is a VIP in the sample, u-0001 is not (see the membership table the demo prints).
    lines = {line.split()[1]: line for line in out.splitlines() if line.startswith("│ u-000")}
    assert "vip-welcome" in lines["u-0005"] and "vip," in lines["u-0005"]
    assert "vip-welcome" not in lines["u-0001"]


def test_unreachable_database_is_one_line_not_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        capsys, "--database-url", "postgresql://postgres@127.0.0.1:1/nowhere", "segments", "list"
    )
    assert code == 2
    assert err.startswith("segmentflow: error: database error:") and "Traceback" not in err


def test_the_command_loads_no_database_code_until_a_command_needs_it() -> None:
    probe = (
        "import sys, segmentflow.cli; "
        "print(sorted(m for m in ('sqlalchemy', 'sqlmodel', 'alembic') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_segment_files_with_non_finite_numbers_are_refused_naming_the_place(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, engine: Engine, database_url: str, constant: str
) -> None:
    path = tmp_path / "segments.json"
    clause = f'{{"attribute": "age", "op": "greaterThan", "values": [{constant}]}}'
    path.write_text(f'[{{"key": "a", "rules": [{{"clauses": [\n{clause}]}}]}}]')
    code, _, err = run(capsys, "--database-url", database_url, "segments", "import", str(path))
    assert code == 2
    assert f"{path}: not valid JSON: {constant} is not valid JSON: numbers must be finite at line 2" in err
    _, listed, _ = run(capsys, "--database-url", database_url, "segments", "list")
    assert '"a"' not in listed and " a " not in listed


def test_contact_lines_with_non_finite_numbers_or_lone_surrogates_are_refused(
    capsys: pytest.CaptureFixture[str], files: tuple[Path, Path], engine: Engine, database_url: str
) -> None:
    db = ("--database-url", database_url)
    files[1].write_text('{"key": "u1"}\n{"key": "u2", "score": NaN}\n')
    code, _, err = run(capsys, *db, "contacts", "import", str(files[1]))
    assert code == 2 and f"{files[1]}:2: not valid JSON: NaN is not valid JSON" in err
    files[1].write_text('{"key": "u1", "name": "\\ud800"}\n')
    code, _, err = run(capsys, *db, "contacts", "import", str(files[1]))
    assert code == 2
    assert f"{files[1]}:1: not valid JSON: a string at name holds a lone UTF-16 surrogate" in err
    _, exported, _ = run(capsys, *db, "memberships", "export")
    assert exported == ""


def test_python_dash_m_loads_the_command_module_once(tmp_path: Path) -> None:
    """`python -m segmentflow.cli` and the command modules importing `segmentflow.cli` share one module (one
    `_state`, so every engine opened is disposed)."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    for module in ("segmentflow.cli", "segmentflow"):
        result = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", module, "--database-url", url, "sla", "list"],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
        imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line]
        assert "segmentflow.cli.sla" in imported  # the probe sees the command modules' imports
        assert imported.count("segmentflow.cli") == 1
