"""Message-handling interceptors of `SegmentsPlugin`: carry the current contact on workflow and activity
headers, and refuse a restricted action on the workflow side and again on the worker side.

Three checks stand between a workflow and an action's webhook, each refusing with the same non-retryable
`ApplicationError(type="SegmentRestricted")` and each recording the refusal in the audit table:

1. Workflow side (outbound, in the sandbox). Scheduling `segmentflow.RunAction` (as an activity or a local
   activity) is checked against what the workflow knows the contact may run. That knowledge comes from
   `segmentflow.ResolveMessage`: when a workflow runs it (as `HandleMessage` does once per message, or a
   host workflow through `segmentflow.workflows.resolve_message`), this interceptor remembers the offered
   action keys from its result, so the check is a set lookup, deterministic on replay, with no I/O in the
   sandbox. A workflow that never resolved the contact gets the resolution scheduled for it first (one more
   activity, before each such `RunAction`). A refused action is never scheduled: `segmentflow.RefuseAction`
   takes its place (marked with the `segmentflow-refusal` header, without which no worker runs it), which
   records the refusal and fails, so the caller sees the same `ActivityError` a
   worker-side refusal gives. The input is read whatever its type (our model, plain JSON, a host's own
   dataclass or pydantic model, through the workflow's payload converter); one that is not exactly one
   valid `RunAction` input is refused the same way ("malformed RunAction input"), never passed through
   unchecked. This module imports nothing but temporalio and the pydantic payloads, so it is safe in the
   sandbox; the database is reached only through activities.
2. Worker side (inbound). Before `segmentflow.RunAction` runs on a worker of this plugin, the contact's
   memberships are read fresh and checked (a callable given by the plugin), whoever scheduled it: this
   refuses a host workflow whose worker lacks the plugin, or one that bypassed the workflow-side check.
3. `segmentflow.RunAction` itself, for a worker without this plugin (see `segmentflow.activities`).

The contact travels as the `segmentflow-contact` header: set on a workflow start by the client (from
`serving_contact(...)`, or from the `contactKey` of a `HandleMessage` input), passed by the workflow to every
activity and child workflow it starts, and readable in an activity as `current_contact()`. When the header
names a contact, a `RunAction` for a different contact is refused: a workflow serving one contact cannot act
as another.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, NoReturn, cast

import temporalio.api.common.v1
import temporalio.client
import temporalio.worker
from pydantic import ValidationError
from segmentflow.workflows.message_models import (
    CONTACT_HEADER,
    HANDLE_MESSAGE,
    REFUSAL_HEADER,
    REFUSE_ACTION,
    RESOLVE_MESSAGE,
    RUN_ACTION,
    RUN_ACTION_HEARTBEAT,
    RefuseActionInput,
    ResolveMessageInput,
    ResolveMessageResult,
    RunActionInput,
    RunActionRequest,
)
from temporalio import activity, workflow
from temporalio.converter import PayloadConverter

__all__ = ["ActionCheck", "SegmentsInterceptor", "current_contact", "serving_contact"]

Headers = Mapping[str, temporalio.api.common.v1.Payload]

#: The worker-side check: (input, contact on the header, side) -> returns when allowed, raises the refusal.
ActionCheck = Callable[[RunActionInput, str | None, str], Awaitable[object]]

_client_contact: ContextVar[str | None] = ContextVar("segmentflow_client_contact", default=None)
_activity_contact: ContextVar[str | None] = ContextVar("segmentflow_activity_contact", default=None)


def _with_contact(headers: Headers, contact: str | None) -> Headers:
    if contact is None:
        return headers
    # The default converter, whatever the host's data converter: the header is ours and always plain JSON.
    return {**headers, CONTACT_HEADER: PayloadConverter.default.to_payloads([contact])[0]}


def _contact_of(headers: Headers) -> str | None:
    payload = headers.get(CONTACT_HEADER)
    if payload is None:
        return None
    value = PayloadConverter.default.from_payloads([payload])[0]
    return value if isinstance(value, str) else None


def _run_action_input(args: Sequence[Any], converter: PayloadConverter) -> RunActionInput | None:
    """The `RunAction` input, whatever the caller passed: our model, plain JSON, or a host's own
    dataclass or pydantic model (round-tripped through the payload converter, as the worker will read it).
    None when it is not exactly one argument that reads as a valid `RunActionInput`."""
    if len(args) != 1:
        return None
    arg = args[0]
    if isinstance(arg, RunActionInput):
        return arg
    if isinstance(arg, RunActionRequest):  # as the worker decodes it: only the fields the caller sent
        arg = arg.model_dump(by_alias=True, exclude_unset=True)
    try:
        if not isinstance(arg, dict):
            payloads = converter.to_payloads([arg])
            arg = converter.from_payloads(payloads, [RunActionInput])[0]
            if isinstance(arg, RunActionInput):
                return arg
        return RunActionInput.model_validate(arg)
    except Exception:  # any conversion failure is a malformed input, refused by the caller
        return None


def _describe(args: Sequence[Any]) -> tuple[str, str | None]:
    """Best-effort action and contact of a malformed `RunAction` input, for the refusal's audit row."""
    arg = args[0] if args else None
    if isinstance(arg, dict):
        action, contact = arg.get("action"), arg.get("contactKey", arg.get("contact_key"))
    else:
        action, contact = getattr(arg, "action", None), getattr(arg, "contact_key", None)
    return (
        str(action)[:1000] if action is not None else "(unknown)",
        str(contact)[:1000] if contact is not None else None,
    )


@contextmanager
def serving_contact(contact_key: str | None) -> Iterator[None]:
    """Client side: workflows started inside this block carry `contact_key` as their current contact."""
    token = _client_contact.set(contact_key)
    try:
        yield
    finally:
        _client_contact.reset(token)


def current_contact() -> str | None:
    """In an activity: the contact the calling workflow serves (None when it named none)."""
    return _activity_contact.get()


class _ClientOutbound(temporalio.client.OutboundInterceptor):
    async def start_workflow(
        self, input: temporalio.client.StartWorkflowInput
    ) -> temporalio.client.WorkflowHandle[Any, Any]:
        contact = _client_contact.get()
        if contact is None and input.workflow == HANDLE_MESSAGE and len(input.args) == 1:
            arg = input.args[0]
            contact = getattr(arg, "contact_key", None)
            if contact is None and isinstance(arg, dict):
                contact = arg.get("contactKey")
        if isinstance(contact, str):
            input = dataclasses.replace(input, headers=_with_contact(input.headers, contact))
        return await super().start_workflow(input)


@dataclasses.dataclass
class _WorkflowState:
    """Per workflow run: its contact, and the action keys each resolved contact may run."""

    contact: str | None = None
    permits: dict[str | None, frozenset[str]] = dataclasses.field(default_factory=dict)


#: A `StartActivityInput` or a `StartLocalActivityInput` (the fields used here are common to both).
_Start = Any
_Scheduler = Callable[[_Start], "workflow.ActivityHandle[Any]"]


class _WorkflowOutbound(temporalio.worker.WorkflowOutboundInterceptor):
    def __init__(self, next: temporalio.worker.WorkflowOutboundInterceptor, state: _WorkflowState) -> None:
        super().__init__(next)
        self._state = state

    def start_activity(self, input: temporalio.worker.StartActivityInput) -> workflow.ActivityHandle[Any]:
        return self._schedule(input, self.next.start_activity)

    def start_local_activity(
        self, input: temporalio.worker.StartLocalActivityInput
    ) -> workflow.ActivityHandle[Any]:
        return self._schedule(input, self.next.start_local_activity)

    def _schedule(self, input: _Start, start: _Scheduler) -> workflow.ActivityHandle[Any]:
        input = dataclasses.replace(input, headers=_with_contact(input.headers, self._state.contact))
        if input.activity == RUN_ACTION:
            params = _run_action_input(input.args, workflow.payload_converter())
            if params is None:
                action, contact = _describe(input.args)
                refusal = RefuseActionInput(
                    action=action, contact_key=contact, reason="malformed RunAction input", side="workflow"
                )
                return self._refuse_with(input, refusal, start)
            return self._checked(input, params, start)
        handle = start(input)
        if input.activity == RESOLVE_MESSAGE:
            handle.add_done_callback(self._remember)
        return handle

    async def start_child_workflow(
        self, input: temporalio.worker.StartChildWorkflowInput
    ) -> workflow.ChildWorkflowHandle[Any, Any]:
        input = dataclasses.replace(input, headers=_with_contact(input.headers, self._state.contact))
        return await super().start_child_workflow(input)

    def continue_as_new(self, input: temporalio.worker.ContinueAsNewInput) -> NoReturn:
        input = dataclasses.replace(input, headers=_with_contact(input.headers, self._state.contact))
        super().continue_as_new(input)

    def _remember(self, handle: asyncio.Future[Any]) -> None:
        """Keep what a completed `ResolveMessage` offered (the latest resolution of a contact wins)."""
        if handle.cancelled() or handle.exception() is not None:
            return
        result = handle.result()
        if not isinstance(result, ResolveMessageResult):
            try:
                result = ResolveMessageResult.model_validate(result)
            except ValidationError:
                return
        self._state.permits[result.contact_key] = frozenset(result.actions)

    def _refused(
        self, input: _Start, params: RunActionInput, reason: str, start: _Scheduler
    ) -> workflow.ActivityHandle[Any]:
        """`RefuseAction` in place of the refused `RunAction`: it records the refusal and fails."""
        refusal = RefuseActionInput(
            action=params.action, contact_key=params.contact_key, reason=reason, side="workflow"
        )
        return self._refuse_with(input, refusal, start)

    @staticmethod
    def _refuse_with(
        input: _Start, refusal: RefuseActionInput, start: _Scheduler
    ) -> workflow.ActivityHandle[Any]:
        # The mark: the worker runs `RefuseAction` only when it carries this header.
        headers = {**input.headers, REFUSAL_HEADER: PayloadConverter.default.to_payloads([True])[0]}
        return start(
            dataclasses.replace(
                input, activity=REFUSE_ACTION, args=[refusal], arg_types=None, ret_type=None, headers=headers
            )
        )

    def _decide(
        self, input: _Start, params: RunActionInput, permit: frozenset[str], start: _Scheduler
    ) -> workflow.ActivityHandle[Any]:
        if params.action in permit:
            if isinstance(input, temporalio.worker.StartActivityInput) and input.heartbeat_timeout is None:
                # RunAction heartbeats in the background: a dead worker's call is retried in seconds.
                input = dataclasses.replace(input, heartbeat_timeout=RUN_ACTION_HEARTBEAT)
            return start(input)
        who = "an anonymous contact" if params.contact_key is None else f'contact "{params.contact_key}"'
        return self._refused(input, params, f'action "{params.action}" is not offered to {who}', start)

    def _checked(
        self, input: _Start, params: RunActionInput, start: _Scheduler
    ) -> workflow.ActivityHandle[Any]:
        serving = self._state.contact
        if serving is not None and params.contact_key not in (None, serving):
            reason = f'input contact "{params.contact_key}" is not the served contact "{serving}"'
            return self._refused(input, params, reason, start)
        permit = self._state.permits.get(params.contact_key)
        if permit is not None:
            return self._decide(input, params, permit, start)

        resolve = dataclasses.replace(
            input,
            activity=RESOLVE_MESSAGE,
            args=[ResolveMessageInput(contact_key=params.contact_key)],
            arg_types=None,
            ret_type=ResolveMessageResult,
            activity_id=None,
        )

        async def resolve_then_decide() -> Any:
            resolved: ResolveMessageResult = await start(resolve)
            return await self._decide(input, params, frozenset(resolved.actions), start)

        # A task stands in for the activity handle: awaiting or cancelling it is all a caller does with one.
        task = asyncio.get_running_loop().create_task(resolve_then_decide())
        return cast(workflow.ActivityHandle[Any], task)


class _WorkflowInbound(temporalio.worker.WorkflowInboundInterceptor):
    def init(self, outbound: temporalio.worker.WorkflowOutboundInterceptor) -> None:
        self._state = _WorkflowState()
        super().init(_WorkflowOutbound(outbound, self._state))

    async def execute_workflow(self, input: temporalio.worker.ExecuteWorkflowInput) -> Any:
        self._state.contact = _contact_of(input.headers)
        return await super().execute_workflow(input)


class _ActivityInbound(temporalio.worker.ActivityInboundInterceptor):
    def __init__(
        self,
        next: temporalio.worker.ActivityInboundInterceptor,
        check: ActionCheck,
        admit_refusal: Callable[[], object],
    ) -> None:
        super().__init__(next)
        self._check = check
        self._admit_refusal = admit_refusal

    async def execute_activity(self, input: temporalio.worker.ExecuteActivityInput) -> Any:
        contact = _contact_of(input.headers)
        token = _activity_contact.set(contact)
        try:
            kind = activity.info().activity_type
            if kind == RUN_ACTION:
                params = _run_action_input(input.args, activity.payload_converter())
                if params is not None:  # otherwise the activity refuses the input it cannot read
                    await self._check(params, contact, "worker")
            elif kind == REFUSE_ACTION and REFUSAL_HEADER in input.headers:
                self._admit_refusal()
            return await super().execute_activity(input)
        finally:
            _activity_contact.reset(token)


class SegmentsInterceptor(temporalio.client.Interceptor, temporalio.worker.Interceptor):
    """Client and worker interceptor of `SegmentsPlugin` (see the module docstring). `check` is the
    worker-side permission check, which reads the database; nothing here does. `admit_refusal` is called
    before a `RefuseAction` that carries the workflow side's mark runs (the activity refuses any other)."""

    def __init__(self, check: ActionCheck, admit_refusal: Callable[[], object]) -> None:
        self._check = check
        self._admit_refusal = admit_refusal

    def intercept_client(
        self, next: temporalio.client.OutboundInterceptor
    ) -> temporalio.client.OutboundInterceptor:
        return _ClientOutbound(next)

    def intercept_activity(
        self, next: temporalio.worker.ActivityInboundInterceptor
    ) -> temporalio.worker.ActivityInboundInterceptor:
        return _ActivityInbound(next, self._check, self._admit_refusal)

    def workflow_interceptor_class(
        self, input: temporalio.worker.WorkflowInterceptorClassInput
    ) -> type[temporalio.worker.WorkflowInboundInterceptor]:
        return _WorkflowInbound
