"""Workflows written the way a segmentflow user writes theirs: in their own module, calling our activity by
name (as any SDK language could) or through the typed helper."""

from __future__ import annotations

import sys
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from segmentflow.workflows import CheckContactInSegmentResult, check_contact_in_segment, is_member


@workflow.defn(name="tests.ChooseTemplateByName")
class ChooseTemplateByName:
    """Branches on `isMember` from the activity called by its type name with plain JSON."""

    @workflow.run
    async def run(self, contact_key: str) -> str:
        result: dict[str, Any] = await workflow.execute_activity(
            "segmentflow.CheckContactInSegment",
            {"segmentKey": "vip", "contactKey": contact_key},
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(maximum_attempts=3),
            result_type=dict,
        )
        return "vip-template" if result["isMember"] else "standard-template"


@workflow.defn(name="tests.ChooseTemplateWithHelper")
class ChooseTemplateWithHelper:
    @workflow.run
    async def run(self, args: list[str]) -> str:
        segment, contact = args
        return "member" if await is_member(segment, contact) else "not-member"


@workflow.defn(name="tests.CheckWithHelper")
class CheckWithHelper:
    @workflow.run
    async def run(self, args: list[str]) -> CheckContactInSegmentResult:
        segment, contact, kind = args
        return await check_contact_in_segment(contact, segment_key=segment, context_kind=kind or None)


@workflow.defn(name="tests.SandboxModules")
class SandboxModules:
    """Reports which heavy libraries the sandbox holds while our helper runs."""

    @workflow.run
    async def run(self) -> list[str]:
        heavy = ("sqlalchemy", "sqlmodel", "httpx", "jinja2", "psycopg", "alembic")
        return sorted(name for name in sys.modules if name.split(".")[0] in heavy)


@workflow.defn(name="tests.CheckAgainLater")
class CheckAgainLater:
    """A nurture-style wait: membership read, three days of sleep, read again."""

    @workflow.run
    async def run(self, contact_key: str) -> list[bool]:
        before = await is_member("vip", contact_key)
        await workflow.sleep(timedelta(days=3))
        after = await is_member("vip", contact_key)
        return [before, after]
