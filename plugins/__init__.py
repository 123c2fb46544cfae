"""segmentflow.plugins: `SegmentsPlugin` for your Temporal Client, and client-side helpers."""

from segmentflow.plugins._devserver import (
    DEV_SERVER_ARGS,
    BinaryNotFoundError,
    temporal_cli_path,
    temporal_test_server_path,
)
from segmentflow.plugins._plugin import PASSTHROUGH_MODULES, SegmentsPlugin
from segmentflow.plugins._schedule import (
    RECOMPUTE_SCHEDULE_ID,
    ensure_recompute_schedule,
    recompute_schedule,
    start_recompute,
)

__all__ = [
    "DEV_SERVER_ARGS",
    "PASSTHROUGH_MODULES",
    "RECOMPUTE_SCHEDULE_ID",
    "BinaryNotFoundError",
    "SegmentsPlugin",
    "ensure_recompute_schedule",
    "recompute_schedule",
    "start_recompute",
    "temporal_cli_path",
    "temporal_test_server_path",
]
