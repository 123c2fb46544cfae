"""Benchmark: the cost of the bounded template sandbox, against Jinja2's own `SandboxedEnvironment` (the
peer: what segmentflow rendered with before the limits), on the same templates and contacts in one run.

Templates: the demo's welcome line (a filter and a join), one with a loop over the contact's segments
and `%`/`str.format` calls, and one building a 2 KiB body with `~` and `*`. Each is rendered --renders
times per environment, best of --repeat, and the bombs the limits stop are timed too (how long a refusal
takes; Jinja2's sandbox is not run on them: it would take gigabytes and minutes).

Prints renders/s of each environment per template and the ratio bounded/peer; speed is printed, never
asserted.

Usage: .venv/bin/python bench/templates.py [--renders 20000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable
from typing import Any

from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from segmentflow.services.templates import TemplateLimitError, compile_template, render_template

TEMPLATES = {
    "welcome": "Hi {{ contact.name | default('there') }}, welcome to VIP! ({{ segments | join(', ') }})",
    "loop+format": (
        "{% for s in segments %}{{ loop.index }}. {{ '%-12s' % s }} {{ '{:>6}'.format(contact.plan) }}\n"
        "{% endfor %}{{ contact.name | upper }}"
    ),
    "2KiB body": "{% set line = ('-' * 60) ~ '\n' %}{{ contact.name ~ '\n' ~ line * 30 }}{{ contact.email }}",
}
BOMBS = {
    '"A" * 30000000': '{{ "A" * 30000000 }}',
    "nested range(10000) loops": (
        "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}"
    ),
    "'x'.ljust(10**9)": "{{ 'x'.ljust(10**9) }}",
}
CONTACT = {"kind": "user", "key": "u1", "name": "Ann", "plan": "vip", "email": "ann@example.com"}
SEGMENTS = ["beta", "eu", "vip"]


def best(repeat: int, run: Callable[[], Any]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renders", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    peer = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
    print(f"{args.renders} renders per template, best of {args.repeat}")
    for name, source in TEMPLATES.items():
        bounded_template = compile_template(source)
        peer_template = peer.from_string(source)
        expected = peer_template.render(contact=CONTACT, segments=SEGMENTS)
        assert render_template(bounded_template, contact=CONTACT, segments=SEGMENTS) == expected

        def bounded() -> None:
            for _ in range(args.renders):
                render_template(bounded_template, contact=CONTACT, segments=SEGMENTS)  # noqa: B023

        def plain() -> None:
            for _ in range(args.renders):
                peer_template.render(contact=CONTACT, segments=SEGMENTS)  # noqa: B023

        ours, theirs = best(args.repeat, bounded), best(args.repeat, plain)
        print(
            f"{name:>12}: bounded {args.renders / ours:9.0f}/s  "
            f"jinja2 sandbox {args.renders / theirs:9.0f}/s  "
            f"ratio {theirs / ours:.2f} (bounded speed / peer speed)"
        )
    for name, source in BOMBS.items():
        template = compile_template(source)
        start = time.perf_counter()
        with contextlib.suppress(TemplateLimitError):
            render_template(template, contact=CONTACT, segments=SEGMENTS)
        print(f"refusing {name}: {1000 * (time.perf_counter() - start):.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
