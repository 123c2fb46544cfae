"""`segmentflow events import`, `segmentflow report` and `segmentflow mcp`: conversation events in, the
segment report out, and the MCP server.

Imported by `segmentflow.cli` (which registers these commands); shared helpers such as `_engine` are
imported from `segmentflow.cli` inside the command bodies, so there is no import cycle at load time."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

if TYPE_CHECKING:
    from segmentflow.services.reporting import Figures, SegmentReport

__all__ = ["events_app", "mcp", "report"]

events_app = typer.Typer(no_args_is_help=True, help="Conversation events (closed conversations).")


@events_app.command("import")
def events_import(
    file: Path,
    skip_invalid: Annotated[
        bool,
        typer.Option("--skip-invalid", help="Report bad lines on stderr and import the others."),
    ] = False,
) -> None:
    """Record conversation events from FILE, one JSON event per line: `{"id", "contactKey", "at",
    "channel"?, "handoff"?, "csat"?, "messages"?}`. One bad line stops the import, naming the file and
    line, and nothing is written (unless --skip-invalid). A repeated id changes nothing and is counted as
    a duplicate. The report's daily rollup of the days imported is then brought up to date."""
    from sqlmodel import Session

    from segmentflow.cli import _engine, _now, err, out
    from segmentflow.inputs import InputError
    from segmentflow.services.conversations import iter_event_lines, record_conversations
    from segmentflow.services.reporting import refresh_rollup

    events = []
    skipped = 0
    try:
        for number, item in iter_event_lines(file):
            if isinstance(item, str):
                if not skip_invalid:
                    raise InputError(f"{file}:{number}: {item}")
                err.print(f"{file}:{number}: skipped: {item}", markup=False, highlight=False, soft_wrap=True)
                skipped += 1
                continue
            events.append(item)
    except OSError as exc:
        raise InputError(f"{file}: cannot read: {exc.strerror or exc}") from None
    engine = _engine()
    with Session(engine) as session, session.begin():
        counts = record_conversations(session=session, events=events, now=_now())
    line = f"recorded {counts.recorded} event(s), {counts.duplicates} duplicate(s)"
    out.print(line + (f", {skipped} invalid line(s) skipped" if skip_invalid else ""))
    if counts.recorded:  # build the report's rollup of those days now rather than at the next report
        days = sorted({event.at.astimezone(UTC).date() for event in events})
        with Session(engine) as session, session.begin():
            refresh_rollup(session=session, first=days[0], last=days[-1], build=days)


def _parse_time(value: str, option: str) -> datetime:
    from segmentflow.inputs import InputError

    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        raise InputError(f"{option}: not an RFC 3339 date-time: {value!r}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


# Short headers: the table fits 80 columns.
_HEADERS = ("segment", "name", "members", "convs", "handoff", "csat n", "csat", "4-5", "warn", "breach")


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _print_table(report: SegmentReport) -> None:
    from rich.table import Table

    from segmentflow.cli import out

    window = f"{report.since:%Y-%m-%d %H:%M} to {report.until:%Y-%m-%d %H:%M} UTC"
    table = Table(title=f"Conversations by segment, {window}")
    for header in _HEADERS:
        text = header in ("segment", "name")
        table.add_column(header, justify="left" if text else "right", no_wrap=header == "segment")

    def add(label: str, name: str | None, members: int | None, f: Figures, style: str | None = None) -> None:
        average = "-" if f.csat_average is None else f"{f.csat_average:.2f}"
        table.add_row(
            label,
            name or "",
            "-" if members is None else str(members),
            str(f.conversations),
            _rate(f.handoff_rate),
            str(f.csat_responses),
            average,
            _rate(f.csat_share_satisfied),
            str(f.sla_warnings),
            str(f.sla_breaches),
            style=style,
        )

    for row in report.data:
        add(row.segment or "", row.name, row.members, row.figures)
        for day, members, figures in row.series or ():
            add(f"  {day.isoformat()}", None, members, figures, "dim")
    table.add_section()
    overall = report.overall
    add("overall", None, overall.members, overall.figures, "bold")
    for day, members, figures in overall.series or ():
        add(f"  {day.isoformat()}", None, members, figures, "dim")
    out.print(table)


def report(
    since: Annotated[str, typer.Option("--since", help="Window start, inclusive (RFC 3339).")],
    until: Annotated[str, typer.Option("--until", help="Window end, exclusive (RFC 3339).")],
    interval: Annotated[
        str | None, typer.Option("--interval", help="`day`: add a per-UTC-day series to every row.")
    ] = None,
    output: Annotated[
        str, typer.Option("--format", help="table (default), json (the API's body) or csv.")
    ] = "table",
) -> None:
    """Conversations, handoff rate, CSAT and SLA events per segment over [since, until), each conversation
    counted under the segments its contact was in at its time ("-": anonymous, unknown or in none)."""
    from sqlmodel import Session

    from segmentflow.cli import _engine
    from segmentflow.inputs import InputError
    from segmentflow.services.reporting import ReportError, report_csv, segment_report

    if interval not in (None, "day"):
        raise InputError(f"--interval: expected day, got {interval!r}")
    if output not in ("table", "json", "csv"):
        raise InputError(f"--format: expected table, json or csv, got {output!r}")
    start, end = _parse_time(since, "--since"), _parse_time(until, "--until")
    day: Literal["day"] | None = "day" if interval == "day" else None
    engine = _engine()
    with Session(engine) as session, session.begin():
        try:
            result = segment_report(session=session, since=start, until=end, interval=day)
        except ReportError as exc:
            raise InputError(f"--{exc.field}: {exc}") from None
    if output == "table":
        _print_table(result)
        return
    sys.stdout.write(
        json.dumps(result.to_json(), indent=2) + "\n" if output == "json" else report_csv(result)
    )
    sys.stdout.flush()


def mcp(
    http: Annotated[
        bool, typer.Option("--http", help="Serve streamable HTTP at /mcp (Bearer API key) instead of stdio.")
    ] = False,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on (with --http).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port (with --http).")] = 8765,
) -> None:
    """Serve segmentflow's MCP tools: over stdio (for a local MCP client; no API key, the process is
    trusted) or, with --http, over streamable HTTP at /mcp, where each call needs a Bearer API key holding
    the scope its tool names."""
    from segmentflow.cli import _engine
    from segmentflow.mcp_server import serve_http, serve_stdio

    engine = _engine()
    if http:
        serve_http(engine, host=host, port=port)
    else:
        serve_stdio(engine)
