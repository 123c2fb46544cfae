"""`segmentflow sla`: import the ordered SLA policy file, list it, and select a policy for a ticket.

Imported by `segmentflow.cli` (which adds these apps); shared helpers such as `_engine` and `_fail` are
imported from `segmentflow.cli` inside the command bodies, so there is no import cycle at load time."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["sla_app"]

sla_app = typer.Typer(no_args_is_help=True, help="SLA policies selected by segment.")


@sla_app.command("import")
def sla_import(file: Path) -> None:
    """Replace the stored SLA policies with FILE (a JSON list; order = precedence, first match wins). The
    whole file is validated first; nothing is written when any policy is refused."""
    from sqlmodel import Session

    from segmentflow.cli import _engine, _now, out
    from segmentflow.inputs import InputError, read_json
    from segmentflow.policies.sla import SlaPolicyError, parse_policies
    from segmentflow.services.sla import import_policies

    try:
        policies = parse_policies(read_json(file))
    except SlaPolicyError as exc:
        raise InputError(f"{file}: {exc}") from None
    engine = _engine()
    with Session(engine) as session, session.begin():
        import_policies(session=session, policies=policies, now=_now())
    out.print(f"imported {len(policies)} SLA policy(ies), in order: " + ", ".join(p.key for p in policies))


@sla_app.command("list")
def sla_list() -> None:
    """Print the stored policies as the JSON list `sla import` reads."""
    from sqlmodel import Session

    from segmentflow.cli import _engine
    from segmentflow.services.sla import list_policies

    engine = _engine()
    with Session(engine) as session:
        data = [p.to_json() for p in list_policies(session=session)]
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


@sla_app.command("select")
def sla_select(
    priority: Annotated[str, typer.Option("--priority", help="low, normal, high or urgent.")],
    created_at: Annotated[str, typer.Option("--created-at", help="RFC 3339 with an offset.")],
    contact: Annotated[
        str | None, typer.Option("--contact", help="The requester's fully-qualified key (omit: none).")
    ] = None,
    channel: Annotated[str | None, typer.Option("--channel", help="The ticket's channel.")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Repeatable: the ticket's tags.")] = None,
) -> None:
    """Print {"policy", "targets": {metric: {"dueAt", "businessMinutes"}}} for a ticket, as the
    `segmentflow.SelectSlaPolicy` activity answers (`"policy": null`: no policy matched, no SLA)."""
    from pydantic import ValidationError
    from sqlmodel import Session

    from segmentflow.activities.sla import selection_result, ticket_facts
    from segmentflow.cli import _engine
    from segmentflow.inputs import InputError
    from segmentflow.services.sla import select_for_contact
    from segmentflow.workflows.sla_models import SlaTicket

    try:
        ticket = SlaTicket(priority=priority, channel=channel, tags=tag or [], created_at=created_at)  # type: ignore[arg-type]
    except ValidationError as exc:
        error = exc.errors()[0]
        option = {"priority": "--priority", "created_at": "--created-at"}.get(str(error["loc"][0]), "input")
        raise InputError(f"{option}: {error['msg']}") from None
    engine = _engine()
    with Session(engine) as session, session.begin():
        selection = select_for_contact(session=session, contact_key=contact, ticket=ticket_facts(ticket))
    sys.stdout.write(selection_result(selection).model_dump_json(by_alias=True, indent=2) + "\n")
