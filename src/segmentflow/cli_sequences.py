"""`segmentflow sequences`: import, launch, pause and report outbound sequences.

Imported by `segmentflow.cli` (which adds these apps); shared helpers such as `_engine` and `_fail` are
imported from `segmentflow.cli` inside the command bodies, so there is no import cycle at load time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["sequences_app"]

sequences_app = typer.Typer(no_args_is_help=True, help="Segment-targeted outbound sequences.")


def _read(file: Path) -> object:
    from segmentflow.inputs import InputError

    try:
        return json.loads(file.read_text())
    except OSError as exc:
        raise InputError(f"{file}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{file}: line {exc.lineno}: invalid JSON: {exc.msg}") from None


@sequences_app.command("import")
def sequences_import(file: Path) -> None:
    """Insert or replace sequences by key from a JSON object or list; all are validated (templates
    included) before any is written."""
    from sqlmodel import Session

    from segmentflow.cli import _engine, _now, out
    from segmentflow.inputs import InputError
    from segmentflow.policies.sequences import SequenceError, parse_sequences
    from segmentflow.services.sequences import import_sequences

    data = _read(file)
    try:
        definitions = parse_sequences(data)
    except SequenceError as exc:
        raise InputError(f"{file}: {exc}") from None
    engine = _engine()
    with Session(engine) as session, session.begin():
        try:
            records = import_sequences(session=session, sequences=definitions, now=_now())
        except SequenceError as exc:
            raise InputError(f"{file}: {exc}") from None
        summary = [f"{r.key} (v{r.version}, {'created' if new else r.status})" for r, new in records]
    out.print(f"imported {len(summary)} sequence(s): " + ", ".join(summary))


def _client_settings() -> tuple[str, str, str]:
    from segmentflow.settings import Settings

    settings = Settings()
    return settings.temporal_address, settings.temporal_namespace, settings.task_queue


@sequences_app.command("launch")
def sequences_launch(
    key: str,
    no_start: Annotated[
        bool, typer.Option("--no-start", help="Only mark it active; start the runner workflow later.")
    ] = False,
) -> None:
    """Enroll the segment's current members (first launch) or resume a paused sequence, then start its
    runner workflow on SEGMENTFLOW_TEMPORAL_ADDRESS / SEGMENTFLOW_TASK_QUEUE."""
    import asyncio

    from sqlmodel import Session

    from segmentflow.cli import _engine, _fail, _now, out
    from segmentflow.services.sequences import (
        UnknownSegmentForSequenceError,
        UnknownSequenceError,
        launch_sequence,
    )

    engine = _engine()
    with Session(engine) as session, session.begin():
        try:
            result = launch_sequence(session=session, key=key, now=_now())
        except (UnknownSequenceError, UnknownSegmentForSequenceError) as exc:
            _fail(str(exc.args[0]))
            return
    state = "launched" if result.changed else "already active"
    out.print(f"{state} {key}: enrolled {result.enrolled} contact(s)")
    if no_start:
        return
    address, namespace, queue = _client_settings()

    async def start() -> str:
        from temporalio.client import Client

        from segmentflow.plugins import SegmentsPlugin, start_sequence_runner

        client = await Client.connect(address, namespace=namespace, plugins=[SegmentsPlugin(engine=engine)])
        handle = await start_sequence_runner(client, sequence_key=key, task_queue=queue)
        return handle.id

    try:
        workflow_id = asyncio.run(start())
    except RuntimeError as exc:  # temporalio reports an unreachable server as RuntimeError
        _fail(f"cannot reach Temporal at {address}: {str(exc).splitlines()[0]} (the sequence stays active)")
        return
    out.print(f"runner workflow {workflow_id} on task queue {queue}")


@sequences_app.command("pause")
def sequences_pause(key: str) -> None:
    """Stop sending: enrollments keep their place, and `launch` resumes them."""
    import asyncio

    from sqlmodel import Session

    from segmentflow.cli import _engine, _fail, _now, out
    from segmentflow.services.sequences import UnknownSequenceError, pause_sequence

    engine = _engine()
    with Session(engine) as session, session.begin():
        try:
            changed = pause_sequence(session=session, key=key, now=_now())
        except UnknownSequenceError as exc:
            _fail(str(exc.args[0]))
            return
    out.print(f"paused {key}" if changed else f"{key} was not active")
    address, namespace, _queue = _client_settings()

    async def wake() -> None:
        from temporalio.client import Client

        from segmentflow.plugins import wake_sequence_runner

        client = await Client.connect(address, namespace=namespace)
        await wake_sequence_runner(client, sequence_key=key)

    try:  # best effort: a runner not woken stops at its next round anyway
        asyncio.run(asyncio.wait_for(wake(), timeout=5))
    except (RuntimeError, TimeoutError):
        pass


@sequences_app.command("status")
def sequences_status(
    key: str, as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False
) -> None:
    """Enrollments by status, and per step: enrolled (waiting for it), sent, exited, failed."""
    import dataclasses
    import sys

    from rich.table import Table
    from sqlmodel import Session

    from segmentflow.cli import _engine, _fail, out
    from segmentflow.services.sequences import UnknownSequenceError, sequence_status

    engine = _engine()
    with Session(engine) as session:
        try:
            report = sequence_status(session=session, key=key)
        except UnknownSequenceError as exc:
            _fail(str(exc.args[0]))
            return
    if as_json:
        sys.stdout.write(json.dumps(dataclasses.asdict(report), indent=2) + "\n")
        return
    out.print(
        f"{report.key} ({report.status}, v{report.version}, segment {report.segment}): "
        f"enrollments={report.enrollments} active={report.active} completed={report.completed} "
        f"exited={report.exited} failed={report.failed} sent={report.sent}"
    )
    table = Table("step", "type", "enrolled", "sent", "exited", "failed")
    for step in report.steps:
        table.add_row(
            str(step.step), step.type, str(step.enrolled), str(step.sent), str(step.exited), str(step.failed)
        )
    out.print(table)
