"""`segmentflow.RecordConversation`: a host workflow records the end of a conversation. Opens a session in
a worker thread, calls the ingest service, returns a `RecordConversationResult`; a repeat (a retried
activity, a replayed workflow) changes nothing and reports a duplicate. A value the database refuses is a
non-retryable `ApplicationError`; database outages propagate so Temporal retries."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

from segmentflow.workflows.conversation_models import (
    RECORD_CONVERSATION,
    RecordConversationInput,
    RecordConversationResult,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DataError
from sqlmodel import Session
from temporalio import activity
from temporalio.exceptions import ApplicationError

from segmentflow.services.conversations import record_conversations

__all__ = ["ConversationActivities"]


class ConversationActivities:
    """Conversation events over one database engine."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def _record(self, event: RecordConversationInput) -> RecordConversationResult:
        with Session(self._engine) as session, session.begin():
            counts = record_conversations(session=session, events=[event], now=datetime.now(UTC))
        return RecordConversationResult(recorded=counts.recorded, duplicates=counts.duplicates)

    @activity.defn(name=RECORD_CONVERSATION)
    async def record_conversation(self, params: RecordConversationInput) -> RecordConversationResult:
        try:
            return await asyncio.to_thread(self._record, params)
        except DataError as exc:
            message = f"the database refused a value: {exc.orig}"
            raise ApplicationError(message, type="InvalidInput", non_retryable=True) from None

    def all(self) -> list[Callable[..., object]]:
        """Every activity method, for worker registration."""
        return [self.record_conversation]
