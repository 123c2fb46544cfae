"""Benchmark: `matches` evaluations on catastrophic and ordinary regexes, segmentflow (RE2, linear time)
against Python's `re.search` (what LaunchDarkly's SDK runs), in the same process.

Catastrophic: for each classic pattern, `re` is timed on growing values until one search takes over
--cap seconds (it doubles or worse with each step), and segmentflow's compiled segment on the same values
and on 40 and 100,000 characters; the ratio is at the largest value `re` finished. Ordinary: a few
everyday patterns on short values, microseconds per evaluation on each side and the ratio (RE2 costs a
little more per call than `re` on easy patterns; that is the price of the bound).

Usage: .venv/bin/python bench/regex.py [--cap 0.5] [--repeat 2000]
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable

from segmentflow.rules import compile_segments, parse_context, parse_segment
from segmentflow.rules.regex import compile_linear

CATASTROPHIC: list[tuple[str, Callable[[int], str]]] = [
    (r"(a+)+$", lambda n: "a" * n + "!"),
    (r"(a|aa)+$", lambda n: "a" * n + "!"),
    (r"(a|a)*b", lambda n: "a" * n),
    (r"(.*a){20}", lambda n: "a" * 19 + "b" * n),
    (r"^(\w+\s?)*$", lambda n: "word " * n + "!"),
]
ORDINARY = [
    (r"@example\.com$", "someone@example.com"),
    (r"(?i)^[a-z0-9._%+-]+@(gmail|yahoo)\.com$", "Some.One@Gmail.com"),
    (r"^v?2\.", "v2.3.1"),
    (r"\d{3}-\d{4}", "call 555-1234 now"),
    (r"^[a-z]+\.[a-z]+@(acme\.io|globex\.com|initech\.com)$", "ann.kim@acme.io"),  # bench/common.py's
    (r"^\+1 \([2-9]\d\d\)", "+1 (555) 123-4567"),
]


def _ours(pattern: str) -> Callable[[str], bool]:
    seg = parse_segment(
        {"key": "s", "rules": [{"clauses": [{"attribute": "v", "op": "matches", "values": [pattern]}]}]}
    )
    compiled = compile_segments([seg])["s"]
    return lambda value: compiled.matches(parse_context({"key": "u", "v": value}))


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _search_once(fn: Callable[[str], object], value: str) -> float:
    start = time.perf_counter()
    fn(value)
    return time.perf_counter() - start


def _search_many(fn: Callable[[str], object], value: str, repeat: int) -> float:
    """Best of three: seconds for `repeat` calls."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeat):
            fn(value)
        best = min(best, time.perf_counter() - start)
    return best


def catastrophic(cap: float) -> None:
    print(f"{'pattern':<16} {'n':>7} {'re ms':>10} {'ours ms':>9} {'ratio':>9}")
    for pattern, make in CATASTROPHIC:
        ours = _ours(pattern)
        ours(make(1))  # build RE2's lazy DFA once, as a running worker has
        python = re.compile(pattern).search
        n = 4
        while True:
            value = make(n)
            t_re, t_ours = _search_once(python, value), _search_once(ours, value)
            if t_re > cap or n >= 64:
                break
            n += 2
        print(f"{pattern:<16} {n:>7} {t_re * 1e3:>10.1f} {t_ours * 1e3:>9.3f} {t_re / t_ours:>8.0f}x")
        for big in (40, 100_000):
            took = _search_once(ours, make(big))
            print(f"{'':<16} {big:>7} {'(minutes+)':>10} {took * 1e3:>9.3f}")


def ordinary(repeat: int) -> None:
    print(f"\n{'pattern':<44} {'re us':>7} {'ours us':>8} {'ours/re':>8}")
    for pattern, value in ORDINARY:
        ours = compile_linear(pattern).search  # what a compiled `matches` clause calls per value
        ours(value)
        t_re = _search_many(re.compile(pattern).search, value, repeat)
        t_ours = _search_many(ours, value, repeat)
        per_re, per_ours = t_re / repeat * 1e6, t_ours / repeat * 1e6
        print(f"{pattern:<44} {per_re:>7.2f} {per_ours:>8.2f} {t_ours / t_re:>7.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cap", type=float, default=0.5, help="stop growing a value once re takes this long")
    parser.add_argument("--repeat", type=int, default=2000)
    args = parser.parse_args()
    catastrophic(args.cap)
    ordinary(args.repeat)


if __name__ == "__main__":
    main()
