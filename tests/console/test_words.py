"""The plain-words definition and the sparkline's points (pure)."""

from __future__ import annotations

from segmentflow.console.charts import sparkline
from segmentflow.console.words import describe_clause, describe_definition


def test_a_definition_reads_in_the_order_it_decides() -> None:
    words = describe_definition(
        {
            "included": ["u1"],
            "excludedContexts": [{"contextKind": "org", "values": ["o1"]}],
            "rules": [
                {
                    "clauses": [
                        {"attribute": "plan", "op": "in", "values": ["vip", 3]},
                        {"op": "segmentMatch", "values": ["eu"], "negate": True},
                    ],
                    "weight": 25000,
                    "bucketBy": "email",
                }
            ],
        }
    )
    assert words == [
        "Always in: user “u1”.",
        "Never in (unless included): org “o1”.",
        "Rule 1: in when user plan is one of “vip” or 3 and is not in segment “eu”,"
        " for 25% of them by email.",
    ]


def test_an_empty_definition_says_nobody_is_in() -> None:
    assert describe_definition({}) == ["No targets and no rules: nobody is in this segment."]


def test_a_negated_clause_and_an_unknown_operator_are_named() -> None:
    clause = {"contextKind": "device", "attribute": "os", "op": "isIn", "values": ["ios"], "negate": True}
    assert describe_clause(clause) == "device os does not hold: [isIn] “ios”"


def test_the_sparkline_spans_its_box_from_the_lowest_to_the_highest_value() -> None:
    points = [tuple(map(float, p.split(","))) for p in sparkline([0, 5, 10], width=100, height=20).split()]
    assert points == [(0.0, 18.0), (50.0, 10.0), (100.0, 2.0)]
    assert sparkline([]) == ""
    flat = sparkline([4, 4])
    assert flat.split()[0].split(",")[1] == flat.split()[1].split(",")[1]
