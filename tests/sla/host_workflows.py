"""A host workflow that posts one SLA webhook through `segmentflow.PostSlaWebhook`, by name with plain JSON,
as a host application's own workflow would."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy


@workflow.defn(name="tests.PostsSlaWebhook")
class PostsSlaWebhook:
    @workflow.run
    async def run(self, notice: dict[str, Any]) -> None:
        await workflow.execute_activity(
            "segmentflow.PostSlaWebhook",
            notice,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(maximum_attempts=1),
        )
