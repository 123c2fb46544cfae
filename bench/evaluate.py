"""Benchmark: segmentflow's evaluator against LaunchDarkly's Python SDK on the same segments and contexts.

In process: segments are loaded and contexts parsed once per side (timed and printed, outside the loop),
then every (segment, context) pair is evaluated, best of --repeat runs. Every pair must agree, and so must
LaunchDarkly's public path (a one-rule `segmentMatch` flag per segment, evaluated once), or the bench prints
the mismatches and exits 1. Whole process: `segmentflow evaluate` against bench/ld_evaluate.py on the same
files, outputs compared byte for byte (exit 1 when they differ).
Targets from the issue: evaluations/s at least 10x LaunchDarkly's; whole process at least 5x faster.

Usage: .venv/bin/python bench/evaluate.py [--segments 40] [--contexts 20000] [--seed 1] [--repeat 3]
       [--skip-process] [--skip-flags] [--profile 20]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from common import make_contexts, make_segments
from ldclient.context import Context as LDContext
from ldclient.impl.evaluator import Evaluator
from ldclient.impl.evaluator_common import EvalResult
from ldclient.impl.events.types import EventFactory
from ldclient.impl.model import FeatureFlag
from ldclient.impl.model import Segment as LDSegment

from segmentflow.rules import (
    CompiledSegment,
    Context,
    compile_segments,
    matching,
    parse_context,
    parse_segments,
)

T = TypeVar("T")
BENCH = Path(__file__).resolve().parent
SEGMENTFLOW = BENCH.parent / ".venv" / "bin" / "segmentflow"


def timed(fn: Callable[[], T], repeat: int = 1) -> tuple[float, T]:
    """Best wall time of `repeat` runs and the last run's result."""
    best = float("inf")
    result: T
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def clear_caches() -> None:
    """Empty segmentflow's memo caches (parsed dates and versions), so a repeat is not a warm rerun of the
    same context values, which LaunchDarkly (no caches) would not get."""
    for name, module in list(sys.modules.items()):
        if name.startswith("segmentflow.rules"):
            for value in vars(module).values():
                if callable(getattr(value, "cache_clear", None)):
                    value.cache_clear()


def ours_all(compiled: list[CompiledSegment], contexts: list[Context]) -> list[bool]:
    """One (segment, context) pair at a time, as LaunchDarkly's side is asked."""
    matchers = [segment.matches for segment in compiled]
    return [matches(context) for context in contexts for matches in matchers]


def ours_per_context(compiled: list[CompiledSegment], contexts: list[Context]) -> list[bool]:
    """Every segment for one context at once (`matching`), as recompute and `segmentflow evaluate` ask:
    a segment reached through `segmentMatch` is evaluated once per context, not once per reference."""
    by_key = {segment.key: segment for segment in compiled}
    out: list[bool] = []
    for context in contexts:
        found = set(matching(by_key, context))
        out.extend(segment.key in found for segment in compiled)
    return out


def ld_evaluator(segments: list[LDSegment], flags: list[FeatureFlag] | None = None) -> Evaluator:
    segments_by_key = {s.key: s for s in segments}
    flags_by_key = {f.key: f for f in flags or []}
    return Evaluator(flags_by_key.get, segments_by_key.get, lambda _key: (None, "NOT_CONFIGURED"))


def ld_all(segments: list[LDSegment], contexts: list[LDContext]) -> list[bool]:
    """LaunchDarkly's segment evaluation, as a `segmentMatch` clause runs it, with a fresh state each time."""
    segment_matches = ld_evaluator(segments)._segment_matches_context
    return [segment_matches(segment, context, EvalResult()) for context in contexts for segment in segments]


def membership_flag(segment_key: str) -> FeatureFlag:
    """A flag that is `true` exactly for members of one segment: LaunchDarkly's public way to ask."""
    return FeatureFlag(
        {
            "key": f"in-{segment_key}",
            "version": 1,
            "on": True,
            "salt": "bench",
            "variations": [False, True],
            "offVariation": 0,
            "fallthrough": {"variation": 0},
            "rules": [
                {
                    "id": "member",
                    "variation": 1,
                    "clauses": [{"attribute": "key", "op": "segmentMatch", "values": [segment_key]}],
                }
            ],
        }
    )


def ld_flags_all(segments: list[LDSegment], contexts: list[LDContext]) -> list[bool]:
    flags = [membership_flag(s.key) for s in segments]
    evaluator = ld_evaluator(segments, flags)
    events = EventFactory(False)
    return [
        evaluator.evaluate(flag, context, events).detail.value is True
        for context in contexts
        for flag in flags
    ]


def mismatches(
    name: str, ours: list[bool], theirs: list[bool], segment_keys: list[str], context_keys: list[str]
) -> int:
    bad = [i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b]
    for i in bad[:20]:
        context_index, segment_index = divmod(i, len(segment_keys))
        print(
            f"  MISMATCH ({name}): segment {segment_keys[segment_index]} context "
            f"{context_keys[context_index]}: ours={ours[i]} LaunchDarkly={theirs[i]}"
        )
    if len(bad) > 20:
        print(f"  ... and {len(bad) - 20} more")
    return len(bad)


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}/s"


def profile_ours(compiled: list[CompiledSegment], contexts: list[Context], top: int) -> None:
    profiler = cProfile.Profile()
    profiler.runcall(ours_all, compiled, contexts)
    print(f"\ncProfile of our evaluation loop (top {top} by own time):")
    pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(top)


def run_process(command: list[str], out_path: Path) -> float:
    with out_path.open("wb") as out:
        start = time.perf_counter()
        done = subprocess.run(command, stdout=out, stderr=subprocess.PIPE, check=False)
        elapsed = time.perf_counter() - start
    if done.returncode != 0:
        print(f"FAILED ({done.returncode}): {' '.join(command)}\n{done.stderr.decode(errors='replace')}")
        raise SystemExit(1)
    return elapsed


def whole_process(
    segments_json: list[dict[str, Any]], contexts_json: list[dict[str, Any]], repeat: int
) -> int:
    """Both commands on the same files; returns the number of differing output lines."""
    with tempfile.TemporaryDirectory(prefix="segmentflow-bench-") as tmp:
        root = Path(tmp)
        segments_path, contexts_path = root / "segments.json", root / "contexts.jsonl"
        segments_path.write_text(json.dumps(segments_json), encoding="utf-8")
        with contexts_path.open("w", encoding="utf-8") as handle:
            for context in contexts_json:
                handle.write(json.dumps(context) + "\n")
        ours_cmd = [
            str(SEGMENTFLOW),
            "evaluate",
            "--segments",
            str(segments_path),
            "--contexts",
            str(contexts_path),
        ]
        ld_cmd = [
            sys.executable,
            str(BENCH / "ld_evaluate.py"),
            "--segments",
            str(segments_path),
            "--contexts",
            str(contexts_path),
        ]
        ours_s = min(run_process(ours_cmd, root / "ours.jsonl") for _ in range(repeat))
        ld_s = min(run_process(ld_cmd, root / "ld.jsonl") for _ in range(repeat))
        ours_out, ld_out = (root / "ours.jsonl").read_bytes(), (root / "ld.jsonl").read_bytes()
        lines = len(ld_out.splitlines())
        sizes = f"{len(contexts_json):,} contexts, {len(segments_json)} segments"
        print(f"\nwhole process (best of {repeat}), {sizes}:")
        print(f"  segmentflow evaluate      {ours_s:8.3f} s")
        print(f"  LaunchDarkly SDK script   {ld_s:8.3f} s")
        print(f"  ratio (LaunchDarkly time / ours): {ld_s / ours_s:.2f}x (target >= 5x)")
        if ours_out == ld_out:
            print(f"  outputs identical byte for byte ({lines:,} lines, {len(ours_out):,} bytes)")
            return 0
        ours_lines, ld_lines = ours_out.splitlines(), ld_out.splitlines()
        bad = [
            i
            for i in range(max(len(ours_lines), len(ld_lines)))
            if i >= len(ours_lines) or i >= len(ld_lines) or ours_lines[i] != ld_lines[i]
        ]
        for i in bad[:10]:
            ours_line = ours_lines[i] if i < len(ours_lines) else b"<none>"
            ld_line = ld_lines[i] if i < len(ld_lines) else b"<none>"
            print(f"  OUTPUT DIFFERS at line {i + 1}:\n    ours: {ours_line!r}\n    LD:   {ld_line!r}")
        return max(len(bad), 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="segmentflow evaluator vs LaunchDarkly's Python SDK")
    parser.add_argument("--segments", type=int, default=40)
    parser.add_argument("--contexts", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-process", action="store_true", help="skip the whole-process comparison")
    parser.add_argument("--skip-flags", action="store_true", help="skip LaunchDarkly's flag-path check")
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="print our top N cProfile entries"
    )
    args = parser.parse_args(argv)

    segments_json = make_segments(args.segments, args.seed, population=args.contexts)
    contexts_json = make_contexts(args.contexts, args.seed)
    pairs = args.segments * args.contexts
    print(
        f"workload: {args.segments} segments x {args.contexts:,} contexts (seed {args.seed}) = {pairs:,} "
        f"evaluations; {sum(c.get('kind') == 'multi' for c in contexts_json):,} multi-kind contexts"
    )

    ours_load_s, compiled_by_key = timed(lambda: compile_segments(parse_segments(segments_json)), args.repeat)
    ld_load_s, ld_segments = timed(lambda: [LDSegment(item) for item in segments_json], args.repeat)
    compiled = [compiled_by_key[item["key"]] for item in segments_json]
    print(
        f"segment load (best of {args.repeat}): ours {ours_load_s * 1e3:.1f} ms (validate + compile), "
        f"LaunchDarkly {ld_load_s * 1e3:.1f} ms"
    )

    ours_parse_s, contexts = timed(lambda: [parse_context(c) for c in contexts_json], args.repeat)
    ld_parse_s, ld_contexts = timed(lambda: [LDContext.from_dict(c) for c in contexts_json], args.repeat)
    invalid = [c.error for c in ld_contexts if not c.valid]
    if invalid:
        print(f"LaunchDarkly refused {len(invalid)} contexts, e.g. {invalid[0]}")
        return 1
    print(
        f"context parsing (best of {args.repeat}): "
        f"ours {ours_parse_s:.3f} s ({rate(len(contexts), ours_parse_s)}), "
        f"LaunchDarkly {ld_parse_s:.3f} s ({rate(len(contexts), ld_parse_s)}), "
        f"ratio {ld_parse_s / ours_parse_s:.2f}x"
    )

    ours_s, ours = timed(lambda: (clear_caches(), ours_all(compiled, contexts))[1], args.repeat)
    warm_s, _ = timed(lambda: ours_all(compiled, contexts), args.repeat)
    per_context_s, per_context = timed(
        lambda: (clear_caches(), ours_per_context(compiled, contexts))[1], args.repeat
    )
    ld_s, theirs = timed(lambda: ld_all(ld_segments, ld_contexts), args.repeat)
    ours_rate, ld_rate = pairs / ours_s, pairs / ld_s
    print(f"evaluation (best of {args.repeat}):")
    print(
        f"  ours          {ours_s:8.3f} s  {ours_rate:12,.0f} evaluations/s  (caches emptied before each run)"
    )
    print(f"  LaunchDarkly  {ld_s:8.3f} s  {ld_rate:12,.0f} evaluations/s")
    print(f"  ratio (ours / LaunchDarkly evaluations/s): {ours_rate / ld_rate:.2f}x (target >= 10x)")
    print(
        f"  ours, all segments per context (matching): {per_context_s:.3f} s, "
        f"{pairs / per_context_s:,.0f} evaluations/s, {pairs / per_context_s / ld_rate:.2f}x LaunchDarkly"
    )
    print(
        f"  (ours rerun on warm caches: {warm_s:.3f} s, {pairs / warm_s:,.0f} evaluations/s, "
        f"{pairs / warm_s / ld_rate:.2f}x; not the headline: LaunchDarkly keeps no such cache)"
    )

    segment_keys = [item["key"] for item in segments_json]
    context_keys = [c.fully_qualified_key for c in contexts]
    failures = mismatches("segment", ours, theirs, segment_keys, context_keys)
    failures += mismatches("segment (per context)", per_context, theirs, segment_keys, context_keys)
    shares = [sum(ours[i :: args.segments]) / args.contexts for i in range(args.segments)]
    print(
        f"results: {pairs - failures:,} of {pairs:,} pairs identical; {sum(ours):,} memberships; per segment "
        f"min {min(shares):.1%} median {statistics.median(shares):.1%} max {max(shares):.1%}"
    )

    if not args.skip_flags:
        flags_s, via_flags = timed(lambda: ld_flags_all(ld_segments, ld_contexts))
        flag_failures = mismatches("flag", ours, via_flags, segment_keys, context_keys)
        failures += flag_failures
        print(
            f"LaunchDarkly via one-rule segmentMatch flags (once): {flags_s:.3f} s "
            f"({rate(pairs, flags_s)}); {pairs - flag_failures:,} of {pairs:,} pairs identical"
        )

    if not args.skip_process:
        failures += whole_process(segments_json, contexts_json, args.repeat)

    if args.profile:
        profile_ours(compiled, contexts, args.profile)
    if failures:
        print(f"FAILED: {failures} mismatches")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
