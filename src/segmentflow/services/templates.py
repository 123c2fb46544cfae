"""Message templates: Jinja2 in a `SandboxedEnvironment` with `StrictUndefined`, so a template can read
only what it is given and a missing attribute is an error rather than an empty string.

A template that does not parse is refused when its sequence is saved (`check_templates`); one that fails
for a contact (a missing attribute, a sandbox violation, a type error) raises `TemplateError` from
`render_template`, and the caller fails that enrollment without sending anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment

from segmentflow.policies.sequences import SendStep, SequenceDefinition, SequenceError, compile_sequence

__all__ = ["TemplateError", "check_templates", "compile_template", "render_template", "render_variables"]

_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


class TemplateError(ValueError):
    """A template that does not parse, or that fails for one contact."""


def compile_template(source: str) -> Template:
    try:
        return _ENV.from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"line {exc.lineno}: {exc.message}") from None


def render_template(template: Template, *, contact: Mapping[str, Any], segments: Sequence[str]) -> str:
    """`contact` is the stored context (LaunchDarkly JSON: `contact.name`, `contact.user.email` for
    multi-kind contexts); `segments` the sorted keys of the segments the contact is in."""
    return render_variables(template, {"contact": contact, "segments": list(segments)})


def render_variables(template: Template, variables: Mapping[str, Any]) -> str:
    """Render with exactly `variables`; any failure inside the template (a missing attribute, a sandbox
    violation, a type error) raises `TemplateError`."""
    try:
        return template.render(**variables)
    except Exception as exc:  # any failure inside a user's template is that render's failure
        raise TemplateError(f"{type(exc).__name__}: {exc}") from None


def check_templates(definition: SequenceDefinition) -> None:
    """Refuse a sequence whose send templates do not parse, naming the step."""
    for node in compile_sequence(definition).nodes:
        if isinstance(node.step, SendStep):
            try:
                compile_template(node.step.template)
                if node.step.subject is not None:
                    compile_template(node.step.subject)
            except TemplateError as exc:
                raise SequenceError(
                    f'sequence "{definition.key}": step {node.index}: template {exc}'
                ) from None
