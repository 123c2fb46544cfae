"""Host workflows, written as a segmentflow user would: they call `segmentflow.RunAction` directly, by
name with plain JSON, on a task queue they are given."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError


@workflow.defn(name="tests.HostRunsAction")
class HostRunsAction:
    """Runs one action for a contact; returns "ran" or the refusal's type, side and reason."""

    @workflow.run
    async def run(self, args: dict[str, Any]) -> dict[str, Any]:
        run_input = {"action": args["action"], "contactKey": args["contactKey"], "arguments": {}}
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
