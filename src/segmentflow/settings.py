"""Settings read from `SEGMENTFLOW_*` environment variables; built in entry points and tests only."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SEGMENTFLOW_", extra="ignore")

    database_url: str = "sqlite:///segmentflow.db"
    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    task_queue: str = "segmentflow"
    recompute_every: timedelta = timedelta(minutes=5)
    #: A scheduled recompute still running after this long is ended by the server, so a stuck run
    #: cannot hold back the later ones (the schedule skips a tick while a run is going).
    recompute_timeout: timedelta = timedelta(hours=1)
    #: One worker process's database connections: its pool, and so how many activities and local
    #: activities it runs at once (each holds a connection while it works, and none waits for one).
    worker_db_connections: int = Field(default=20, ge=1)
    #: Workflows one worker process keeps in its sticky cache (an evicted one replays its history when it
    #: next wakes): sized for many open tickets at ~110 KiB each (bench/sla.py).
    worker_workflow_cache: int = Field(default=5000, ge=0)
    #: Contacts evaluated and written per transaction during a recompute.
    page_size: int = 2000
    #: Message handling: an OpenAI-compatible chat-completions responder when a base URL is set (else the
    #: built-in trigger-phrase responder), the reply template (Jinja2, sandboxed), HTTP timeouts in seconds.
    openai_base_url: str | None = None
    openai_api_key: str | None = None
    openai_model: str = "gpt-4o-mini"
    reply_template: str | None = None
    http_timeout: float = 10.0
    #: Outbound sequences' email channel: the SMTP server (none configured: email sends fail), the sender.
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_sender: str = "segmentflow@localhost"
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_start_tls: bool = False
