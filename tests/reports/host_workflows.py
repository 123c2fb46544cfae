"""A host application's workflow that records the end of a conversation (the README's example)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from segmentflow.workflows.conversation_models import (
        RECORD_CONVERSATION,
        RecordConversationInput,
        RecordConversationResult,
    )


@workflow.defn
class SupportConversation:
    """Runs one conversation; when it closes, records it for the segment report."""

    @workflow.run
    async def run(self, contact_key: str | None) -> RecordConversationResult:
        # ... the conversation itself: HandleMessage calls, a survey ...
        return await workflow.execute_activity(
            RECORD_CONVERSATION,
            RecordConversationInput(
                id=workflow.info().workflow_id,  # one event per conversation, however often it is retried
                contact_key=contact_key,
                at=workflow.now(),
                channel="chat",
                handoff=False,
                csat=5,
            ),
            result_type=RecordConversationResult,
            start_to_close_timeout=timedelta(seconds=30),
        )
