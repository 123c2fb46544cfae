"""Settings read from `SEGMENTFLOW_*` environment variables; built in entry points and tests only."""

from __future__ import annotations

from datetime import timedelta

from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SEGMENTFLOW_", extra="ignore")

    database_url: str = "sqlite:///segmentflow.db"
    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    task_queue: str = "segmentflow"
    recompute_every: timedelta = timedelta(minutes=5)
    #: Contacts evaluated and written per transaction during a recompute.
    page_size: int = 2000
