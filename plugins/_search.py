"""segmentflow's search attributes: what an operator looks tickets and sequence runners up by in the Temporal
Web UI. They must be registered on the namespace before workflows set them (`worker.py --dev` and
docker-compose.temporal.yml register them; elsewhere `temporal operator search-attribute create`)."""

from __future__ import annotations

from segmentflow.workflows.sequence_models import SA_SEQUENCE_KEY
from segmentflow.workflows.sla_models import SA_CONTACT_KEY, SA_SLA_POLICY, SA_TICKET_ID, SA_TICKET_STATE
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey

__all__ = ["SEARCH_ATTRIBUTES", "SEARCH_ATTRIBUTE_ARGS", "missing_search_attributes"]

#: Every search attribute segmentflow sets (all Keyword).
SEARCH_ATTRIBUTES: tuple[SearchAttributeKey[str], ...] = (
    SA_TICKET_ID,
    SA_CONTACT_KEY,
    SA_SLA_POLICY,
    SA_TICKET_STATE,
    SA_SEQUENCE_KEY,
)
#: `temporal server start-dev` arguments registering them.
SEARCH_ATTRIBUTE_ARGS: tuple[str, ...] = tuple(
    arg for key in SEARCH_ATTRIBUTES for arg in ("--search-attribute", f"{key.name}=Keyword")
)


async def missing_search_attributes(client: Client) -> list[str]:
    """The names of segmentflow's search attributes the client's namespace has not registered."""
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    known = {**listed.system_attributes, **listed.custom_attributes}
    return [key.name for key in SEARCH_ATTRIBUTES if key.name not in known]
