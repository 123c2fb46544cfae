"""`segmentflow` subcommands: Import and list actions and AI instructions (message handling).

Imported by `segmentflow.cli` (which adds these apps); shared helpers such as `_engine` and `_fail` are
imported from `segmentflow.cli` inside the command bodies, so there is no import cycle at load time."""

from __future__ import annotations

import typer

__all__ = ["actions_app", "instructions_app"]

actions_app = typer.Typer(no_args_is_help=True, help="Actions the AI agent can run, restricted to segments.")
instructions_app = typer.Typer(no_args_is_help=True, help="AI instructions, restricted to segments.")
