"""The operator console under `/ui/`: server-rendered pages over the same services as the API and CLI.
`install_console(app, settings)` mounts it on the API's app."""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from segmentflow.console import auth, contacts, messages, reports, segments, sequences, sla
from segmentflow.console.jobs import JobBoard
from segmentflow.console.web import (
    PREFIX,
    ConsoleError,
    SecurityHeaders,
    SignInRequired,
    console_error_page,
    sign_in_redirect,
)
from segmentflow.services.reports import SegmentTrendCache
from segmentflow.services.sequences import ProgramCache
from segmentflow.settings import Settings

__all__ = ["install_console"]


def install_console(app: FastAPI, settings: Settings) -> None:
    """Routes, static files, security headers and error pages of the console."""
    app.state.console_idle = settings.console_idle
    app.state.segment_trends = SegmentTrendCache()
    app.state.console_programs = ProgramCache()
    app.state.console_jobs = JobBoard()
    app.add_middleware(SecurityHeaders)
    app.add_exception_handler(ConsoleError, console_error_page)
    app.add_exception_handler(SignInRequired, sign_in_redirect)
    # follow_symlink: an editable (strict) install links each package file to its source.
    static = StaticFiles(directory=str(files("segmentflow.console") / "static"), follow_symlink=True)
    app.mount(f"{PREFIX}/static", static, name="console-static")
    for module in (auth, segments, contacts, sequences, sla, messages, reports):
        app.include_router(module.router)
    app.include_router(segments.jobs_router)
