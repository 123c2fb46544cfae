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
from segmentflow.plugins._sequences import start_sequence_runner, wake_sequence_runner
from segmentflow.plugins._sla import ensure_sla_watch, start_ticket_sla

__all__ = [
    "DEFAULT_RECOMPUTE_TIMEOUT",
    "DEV_SERVER_ARGS",
    "PASSTHROUGH_MODULES",
    "RECOMPUTE_SCHEDULE_ID",
    "BinaryNotFoundError",
    "RecomputeScheduleStatus",
    "ScheduledRun",
    "SegmentsInterceptor",
    "SegmentsPlugin",
    "current_contact",
    "ensure_recompute_schedule",
    "ensure_sla_watch",
    "recompute_schedule",
    "recompute_schedule_status",
    "serving_contact",
    "start_recompute",
    "start_sequence_runner",
    "start_ticket_sla",
    "temporal_cli_path",
    "temporal_test_server_path",
    "wake_sequence_runner",
]
