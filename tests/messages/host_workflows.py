"""Host workflows, written as a segmentflow user would: they call `segmentflow.RunAction` directly, by
name with plain JSON, on a task queue they are given."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from segmentflow.workflows import resolve_message


@workflow.defn(name="tests.HostRunsAction")
class HostRunsAction:
    """Runs one action for a contact; returns "ran" or the refusal's type, side and reason."""

    @workflow.run
    async def run(self, args: dict[str, Any]) -> dict[str, Any]:
        run_input = {
            "action": args["action"],
            "contactKey": args["contactKey"],
            "arguments": args.get("arguments", {}),
        }
        retry = RetryPolicy(maximum_attempts=3)
        timeout = timedelta(seconds=10)
        try:
            if args.get("local"):
                await workflow.execute_local_activity(
                    "segmentflow.RunAction", run_input, start_to_close_timeout=timeout, retry_policy=retry
                )
            else:
                await workflow.execute_activity(
                    "segmentflow.RunAction",
                    run_input,
                    task_queue=args.get("taskQueue"),
                    start_to_close_timeout=timeout,
                    retry_policy=retry,
                )
        except (ActivityError, ApplicationError) as exc:
            # A regular activity's failure arrives as an ActivityError around the ApplicationError; this
            # SDK hands a local activity's ApplicationError over as it is.
            cause = exc.cause if isinstance(exc, ActivityError) else exc
            assert isinstance(cause, ApplicationError)
            details = cause.details[0] if cause.details else {}
            return {
                "outcome": cause.type,
                "nonRetryable": cause.non_retryable,
                "side": details.get("side"),
                "activity": exc.activity_type if isinstance(exc, ActivityError) else None,
            }
        return {"outcome": "ran"}


@activity.defn(name="tests.WhoIsServed")
async def who_is_served() -> str | None:
    """A host activity reading the contact its workflow serves, from the header. (Imported here: the
    sandbox imports this module for the workflows, and must not pull in the plugin's database layer.)"""
    from segmentflow.plugins import current_contact

    return current_contact()


@workflow.defn(name="tests.AsksWhoIsServed")
class AsksWhoIsServed:
    """Asks its activity, and a child workflow's activity, which contact is served."""

    @workflow.run
    async def run(self, depth: int) -> list[str | None]:
        timeout = timedelta(seconds=10)
        here = await workflow.execute_activity(who_is_served, start_to_close_timeout=timeout)
        if depth == 0:
            return [here]
        below: list[str | None] = await workflow.execute_child_workflow(AsksWhoIsServed.run, depth - 1)
        return [here, *below]


def _outcome(exc: ActivityError | ApplicationError) -> dict[str, Any]:
    cause = exc.cause if isinstance(exc, ActivityError) else exc
    assert isinstance(cause, ApplicationError)
    details = cause.details[0] if cause.details else {}
    return {
        "outcome": cause.type,
        "side": details.get("side"),
        "reason": details.get("reason"),
        "activity": exc.activity_type if isinstance(exc, ActivityError) else None,
    }


@dataclass
class HostRunArgs:
    """A host's own input type for `segmentflow.RunAction` (not segmentflow's model, nor a dict)."""

    action: str
    contact_key: str | None
    arguments: dict[str, Any] = field(default_factory=dict)


@workflow.defn(name="tests.HostRunsActionWithOwnTypes")
class HostRunsActionWithOwnTypes:
    """Calls `segmentflow.RunAction` with a dataclass, or with `raw` arguments as given (malformed ones)."""

    @workflow.run
    async def run(self, args: dict[str, Any]) -> dict[str, Any]:
        params: list[Any] = (
            args["raw"] if "raw" in args else [HostRunArgs(args["action"], args["contactKey"])]
        )
        try:
            await workflow.execute_activity(
                "segmentflow.RunAction",
                args=params,
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=RetryPolicy(maximum_attempts=2),
            )
        except ActivityError as exc:
            return _outcome(exc)
        return {"outcome": "ran"}


@workflow.defn(name="tests.HostResolvesThenRuns")
class HostResolvesThenRuns:
    """Resolves the contact through `segmentflow.workflows.resolve_message` (which arms the plugin's
    workflow-side check), waits for the `go` signal, then runs the action."""

    def __init__(self) -> None:
        self._go = False
        self._offered: list[str] | None = None

    @workflow.signal
    def go(self) -> None:
        self._go = True

    @workflow.query
    def offered(self) -> list[str] | None:
        return self._offered

    @workflow.run
    async def run(self, args: dict[str, Any]) -> dict[str, Any]:
        resolved = await resolve_message(args["contactKey"])
        self._offered = resolved.actions
        await workflow.wait_condition(lambda: self._go)
        try:
            await workflow.execute_activity(
                "segmentflow.RunAction",
                {"action": args["action"], "contactKey": args["contactKey"]},
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=RetryPolicy(maximum_attempts=2),
            )
        except ActivityError as exc:
            return _outcome(exc)
        return {"outcome": "ran"}


@workflow.defn(name="tests.HostForgesRefusal")
class HostForgesRefusal:
    """Calls `segmentflow.RefuseAction` itself, as anyone may try, to write an audit row of its choice;
    returns the failure's type."""

    @workflow.run
    async def run(self, args: dict[str, Any]) -> str:
        try:
            await workflow.execute_activity(
                "segmentflow.RefuseAction",
                {
                    "action": args["action"],
                    "contactKey": args["contactKey"],
                    "reason": "forged",
                    "side": "worker",
                },
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=RetryPolicy(maximum_attempts=3),
            )
        except ActivityError as exc:
            assert isinstance(exc.cause, ApplicationError)
            return f"{exc.cause.type}: {exc.cause.non_retryable}"
        return "recorded"
