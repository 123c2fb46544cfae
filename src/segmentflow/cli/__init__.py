"""The `segmentflow` command: a thin typer layer over the rules engine and the services.

Bad input exits with status 2 and one line on stderr naming the file, line or segment; nothing is written
by a refused import. Database commands bring the schema up to date first (migrations are idempotent).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from segmentflow.inputs import (
    InputError,
    iter_context_lines,
    lint_segments_file,
    read_compiled_segments,
    read_contexts,
    read_segments,
    segment_warnings,
)
from segmentflow.rules import ContextError, RuleError, RuleWarning, memberships
from segmentflow.settings import Settings

if TYPE_CHECKING:  # the database layer is imported by the commands that use it, so `evaluate` starts fast
    from sqlalchemy.engine import Engine

    from segmentflow.services.membership import RecomputeCounts

__all__ = ["app", "main"]

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Contact segments: LaunchDarkly rules, precomputed SQL memberships.",
)
segments_app = typer.Typer(no_args_is_help=True, help="Import, list and export segments.")
contacts_app = typer.Typer(no_args_is_help=True, help="Import contacts (LaunchDarkly contexts).")
memberships_app = typer.Typer(no_args_is_help=True, help="Read precomputed memberships.")
db_app = typer.Typer(no_args_is_help=True, help="Database administration.")
app.add_typer(segments_app, name="segments")
app.add_typer(contacts_app, name="contacts")
app.add_typer(memberships_app, name="memberships")
app.add_typer(db_app, name="db")

err = Console(stderr=True)
out = Console()

DatabaseUrl = Annotated[
    str | None, typer.Option("--database-url", help="Overrides SEGMENTFLOW_DATABASE_URL.")
]


class _State:
    database_url: str | None = None
    engines: list[Engine] = []  # disposed when the command ends


_state = _State()


@app.callback()
def _root(database_url: DatabaseUrl = None) -> None:
    _state.database_url = database_url


def _engine() -> Engine:
    from segmentflow.db.engine import migrate

    engine = _make_engine(_state.database_url or Settings().database_url)
    migrate(engine)
    return engine


def _make_engine(url: str) -> Engine:
    from segmentflow.db.engine import make_engine

    engine = make_engine(url)
    _state.engines.append(engine)
    return engine


def _now() -> datetime:
    return datetime.now(UTC)


@contextmanager
def _progress(total: int | None, label: str) -> Iterator[Callable[[int], None]]:
    """A progress bar on a terminal; silent when stderr is not a TTY."""
    if not err.is_terminal:
        yield lambda _n: None
        return
    with Progress(
        TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=True
    ) as progress:
        task = progress.add_task(label, total=total)
        yield lambda n: progress.advance(task, n)


def _print_counts(prefix: str, counts: RecomputeCounts) -> None:
    out.print(f"{prefix}: contacts={counts.contacts} entered={counts.entered} exited={counts.exited}")


def _recompute(engine: Engine, segment_keys: set[str] | None = None, processes: int = 1) -> RecomputeCounts:
    import sqlalchemy as sa
    from sqlmodel import Session

    from segmentflow.db.tables import contact_table
    from segmentflow.services.membership import recompute_all

    with Session(engine) as session:
        total = session.scalar(sa.select(sa.func.count()).select_from(contact_table))
    with _progress(total, "recompute") as advance:
        return recompute_all(
            engine,
            page_size=Settings().page_size,
            segment_keys=segment_keys,
            progress=advance,
            processes=processes,
        )


def _warn(warnings: Iterable[RuleWarning]) -> None:
    """One line per clause value that loads but never matches, on stderr, exactly as `str(warning)`."""
    for warning in warnings:
        sys.stderr.write(f"{warning}\n")
    sys.stderr.flush()


@app.command()
def evaluate(
    segments: Annotated[
        Path, typer.Option("--segments", help="JSON list of segments (LaunchDarkly format).")
    ],
    contexts: Annotated[Path, typer.Option("--contexts", help="JSON lines, one context per line.")],
    skip_invalid: Annotated[bool, typer.Option("--skip-invalid", help="Report bad lines and go on.")] = False,
) -> None:
    """Stateless: print {"key", "segments"} for each context line, in order. A clause value that never
    matches (a malformed version or date, a wrong type) is a warning line on stderr, not an error."""
    compiled = read_compiled_segments(segments)
    _warn(w for seg in compiled.values() for w in seg.warnings)
    write = sys.stdout.write
    dumps = json.dumps
    for number, item in iter_context_lines(contexts):
        if isinstance(item, str):
            if not skip_invalid:
                raise InputError(f"{contexts}:{number}: {item}")
            write(dumps({"line": number, "error": item}) + "\n")
            continue
        write(dumps({"key": item.fully_qualified_key, "segments": memberships(compiled, item)}) + "\n")
    sys.stdout.flush()


@app.command()
def check(segment: str, contact: str) -> None:
    """Is CONTACT (a fully-qualified key) in SEGMENT (key or id)? Reads the precomputed tables."""
    from sqlmodel import Session

    from segmentflow.services.membership import UnknownContactError, UnknownSegmentError, check_membership

    engine = _engine()
    with Session(engine) as session, session.begin():
        try:
            result = check_membership(session=session, segment_ref=segment, contact_key=contact)
        except (UnknownSegmentError, UnknownContactError) as exc:
            raise InputError(str(exc)) from None
    out.print_json(
        data={
            "segmentKey": result.segment_key,
            "segmentId": str(result.segment_id),
            "contactKey": result.contact_key,
            "isMember": result.is_member,
            "computedAt": result.computed_at.isoformat(),
        }
    )


@app.command()
def recompute(
    segment: Annotated[
        list[str] | None, typer.Option("--segment", help="Only this segment and its dependents.")
    ] = None,
    status: Annotated[
        bool,
        typer.Option(
            "--status",
            help="Recompute nothing: print the recompute Schedule's status on Temporal (runs, failures,"
            " skipped and missed runs).",
        ),
    ] = False,
    processes: Annotated[
        int,
        typer.Option(
            "--processes",
            min=1,
            help="Spread the recompute over N processes (reading and evaluating; on PostgreSQL writing too).",
        ),
    ] = 1,
) -> None:
    """Recompute stored memberships (all segments, or --segment KEY and what depends on it)."""
    if status:
        _recompute_status()
        return
    from sqlmodel import Session

    from segmentflow.services.segments import list_segments

    engine = _engine()
    keys = None
    if segment:
        with Session(engine) as session:
            known = {r.key for r in list_segments(session=session)}
        missing = [k for k in segment if k not in known]
        if missing:
            raise InputError(f'unknown segment "{missing[0]}"')
        keys = set(segment)
    _print_counts("recomputed", _recompute(engine, keys, processes))


def _recompute_status() -> None:
    """Print the recompute Schedule's status, one fact a line; exit 2 when there is no schedule."""
    import asyncio

    from temporalio.client import Client

    from segmentflow.plugins import RecomputeScheduleStatus, recompute_schedule_status

    settings = Settings()

    async def read() -> RecomputeScheduleStatus | None:
        client = await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace)
        return await recompute_schedule_status(client)

    try:
        found = asyncio.run(asyncio.wait_for(read(), timeout=30))
    except (RuntimeError, TimeoutError) as exc:
        raise InputError(f"cannot reach Temporal at {settings.temporal_address}: {exc}") from None
    if found is None:
        raise InputError(
            f"no recompute schedule on {settings.temporal_address} (namespace {settings.temporal_namespace});"
            " `python worker.py` creates it"
        )
    for line in found.lines():
        out.print(line, markup=False, highlight=False, soft_wrap=True)


@segments_app.command("import")
def segments_import(
    file: Path,
    no_recompute: Annotated[
        bool, typer.Option("--no-recompute", help="Store only; recompute later.")
    ] = False,
) -> None:
    """Upsert segments by key from a JSON list; the whole file is validated first, then applied at once,
    under the same write lock and version check as the API's writes."""
    from sqlmodel import Session

    from segmentflow.services.segment_admin import import_segments
    from segmentflow.services.segments import dependents_of, list_segments

    segments = read_segments(file)
    _warn(segment_warnings(segments))  # values kept that never match: reported, not refused
    engine = _engine()
    with Session(engine) as session, session.begin():
        try:
            saved = import_segments(session=session, segments=segments, now=_now(), recompute=False)
        except RuleError as exc:
            raise InputError(f"{file}: {exc}") from None
        summary = [(s.record.key, s.record.version) for s in saved]
        stored = [r.definition_model() for r in list_segments(session=session)]
    out.print(f"imported {len(summary)} segment(s): " + ", ".join(f"{k} (v{v})" for k, v in summary))
    if not no_recompute and summary:
        _print_counts("recomputed", _recompute(engine, dependents_of(stored, [k for k, _ in summary])))


@segments_app.command("delete")
def segments_delete(
    segment: str,
    if_version: Annotated[
        int | None, typer.Option("--if-version", help="Refuse unless the segment is at this version.")
    ] = None,
) -> None:
    """Delete SEGMENT (key or id) if nothing names it (segmentMatch, SLA policies, sequences, actions,
    instructions: they are listed otherwise, exit 2); its members get `exited` change events."""
    from sqlmodel import Session

    from segmentflow.services.membership import UnknownSegmentError
    from segmentflow.services.segment_admin import ConflictError, delete_segment

    engine = _engine()
    with Session(engine) as session, session.begin():
        try:
            key, exited = delete_segment(
                session=session, ref=segment, expected_version=if_version, now=_now()
            )
        except (UnknownSegmentError, ConflictError) as exc:
            raise InputError(str(exc)) from None
    out.print(f'deleted segment "{key}": {exited} member(s) exited', soft_wrap=True)


@segments_app.command("lint")
def segments_lint(file: Path) -> None:
    """Check a segments file as `segments import` would, writing nothing: each warning (a clause value that
    never matches) and each error on its own line on stderr, then a summary. Exit 0 with only warnings, 2 on
    any error. `segmentMatch` targets must be in the file."""
    count, errors, warnings = lint_segments_file(file)
    _warn(warnings)
    for error in errors:
        err.print(f"segmentflow: error: {file}: {error}", markup=False, highlight=False, soft_wrap=True)
    out.print(
        f"{file}: {count} segment(s), {len(warnings)} warning(s), {len(errors)} error(s)",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    if errors:
        raise SystemExit(2)


@segments_app.command("list")
def segments_list() -> None:
    """Segments with their version and member count."""
    from sqlmodel import Session

    from segmentflow.services.membership import member_counts
    from segmentflow.services.segments import list_segments

    engine = _engine()
    with Session(engine) as session:
        counts = member_counts(session=session)
        table = Table("key", "name", "version", "members", "updated")
        for r in list_segments(session=session):
            table.add_row(r.key, r.name, str(r.version), str(counts.get(r.id, 0)), r.updated_at.isoformat())
    out.print(table)


@segments_app.command("export")
def segments_export() -> None:
    """Print every stored segment as a JSON list (LaunchDarkly's format)."""
    from sqlmodel import Session

    from segmentflow.services.segments import list_segments

    engine = _engine()
    with Session(engine) as session:
        data = [r.definition_model().to_json() for r in list_segments(session=session)]
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


@contacts_app.command("import")
def contacts_import(
    file: Path,
    no_recompute: Annotated[
        bool, typer.Option("--no-recompute", help="Store only; recompute later.")
    ] = False,
) -> None:
    """Upsert contacts from JSON lines (one LaunchDarkly context per line), then recompute just them."""
    from sqlmodel import Session

    from segmentflow.services.contacts import upsert_contacts
    from segmentflow.services.membership import upsert_and_recompute
    from segmentflow.services.segments import load_index

    contexts = read_contexts(file)
    engine = _engine()
    with Session(engine) as session, session.begin():
        if no_recompute:
            ids = upsert_contacts(session=session, contexts=contexts, now=_now())
            out.print(f"imported {len(ids)} contact(s)")
        else:
            index = load_index(session=session)
            ids, counts = upsert_and_recompute(session=session, contexts=contexts, index=index, now=_now())
            out.print(f"imported {len(ids)} contact(s)")
            _print_counts("recomputed", counts)


@memberships_app.command("export")
def memberships_export() -> None:
    """One JSON line per stored contact: {"key", "segments"}, as `evaluate` prints."""
    from sqlmodel import Session

    from segmentflow.services.exports import iter_memberships

    engine = _engine()
    write = sys.stdout.write
    with Session(engine) as session:
        for key, segs in iter_memberships(session=session):
            write(json.dumps({"key": key, "segments": segs}) + "\n")
    sys.stdout.flush()


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Migrate the schema to this release (each worker does so at start, unless told not to)."""
    from segmentflow.db.engine import migrate

    engine = _make_engine(_state.database_url or Settings().database_url)
    if migrate(engine):
        out.print("database schema up to date")
    else:
        out.print("database schema is newer than this release: left as it is")


@db_app.command("reset")
def db_reset(yes: Annotated[bool, typer.Option("--yes", help="Confirm deleting every row.")] = False) -> None:
    """Drop and recreate every segmentflow table."""
    from segmentflow.db.engine import reset

    if not yes:
        raise InputError("db reset deletes every contact, segment and membership: pass --yes to confirm")
    engine = _make_engine(_state.database_url or Settings().database_url)
    reset(engine)
    out.print("database reset")


@app.command()
def demo(
    database_url: Annotated[str, typer.Option("--database-url", help="Where to build the demo.")] = (
        "sqlite:///segmentflow-demo.db"
    ),
    temporal: Annotated[
        bool, typer.Option("--temporal/--no-temporal", help="Run through an embedded Temporal dev server.")
    ] = True,
    serve: Annotated[
        bool, typer.Option("--serve", help="Then keep serving the operator console (/ui/) on the demo data.")
    ] = False,
    port: Annotated[int, typer.Option("--port", help="The console's TCP port (with --serve).")] = 8000,
    host: Annotated[str, typer.Option("--host", help="The interface to listen on (with --serve).")] = (
        "127.0.0.1"
    ),
) -> None:
    """Load the bundled sample into a fresh database, recompute (through Temporal by default: an embedded dev
    server, the recompute workflow, then a workflow branching on `isMember`), and print the memberships.
    With `--serve`, then serve the API and the operator console on the demo database until interrupted,
    printing the console's URL and a sign-in key (every scope)."""
    from sqlmodel import Session

    from segmentflow.db.engine import reset
    from segmentflow.sample import sample_path
    from segmentflow.services.contacts import get_contact, upsert_contacts
    from segmentflow.services.exports import iter_memberships
    from segmentflow.services.membership import list_contact_segments, recompute_all
    from segmentflow.services.segment_admin import import_segments
    from segmentflow.services.segments import list_segments

    engine = _make_engine(database_url)
    reset(engine)
    segments = read_segments(sample_path("segments.json"))
    contexts = read_contexts(sample_path("contacts.jsonl"))
    with Session(engine) as session, session.begin():
        import_segments(session=session, segments=segments, now=_now(), recompute=False)
        upsert_contacts(session=session, contexts=contexts, now=_now())
    out.print(
        f"[bold]segmentflow demo[/bold] ({database_url}): {len(segments)} segments, {len(contexts)} contacts"
    )
    keys = [c.fully_qualified_key for c in contexts[:8]]
    if temporal:
        import asyncio

        from segmentflow.demo import run_on_temporal

        counts, branches = asyncio.run(run_on_temporal(engine, keys))
    else:
        counts, branches = recompute_all(engine), {}
    _print_counts("recomputed", counts)
    with Session(engine) as session:
        table = Table("segment", "members", "sample members", title="Segments")
        rows: dict[str, list[str]] = {}
        for key, segs in iter_memberships(session=session):
            for s in segs:
                rows.setdefault(s, []).append(key)
        for r in list_segments(session=session):
            members = rows.get(r.key, [])
            table.add_row(
                r.key, str(len(members)), ", ".join(members[:4]) + (" ..." if len(members) > 4 else "")
            )
        out.print(table)
        title = "First contacts" + (" (workflow branching on isMember)" if branches else "")
        per_contact = Table("contact", "segments", *(["workflow branch"] if branches else []), title=title)
        for key in keys:
            row = get_contact(session=session, key=key)
            assert row is not None and row.id is not None
            cells = [row.key, ", ".join(list_contact_segments(session=session, contact_id=row.id)) or "-"]
            per_contact.add_row(*cells, *([branches[key]] if branches else []))
        out.print(per_contact)
    from segmentflow.cli.sla import show_sla_demo

    show_sla_demo(engine, keys)
    from segmentflow.cli.sequences import show_sequence_demo

    show_sequence_demo(engine, temporal=temporal)
    if serve:
        _serve_demo_console(engine, database_url, host=host, port=port)


def _serve_demo_console(engine: Engine, database_url: str, *, host: str, port: int) -> None:
    """Serve the API and console on the demo database, with a new all-scopes key to sign in with."""
    import uvicorn
    from sqlmodel import Session

    from segmentflow.api import create_app
    from segmentflow.services.keys import SCOPES, create_key

    with Session(engine) as session, session.begin():
        _, token = create_key(session=session, scopes=SCOPES, name="demo console", now=_now())
    engine.dispose()
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    out.print(f"[bold]Operator console:[/bold] http://{shown}:{port}/ui/  (Ctrl-C stops it)", soft_wrap=True)
    out.print("Sign in with this API key (every scope):", soft_wrap=True)
    sys.stdout.write(token + "\n")
    sys.stdout.flush()
    uvicorn.run(create_app(Settings(database_url=database_url)), host=host, port=port, access_log=False)


keys_app = typer.Typer(no_args_is_help=True, help="HTTP API keys (only a hash of each token is stored).")
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def keys_create(
    scope: Annotated[
        list[str],
        typer.Option(
            "--scope",
            help="Repeatable: segments:read, segments:write, contacts:write, ... (see docs/api.md).",
        ),
    ],
    name: Annotated[str, typer.Option("--name", help="A label shown by `keys list`.")] = "",
) -> None:
    """Create an API key with these scopes; the token is printed once, as the last line."""
    from sqlmodel import Session

    from segmentflow.services.keys import create_key

    engine = _engine()
    with Session(engine) as session, session.begin():
        try:
            key, token = create_key(session=session, scopes=scope, name=name, now=_now())
        except ValueError as exc:
            raise InputError(str(exc)) from None
        out.print(
            f"created API key {key.id} ({key.scopes.replace(' ', ', ')}); its token, shown only now:",
            soft_wrap=True,
        )
    sys.stdout.write(token + "\n")
    sys.stdout.flush()


@keys_app.command("list")
def keys_list() -> None:
    """API keys: id, name, scopes, when created and revoked (never the tokens)."""
    from sqlmodel import Session

    from segmentflow.services.keys import list_keys

    engine = _engine()
    table = Table("id", "name", "scopes", "created", "revoked")
    with Session(engine) as session:
        for key in list_keys(session=session):
            revoked = key.revoked_at.isoformat() if key.revoked_at else "-"
            table.add_row(key.id, key.name or "-", key.scopes, key.created_at.isoformat(), revoked)
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str) -> None:
    """Revoke an API key by id: its token is refused (401) from the next request on."""
    from sqlmodel import Session

    from segmentflow.services.keys import UnknownKeyError, revoke_key

    engine = _engine()
    with Session(engine) as session, session.begin():
        try:
            key = revoke_key(session=session, key_id=key_id, now=_now())
        except UnknownKeyError as exc:
            raise InputError(str(exc)) from None
        assert key.revoked_at is not None
        out.print(f"revoked API key {key.id} at {key.revoked_at.isoformat()}")


@app.command()
def serve(
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8000,
    access_log: Annotated[
        bool,
        typer.Option(
            "--access-log/--no-access-log",
            help="Log a line per request (off by default: /metrics counts requests by route and status).",
        ),
    ] = False,
) -> None:
    """Run the HTTP API and the operator console (`/ui/`) with uvicorn (the database migrates at start-up)."""
    import uvicorn

    from segmentflow.api import create_app

    url = _state.database_url or Settings().database_url
    uvicorn.run(create_app(Settings(database_url=url)), host=host, port=port, access_log=access_log)


# Subcommand groups kept in their own modules (message handling, sequences, SLA).
from segmentflow.cli.messages import actions_app, instructions_app  # noqa: E402
from segmentflow.cli.sequences import sequences_app  # noqa: E402
from segmentflow.cli.sla import sla_app  # noqa: E402

app.add_typer(actions_app, name="actions")
app.add_typer(instructions_app, name="instructions")
app.add_typer(sequences_app, name="sequences")
app.add_typer(sla_app, name="sla")

# Reporting and the MCP server (issue 14).
from segmentflow.cli.reports import events_app, mcp, report  # noqa: E402

app.add_typer(events_app, name="events")
app.command("report")(report)
app.command("mcp")(mcp)


def _fail(message: str) -> None:
    err.print(f"segmentflow: error: {message}", markup=False, highlight=False, soft_wrap=True)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> Any:
    """Entry point: runs the app and turns bad input into one line on stderr and exit status 2."""
    try:
        return app(args=argv, prog_name="segmentflow")
    except InputError as exc:
        _fail(str(exc))
    except (RuleError, ContextError) as exc:
        _fail(str(exc))
    except Exception as exc:
        database_errors = sys.modules.get("sqlalchemy.exc")  # only loaded by the database commands
        if database_errors is not None and isinstance(exc, database_errors.OperationalError):
            orig = exc.orig
            _fail(f"database error: {str(orig).strip().splitlines()[0] if orig else exc}")
        raise
    except BrokenPipeError:
        sys.stderr.close()
        raise SystemExit(1) from None
    finally:
        while _state.engines:
            _state.engines.pop().dispose()
    return None
