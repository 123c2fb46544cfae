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
        try:
            await workflow.execute_activity(
                "segmentflow.RunAction",
                {"action": args["action"], "contactKey": args["contactKey"], "arguments": {}},
                task_queue=args.get("taskQueue"),
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=RetryPolicy(maximum_attempts=3),
            )
        except ActivityError as exc:
            cause = exc.cause
            assert isinstance(cause, ApplicationError)
            details = cause.details[0] if cause.details else {}
            return {
                "outcome": cause.type,
                "nonRetryable": cause.non_retryable,
                "side": details.get("side"),
                "activity": exc.activity_type,
            }
        return {"outcome": "ran"}
