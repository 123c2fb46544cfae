"""Host workflows, written as a segmentflow user would: they call `segmentflow.RunAction` directly, by
name with plain JSON, on a task queue they are given."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError


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
