"""Message-handling activities: resolve what applies to a contact, ask the responder, run an action through
its permission check, record refusals, render the reply.

`segmentflow.RunAction` checks the contact's permission itself before its webhook is called, so whoever
schedules it (a workflow with or without segmentflow's plugin on its side) cannot get a restricted action
performed. The worker-side interceptor runs the same check first (`check_run_action`) and hands its verdict
to the activity through a context variable, so an allowed action costs one permission read, not two.
Every refusal is written to the audit table before the non-retryable `SegmentRestricted` error is raised.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, TypeVar

import httpx
from pydantic import ValidationError
from segmentflow.activities._clients import HttpClients
from segmentflow.activities._heartbeat import heartbeating
from segmentflow.workflows.message_models import (
    REFUSE_ACTION,
    RENDER_REPLY,
    RESOLVE_MESSAGE,
    RESPOND,
    RUN_ACTION,
    SEGMENT_RESTRICTED,
    AppliedInstruction,
    OfferedAction,
    RefuseActionInput,
    RenderReplyInput,
    ResolveMessageInput,
    ResolveMessageResult,
    RespondInput,
    RespondResult,
    RunActionInput,
    RunActionRequest,
    RunActionResult,
    WithheldItem,
)
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio import activity
from temporalio.exceptions import ApplicationError

from segmentflow.db.tables import utcnow
from segmentflow.policies.egress import redact_url, url_refusal
from segmentflow.services.egress import EgressRefusedError, egress_client
from segmentflow.services.messages import (
    CatalogAction,
    MessageCatalog,
    MessageCatalogCache,
    UnknownActionError,
    check_action,
    record_refusal,
    resolve_message,
)
from segmentflow.services.responders import (
    DEFAULT_REPLY_TEMPLATE,
    Choice,
    RejectedError,
    ResponderError,
    TemplateError,
    call_webhook,
    choose_by_trigger,
    choose_with_chat_completions,
    compile_reply_template,
    render_reply,
)
from segmentflow.settings import Settings

__all__ = ["MessageActivities", "refusal_error"]

T = TypeVar("T")

#: The RunAction input the worker-side check allowed in this activity task, and its action.
_verified: ContextVar[tuple[RunActionInput, CatalogAction] | None] = ContextVar(
    "segmentflow_verified", default=None
)


def refusal_error(action: str, contact_key: str | None, reason: str, side: str) -> ApplicationError:
    """The one shape of a refusal, whichever check refused."""
    details = {"action": action, "contactKey": contact_key, "reason": reason, "side": side}
    return ApplicationError(reason, details, type=SEGMENT_RESTRICTED, non_retryable=True)


class _Views:
    """A catalog's actions and instructions as the responders see them, built once per catalog load."""

    def __init__(self, catalog: MessageCatalog) -> None:
        self.catalog = catalog
        self.actions = {
            a.key: OfferedAction(
                key=a.key,
                name=a.name,
                description=a.description,
                parameters=a.parameters,
                trigger_phrases=list(a.trigger_phrases),
            )
            for a in catalog.by_key.values()
        }
        self.instructions = {
            i.key: AppliedInstruction(key=i.key, text=i.text) for i in catalog.instructions_by_key.values()
        }


#: Set by the worker-side interceptor when the `RefuseAction` it is about to run carries the mark the
#: workflow-side interceptor puts on the calls it swaps in; `refuse_action` runs only then.
_marked_refusal: ContextVar[bool] = ContextVar("segmentflow_marked_refusal", default=False)


def _activity_keys() -> tuple[str | None, str | None, str | None]:
    """The refusing activity (workflow id, run id, activity id): the audit row's unique key."""
    if not activity.in_activity():
        return None, None, None
    info = activity.info()
    return info.workflow_id, info.workflow_run_id, info.activity_id


def _idempotency_key() -> str:
    """The same for every retry of one activity (workflow, run, activity id), unique otherwise; a call
    outside an activity (a direct call in process) gets a fresh one."""
    if not activity.in_activity():
        return f"direct/{uuid.uuid4()}"
    info = activity.info()
    return f"{info.workflow_id}/{info.workflow_run_id}/{info.activity_id}"


class MessageActivities:
    """Message handling over one database engine and the `SEGMENTFLOW_*` settings of the responder.

    The reply template (`SEGMENTFLOW_REPLY_TEMPLATE`, else the default) is compiled here, once: one that
    does not parse raises `ValueError` naming the setting, so a worker never starts with it; so does a
    responder base URL the egress policy always refuses (`SEGMENTFLOW_OPENAI_BASE_URL`)."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self._engine = engine
        self._settings = settings
        try:
            self._reply = compile_reply_template(settings.reply_template or DEFAULT_REPLY_TEMPLATE)
        except TemplateError as exc:
            raise ValueError(f"SEGMENTFLOW_REPLY_TEMPLATE is not a valid Jinja2 template: {exc}") from None
        if settings.openai_base_url is not None:  # one the egress policy always refuses stops the worker
            refusal = url_refusal(settings.openai_base_url, settings.egress_policy())
            if refusal is not None:
                raise ValueError(f"SEGMENTFLOW_OPENAI_BASE_URL: {refusal}")
        self._catalogs = MessageCatalogCache()
        self._clients = HttpClients()
        self._reported: object = None
        self._views: _Views | None = None

    def _in_transaction(self, work: Callable[[Session], T]) -> T:
        with Session(self._engine) as session, session.begin():
            return work(session)

    async def _run(self, work: Callable[[Session], T]) -> T:
        return await asyncio.to_thread(self._in_transaction, work)

    def _client(self) -> httpx.AsyncClient:
        """The responder's and the action webhooks' client: under the egress policy, bodies capped."""
        settings = self._settings
        return self._clients.get(
            lambda: egress_client(
                policy=settings.egress_policy(),
                timeout=settings.http_timeout,
                max_body=settings.max_response_bytes,
            )
        )

    async def aclose(self) -> None:
        """Close the HTTP clients (a later call opens a new one)."""
        await self._clients.aclose()

    async def _current_views(self) -> _Views:
        catalog = await self._run(lambda s: self._catalogs.get(session=s))
        views = self._views
        if views is None or views.catalog is not catalog:
            views = self._views = _Views(catalog)
        return views

    async def _record(self, action: str, contact_key: str | None, reason: str, side: str) -> None:
        """Write a refusal to the audit table (`side`: which check refused, or `egress` for a webhook the
        egress policy refused), once per activity (a retry after commit writes nothing), and log it."""
        workflow_id, run_id, activity_id = _activity_keys()
        await self._run(
            lambda s: record_refusal(
                session=s,
                action_key=action,
                contact_key=contact_key,
                reason=reason,
                side=side,
                now=utcnow(),
                workflow_id=workflow_id,
                run_id=run_id,
                activity_id=activity_id,
            )
        )
        activity.logger.warning(
            "refused action %s for contact %s (%s): %s", action, contact_key, side, reason
        )

    async def _refuse(self, action: str, contact_key: str | None, reason: str, side: str) -> ApplicationError:
        await self._record(action, contact_key, reason, side)
        return refusal_error(action, contact_key, reason, side)

    async def check_run_action(
        self, params: RunActionInput, header_contact: str | None, side: str
    ) -> CatalogAction:
        """Refuse (recorded, then `SegmentRestricted`) unless the contact may use the action now. A contact
        on the header that differs from the input's is refused too: a workflow serving one contact cannot
        act as another."""
        if header_contact is not None and params.contact_key not in (None, header_contact):
            reason = (
                f'the input names contact "{params.contact_key}" but the workflow serves "{header_contact}"'
            )
            raise await self._refuse(params.action, params.contact_key, reason, side)
        try:
            action, decision = await self._run(
                lambda s: check_action(session=s, action_key=params.action, contact_key=params.contact_key)
            )
        except UnknownActionError as exc:
            raise ApplicationError(str(exc), type="ActionNotFound", non_retryable=True) from None
        if not decision.allowed:
            raise await self._refuse(params.action, params.contact_key, decision.detail, side)
        _verified.set((params, action))
        return action

    @activity.defn(name=RESOLVE_MESSAGE)
    async def resolve_message(self, params: ResolveMessageInput) -> ResolveMessageResult:
        found = await self._run(
            lambda s: resolve_message(
                session=s, catalog=self._catalogs.get(session=s), contact_key=params.contact_key
            )
        )
        if found.withheld and self._reported is not found.catalog:
            self._reported = found.catalog  # once per catalog load, not once per message
            activity.logger.warning(
                "withheld from every contact (restricted to segments that do not exist): %s",
                "; ".join(f"{kind} {w.key} ({', '.join(w.missing_segments)})" for kind, w in found.withheld),
            )
        return ResolveMessageResult(
            contact_key=params.contact_key,
            segments=None if found.segments is None else sorted(found.segments),
            actions=[a.key for a in found.actions],
            instructions=[i.key for i in found.instructions],
            withheld=[
                WithheldItem(kind=kind, key=w.key, missing_segments=list(w.missing_segments))
                for kind, w in found.withheld
            ],
        )

    @activity.defn(name=RESPOND)
    async def respond(self, params: RespondInput) -> RespondResult:
        """The configured responder's choice: chat completions when `SEGMENTFLOW_OPENAI_BASE_URL` is set,
        else the built-in trigger phrases."""
        settings = self._settings
        views = await self._current_views()
        # Only what was offered: an action or instruction deleted since is left out, never one added.
        actions = [views.actions[k] for k in params.actions if k in views.actions]
        instructions = [views.instructions[k] for k in params.instructions if k in views.instructions]
        choice: Choice
        if settings.openai_base_url is None:
            choice = choose_by_trigger(params.text, actions)
        else:
            try:
                choice = await choose_with_chat_completions(
                    self._client(),
                    base_url=settings.openai_base_url,
                    api_key=settings.openai_api_key,
                    model=settings.openai_model,
                    text=params.text,
                    actions=actions,
                    instructions=instructions,
                    timeout=settings.http_timeout,
                    max_body=settings.max_response_bytes,
                )
            except (RejectedError, ResponderError, EgressRefusedError) as exc:
                raise ApplicationError(str(exc), type="ResponderFailed", non_retryable=True) from None
        return RespondResult(action=choice.action, arguments=choice.arguments, reply=choice.reply)

    async def _well_formed(self, request: RunActionRequest) -> RunActionInput:
        """The input as `RunActionInput`, or the refusal (recorded) of one that is not."""
        if isinstance(request, RunActionInput):
            return request
        try:
            return RunActionInput.model_validate(request.model_dump(by_alias=True, exclude_unset=True))
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(p) for p in error["loc"]) or "input"
            action = "(unknown)" if request.action is None else str(request.action)[:1000]
            contact = None if request.contact_key is None else str(request.contact_key)[:1000]
            reason = f"malformed RunAction input: {where}: {error['msg']}"
            raise await self._refuse(action, contact, reason, "activity") from None

    @activity.defn(name=RUN_ACTION)
    async def run_action(self, request: RunActionRequest) -> RunActionResult:
        """Perform an action for a contact: the permission check first (unless this worker's interceptor
        just made it for this very input), then the webhook. A malformed input is refused. It heartbeats
        in the background, so with a heartbeat timeout a dead worker's call is retried (same
        `Idempotency-Key`) within seconds rather than at the start-to-close timeout."""
        async with heartbeating():
            return await self._run_action(request)

    async def _run_action(self, request: RunActionRequest) -> RunActionResult:
        params = await self._well_formed(request)
        verified = _verified.get()
        if verified is not None and verified[0] == params:
            action = verified[1]
        else:
            action = await self.check_run_action(params, None, "activity")
        # After the permission check, so a contact who may not use the action learns nothing about it.
        errors = action.argument_errors(params.arguments)
        if errors:
            raise ApplicationError(
                f'action "{action.key}": arguments do not match its parameters: {"; ".join(errors)}',
                type="InvalidActionArguments",
                non_retryable=True,
            )
        if action.webhook is None:
            return RunActionResult(action=action.key, contact_key=params.contact_key, status=None)
        payload: dict[str, Any] = {
            "action": action.key,
            "contactKey": params.contact_key,
            "arguments": params.arguments,
        }
        try:
            status, response, truncated = await call_webhook(
                self._client(),
                action.webhook,
                payload,
                timeout=self._settings.http_timeout,
                # Stable across this activity's retries, distinct for every run of an action.
                idempotency_key=_idempotency_key(),
                max_body=self._settings.max_response_bytes,
            )
        except RejectedError as exc:
            raise ApplicationError(str(exc), type="WebhookRejected", non_retryable=True) from None
        except EgressRefusedError as exc:  # audited like a refusal, and never retried
            reason = f"the webhook {redact_url(str(action.webhook['url']))}: {exc}"
            await self._record(action.key, params.contact_key, reason, "egress")
            raise ApplicationError(reason, type="EgressRefused", non_retryable=True) from None
        return RunActionResult(
            action=action.key,
            contact_key=params.contact_key,
            status=status,
            response=response,
            response_truncated=truncated,
        )

    @staticmethod
    def admit_refusal() -> None:
        """Called by the worker-side interceptor for a `RefuseAction` carrying the workflow-side mark."""
        _marked_refusal.set(True)

    @activity.defn(name=REFUSE_ACTION)
    async def refuse_action(self, params: RefuseActionInput) -> None:
        """Stands in for a `RunAction` the workflow-side check refused: records it, then fails. Only the
        plugin's interceptor schedules it (and marks the call): any other call is refused with a
        non-retryable `InvalidInput` and writes nothing, so the audit holds only real refusals."""
        if not _marked_refusal.get():
            raise ApplicationError(
                f"{REFUSE_ACTION} is scheduled only by segmentflow's workflow interceptor in place of a"
                " refused RunAction; this call does not carry its mark, so nothing was recorded",
                type="InvalidInput",
                non_retryable=True,
            )
        raise await self._refuse(params.action, params.contact_key, params.reason, params.side)

    @activity.defn(name=RENDER_REPLY)
    async def render_reply(self, params: RenderReplyInput) -> str:
        action = None if params.ran is None else (await self._current_views()).actions.get(params.ran)
        variables = {
            "contact_key": params.contact_key,
            "text": params.text,
            "action": None if action is None else action.model_dump(),
            "ran": params.ran,
            "refused": params.refused,
            "responder_reply": params.responder_reply,
            "result": params.result,
        }
        try:
            # In a thread: a render may take up to its limits, and must not stall the event loop.
            return await asyncio.to_thread(
                render_reply, self._reply, variables, limits=self._settings.template_limits()
            )
        except TemplateError as exc:
            raise ApplicationError(
                f"the reply template failed: {exc}", type="ReplyTemplateFailed", non_retryable=True
            ) from None

    def all(self) -> list[Callable[..., object]]:
        """Every activity method, for worker registration."""
        return [self.resolve_message, self.respond, self.run_action, self.refuse_action, self.render_reply]
