"""`matches` regexes run in linear time (RE2) with Python's answers, and what cannot is refused.

The classic catastrophic patterns are answered on values far beyond what Python's backtracking `re` could
finish (the per-test timeout would stop these tests long before `re` answered); generated patterns over
case-folding, Unicode classes, anchors and flags must give exactly `re.search`'s answer; and the constructs
only a backtracking engine runs are refused at save with the reason, or never match when loaded leniently.
How long an evaluation takes is measured in `bench/regex.py`, not here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segmentflow.rules import RuleError, compile_segments, parse_context, parse_segment
from segmentflow.rules.regex import RegexRefusedError, compile_linear
from tests.factories import clause, compile_one, is_member, rule, segment, user
from tests.rules.launchdarkly import ld_is_member


def _run(unit: str, tail: str) -> Callable[[int], str]:
    return lambda n: unit * n + tail


# (pattern, a value of size n that makes `re` backtrack exponentially, or for `(.*a){20}` polynomially
# with a huge exponent). Python's answer does not depend on n, so `re` gives it on a small n, and ours on
# a large n must be the same.
CATASTROPHIC = [
    pytest.param(r"(a+)+$", _run("a", "!"), id="nested-plus"),
    pytest.param(r"(a+)+$", _run("a", ""), id="nested-plus-matching"),
    pytest.param(r"(a|aa)+$", _run("a", "!"), id="overlapping-alternation"),
    pytest.param(r"(a|a)*b", _run("a", ""), id="identical-alternation"),
    pytest.param(r"(.*a){20}", lambda n: "a" * 19 + "b" * n, id="repeated-dot-star"),
    pytest.param(r"(a*)*b", _run("a", ""), id="nested-star"),
    pytest.param(r"^(\w+\s?)*$", _run("word ", "!"), id="words-and-spaces"),
    pytest.param(r"(x+x+)+y", _run("x", ""), id="adjacent-plus"),
    pytest.param(r"^(([a-z])+.)+[A-Z]([a-z])+$", _run("a", "!"), id="owasp-evil"),
    pytest.param(r"^(a|a?)+$", _run("a", "b"), id="optional-alternation"),
]


@pytest.mark.parametrize(("pattern", "make"), CATASTROPHIC)
def test_catastrophic_pattern_answers_as_re_would_on_hostile_values(
    pattern: str, make: Callable[[int], str]
) -> None:
    answer = re.search(pattern, make(3)) is not None  # `re` is quick on a small value of the same shape
    seg = segment("s", rules=[rule(clause("email", "matches", [pattern]))])
    negated = segment("s", rules=[rule(clause("email", "matches", [pattern], negate=True))])
    compiled, compiled_negated = compile_one(seg), compile_one(negated)
    for n in (3, 19, 40, 10_000):  # from 40 on, `re` would take minutes to years
        ctx = parse_context(user("u1", email=make(n)))
        assert compiled.matches(ctx) is answer, n
        assert compiled_negated.matches(ctx) is not answer
        assert compiled.explain(ctx).is_member is answer  # the rule's own function (explain) too
    assert is_member(seg, user("u1", email=["!", make(40)])) is answer  # and inside a list attribute


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        pytest.param(r"^(?=.*@)", "lookahead", id="lookahead"),
        pytest.param(r"(?<!x)y", "lookbehind", id="lookbehind"),
        pytest.param(r"(a)\1", "backreference", id="backreference"),
        pytest.param(r"(a)?(?(1)b|c)", "conditional", id="conditional"),
        pytest.param(r"(?>a+)b", "atomic group", id="atomic"),
        pytest.param(r"a++b", "possessive repeat", id="possessive"),
        pytest.param(r"\bfoo\b", "Unicode word boundary", id="unicode-boundary"),
        pytest.param(r"a$b", "`$` followed by more pattern", id="dollar-not-last"),
        pytest.param(r"a{1001}", "repetition count above 1000", id="huge-count"),
        pytest.param("a" * 5000, "longer than 4096", id="too-long"),
    ],
)
def test_constructs_that_need_backtracking_are_refused_at_save_with_the_reason(
    pattern: str, reason: str
) -> None:
    seg = segment("s", rules=[rule(clause("email", "matches", ["^ok", pattern]))])
    with pytest.raises(RuleError) as info:
        compile_segments([parse_segment(seg)])
    message = str(info.value)
    assert message.startswith('segment "s" rule 0 clause 0: matches: regex ')
    assert "cannot run in linear time" in message and reason in message
    # Loaded leniently (stored before this check, or LaunchDarkly-exact mode) it never matches, with a
    # warning, and the clause's other pattern still does.
    compiled = compile_one(seg, lenient=True)
    assert [w.clause_index for w in compiled.warnings] == [0]
    assert str(compiled.warnings[0]).endswith("; it never matches")
    assert compiled.matches(parse_context(user("u1", email="ok"))) is True


def test_ascii_word_boundary_is_accepted_and_answers_as_re() -> None:
    pattern = r"(?a)\bfoo\b"
    for value in ("a foo b", "foobar", "éfooé", "_foo", "foo"):
        assert compile_linear(pattern).search(value) is (re.search(pattern, value) is not None)


def test_a_value_with_a_lone_surrogate_never_matches() -> None:
    assert compile_linear(".*").search("a\ud800") is False
    assert compile_linear("a").search("a") is True


@pytest.mark.parametrize(
    ("pattern", "value"),
    [
        ("a$", "a\n"),  # Python's `$` also matches before a final newline
        ("a$", "a\n\n"),
        ("^$", "\n"),
        ("(?m)^$", "a\n"),
        ("(?m)^b", "a\nb"),
        (r"a\Z", "a\n"),
        (r"\d", "٣"),  # Unicode digits
        (r"\w", "é"),
        (r"\s", "\x1c"),  # str.isspace, not Unicode White_Space
        (r"(?a)\w", "é"),
        ("(?i)k", "\u212a"),  # Kelvin sign
        ("(?i)s", "\u017f"),  # long s
        ("(?i)ß", "ẞ"),
        ("(?i)[^k]", "\u212a"),
        ("(?i)[a-z]", "\u0131"),
        ("(?ai)k", "\u212a"),
        ("(?i)İ", "i"),
        ("(?s).", "\n"),
        (".", "\n"),
        ("[^a]", "\n"),
        ("(?i:Σ)x", "ςx"),
        ("(?i)(?:a|(?a:s))", "\u017f"),  # RE2 widens a [Ss] class to U+017F in an alternation
        ("(?i)(?:a|(?a:k))", "\u212a"),
        ("🙂+$", "🙂🙂"),
    ],
)
def test_known_differences_between_re_and_re2_keep_re_answers(pattern: str, value: str) -> None:
    want = re.search(pattern, value) is not None
    assert compile_linear(pattern).search(value) is want
    seg = segment("s", rules=[rule(clause("a", "matches", [pattern]))])
    assert is_member(seg, user("u1", a=value)) is want
    assert ld_is_member("s", [seg], user("u1", a=value)) is want


# --- generated patterns against `re` ---------------------------------------------------------------

CHARS = (
    "a",
    "b",
    "A",
    "k",
    "K",
    "\u212a",
    "s",
    "S",
    "\u017f",
    "i",
    "I",
    "İ",
    "\u0131",
    "é",
    "É",
    "ß",
    "ẞ",
    "\u03c3",
    "Σ",
    "ς",
    "0",
    "٣",
    "_",
    " ",
    "\n",
    ".",
    "-",
    "🙂",
    "ǅ",
    "\x1c",
)
ATOMS = (
    *(re.escape(c) for c in CHARS),
    r"\d",
    r"\D",
    r"\w",
    r"\W",
    r"\s",
    r"\S",
    ".",
    "[a-z]",
    "[^a-z]",
    "[ak-m\u017f]",
    r"[^\W\d]",
    r"[\s\S]",
    "[İ-\u0131]",
    "[K-k]",
    "[^\n]",
    r"[\d_]",
)
ANCHORS = ("^", r"\A", r"\Z", "$")
FLAGS = ("", "(?i)", "(?m)", "(?s)", "(?a)", "(?im)", "(?is)", "(?ai)", "(?ms)")
SCOPES = ("(?:", "(", "(?i:", "(?-i:", "(?s:", "(?m:", "(?a:")
REPEATS = ("*", "+", "?", "{1,3}", "{2}", "*?", "+?", "??", "{0,2}?")


def _patterns(depth: int) -> st.SearchStrategy[str]:
    atom = st.sampled_from(ATOMS)
    if depth == 0:
        return atom
    inner = _patterns(depth - 1)
    return st.one_of(
        atom,
        st.tuples(inner, st.sampled_from(REPEATS)).map("".join),
        st.lists(inner, min_size=2, max_size=3).map("".join),
        st.tuples(st.sampled_from(SCOPES), st.lists(inner, min_size=1, max_size=3).map("|".join)).map(
            lambda t: f"{t[0]}{t[1]})"
        ),
    )


@st.composite
def patterns(draw: st.DrawFn) -> str:
    body = draw(st.lists(st.one_of(_patterns(2), st.sampled_from(ANCHORS)), min_size=1, max_size=4))
    return draw(st.sampled_from(FLAGS)) + "".join(body)


texts = st.text(alphabet=st.sampled_from(CHARS), max_size=8)


# SEGMENTFLOW_REGEX_EXAMPLES=20000 is a deeper hunt.
@settings(
    max_examples=int(os.environ.get("SEGMENTFLOW_REGEX_EXAMPLES", "600")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(pattern=patterns(), values=st.lists(texts, min_size=1, max_size=4))
def test_generated_patterns_answer_exactly_as_re_search(pattern: str, values: list[str]) -> None:
    try:
        python = re.compile(pattern)
    except re.error:
        return  # refused as a bad regex before the linear engine is asked
    try:
        linear = compile_linear(pattern)
    except RegexRefusedError as exc:
        allowed = ("word boundary", "`$` followed", "possessive repeat")  # `a*+` is possessive since 3.11
        assert any(what in str(exc) for what in allowed), (pattern, str(exc))
        return
    for value in values:
        assert linear.search(value) is (python.search(value) is not None), (pattern, value, linear.translated)


def test_refusal_is_a_value_error_naming_the_construct() -> None:
    with pytest.raises(RegexRefusedError, match="backreference"):
        compile_linear(r"(x)\1")
    assert isinstance(RegexRefusedError("x"), ValueError)
