"""`segmentflow` subcommands: Import and list actions and AI instructions (message handling).

Imported by `segmentflow.cli` (which adds these apps); shared helpers such as `_engine` and `_fail` are
imported from `segmentflow.cli` inside the command bodies, so there is no import cycle at load time."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

__all__ = ["actions_app", "instructions_app"]

actions_app = typer.Typer(no_args_is_help=True, help="Actions the AI agent can run, restricted to segments.")
instructions_app = typer.Typer(no_args_is_help=True, help="AI instructions, restricted to segments.")


def _report_unknown(noun: str, unknown: dict[str, list[str]]) -> None:
    from segmentflow.cli import err

    for key, missing in unknown.items():
        err.print(
            f'warning: {noun} "{key}" is restricted to unknown segment(s) {", ".join(missing)}: '
            "withheld from every contact until they exist",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


def _restriction(restricted_to: list[str], segments: frozenset[str]) -> tuple[str, str]:
    """The restriction as shown, and the status (`ok`, or which missing segments withhold the item)."""
    from segmentflow.policies.restrictions import missing_segments

    missing = missing_segments(restricted_to, segments)
    shown = ", ".join(restricted_to) if restricted_to else "(everyone)"
    return shown, ("withheld: missing " + ", ".join(missing)) if missing else "ok"


def _import(
    file: Path, noun: str, parse: Callable[[Any], Any], upsert: Callable[[Any, Any, Any], Any]
) -> None:
    """Validate the whole file with `parse`, store it with `upsert` in one transaction, and say what was
    imported (and which restrictions name segments that do not exist)."""
    from sqlmodel import Session

    from segmentflow.cli import _engine, _now, out
    from segmentflow.inputs import InputError, read_json
    from segmentflow.services.messages import SpecError

    try:
        specs = parse(read_json(file))
    except SpecError as exc:
        raise InputError(f"{file}: {exc}") from None
    with Session(_engine()) as session, session.begin():
        report = upsert(session, specs, _now())
    out.print(f"imported {len(report.keys)} {noun}(s): " + ", ".join(report.keys), markup=False)
    _report_unknown(noun, report.unknown_segments)


@actions_app.command("import")
def actions_import(file: Path) -> None:
    """Upsert actions by key from a JSON list of {"key", "name", "description", "restricted_to_segments",
    "trigger_phrases", "parameters", "webhook": {"url"}}; the whole file is validated first."""
    from pydantic import ValidationError

    from segmentflow.inputs import InputError
    from segmentflow.policies.egress import first_url_refusal
    from segmentflow.services.messages import ActionSpec, parse_actions, upsert_actions
    from segmentflow.settings import Settings, settings_error

    try:
        egress = Settings().egress_policy()
    except ValidationError as exc:
        raise InputError(settings_error(exc)) from None

    def parse(data: Any) -> list[ActionSpec]:
        actions = parse_actions(data)
        urls = (((i, a.key), a.webhook.url) for i, a in enumerate(actions) if a.webhook is not None)
        refused = first_url_refusal(urls, egress)  # never sendable: refused now, not at run time
        if refused is not None:
            raise InputError(f'{file}: action "{refused[0][1]}": webhook.url: {refused[1]}')
        return actions

    _import(
        file,
        "action",
        parse,
        lambda session, specs, now: upsert_actions(session=session, actions=specs, now=now),
    )


@actions_app.command("list")
def actions_list() -> None:
    """Actions with their segment restriction, trigger phrases and webhook."""
    from sqlmodel import Session

    from segmentflow.cli import _engine, out
    from segmentflow.policies.egress import redact_url
    from segmentflow.services.messages import existing_segment_keys, list_actions

    table = Table("key", "name", "restricted to", "trigger phrases", "webhook", "status")
    with Session(_engine()) as session:
        segments = existing_segment_keys(session=session)
        for a in list_actions(session=session):
            shown, status = _restriction(a.restricted_to_segments, segments)
            url = redact_url(str(a.webhook["url"])) if a.webhook else "-"
            table.add_row(a.key, a.name, shown, ", ".join(a.trigger_phrases) or "-", url, status)
    out.print(table)


@instructions_app.command("import")
def instructions_import(file: Path) -> None:
    """Upsert AI instructions by key from a JSON list of {"key", "text", "restricted_to_segments"}."""
    from segmentflow.services.messages import parse_instructions, upsert_instructions

    _import(
        file,
        "instruction",
        parse_instructions,
        lambda session, specs, now: upsert_instructions(session=session, instructions=specs, now=now),
    )


@instructions_app.command("list")
def instructions_list() -> None:
    """AI instructions with their segment restriction."""
    from sqlmodel import Session

    from segmentflow.cli import _engine, out
    from segmentflow.services.messages import existing_segment_keys, list_instructions

    table = Table("key", "text", "restricted to", "status")
    with Session(_engine()) as session:
        segments = existing_segment_keys(session=session)
        for i in list_instructions(session=session):
            shown, status = _restriction(i.restricted_to_segments, segments)
            text = i.text if len(i.text) <= 60 else i.text[:57] + "..."
            table.add_row(i.key, text, shown, status)
    out.print(table)
