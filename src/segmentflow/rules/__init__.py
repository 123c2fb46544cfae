"""Pure. LaunchDarkly-compatible segment rules: model, contexts, operators, compile and evaluate."""

from segmentflow.rules.compile import (
    CompiledSegment,
    Explanation,
    compile_segments,
    lint_segments,
    segment_order,
    segment_problems,
)
from segmentflow.rules.context import DEFAULT_KIND, Context, Individual, parse_context
from segmentflow.rules.errors import ContextError, CycleError, RuleError, RuleWarning
from segmentflow.rules.evaluate import explain, matches, matching, memberships
from segmentflow.rules.model import Clause, Rule, Segment, Target, parse_segment, parse_segments

__all__ = [
    "DEFAULT_KIND",
    "Clause",
    "CompiledSegment",
    "Context",
    "ContextError",
    "CycleError",
    "Explanation",
    "Individual",
    "Rule",
    "RuleError",
    "RuleWarning",
    "Segment",
    "Target",
    "compile_segments",
    "explain",
    "lint_segments",
    "matches",
    "matching",
    "memberships",
    "parse_context",
    "parse_segment",
    "parse_segments",
    "segment_order",
    "segment_problems",
]
