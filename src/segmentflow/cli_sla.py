"""`segmentflow` subcommands: SLA policies selected by segment.

Imported by `segmentflow.cli` (which adds these apps); shared helpers such as `_engine` and `_fail` are
imported from `segmentflow.cli` inside the command bodies, so there is no import cycle at load time."""

from __future__ import annotations

import typer

__all__ = ["sla_app"]

sla_app = typer.Typer(no_args_is_help=True, help="SLA policies selected by segment.")
