"""The console in a real browser: Debian's chromium driven by Playwright (never Playwright's own browser
download), against `segmentflow`'s app served by uvicorn on a local port, on SQLite.

The browser is found on PATH (`chromium`) or at `SEGMENTFLOW_CHROMIUM`. Without one these tests are skipped
on a developer's machine and FAIL in CI (`CI=true`), where `.ci/run` installs it. With
`SEGMENTFLOW_SCREENSHOTS=1` the screenshots the tests take are written to `docs/` (the README shows them)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy.engine import Engine
from sqlmodel import Session

from segmentflow.api import create_app
from segmentflow.db.engine import make_engine, migrate
from segmentflow.rules import parse_segments
from segmentflow.services.keys import SCOPES
from segmentflow.services.membership import recompute_all
from segmentflow.services.segment_admin import import_segments
from segmentflow.settings import Settings
from tests.console.conftest import HOSTILE, READ_SCOPES, make_token, seed

try:
    from playwright import sync_api as playwright_sync
except ImportError:  # the test extras not installed
    playwright_sync = None

LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DOCS = Path(__file__).resolve().parents[2] / "docs"


def utcnow() -> datetime:
    return datetime.now(UTC)


def _missing(message: str) -> None:
    """A skip on a developer's machine; in CI a failure (a browser test must never pass there by not
    running)."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def chromium_path() -> str:
    """Debian's chromium: `SEGMENTFLOW_CHROMIUM`, else `chromium` on PATH."""
    if playwright_sync is None:
        _missing("playwright is not installed (pip install -e '.[test]')")
    found = os.environ.get("SEGMENTFLOW_CHROMIUM") or shutil.which("chromium")
    if not found or not Path(found).exists():
        _missing("no chromium: install Debian's chromium package or set SEGMENTFLOW_CHROMIUM")
    assert found is not None
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LiveServer:
    """The app under uvicorn in a thread of this process, stopped cleanly at the end."""

    def __init__(self, url: str) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(Settings(database_url=url)), host="127.0.0.1", port=self.port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the console's server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, Engine]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('console') / 'console.db'}"
    engine = make_engine(url)
    migrate(engine)
    seed(engine)
    with LiveServer(url) as server:
        yield server, engine
    engine.dispose()


@pytest.fixture(scope="module")
def browser(live: Any) -> Iterator[Any]:
    path = chromium_path()
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=LAUNCH_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def context(browser: Any, live: tuple[LiveServer, Engine]) -> Iterator[Any]:
    ctx = browser.new_context(base_url=live[0].base, viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(15_000)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: Any) -> Iterator[Any]:
    page = context.new_page()
    problems: list[str] = []
    # A refused request's status is the test's business; a CSP violation or a script error never is.
    page.on(
        "console",
        lambda m: (
            problems.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource")
            else None
        ),
    )
    page.on("pageerror", lambda e: problems.append(str(e)))
    yield page
    # No CSP violation, no script error, on any page a test visited.
    assert problems == []


def shot(page: Any, name: str, tmp_path: Path) -> None:
    target = DOCS if os.environ.get("SEGMENTFLOW_SCREENSHOTS") == "1" else tmp_path
    page.screenshot(path=str(target / f"console-{name}.png"), full_page=True)


def sign_in(page: Any, engine: Engine, *scopes: str) -> None:
    page.goto("/ui/")
    page.fill("input[name=token]", make_token(engine, *(scopes or SCOPES)))
    page.click("button[name=sign-in]")
    page.wait_for_url("**/ui/segments")


def test_sign_in_and_sign_out(page: Any, live: tuple[LiveServer, Engine], tmp_path: Path) -> None:
    page.goto("/ui/segments")
    page.wait_for_url(re.compile(r".*/ui/\?next="))
    page.fill("input[name=token]", "sf_000000000000_" + "x" * 43)
    page.click("button[name=sign-in]")
    assert "Unknown or revoked API key" in page.inner_text("[data-error]")
    sign_in(page, live[1])
    assert page.locator('tr[data-segment-key="vip"] [data-members]').inner_text() == "2"
    shot(page, "segments", tmp_path)
    page.click("button[name=sign-out]")
    page.wait_for_url("**/ui/")
    page.goto("/ui/segments")
    page.wait_for_url(re.compile(r".*/ui/\?next="))


def test_create_a_segment_with_the_builder_preview_save_and_see_members(
    page: Any, live: tuple[LiveServer, Engine], tmp_path: Path
) -> None:
    sign_in(page, live[1])
    page.click("[data-new-segment]")
    page.wait_for_url("**/ui/segments/new")
    page.fill("[name=key]", "plan-vip")
    page.fill("[name=name]", "On the VIP plan")
    page.click("button[name=edit][value=add-rule]")
    attribute = page.locator("[name=rule-0-clause-0-attribute]")
    attribute.fill("plan")
    page.select_option("[name=rule-0-clause-0-op]", "in")
    page.fill("[name=rule-0-clause-0-values]", "vip")
    page.locator("[name=rule-0-clause-0-values]").blur()
    # the raw JSON tab follows the builder
    definition = page.locator("textarea[name=definition]")
    page.wait_for_function(
        "() => document.querySelector('textarea[name=definition]').value.includes('\"vip\"')"
    )
    assert '"attribute": "plan"' in definition.input_value()
    page.click("button[name=preview]")
    # the preview runs as a job: its progress shows, then the page swaps in the figures
    assert page.locator('[data-job="preview"]').get_attribute("data-job-total") == "4"
    assert page.locator("[data-preview-count]").inner_text() == "2"
    assert page.locator("[data-preview-entering]").inner_text() == "2"
    shot(page, "editor-preview", tmp_path)
    page.click("button[name=save]")
    # the save recomputes in a job too; once it has ended the browser goes to the segment's page
    page.wait_for_url("**/ui/segments/plan-vip")
    keys = page.locator("[data-contact-key]").evaluate_all("els => els.map(e => e.dataset.contactKey)")
    assert keys == ["u1", "u2"]
    shot(page, "segment", tmp_path)


def test_the_json_tab_drives_the_builder(page: Any, live: tuple[LiveServer, Engine]) -> None:
    sign_in(page, live[1])
    page.goto("/ui/segments/new")
    page.click("label[for=tab-json]")
    page.fill(
        "textarea[name=definition]",
        '{"rules": [{"clauses": [{"attribute": "region", "op": "in", "values": ["eu"]}]}]}',
    )
    page.locator("textarea[name=definition]").blur()
    page.click("label[for=tab-builder]")
    assert page.locator("[name=rule-0-clause-0-attribute]").input_value() == "region"


def test_edit_from_two_tabs_shows_the_conflict(context: Any, live: tuple[LiveServer, Engine]) -> None:
    first = context.new_page()
    sign_in(first, live[1])
    second = context.new_page()
    for tab in (first, second):
        tab.goto("/ui/segments/vip-eu/edit")
    first.fill("[name=name]", "Saved first")
    first.click("button[name=save]")
    first.wait_for_url("**/ui/segments/vip-eu")
    second.fill("[name=name]", "Saved second")
    second.click("button[name=save]")
    conflict = second.locator("[data-conflict]")
    conflict.wait_for()
    assert "version 2" in conflict.inner_text()
    assert second.locator("[data-mine]").is_visible() and second.locator("[data-theirs]").is_visible()
    second.goto("/ui/segments/vip-eu")
    assert "Saved first" in second.inner_text("h1")


def test_a_read_only_key_cannot_save(page: Any, live: tuple[LiveServer, Engine]) -> None:
    sign_in(page, live[1], *READ_SCOPES)
    assert page.locator("[data-new-segment]").count() == 0
    page.goto("/ui/segments/vip")
    assert page.locator("[data-edit]").count() == 0
    response = page.goto("/ui/segments/vip/edit")
    assert response.status == 403
    csrf = page.locator("input[name=csrf]").first.input_value()
    refused = page.request.post(
        "/ui/segments/editor",
        form={
            "csrf": csrf,
            "original": "vip",
            "version": "1",
            "name": "x",
            "source": "json",
            "definition": '{"rules": []}',
            "save": "1",
        },
    )
    assert refused.status == 403


def test_a_hostile_contact_name_stays_text(
    page: Any, live: tuple[LiveServer, Engine], tmp_path: Path
) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    sign_in(page, live[1])
    page.fill("#lookup-contact", "u2")
    page.press("#lookup-contact", "Enter")
    page.wait_for_url("**/ui/contacts/u2")
    assert page.inner_text("[data-contact-name]") == HOSTILE
    assert page.locator("main img").count() == 0
    assert page.locator('li[data-segment-key="vip"]').count() == 1
    shot(page, "contact", tmp_path)
    page.goto("/ui/sequences/welcome?contact=u2")
    assert HOSTILE in page.inner_text('[data-rendered-step="0"]')
    assert page.locator("main img").count() == 0
    assert dialogs == []


def test_launch_and_pause_a_sequence(page: Any, live: tuple[LiveServer, Engine], tmp_path: Path) -> None:
    sign_in(page, live[1])
    page.goto("/ui/sequences")
    page.click('[data-sequence-key="welcome"] h2 a')
    page.click("[data-launch]")
    page.click("button[name=confirm]")
    page.wait_for_url("**/ui/sequences/welcome")
    assert page.inner_text("[data-status]") == "active"
    assert page.inner_text('[data-step="0"] [data-enrolled]') == "2"
    shot(page, "sequence", tmp_path)
    page.click("[data-pause]")
    page.click("button[name=confirm]")
    page.wait_for_url("**/ui/sequences/welcome")
    assert page.inner_text("[data-status]") == "paused"


def test_sla_what_if(page: Any, live: tuple[LiveServer, Engine], tmp_path: Path) -> None:
    sign_in(page, live[1])
    page.goto("/ui/sla")
    page.fill("#w-contact", "u1")
    page.select_option("#w-priority", "high")
    page.fill("#w-created", "2026-12-07T08:00:00+01:00")
    page.click("button[name=whatif]")
    assert page.inner_text("[data-whatif-policy]") == "vip-sla"
    assert "2026-12-07T09:00:00+00:00" in page.inner_text('[data-due="first_reply"]')
    shot(page, "sla", tmp_path)
    page.fill("#w-contact", "u3")
    page.click("button[name=whatif]")
    assert page.inner_text("[data-whatif-policy]") == "default"


def test_messages_as_a_contact(page: Any, live: tuple[LiveServer, Engine], tmp_path: Path) -> None:
    sign_in(page, live[1])
    page.click("nav >> text=Messages")
    page.fill("#m-contact", "u3")
    page.click("text=Show what applies")
    applies = page.locator("[data-applies-action]").evaluate_all(
        "els => els.map(e => e.dataset.appliesAction)"
    )
    assert applies == ["faq"]
    assert page.locator("tr[data-refusal]").count() == 1
    shot(page, "messages", tmp_path)


def test_the_keyboard_alone_signs_in_and_reaches_the_content(
    page: Any, live: tuple[LiveServer, Engine]
) -> None:
    page.goto("/ui/")
    # The token field takes the focus by itself (autofocus); wait for it rather than racing the page load.
    page.wait_for_function("() => document.activeElement && document.activeElement.name === 'token'")
    page.keyboard.type(make_token(live[1], *SCOPES))
    page.keyboard.press("Enter")
    page.wait_for_url("**/ui/segments")
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("() => location.hash") == "#main"


def test_readable_on_a_phone(browser: Any, live: tuple[LiveServer, Engine]) -> None:
    ctx = browser.new_context(base_url=live[0].base, viewport={"width": 390, "height": 844})
    try:
        page = ctx.new_page()
        sign_in(page, live[1])
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 390 + 1
    finally:
        ctx.close()


def test_reports_show_imported_events_and_a_hostile_segment_name_as_text(
    page: Any, live: tuple[LiveServer, Engine], tmp_path: Path
) -> None:
    # Last in this module: it adds a segment (named like an attack) that the other tests do not expect.
    engine = live[1]
    with Session(engine) as session, session.begin():
        segments = [
            {
                "key": "hostile",
                "name": HOSTILE,
                "rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["vip"]}]}],
            }
        ]
        import_segments(recompute=False, session=session, segments=parse_segments(segments), now=utcnow())
    recompute_all(engine)
    at = utcnow().isoformat()
    events = [
        {"id": "b1", "contactKey": "u1", "at": at, "handoff": True, "csat": 5},
        {"id": "b2", "contactKey": "u2", "at": at, "handoff": False, "csat": 3},
        {"id": "b3", "contactKey": "u3", "at": at, "handoff": False},
        {"id": "b4", "contactKey": None, "at": at, "csat": 1},
    ]
    imported = page.request.post(
        "/events", data=events, headers={"authorization": f"Bearer {make_token(engine, 'events:write')}"}
    )
    assert imported.ok, imported.text()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    sign_in(page, engine)
    page.click("nav >> text=Reports")
    page.wait_for_url("**/ui/reports")
    assert page.input_value("input[name=until]") == utcnow().date().isoformat()
    assert page.inner_text('tr[data-report-segment="vip"] [data-conversations]') == "2"
    assert page.inner_text('tr[data-report-segment="vip"] [data-handoff-rate]') == "50.0%"
    assert page.inner_text('tr[data-report-segment="vip"] [data-csat-average]') == "4.00"
    assert page.inner_text('tr[data-report-segment="-"] [data-conversations]') == "2"
    hostile = page.locator('tr[data-report-segment="hostile"]')
    assert hostile.locator("[data-conversations]").inner_text() == "2"
    assert HOSTILE in hostile.inner_text()
    assert page.locator("main img").count() == 0
    assert page.locator('[data-chart-segment="vip"] svg.chart polyline').count() == 3
    shot(page, "reports", tmp_path)
    # a window before the events shows none
    page.fill("input[name=since]", "2026-01-01")
    page.fill("input[name=until]", "2026-01-31")
    page.click("[data-report-window] button[type=submit]")
    page.wait_for_url(re.compile(r".*/ui/reports\?since=2026-01-01"))
    assert page.inner_text('tr[data-report-segment="vip"] [data-conversations]') == "0"
    assert dialogs == []
