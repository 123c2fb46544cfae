"""Message templates: Jinja2 in a bounded, immutable sandbox with `StrictUndefined`, so a template can read
only what it is given, a missing attribute is an error rather than an empty string, and no template can
take more than a bounded share of memory or CPU.

The bounds (`TemplateLimits`, from settings) hold for one render:
- `max_output`: the rendered text, and also every single value the template builds (a string, a list, an
  integer's digits, a string a container would print as). `"A" * 30000000`, `'x'.ljust(10**9)`,
  `'%*s' % (10**9, '')`, `'{:>999999999}'.format(1)`, `"x"|center(10**9)`, `range(9999)|join` and
  `[s] * 10**6` are refused *before* anything is allocated;
- `max_loop_iterations`: `{% for %}` iterations summed over the whole render (nested loops multiply, so
  two nested `range(100000)` loops stop after this many), and the largest `range()`;
- `max_work`: the total size of the values built by operators, calls, filters and concatenation in one
  render (16 x `max_output`), so a loop cannot churn through gigabytes in `max_output`-sized pieces.
Recursive loops (`{% for ... recursive %}`) are refused at compile time: their depth is not bounded; the
`lipsum()` global is removed.
Lists, dicts and sets cannot be modified (`ImmutableSandboxedEnvironment`).

A template that does not parse, or that goes over a limit for a sample contact (`check_templates`: the
test render uses `sample_contact` and undefined attributes are lenient there, so a bomb behind a missing
attribute is still found), is refused when its sequence is saved. One that fails for a contact (a missing
attribute, a sandbox violation, a limit, a type error) raises `TemplateError` from `render_template`
(`TemplateLimitError` for a limit), and the caller fails that send without sending anything.
"""

from __future__ import annotations

import contextlib
import inspect
import re
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from functools import wraps
from string import Formatter
from typing import Any

from jinja2 import ChainableUndefined, StrictUndefined, Template, TemplateSyntaxError, nodes
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.runtime import markup_join, str_join
from jinja2.sandbox import (
    ImmutableSandboxedEnvironment,
    SandboxedEscapeFormatter,
    SandboxedFormatter,
)
from jinja2.utils import _PassArg
from markupsafe import Markup

from segmentflow.policies.sequences import SendStep, SequenceDefinition, SequenceError, compile_sequence

__all__ = [
    "DEFAULT_LIMITS",
    "TemplateError",
    "TemplateLimitError",
    "TemplateLimits",
    "check_template_limits",
    "check_templates",
    "compile_template",
    "render_template",
    "render_variables",
    "sample_contact",
]


class TemplateError(ValueError):
    """A template that does not parse, or that fails for one contact."""


class TemplateLimitError(TemplateError):
    """A render went over one of the `TemplateLimits`: never retried, the same input fails the same way."""


@dataclass(frozen=True, slots=True)
class TemplateLimits:
    """Bounds of one render (see the module docstring). `max_output` is in characters."""

    max_output: int = 256 * 1024
    max_loop_iterations: int = 10_000

    @property
    def max_work(self) -> int:
        return 16 * self.max_output

    @property
    def max_int_bits(self) -> int:
        return 65_536


DEFAULT_LIMITS = TemplateLimits()


class _Budget:
    """What one render has used so far."""

    __slots__ = ("limits", "loops", "work")

    def __init__(self, limits: TemplateLimits) -> None:
        self.limits = limits
        self.loops = 0
        self.work = 0

    def value(self, size: int, what: str) -> None:
        """A value of `size` characters (or items) is about to be built."""
        if size > self.limits.max_output:
            raise TemplateLimitError(
                f"over a limit: {what} would be {size} characters long, over the limit of "
                f"{self.limits.max_output}"
            )
        self.work += size
        if self.work > self.limits.max_work:
            raise TemplateLimitError(
                f"over a limit: the render built more than {self.limits.max_work} characters of values "
                f"(16 x the output limit of {self.limits.max_output})"
            )

    def width(self, width: Any, what: str) -> None:
        if isinstance(width, int) and width > self.limits.max_output:
            raise TemplateLimitError(
                f"over a limit: {what} width {width} is over the limit of {self.limits.max_output}"
            )


# Compile-time constant folding and a render outside `render_variables` check single values only.
_BUDGET: ContextVar[_Budget | None] = ContextVar("segmentflow_template_budget", default=None)


def _budget() -> _Budget:
    return _BUDGET.get() or _Budget(DEFAULT_LIMITS)


_CONTAINERS = (list, tuple, set, frozenset, dict)


def _size(value: Any, limit: int) -> int:
    """About how many characters `str(value)` has (containers as Python prints them), computed without
    building the string and stopping once past `limit`."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, bool) or value is None:
        return 5
    if isinstance(value, int):
        return value.bit_length() * 30103 // 100000 + 2
    if isinstance(value, _CONTAINERS):
        items: Iterable[Any] = value.items() if isinstance(value, dict) else value
        total = 2
        for item in items:
            total += _size(item, limit - total) + 4
            if total > limit:
                break
        return total
    if isinstance(value, (bytes, bytearray)):
        return 4 * len(value) + 3
    return 64


def _check_printable(value: Any, what: str) -> None:
    if isinstance(value, _CONTAINERS):
        budget = _budget()
        budget.value(_size(value, budget.limits.max_output), what)


def _result(value: Any, what: str) -> Any:
    """Count a value the template built (and refuse an oversized one that got through a pre-check)."""
    if isinstance(value, (str, list, tuple, bytes, dict, set, frozenset)):
        _budget().value(len(value), what)
    elif isinstance(value, int) and not isinstance(value, bool):
        limit = _budget().limits.max_int_bits
        if value.bit_length() > limit:
            raise TemplateLimitError(f"over a limit: {what} has more than {limit} bits")
    return value


# ---- operators -----------------------------------------------------------------------------------------

_PERCENT_SPEC = re.compile(r"%(?:\(([^)]*)\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?([a-zA-Z%])")


def _check_percent(fmt: str, args: Any) -> None:
    """`fmt % args`: refuse widths and precisions over the limit (`*` ones included) and printing an
    oversized container."""
    budget = _budget()
    positional = list(args) if isinstance(args, tuple) else [args]
    mapping = args if isinstance(args, Mapping) else None
    at = 0
    for match in _PERCENT_SPEC.finditer(fmt):
        key, width, precision, conversion = match.groups()
        if conversion == "%":
            continue
        for part in (width, precision):
            if part == "*":
                if at < len(positional):
                    budget.width(positional[at], "a %-format")
                at += 1
            elif part is not None:
                budget.width(int(part), "a %-format")
        if key is not None and mapping is not None:
            _check_printable(mapping.get(key), "a %-formatted value")
        elif mapping is None:
            if at < len(positional):
                _check_printable(positional[at], "a %-formatted value")
            at += 1


def _check_binop(operator: str, left: Any, right: Any) -> None:
    budget = _budget()
    limits = budget.limits
    ints = isinstance(left, int) and isinstance(right, int)
    if operator == "*":
        if ints:
            if left.bit_length() + right.bit_length() > limits.max_int_bits:
                raise TemplateLimitError(f"over a limit: a product of more than {limits.max_int_bits} bits")
            return
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, (str, list, tuple)) and isinstance(times, int):
                each = _size(seq, limits.max_output) if isinstance(seq, (list, tuple)) else len(seq)
                budget.value(max(each, len(seq), 1) * max(times, 0), f"a {type(seq).__name__} repeated")
    elif operator == "**":
        if ints and right > 0 and abs(left) > 1 and right * left.bit_length() > limits.max_int_bits:
            raise TemplateLimitError(f"over a limit: a power of more than {limits.max_int_bits} bits")
    elif operator == "+":
        if isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
            if isinstance(left, str):
                size = len(left) + len(right)
            else:
                size = _size(left, limits.max_output) + _size(right, limits.max_output)
            budget.value(size, "a concatenation")
    elif operator == "%" and isinstance(left, str):
        _check_percent(left, right)


# ---- calls (methods of strings and lists) --------------------------------------------------------------

_WIDTH_METHODS = {"ljust", "rjust", "center", "zfill"}


def _check_call(obj: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[Any, ...]:
    """Refuse a call of a string method whose result would be over the limit; returns the arguments
    (an iterable given to `str.join` materialised, so it is measured before the join)."""
    owner = getattr(obj, "__self__", None)
    name = getattr(obj, "__name__", "")
    budget = _budget()
    if not isinstance(owner, str):
        return args
    if name in _WIDTH_METHODS and args:
        budget.width(args[0], f"str.{name}")
    elif name == "expandtabs":
        size = kwargs.get("tabsize", args[0] if args else 8)
        if isinstance(size, int):
            budget.value(len(owner) + owner.count("\t") * max(size, 0), "str.expandtabs")
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        occurrences = owner.count(args[0]) if args[0] else len(owner) + 1
        if len(args) > 2 and isinstance(args[2], int) and args[2] >= 0:
            occurrences = min(occurrences, args[2])
        budget.value(len(owner) + occurrences * max(len(args[1]) - len(args[0]), 0), "str.replace")
    elif name == "join" and args:
        items = _materialised(args[0])
        _check_join(items, owner)
        args = (items, *args[1:])
    return args


def _materialised(value: Any) -> Any:
    """An iterator (a `map`, a generator) as a list, counted item by item against the limit."""
    if isinstance(value, (list, tuple, str)) or not isinstance(value, Iterable):
        return value
    budget = _budget()
    items = []
    for item in value:
        items.append(item)
        if len(items) > budget.limits.max_output:
            break
    budget.value(len(items), "a joined sequence")
    return items


def _check_join(items: Any, separator: str) -> None:
    if not isinstance(items, (list, tuple, str)):
        return
    budget = _budget()
    limit = budget.limits.max_output
    total = max(len(items) - 1, 0) * len(separator)
    for item in items:
        total += _size(item, limit)
        if total > limit:
            break
    budget.value(total, "a join")


def _bounded_range(*args: int) -> range:
    found = range(*args)
    limit = _budget().limits.max_loop_iterations
    if len(found) > limit:
        raise TemplateLimitError(f"over a limit: range() of {len(found)} items, over the limit of {limit}")
    return found


# ---- filters -------------------------------------------------------------------------------------------


_SIGNATURES: dict[Callable[..., Any], inspect.Signature] = {}


def _arguments(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    signature = _SIGNATURES.get(func)
    if signature is None:
        signature = _SIGNATURES[func] = inspect.signature(func)
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError:
        return {}
    bound.apply_defaults()
    return dict(bound.arguments)


def _lines(text: Any) -> int:
    return str(text).count("\n") + 1 if isinstance(text, str) else 1


_AMPLIFYING_FILTERS = {"center", "indent", "wordwrap", "replace", "format"}


def _check_filter(name: str, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Refuse a filter call whose result would be over the limit; returns the (maybe materialised)
    arguments. `args` includes the context/environment argument of a `pass_*` filter."""
    budget = _budget()
    skip = 1 if _PassArg.from_obj(func) is not None else 0
    if len(args) <= skip:
        return args
    value = args[skip]
    if name == "join":
        value = _materialised(value)
        args = (*args[:skip], value, *args[skip + 1 :])
        rest = args[skip + 1 :]
        separator = rest[0] if rest else kwargs.get("d", "")
        attribute = rest[1] if len(rest) > 1 else kwargs.get("attribute")
        if attribute is None:
            _check_join(value, separator if isinstance(separator, str) else "")
        return args
    if name in {"list", "length", "count", "first", "last", "map", "select", "reject", "selectattr",
                "rejectattr", "sort", "unique", "min", "max", "batch", "slice", "dictsort", "items",
                "groupby", "default", "d", "attr", "random", "reverse", "abs", "int", "float", "round",
                "sum", "tojson"}:  # fmt: skip
        if name == "sum":
            start = _arguments(func, args, kwargs).get("start")
            if isinstance(start, (str, list, tuple)) and isinstance(value, (list, tuple)):
                _check_join(value, "")
        if name == "tojson":
            _check_printable(value, "a value printed as JSON")
        if name in {"batch", "slice"}:  # their count pads or loops before any item is read
            rest = args[skip + 1 :]
            count = rest[0] if rest else kwargs.get("linecount", kwargs.get("slices"))
            budget.width(count, f"|{name}")
        return args
    _check_printable(value, f"a value printed by |{name}")
    if name not in _AMPLIFYING_FILTERS:
        return args
    named = _arguments(func, args, kwargs)
    if name == "center":
        budget.width(named.get("width"), "|center")
    elif name == "indent":
        width = named.get("width")
        per_line = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
        budget.value(len(str(value)) + _lines(value) * max(per_line, 0), "|indent")
    elif name == "wordwrap":
        width, wrap = named.get("width"), named.get("wrapstring") or "\n"
        if isinstance(width, int) and isinstance(wrap, str):
            text = str(value)
            budget.value(len(text) + (len(text) // max(width, 1) + 1) * len(wrap), "|wordwrap")
    elif name == "replace":
        text, old, new = str(value), named.get("old"), named.get("new")
        if isinstance(old, str) and isinstance(new, str):
            occurrences = text.count(old) if old else len(text) + 1
            count = named.get("count")
            if isinstance(count, int) and count >= 0:
                occurrences = min(occurrences, count)
            budget.value(len(text) + occurrences * max(len(new) - len(old), 0), "|replace")
    elif name == "format":
        values = named.get("kwargs") or named.get("args") or ()
        _check_percent(str(value), values if isinstance(values, Mapping) else tuple(values))
    return args


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(func)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        args = _check_filter(name, func, args, kwargs)
        return _result(func(*args, **kwargs), f"the result of |{name}")

    return bounded


# ---- str.format ----------------------------------------------------------------------------------------

_DIGITS = re.compile(r"\d+")


class _BoundedFormatting(Formatter):
    def format_field(self, value: Any, format_spec: str) -> Any:
        for digits in _DIGITS.findall(format_spec):
            _budget().width(int(digits) if len(digits) < 12 else 10**12, "a format")
        _check_printable(value, "a formatted value")
        return super().format_field(value, format_spec)


class _BoundedFormatter(_BoundedFormatting, SandboxedFormatter):
    pass


class _BoundedEscapeFormatter(_BoundedFormatting, SandboxedEscapeFormatter):
    pass


# ---- the environment -----------------------------------------------------------------------------------


class _BoundedCodeGenerator(CodeGenerator):
    """Counts loop iterations and bounds `~` concatenation; refuses recursive loops."""

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        if node.recursive:
            self.fail("recursive loops are not allowed in segmentflow templates", node.lineno)
        bounded = (
            isinstance(node.iter, nodes.Call)
            and isinstance(node.iter.node, nodes.EnvironmentAttribute)
            and node.iter.node.name == "bounded_loop"
        )
        if not bounded:
            node.iter = nodes.Call(
                nodes.EnvironmentAttribute("bounded_loop"), [node.iter], [], None, None, lineno=node.lineno
            )
        super().visit_For(node, frame)

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            escape = "context.eval_ctx.autoescape"
        else:
            escape = "True" if frame.eval_ctx.autoescape else "False"
        self.write(f"environment.bounded_concat({escape}, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


_METHOD_TYPES = (types.MethodType, types.BuiltinMethodType)


def _finalize(value: Any) -> Any:
    _check_printable(value, "a printed value")
    return value


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The sandbox with `TemplateLimits` enforced (the limits of the render in progress)."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(finalize=_finalize, autoescape=False, keep_trailing_newline=True, **options)
        self.globals["range"] = _bounded_range
        del self.globals["lipsum"]  # lipsum(10**9) generates its paragraphs before anything could check them
        self.filters = {name: _bounded_filter(name, func) for name, func in self.filters.items()}

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _check_binop(operator, left, right)
        return _result(super().call_binop(context, operator, left, right), f"the result of {operator}")

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        args = _check_call(__obj, args, kwargs)
        return _result(super().call(__context, __obj, *args, **kwargs), "the result of a call")

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        if type(value) not in _METHOD_TYPES or value.__name__ not in ("format", "format_map"):
            return None
        owner = value.__self__
        if not isinstance(owner, str):
            return None
        formatter: SandboxedFormatter = (
            _BoundedEscapeFormatter(self, escape=owner.escape)
            if isinstance(owner, Markup)
            else _BoundedFormatter(self)
        )
        is_map = value.__name__ == "format_map"

        def bounded(*args: Any, **kwargs: Any) -> str:
            if is_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                kwargs, args = args[0], ()
            formatted: str = type(owner)(formatter.vformat(owner, args, kwargs))
            return _result(formatted, "a formatted string")  # type: ignore[no-any-return]

        return bounded

    def bounded_loop(self, iterable: Any) -> Iterator[Any]:
        budget = _budget()
        limit = budget.limits.max_loop_iterations
        for item in iterable:
            budget.loops += 1
            if budget.loops > limit:
                raise TemplateLimitError(f"over a limit: more than {limit} loop iterations in one render")
            yield item

    def bounded_concat(self, escape: bool, parts: tuple[Any, ...]) -> str:
        budget = _budget()
        limit = budget.limits.max_output
        budget.value(sum(_size(p, limit) for p in parts), "a ~ concatenation")
        return markup_join(parts) if escape else str_join(parts)


_ENV = BoundedSandbox(undefined=StrictUndefined)
# The save-time test render: an attribute the sample contact lacks is lenient, so the render goes on.
_CHECK_ENV = BoundedSandbox(undefined=ChainableUndefined)


def compile_template(source: str) -> Template:
    try:
        return _ENV.from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"line {exc.lineno}: {exc.message}") from None


def render_template(
    template: Template,
    *,
    contact: Mapping[str, Any],
    segments: Sequence[str],
    limits: TemplateLimits = DEFAULT_LIMITS,
) -> str:
    """`contact` is the stored context (LaunchDarkly JSON: `contact.name`, `contact.user.email` for
    multi-kind contexts); `segments` the sorted keys of the segments the contact is in."""
    return render_variables(template, {"contact": contact, "segments": list(segments)}, limits=limits)


@contextlib.contextmanager
def _limited(limits: TemplateLimits) -> Iterator[_Budget]:
    budget = _Budget(limits)
    token = _BUDGET.set(budget)
    try:
        yield budget
    finally:
        _BUDGET.reset(token)


def render_variables(
    template: Template, variables: Mapping[str, Any], *, limits: TemplateLimits = DEFAULT_LIMITS
) -> str:
    """Render with exactly `variables` within `limits`; any failure inside the template (a missing
    attribute, a sandbox violation, a type error) raises `TemplateError`, a limit `TemplateLimitError`."""
    parts: list[str] = []
    size = 0
    try:
        with _limited(limits):
            for part in template.generate(**variables):
                size += len(part)
                if size > limits.max_output:
                    raise TemplateLimitError(
                        f"over a limit: the rendered text is longer than {limits.max_output} characters"
                    )
                parts.append(part)
    except TemplateLimitError:
        raise
    except RecursionError:
        raise TemplateLimitError("over a limit: recursion too deep") from None
    except Exception as exc:  # any failure inside a user's template is that render's failure
        raise TemplateError(f"{type(exc).__name__}: {exc}") from None
    return "".join(parts)


def sample_contact() -> dict[str, Any]:
    """The contact of the save-time test render."""
    return {"kind": "user", "key": "sample", "name": "Sample Contact", "email": "sample@example.com"}


def check_template_limits(
    source: str, *, variables: Mapping[str, Any], limits: TemplateLimits = DEFAULT_LIMITS
) -> None:
    """Refuse (`TemplateLimitError`) a template that goes over a limit when rendered with `variables`.
    Other failures of the test render (a type error on lenient undefined values) are the contact's
    business at send time and pass here."""
    try:
        template = _CHECK_ENV.from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"line {exc.lineno}: {exc.message}") from None
    try:
        render_variables(template, variables, limits=limits)
    except TemplateLimitError as exc:
        raise TemplateLimitError(f"{exc} (test render with a sample contact)") from None
    except TemplateError:
        pass  # a contact without what the template reads fails at its own send


def check_templates(definition: SequenceDefinition, *, limits: TemplateLimits = DEFAULT_LIMITS) -> None:
    """Refuse a sequence whose send templates do not parse, or go over the limits for a sample contact,
    naming the step."""
    variables = {"contact": sample_contact(), "segments": [definition.segment]}
    for node in compile_sequence(definition).nodes:
        if isinstance(node.step, SendStep):
            try:
                for source in (node.step.template, node.step.subject):
                    if source is not None:
                        compile_template(source)
                        check_template_limits(source, variables=variables, limits=limits)
            except TemplateError as exc:
                raise SequenceError(
                    f'sequence "{definition.key}": step {node.index}: template {exc}'
                ) from None
