"""The bundled sample of segments and contacts that `segmentflow demo` loads."""

from __future__ import annotations

from importlib.resources import as_file, files
from pathlib import Path

__all__ = ["sample_path"]


def sample_path(name: str) -> Path:
    """Path of a bundled sample file (the package is installed as plain files)."""
    with as_file(files(__name__) / name) as path:
        return Path(path)
