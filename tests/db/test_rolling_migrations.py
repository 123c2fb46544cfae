"""Schema changes stay expand/contract while workers of two releases run side by side: a worker never fails
on a schema a newer worker migrated, and a migration's upgrade only adds (README, "Deploying changes")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import sqlalchemy as sa

from segmentflow.db.engine import make_engine, migrate
from tests.test_cli import run

VERSIONS = Path(__file__).resolve().parents[2] / "src/segmentflow/db/migrations/versions"
#: Migrations from before the rule (the initial schema of each feature).
BEFORE_THE_RULE = {"0001", "0002", "0003", "0004", "0005", "0006"}
#: Operations that take away what an older worker may still read or write.
CONTRACTING = {"drop_table", "drop_column", "drop_constraint", "rename_table", "alter_column", "execute"}


def test_a_schema_newer_than_the_code_is_left_as_it_is(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/rolling.db")
    try:
        assert migrate(engine) is True
        with engine.begin() as conn:  # a worker of the next release migrated to a revision we do not know
            conn.execute(sa.text("UPDATE alembic_version SET version_num = 'next-release'"))
        assert migrate(engine) is False  # an older worker restarting mid-deploy starts anyway
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == "next-release"
    finally:
        engine.dispose()


def test_db_upgrade_migrates_and_leaves_a_newer_schema_alone(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    code, out, _ = run(capsys, "--database-url", url, "db", "upgrade")
    assert code == 0 and "up to date" in out
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = 'next-release'"))
    finally:
        engine.dispose()
    code, out, _ = run(capsys, "--database-url", url, "db", "upgrade")
    assert code == 0 and "newer than this release" in out


def _contracting_calls(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    upgrade = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "upgrade")
    return [
        node.func.attr
        for node in ast.walk(upgrade)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in CONTRACTING
    ]


def test_migrations_only_expand_unless_marked_as_a_contraction() -> None:
    """A later migration that drops, renames or alters must say `contract:` in its docstring, naming the
    release whose workers no longer use what it removes (so it ships only once they are all gone)."""
    offending = {}
    for path in sorted(VERSIONS.glob("[0-9]*.py")):
        if path.name[:4] in BEFORE_THE_RULE:
            continue
        calls = _contracting_calls(path)
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        if calls and "contract:" not in docstring:
            offending[path.name] = calls
    assert offending == {}


def test_the_guard_sees_a_contraction(tmp_path: Path) -> None:
    migration = tmp_path / "0099_drop.py"
    migration.write_text(
        '"""Drop a column."""\nfrom alembic import op\n\n\ndef upgrade():\n    op.drop_column("t", "c")\n'
    )
    assert _contracting_calls(migration) == ["drop_column"]
