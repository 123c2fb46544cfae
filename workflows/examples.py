"""Example workflows, as a user writes them, used by `segmentflow demo`: branch a message on membership."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from segmentflow.workflows.membership import is_member

__all__ = ["ChooseGreeting"]


@workflow.defn(name="segmentflow.examples.ChooseGreeting")
class ChooseGreeting:
    """Picks the VIP or the standard welcome template, the way a workflow author branches on `isMember`."""

    @workflow.run
    async def run(self, contact_key: str) -> str:
        if await is_member("vip", contact_key):
            return "vip-welcome"
        if await is_member("trial", contact_key):
            return "trial-nurture"
        return "standard-welcome"
