"""The report's member counts from the rollup (`members_from_rollup`) give exactly what the stretch
rewind (`members_at`) gives, on random feeds written through the real services: contacts entering and
leaving segments at random times (some at midnight, some at the very instants asked about), a contact
deleted, a segment deleted, the rollup folded part-way so both it and the feed past it are read."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from segmentflow.rules import parse_segments
from segmentflow.services.contact_admin import delete_contact
from segmentflow.services.reporting import members_at, members_from_rollup
from segmentflow.services.reports import fold_change_feed
from segmentflow.services.segment_admin import delete_segment, import_segments
from tests.reports.conftest import save_contacts

T0 = datetime(2026, 5, 1, tzinfo=UTC)
TIERS = ["a", "b", "c"]
SEGMENTS: list[dict[str, Any]] = [
    {
        "key": f"tier-{t}",
        "name": t,
        "rules": [{"clauses": [{"attribute": "tier", "op": "in", "values": [t]}]}],
    }
    for t in TIERS
] + [
    {
        "key": "eu",
        "name": "eu",
        "rules": [{"clauses": [{"attribute": "region", "op": "in", "values": ["eu"]}]}],
    },
    {
        "key": "gone",
        "name": "gone",
        "rules": [{"clauses": [{"attribute": "old", "op": "in", "values": [True]}]}],
    },
]


def both(
    engine: Engine, instants: list[datetime], *, fold: bool = True
) -> tuple[dict[Any, int], dict[Any, int]]:
    with Session(engine) as session, session.begin():
        old = members_at(session, instants)
        new = members_from_rollup(session, instants, fold=fold)
    return old, new


def same(old: dict[Any, int], new: dict[Any, int]) -> None:
    # A stored segment with no stretch is absent from the old answer and 0 in the new: the report reads
    # both as 0. Every key the old answer has, the new one has, with the same count.
    assert {k: v for k, v in new.items() if v or k in old} == old


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_members_from_the_rollup_are_the_stretch_rewind_s_on_random_feeds(engine: Engine, seed: int) -> None:
    rng = random.Random(seed)
    with Session(engine) as session, session.begin():
        import_segments(recompute=False, session=session, segments=parse_segments(SEGMENTS), now=T0)
    contacts = [f"c{i}" for i in range(14)]
    when, times = T0, [T0]
    for round_ in range(24):
        step = rng.choice([timedelta(hours=rng.uniform(1, 30)), timedelta(days=rng.randint(0, 2))])
        if rng.random() < 0.3:  # on to the next midnight (or stay: several writes at one instant)
            step = (when + step).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1) - when
        when += step
        times.append(when)
        chosen = rng.sample(contacts, rng.randint(1, 6))
        contexts = [
            {
                "key": c,
                "tier": rng.choice([*TIERS, "none"]),
                "region": rng.choice(["eu", "us"]),
                "old": rng.random() < 0.5,
            }
            for c in chosen
        ]
        save_contacts(engine, contexts, when)
        if round_ == 10:
            with Session(engine) as session, session.begin():
                delete_contact(session=session, key=chosen[0], now=when)
        if round_ == 15:
            with Session(engine) as session, session.begin():
                delete_segment(session=session, ref="gone", expected_version=None, now=when)
        if round_ % 7 == 3:  # folds the feed so far into the rollup; what follows stays in the feed
            old, new = both(engine, [when])
            same(old, new)
        elif round_ % 7 == 5:  # unfolded: the rows past the rollups, as a write after a fold leaves them
            picked = [times[0], *rng.sample(times, min(3, len(times))), when]
            if round_ == 12:  # the segment list folded its rollup, the presence rows stayed behind
                with Session(engine) as session, session.begin():
                    fold_change_feed(session=session, now=None)
            old, new = both(engine, [when, *sorted(picked)], fold=False)
            same(old, new)
    midnights = sorted(
        {t.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1) for t in times}
    )
    for _ in range(6):
        picked = (
            rng.sample(times, 3) + rng.sample(midnights, 2) + [times[0] + (when - times[0]) * rng.random()]
        )
        until = max(picked)
        old, new = both(engine, [until, *sorted(picked)])
        same(old, new)
        assert old["", 0] == new["", 0]
    # The whole series as the report asks it: the end of each day and the end of the window.
    days = [T0 + timedelta(days=d) for d in range(1, (when - T0).days + 3)]
    old, new = both(engine, [when, *days])
    same(old, new)
    assert any(v for (k, _), v in old.items() if k == "gone")  # the deleted segment's history is read
