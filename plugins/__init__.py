"""segmentflow.plugins: `SegmentsPlugin` for your Temporal Client, and client-side helpers."""

from segmentflow.plugins._devserver import (
    DEV_SERVER_ARGS,
    BinaryNotFoundError,
    temporal_cli_path,
    temporal_test_server_path,
)
from segmentflow.plugins._interceptors import SegmentsInterceptor, current_contact, serving_contact
from segmentflow.plugins._plugin import PASSTHROUGH_MODULES, SegmentsPlugin
from segmentflow.plugins._schedule import (
    DEFAULT_RECOMPUTE_TIMEOUT,
    RECOMPUTE_SCHEDULE_ID,
    RecomputeScheduleStatus,
    ScheduledRun,
    ensure_recompute_schedule,
    recompute_schedule,
    recompute_schedule_status,
    start_recompute,
)
from segmentflow.plugins._search import SEARCH_ATTRIBUTE_ARGS, SEARCH_ATTRIBUTES, missing_search_attributes
from segmentflow.plugins._sequences import start_sequence_runner, wake_sequence_runner
from segmentflow.plugins._sla import (
    SLA_FIRER_SHARDS,
    change_ticket_sla,
    ensure_sla_firers,
    ensure_sla_watch,
    reply_ticket_sla,
    start_ticket_sla,
)

__all__ = [
    "DEFAULT_RECOMPUTE_TIMEOUT",
    "DEV_SERVER_ARGS",
    "PASSTHROUGH_MODULES",
    "RECOMPUTE_SCHEDULE_ID",
    "SEARCH_ATTRIBUTES",
    "SEARCH_ATTRIBUTE_ARGS",
    "SLA_FIRER_SHARDS",
    "BinaryNotFoundError",
    "RecomputeScheduleStatus",
    "ScheduledRun",
    "SegmentsInterceptor",
    "SegmentsPlugin",
    "change_ticket_sla",
    "current_contact",
    "ensure_recompute_schedule",
    "ensure_sla_firers",
    "ensure_sla_watch",
    "missing_search_attributes",
    "recompute_schedule",
    "recompute_schedule_status",
    "reply_ticket_sla",
    "serving_contact",
    "start_recompute",
    "start_sequence_runner",
    "start_ticket_sla",
    "temporal_cli_path",
    "temporal_test_server_path",
    "wake_sequence_runner",
]
