"""`segmentflow sla`: import the ordered SLA policy file, list it, and select a policy for a ticket.

Imported by `segmentflow.cli` (which adds these apps); shared helpers such as `_engine` and `_fail` are
imported from `segmentflow.cli` inside the command bodies, so there is no import cycle at load time."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated
from zoneinfo import ZoneInfo

import typer

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = ["show_sla_demo", "sla_app"]

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
    try:
        with Session(engine) as session, session.begin():
            import_policies(session=session, policies=policies, now=_now())
    except SlaPolicyError as exc:  # a segment that is not stored: nothing was written
        raise InputError(f"{file}: {exc}") from None
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

    from segmentflow.cli import _engine
    from segmentflow.inputs import InputError
    from segmentflow.services.sla import select_for_contact, selection_result, ticket_facts
    from segmentflow.workflows.sla_models import SlaTicket

    try:
        ticket = SlaTicket.model_validate(
            {"priority": priority, "channel": channel, "tags": tag or [], "createdAt": created_at}
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        option = {"priority": "--priority", "createdAt": "--created-at"}.get(str(error["loc"][0]), "input")
        raise InputError(f"{option}: {error['msg']}") from None
    engine = _engine()
    with Session(engine) as session, session.begin():
        try:
            selection = select_for_contact(session=session, contact_key=contact, ticket=ticket_facts(ticket))
        except ValueError as exc:
            raise InputError(f"--created-at: {exc}") from None
    sys.stdout.write(selection_result(selection).model_dump_json(by_alias=True, indent=2) + "\n")


def show_sla_demo(engine: Engine, contact_keys: Sequence[str]) -> None:
    """The SLA step of `segmentflow demo`: import the bundled policies and select one for a VIP's and a
    regular contact's urgent ticket created Friday 16:30 in Berlin (the regular one counts business hours)."""
    from rich.table import Table
    from sqlmodel import Session

    from segmentflow.cli import _now, out
    from segmentflow.inputs import read_json
    from segmentflow.policies.sla import TicketFacts, parse_policies
    from segmentflow.sample import sample_path
    from segmentflow.services.sla import contact_segment_set, import_policies, select_for_contact

    created = datetime(2026, 11, 27, 16, 30, tzinfo=ZoneInfo("Europe/Berlin"))
    ticket = TicketFacts(priority="urgent", channel="email", created_at=created)
    with Session(engine) as session, session.begin():
        import_policies(
            session=session, policies=parse_policies(read_json(sample_path("sla_policies.json"))), now=_now()
        )
        vip = next(
            (k for k in contact_keys if "vip" in contact_segment_set(session=session, contact_key=k)), None
        )
        regular = next(
            (
                k
                for k in contact_keys
                if not contact_segment_set(session=session, contact_key=k) & {"vip", "company-staff"}
            ),
            None,
        )
        table = Table(
            "contact",
            "policy",
            "first reply due",
            "resolution due",
            title=f"SLA: urgent ticket, {created:%a %Y-%m-%d %H:%M} Berlin",
        )
        for label, key in (("VIP", vip), ("regular", regular)):
            if key is None:
                continue
            chosen = select_for_contact(session=session, contact_key=key, ticket=ticket)
            dues = [chosen.targets.get(m) for m in ("first_reply", "resolution")]
            cells = [
                f"{d.due_at.astimezone(created.tzinfo):%a %H:%M} ({d.business_minutes} min)" if d else "-"
                for d in dues
            ]
            table.add_row(f"{label} {key}", chosen.policy.key if chosen.policy else "none", *cells)
    out.print(table)
