"""The Reports page: the segment report (`services.reporting.segment_report`, the same call as
`GET /reports/segments` and `segmentflow report`) over a window of whole UTC days, as a table per segment
and as SVG charts of its daily series (conversations, CSAT average, handoff rate). Scope `reports:read`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from segmentflow.api.deps import WriteSession
from segmentflow.console.charts import series_lines
from segmentflow.console.web import PREFIX, Login, now, page, require
from segmentflow.services.reporting import MAX_SERIES_DAYS, ReportError, ReportRow, segment_report

__all__ = ["DEFAULT_DAYS", "router"]

router = APIRouter(prefix=f"{PREFIX}/reports")

#: The window shown without a choice: the last 30 UTC days, today included.
DEFAULT_DAYS = 30
CHART_WIDTH = 240
CHART_HEIGHT = 48


@dataclass(frozen=True, slots=True)
class Chart:
    label: str
    #: What the top of the chart stands for, in words ("12 a day", "5", "100%").
    top: str
    lines: list[str]
    #: Days with something to draw.
    known: int


def _day(text: str, name: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f'{name} must be a date, YYYY-MM-DD (got "{text.strip()[:40]}")') from None


def _charts(row: ReportRow) -> list[Chart]:
    series = row.series or []
    conversations = [float(f.conversations) for _, _, f in series]
    csat = [f.csat_average for _, _, f in series]
    handoff = [f.handoff_rate for _, _, f in series]
    peak = max(conversations, default=0.0) or 1.0
    size = {"width": CHART_WIDTH, "height": CHART_HEIGHT}
    return [
        Chart(
            "Conversations a day",
            f"{peak:.0f}",
            series_lines(conversations, low=0, high=peak, **size),
            sum(1 for v in conversations if v),
        ),
        Chart(
            "CSAT average (1-5)",
            "5",
            series_lines(csat, low=1, high=5, **size),
            sum(1 for v in csat if v is not None),
        ),
        Chart(
            "Handoff rate",
            "100%",
            series_lines(handoff, low=0, high=1, **size),
            sum(1 for v in handoff if v is not None),
        ),
    ]


@router.get("", include_in_schema=False)
def reports_page(
    request: Request,
    session: WriteSession,  # the report may refresh rollup days in this transaction
    login: Login,
    since: Annotated[str, Query(max_length=64)] = "",
    until: Annotated[str, Query(max_length=64)] = "",
) -> Response:
    """The report over the UTC days `since` through `until`, both included (the API's window
    [since 00:00, the day after until 00:00)); by default the last 30 days, today included."""
    require(login, "reports:read")
    today = now().date()
    form = {
        "since": since.strip() or (today - timedelta(days=DEFAULT_DAYS - 1)).isoformat(),
        "until": until.strip() or today.isoformat(),
    }
    error = None
    report = None
    try:
        first, last = _day(form["since"], "since"), _day(form["until"], "until")
        if first > last:
            raise ValueError("since must not be after until")
        if (last - first).days + 1 > MAX_SERIES_DAYS:
            raise ValueError(f"the window covers at most {MAX_SERIES_DAYS} days")
        start = datetime(first.year, first.month, first.day, tzinfo=UTC)
        end = datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1)
        report = segment_report(session=session, since=start, until=end, interval="day")
    except (ValueError, ReportError) as exc:
        error = str(exc)
    rows = []
    if report is not None:
        rows = [{"row": row, "charts": _charts(row)} for row in [*report.data, report.overall]]
    context = {
        "form": form,
        "error": error,
        "report": report,
        "rows": rows,
        "days": len(report.overall.series or []) if report else 0,
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
    }
    return page(request, "reports.html", context, login=login, status=200 if error is None else 422)
