"""Pure. The segment report's figures and rows, their JSON (the API's body) and CSV: additive counts per
segment key (`"-"`: no segment, `""`: overall) and day, with rates derived when read."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Final, Literal

__all__ = [
    "CSV_COLUMNS",
    "MAX_SERIES_DAYS",
    "NO_SEGMENT",
    "NO_SEGMENT_NAME",
    "OVERALL_NAME",
    "Figures",
    "Interval",
    "Key",
    "ReportError",
    "ReportRow",
    "SegmentReport",
    "report_csv",
]

#: The key of the row of conversations attributed to no segment (never a valid segment key).
NO_SEGMENT: Final = "-"
NO_SEGMENT_NAME: Final = "No segment"
OVERALL_NAME: Final = "Overall"
#: The longest window a per-day series may cover.
MAX_SERIES_DAYS: Final = 366

Interval = Literal["day"]


class ReportError(ValueError):
    """A report that cannot be made: the window is empty (`field` "since") or too long for a series
    (`field` "interval")."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass
class Figures:
    """Additive counts of one row (or one day of a row): rates are derived when the report is read."""

    conversations: int = 0
    handoffs: int = 0
    handoff_known: int = 0
    csat_responses: int = 0
    csat_sum: int = 0
    csat_satisfied: int = 0
    sla_warnings: int = 0
    sla_breaches: int = 0

    def add(self, other: Figures) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def handoff_rate(self) -> float | None:
        return self.handoffs / self.handoff_known if self.handoff_known else None

    @property
    def csat_average(self) -> float | None:
        return self.csat_sum / self.csat_responses if self.csat_responses else None

    @property
    def csat_share_satisfied(self) -> float | None:
        return self.csat_satisfied / self.csat_responses if self.csat_responses else None

    def to_json(self) -> dict[str, Any]:
        """The figures of the API's row: `conversations`, `handoffRate`, `csat`, `sla`."""
        return {
            "conversations": self.conversations,
            "handoffRate": self.handoff_rate,
            "csat": {
                "responses": self.csat_responses,
                "average": self.csat_average,
                "satisfied": self.csat_share_satisfied,
            },
            "sla": {"warnings": self.sla_warnings, "breaches": self.sla_breaches},
        }


@dataclass
class ReportRow:
    #: The segment key, `"-"`, or None for the overall row.
    segment: str | None
    name: str | None
    #: Members at `until` (per day: at the end of that day); None for the `"-"` row.
    members: int | None
    figures: Figures = field(default_factory=Figures)
    #: Per UTC day, with `interval="day"`: (day, members at its end, figures).
    series: list[tuple[date, int | None, Figures]] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"segment": self.segment, "name": self.name, "members": self.members}
        out |= self.figures.to_json()
        if self.series is not None:
            out["series"] = [
                {"date": day.isoformat(), "members": members, **figures.to_json()}
                for day, members, figures in self.series
            ]
        return out


@dataclass
class SegmentReport:
    since: datetime
    until: datetime
    data: list[ReportRow]
    overall: ReportRow

    def to_json(self) -> dict[str, Any]:
        """The API's body: `{"since", "until", "data": [row], "overall": row}`."""
        return {
            "since": _iso(self.since),
            "until": _iso(self.until),
            "data": [row.to_json() for row in self.data],
            "overall": self.overall.to_json(),
        }


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


Key = tuple[str, str | None]  # (segment key or "-" or "" for overall, day or None)


#: The CSV's columns: one line per row (with `date` empty), then its days with `interval=day`.
CSV_COLUMNS: Final = (
    "segment",
    "name",
    "date",
    "members",
    "conversations",
    "handoffRate",
    "csatResponses",
    "csatAverage",
    "csatSatisfied",
    "slaWarnings",
    "slaBreaches",
)


def _csv_line(segment: str | None, name: str | None, day: str, members: int | None, f: Figures) -> list[Any]:
    def blank(value: Any) -> Any:
        return "" if value is None else value

    return [
        "*" if segment is None else segment,
        blank(name),
        day,
        blank(members),
        f.conversations,
        blank(f.handoff_rate),
        f.csat_responses,
        blank(f.csat_average),
        blank(f.csat_share_satisfied),
        f.sla_warnings,
        f.sla_breaches,
    ]


def report_csv(report: SegmentReport) -> str:
    """The report as CSV: the rows in order, the overall row last with segment `*`; empty cells where the
    JSON has null."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for row in [*report.data, report.overall]:
        writer.writerow(_csv_line(row.segment, row.name, "", row.members, row.figures))
        for day, members, figures in row.series or ():
            writer.writerow(_csv_line(row.segment, row.name, day.isoformat(), members, figures))
    return buffer.getvalue()
