"""Schemathesis against our own OpenAPI schema: requests generated for every operation (with a key holding
every scope, over seeded data), valid ones and invalid ones, never get a 5xx, and every response conforms to
the schema: a documented status code, content type, headers and body.

Each operation is its own test, driving Hypothesis with schemathesis' strategy for it (the lazy
`schemathesis.pytest.from_fixture` loader does not run under this pytest)."""

from __future__ import annotations

import os

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from segmentflow.api import create_app
from segmentflow.settings import Settings
from tests.api.conftest import bearer

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
#: Per operation and database; raise it for a longer hunt (e.g. 500), the default keeps the run short.
EXAMPLES = int(os.environ.get("SEGMENTFLOW_SCHEMATHESIS_EXAMPLES", "10"))


def _cases() -> list[tuple[str, str, GenerationMode]]:
    """(method, path, mode) for every operation: valid inputs, and invalid ones where it takes any."""
    app = create_app(Settings(database_url="sqlite://"))  # the schema needs no database
    try:
        paths = app.openapi()["paths"]
    finally:
        app.state.engine.dispose()
    return [
        (method.upper(), path, mode)
        for path, item in paths.items()
        for method, operation in item.items()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        if mode is GenerationMode.POSITIVE or operation.get("parameters") or operation.get("requestBody")
    ]


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize(("method", "path", "mode"), _cases())
def test_generated_requests_get_no_5xx_and_conform_to_the_schema(
    app: FastAPI, tokens: dict[str, str], method: str, path: str, mode: GenerationMode
) -> None:
    operation = schemathesis.openapi.from_asgi("/openapi.json", app)[path][method]
    headers = bearer(tokens["all"])

    @given(case=operation.as_strategy(mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS)

    check()
