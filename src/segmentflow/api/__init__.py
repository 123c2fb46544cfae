"""The HTTP API: `create_app(settings)` returns the FastAPI application."""

from segmentflow.api.app import create_app

__all__ = ["create_app"]
