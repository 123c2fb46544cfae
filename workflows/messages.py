"""`segmentflow.HandleMessage`: the reference message-handling workflow, one run per message.

It resolves the contact's memberships once (`segmentflow.ResolveMessage`: the actions offered and the
instructions applied), asks the responder which action to run (`segmentflow.Respond`), runs it through the
enforced path (`segmentflow.RunAction`, checked in the workflow by the plugin's outbound interceptor
against what this message offered, and again on the worker), and renders the reply in an activity
(`segmentflow.RenderReply`). A refusal is a result (`refused`), not a failure. Memberships are read per
message, so a change takes effect at the next one.

Resolve, respond and render are local activities (no round trip through the server for each; they are
registered on every worker of the plugin); `RunAction` is a regular activity, so any worker of the task
queue may perform it and its worker-side check runs wherever it does.

Also `resolve_message(contact_key)` for host workflows: the same resolution, which also tells the plugin's
workflow-side check what this contact may run.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import ValidationError
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from segmentflow.workflows.message_models import (
        HANDLE_MESSAGE,
        RENDER_REPLY,
        RESOLVE_MESSAGE,
        RESPOND,
        RUN_ACTION,
        RUN_ACTION_HEARTBEAT,
        SEGMENT_RESTRICTED,
        HandleMessageInput,
        HandleMessageResult,
        RenderReplyInput,
        ResolveMessageInput,
        ResolveMessageResult,
        RespondInput,
        RespondResult,
        RunActionInput,
        RunActionResult,
    )

__all__ = ["MESSAGE_RETRY", "HandleMessage", "resolve_message"]

MESSAGE_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=10,
    non_retryable_error_types=[
        SEGMENT_RESTRICTED,
        "ActionNotFound",
        "WebhookRejected",
        "ResponderFailed",
        "ContactNotFound",
        "ReplyTemplateFailed",
    ],
)
_TIMEOUT = timedelta(seconds=30)


async def resolve_message(contact_key: str | None, *, task_queue: str | None = None) -> ResolveMessageResult:
    """What applies to the contact now: memberships read once, actions offered, instructions applied."""
    result: ResolveMessageResult = await workflow.execute_activity(
        RESOLVE_MESSAGE,
        ResolveMessageInput(contact_key=contact_key),
        result_type=ResolveMessageResult,
        task_queue=task_queue,
        start_to_close_timeout=_TIMEOUT,
        retry_policy=MESSAGE_RETRY,
    )
    return result


def _refusal(exc: ActivityError) -> bool:
    cause = exc.cause
    return isinstance(cause, ApplicationError) and cause.type == SEGMENT_RESTRICTED


# An input that breaks the payload bounds (a contact key over 512 characters or with NUL) fails the run
# with the validation error, instead of failing its workflow task again and again.
@workflow.defn(name=HANDLE_MESSAGE, failure_exception_types=[ValidationError])
class HandleMessage:
    @workflow.run
    async def run(self, params: HandleMessageInput) -> HandleMessageResult:
        resolved: ResolveMessageResult = await workflow.execute_local_activity(
            RESOLVE_MESSAGE,
            ResolveMessageInput(contact_key=params.contact_key),
            result_type=ResolveMessageResult,
            start_to_close_timeout=_TIMEOUT,
            retry_policy=MESSAGE_RETRY,
        )
        choice: RespondResult = await workflow.execute_local_activity(
            RESPOND,
            RespondInput(
                contact_key=params.contact_key,
                conversation_id=params.conversation_id,
                text=params.text,
                actions=resolved.actions,
                instructions=resolved.instructions,
            ),
            result_type=RespondResult,
            start_to_close_timeout=timedelta(minutes=2),
            retry_policy=MESSAGE_RETRY,
        )
        ran = refused = None
        result = None
        if choice.action is not None:
            try:
                outcome: RunActionResult = await workflow.execute_activity(
                    RUN_ACTION,
                    RunActionInput(
                        action=choice.action, contact_key=params.contact_key, arguments=choice.arguments
                    ),
                    result_type=RunActionResult,
                    start_to_close_timeout=_TIMEOUT,
                    heartbeat_timeout=RUN_ACTION_HEARTBEAT,
                    retry_policy=MESSAGE_RETRY,
                )
                ran, result = choice.action, outcome.response
            except ActivityError as exc:
                if not _refusal(exc):
                    raise
                refused = choice.action
        reply: str = await workflow.execute_local_activity(
            RENDER_REPLY,
            RenderReplyInput(
                contact_key=params.contact_key,
                text=params.text,
                ran=ran,
                refused=refused,
                responder_reply=choice.reply,
                result=result,
            ),
            result_type=str,
            start_to_close_timeout=_TIMEOUT,
            retry_policy=MESSAGE_RETRY,
        )
        return HandleMessageResult(
            actions=resolved.actions,
            instructions=resolved.instructions,
            ran=ran,
            refused=refused,
            reply=reply,
        )
