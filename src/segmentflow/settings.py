"""Settings read from `SEGMENTFLOW_*` environment variables; built in entry points and tests only."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from segmentflow.policies.egress import EgressPolicy, parse_allow

if TYPE_CHECKING:
    from segmentflow.services.templates import TemplateLimits

__all__ = ["Settings", "settings_error"]


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
    #: Set segmentflow's search attributes on `TicketSla` and `RunSequence` (they must be registered on the
    #: namespace: `worker.py --dev` and docker-compose.temporal.yml do it; the worker checks at start).
    search_attributes: bool = False
    #: Trace workflows and activities with OpenTelemetry (`pip install segmentflow[otel]`; the host
    #: configures the tracer provider and exporter, as for any OpenTelemetry app).
    tracing: bool = False
    #: Worker Versioning: with both set, the worker polls as this version of this deployment (README,
    #: "Deploying changes"); unset, it is an unversioned worker.
    deployment_name: str | None = None
    build_id: str | None = None
    #: The worker migrates the schema when it starts; false leaves it to `segmentflow db upgrade` (one
    #: migration step per deploy, run before the new workers start).
    migrate_on_start: bool = True
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
    #: Template limits (sequence and reply templates): the rendered text and each value a template builds,
    #: in characters, and `{% for %}` iterations per render (see `segmentflow.services.templates`).
    template_max_output: int = Field(default=256 * 1024, ge=1024)
    template_max_loop_iterations: int = Field(default=10_000, ge=1)

    def template_limits(self) -> TemplateLimits:
        from segmentflow.services.templates import TemplateLimits

        return TemplateLimits(
            max_output=self.template_max_output, max_loop_iterations=self.template_max_loop_iterations
        )

    #: HTTP API request bodies, in bytes: larger ones get 413 before they are read whole. The import
    #: endpoints (`POST /messages/actions`, `POST /messages/instructions`, `PUT /sla/policies`) take files
    #: and get the larger limit.
    max_body_bytes: int = Field(default=1024 * 1024, ge=0)
    max_import_body_bytes: int = Field(default=16 * 1024 * 1024, ge=0)
    #: Failed authentications (401s) allowed per client address in each window; past them the client's API
    #: requests get 429 with `Retry-After` until the window ends. 0 turns the limit off.
    auth_failure_limit: int = Field(default=20, ge=0)
    auth_failure_window: timedelta = Field(default=timedelta(minutes=1), gt=timedelta(0))
    #: The egress policy's exceptions (`policies.egress`): comma-separated CIDRs and host names every
    #: outbound request (webhooks, responder, SMTP) may reach although they are loopback, private, link-local
    #: and the like. Empty (the default) in production; `segmentflow demo` and the tests open loopback.
    egress_allow: str = ""
    #: Outbound response bodies are read up to this many bytes; the rest is discarded, marked truncated.
    max_response_bytes: int = Field(default=64 * 1024, ge=1024)
    #: The operator console (`/ui/`): a session ends after this long without a request.
    console_idle: timedelta = timedelta(minutes=30)

    @field_validator("egress_allow")
    @classmethod
    def _valid_allow(cls, value: str) -> str:
        parse_allow(value)  # a bad entry fails when the settings are built, naming the variable
        return value

    def egress_policy(self) -> EgressPolicy:
        return parse_allow(self.egress_allow)


def settings_error(exc: ValidationError) -> str:
    """One line for settings that do not validate (a bad `SEGMENTFLOW_*` variable), for the CLI."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    return message if "SEGMENTFLOW_" in message else f"SEGMENTFLOW_{where.upper()}: {message}"
