"""The peer of `segmentflow evaluate` for bench/evaluate.py: the same job done end to end with LaunchDarkly's
Python SDK, in its fastest faithful form.

Reads a JSON list of segments and a JSON-lines file of contexts, and writes one line per context,
`{"key": fully-qualified key, "segments": sorted keys}`, exactly as `segmentflow evaluate` does. Membership
is the SDK's own segment evaluation (`Evaluator._segment_matches_context`, which a `segmentMatch` clause
calls) with a fresh `EvalResult` per evaluation, as each flag evaluation gets.
Usage: python bench/ld_evaluate.py --segments S --contexts C > out.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys

from ldclient.context import Context
from ldclient.impl.evaluator import Evaluator
from ldclient.impl.evaluator_common import EvalResult
from ldclient.impl.model import Segment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", required=True)
    parser.add_argument("--contexts", required=True)
    args = parser.parse_args(argv)

    with open(args.segments, encoding="utf-8") as handle:
        segments = [Segment(item) for item in json.load(handle)]
    by_key = {s.key: s for s in segments}
    evaluator = Evaluator(lambda _key: None, by_key.get, lambda _key: (None, "NOT_CONFIGURED"))
    segment_matches = evaluator._segment_matches_context
    ordered = sorted(segments, key=lambda s: s.key)  # members come out already sorted

    write = sys.stdout.write
    dumps = json.dumps
    with open(args.contexts, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            context = Context.from_dict(json.loads(line))
            if not context.valid:
                print(f"{args.contexts}:{number}: invalid context: {context.error}", file=sys.stderr)
                return 2
            keys = [s.key for s in ordered if segment_matches(s, context, EvalResult())]
            write(dumps({"key": context.fully_qualified_key, "segments": keys}) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
