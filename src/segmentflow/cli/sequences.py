"""`segmentflow sequences`: import, launch, pause and report outbound sequences.

Imported by `segmentflow.cli` (which adds these apps); shared helpers such as `_engine` and `_fail` are
imported from `segmentflow.cli` inside the command bodies, so there is no import cycle at load time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = ["DEMO_EGRESS_ALLOW", "sequences_app", "show_sequence_demo"]

#: What `segmentflow demo` opens in the egress policy (`SEGMENTFLOW_EGRESS_ALLOW`): its local webhook.
DEMO_EGRESS_ALLOW = "127.0.0.1/32"

sequences_app = typer.Typer(no_args_is_help=True, help="Segment-targeted outbound sequences.")


@sequences_app.command("import")
def sequences_import(file: Path) -> None:
    """Insert or replace sequences by key from a JSON object or list; all are validated (templates
    included) before any is written."""
    from pydantic import ValidationError
    from sqlmodel import Session

    from segmentflow.cli import _engine, _now, out
    from segmentflow.inputs import InputError, read_json
    from segmentflow.policies.egress import first_url_refusal
    from segmentflow.policies.sequences import SequenceError, parse_sequences, webhook_urls
    from segmentflow.services.sequences import import_sequences
    from segmentflow.settings import Settings, settings_error

    data = read_json(file)
    try:
        definitions = parse_sequences(data)
    except SequenceError as exc:
        raise InputError(f"{file}: {exc}") from None
    try:
        egress = Settings().egress_policy()
    except ValidationError as exc:
        raise InputError(settings_error(exc)) from None
    for definition in definitions:  # a URL the egress policy always refuses is refused now, not at send time
        refused = first_url_refusal(webhook_urls(definition), egress)
        if refused is not None:
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in refused[0]).lstrip(".")
            raise InputError(f'{file}: sequence "{definition.key}": {where}: {refused[1]}')
    engine = _engine()
    with Session(engine) as session, session.begin():
        try:
            records = import_sequences(
                session=session, sequences=definitions, now=_now(), limits=Settings().template_limits()
            )
        except SequenceError as exc:
            raise InputError(f"{file}: {exc}") from None
        summary = [f"{r.key} (v{r.version}, {'created' if new else r.status})" for r, new in records]
    out.print(f"imported {len(summary)} sequence(s): " + ", ".join(summary), soft_wrap=True)


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
        from segmentflow.settings import Settings

        client = await Client.connect(address, namespace=namespace, plugins=[SegmentsPlugin(engine=engine)])
        handle = await start_sequence_runner(
            client, sequence_key=key, task_queue=queue, search_attributes=Settings().search_attributes
        )
        return handle.id

    try:
        workflow_id = asyncio.run(start())
    except RuntimeError as exc:  # temporalio reports an unreachable server as RuntimeError
        _fail(f"cannot reach Temporal at {address}: {str(exc).splitlines()[0]} (the sequence stays active)")
        return
    out.print(f"runner workflow {workflow_id} on task queue {queue}", soft_wrap=True)


@sequences_app.command("pause")
def sequences_pause(key: str) -> None:
    """Stop sending: enrollments keep their place, and `launch` resumes them."""
    import asyncio
    import contextlib

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

    from temporalio.service import RPCError

    # Best effort: a runner not woken stops at its next round anyway.
    with contextlib.suppress(RuntimeError, TimeoutError, RPCError):
        asyncio.run(asyncio.wait_for(wake(), timeout=5))


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


# ---- the sequence step of `segmentflow demo` -------------------------------------------------------------


_DEMO_ROWS = 5


class _DemoWebhook:
    """A local webhook receiver on a free port, in a thread: records each delivery, deduplicating by
    `Idempotency-Key` as a real provider does."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        received: dict[str, dict[str, object]] = {}
        self.received = received
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    received.setdefault(self.headers.get("Idempotency-Key", ""), body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/webhook"

    def __enter__(self) -> _DemoWebhook:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def _active(engine: Engine, key: str) -> int:
    from sqlmodel import Session

    from segmentflow.services.sequences import sequence_status

    with Session(engine) as session:
        return sequence_status(session=session, key=key).active


async def _send_on_temporal(engine: Engine, key: str) -> None:
    """The runner workflow on an embedded dev server, until every enrollment is done, then paused."""
    import asyncio
    import time
    import uuid

    from sqlmodel import Session
    from temporalio.testing import WorkflowEnvironment
    from temporalio.worker import Worker

    from segmentflow.cli import _now
    from segmentflow.plugins import DEV_SERVER_ARGS, SegmentsPlugin, start_sequence_runner, temporal_cli_path
    from segmentflow.services.sequences import pause_sequence
    from segmentflow.settings import Settings
    from segmentflow.workflows.sequence_models import RunSequenceInput

    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli_path(),
        dev_server_extra_args=DEV_SERVER_ARGS,
        # The demo's own webhook listens on loopback, which the egress policy refuses unless allowed.
        plugins=[SegmentsPlugin(engine=engine, settings=Settings(egress_allow=DEMO_EGRESS_ALLOW))],
    )
    try:
        queue = f"segmentflow-demo-{uuid.uuid4()}"
        async with Worker(env.client, task_queue=queue):
            handle = await start_sequence_runner(
                env.client, sequence_key=key, task_queue=queue, params=RunSequenceInput(sequence_key=key)
            )
            deadline = time.monotonic() + 60
            while _active(engine, key) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            with Session(engine) as session, session.begin():
                pause_sequence(session=session, key=key, now=_now())
            await handle.signal("wake")
            await handle.result()
    finally:
        await env.shutdown()


async def _send_in_process(engine: Engine, key: str) -> None:
    """The same claim -> deliver -> record rounds the runner's activity does, without Temporal (webhook
    steps only: the demo has no other)."""
    from collections.abc import Callable

    from sqlmodel import Session

    from segmentflow.cli import _now
    from segmentflow.policies.egress import parse_allow
    from segmentflow.services.delivery import post_webhook, webhook_client
    from segmentflow.services.sequences import ClaimResult, ProgramCache, claim_and_render, record_deliveries

    def run(work: Callable[[Session], ClaimResult]) -> ClaimResult:
        with Session(engine) as session, session.begin():
            return work(session)

    cache = ProgramCache()
    async with webhook_client(policy=parse_allow(DEMO_EGRESS_ALLOW)) as client:
        while True:
            with Session(engine) as session, session.begin():
                sequence = cache.get(session=session, key=key)
            claim = claim_and_render(run, sequence=sequence, now=_now(), limit=500)
            if not claim.claimed:
                return
            results = [
                (
                    o,
                    await post_webhook(
                        client, url=o.url or "", payload=o.payload, idempotency_key=o.idempotency_key
                    ),
                )
                for o in claim.outgoing
            ]
            with Session(engine) as session, session.begin():
                record_deliveries(session=session, sequence=sequence, results=results, now=_now())


def show_sequence_demo(engine: Engine, *, temporal: bool) -> None:
    """The sequence step of `segmentflow demo`: a one-step sequence welcoming the `vip` segment, sent to a
    local webhook through the runner workflow (or in process with `--no-temporal`)."""
    import asyncio

    from rich.table import Table
    from sqlmodel import Session

    from segmentflow.cli import _now, out
    from segmentflow.policies.sequences import parse_sequences
    from segmentflow.services.sequences import import_sequences, launch_sequence, sequence_status

    key = "welcome-vip"
    # Multi-kind contacts keep their name under a kind (`contact.user.name`), hence the default.
    template = "Hi {{ contact.name | default('there') }}, welcome to VIP! ({{ segments | join(', ') }})"
    with _DemoWebhook() as webhook:
        definition = {
            "key": key,
            "name": "Welcome VIPs",
            "segment": "vip",
            "steps": [{"type": "send", "channel": "webhook", "url": webhook.url, "template": template}],
        }
        with Session(engine) as session, session.begin():
            import_sequences(session=session, sequences=parse_sequences(definition), now=_now())
            launch_sequence(session=session, key=key, now=_now())
        asyncio.run(_send_on_temporal(engine, key) if temporal else _send_in_process(engine, key))
        received = sorted(webhook.received.items(), key=lambda item: str(item[1]["contactKey"]))
    with Session(engine) as session:
        report = sequence_status(session=session, key=key)
    how = "runner workflow segmentflow.RunSequence" if temporal else "in process"
    table = Table(
        "step", "contactKey", "Idempotency-Key", "body", title=f"Sequence {key} ({how}) -> local webhook"
    )
    for idempotency_key, body in received[:_DEMO_ROWS]:
        table.add_row(str(body["step"]), str(body["contactKey"]), idempotency_key, str(body["body"]))
    if len(received) > _DEMO_ROWS:
        table.add_row("", "...", "", f"and {len(received) - _DEMO_ROWS} more")
    out.print(table)
    out.print(
        f"sequence {key}: enrolled={report.enrollments} sent={report.sent} completed={report.completed} "
        f"failed={report.failed}; the webhook got {len(received)} distinct message(s)",
        soft_wrap=True,
    )
    for enrollment in enrollments_failed(engine, key)[:3]:
        out.print(f"  failed {enrollment}", soft_wrap=True, markup=False)


def enrollments_failed(engine: Engine, key: str) -> list[str]:
    """'contact: reason' of a sequence's failed enrollments (a template failing for a contact sends
    nothing and fails just that enrollment)."""
    import sqlalchemy as sa
    from sqlmodel import Session

    from segmentflow.db.tables import enrollment_table, sequence_table

    e = enrollment_table
    with Session(engine) as session:
        rows = session.execute(
            sa.select(e.c.contact_key, e.c.reason)
            .join(sequence_table, sequence_table.c.id == e.c.sequence_id)
            .where(sequence_table.c.key == key, e.c.status == "failed")
            .order_by(e.c.contact_key)
        )
        return [f"{contact}: {reason}" for contact, reason in rows]
