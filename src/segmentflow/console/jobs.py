"""Long console operations (an audience preview, a save that recomputes the members) run in a thread of
their own while the page polls their progress (`GET /ui/jobs/{token}`, htmx), rather than holding one
request open with nothing to show. Progress lives in memory, in the process that serves the page: nothing
is written for it; a job is forgotten `KEEP` after it ends, or when its process stops (the page then
says so). Only the console session that started a job can read it.

A job opens its own database session on the app's engine; at most `RUNNING` jobs run at once (within the
connection pool's overflow margin), and a request finding them all busy does its work itself, as a
browser without JavaScript always does."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Job", "JobBoard", "owner_of"]

#: Jobs running at once per process.
RUNNING = 2
#: Seconds a finished job's outcome is kept for its page to read.
KEEP = 600.0


@dataclass
class Job:
    """One running or finished operation: what it is, how far it got, and how it ended."""

    token: str
    owner: str
    kind: str
    #: Whatever the page needs to render the outcome (the editor's fields).
    context: dict[str, Any]
    total: int = 0
    done: int = 0
    #: Figures so far, for the progress line (a running preview's members).
    running: Any = None
    finished: bool = False
    outcome: Any = None
    error: BaseException | None = None
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None

    @property
    def percent(self) -> int:
        return 100 if self.finished else (min(99, self.done * 100 // self.total) if self.total else 0)


def owner_of(csrf: str) -> str:
    """A console session's identity for its jobs (its CSRF token's digest: per session, never shown)."""
    return hashlib.sha256(csrf.encode()).hexdigest()


class JobBoard:
    """The process's console jobs, by token."""

    def __init__(self, running: int = RUNNING, keep: float = KEEP) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(running)
        self._keep = keep

    def start(
        self, *, owner: str, kind: str, total: int, context: dict[str, Any], work: Callable[[Job], Any]
    ) -> Job | None:
        """Run `work(job)` in a thread (its return value is the outcome, an exception the error); None
        when `RUNNING` jobs are already running."""
        if not self._slots.acquire(blocking=False):
            return None
        job = Job(token=secrets.token_urlsafe(18), owner=owner, kind=kind, context=context, total=total)
        with self._lock:
            self._forget_old()
            self._jobs[job.token] = job

        def run() -> None:
            try:
                job.outcome = work(job)
            except BaseException as exc:  # shown on the page that polls it
                job.error = exc
            finally:
                job.ended = time.monotonic()
                job.finished = True
                self._slots.release()

        threading.Thread(target=run, name=f"console-{kind}", daemon=True).start()
        return job

    def get(self, token: str, owner: str) -> Job | None:
        with self._lock:
            self._forget_old()
            job = self._jobs.get(token)
        return job if job is not None and secrets.compare_digest(job.owner, owner) else None

    def _forget_old(self) -> None:
        cutoff = time.monotonic() - self._keep
        for token in [t for t, j in self._jobs.items() if j.ended is not None and j.ended < cutoff]:
            del self._jobs[token]
