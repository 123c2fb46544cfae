"""JSON bodies holding a lone surrogate or a non-finite number are a 422 (`json_invalid`, saying what is
wrong) on every endpoint taking a body, on SQLite and PostgreSQL alike, never a 500 or a stored value; and
a Hypothesis run puts arbitrary JSON, surrogates and NaN/Infinity included, into each such body."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segmentflow.api.json_body import loads_strict
from tests.api.conftest import bearer

pytestmark = pytest.mark.usefixtures("seeded")

TICKET = {"priority": "normal", "channel": "email", "createdAt": "2026-11-27T16:30:00Z"}


@dataclass(frozen=True)
class BodyEndpoint:
    method: str
    path: str
    body: Callable[[Any], Any]  # the endpoint's usual body with a value in one of its fields

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


ENDPOINTS = [
    BodyEndpoint("POST", "/contacts/segments", lambda v: {"key": "fresh", "name": v}),
    BodyEndpoint("PUT", "/contacts/segments/orgs", lambda v: {"definition": {}, "description": v}),
    BodyEndpoint(
        "PATCH", "/contacts/segments/vip", lambda v: {"instructions": [{"kind": "updateName", "value": v}]}
    ),
    BodyEndpoint("PUT", "/contacts/u9", lambda v: {"key": "u9", "plan": v}),
    BodyEndpoint("POST", "/messages/actions", lambda v: [{"key": "refund", "description": v}]),
    BodyEndpoint("POST", "/messages/instructions", lambda v: [{"key": "tone", "text": v}]),
    BodyEndpoint("PUT", "/sla/policies", lambda v: [{"key": "gold", "name": v, "targets": {}}]),
    BodyEndpoint("POST", "/messages/resolve", lambda v: {"contactKey": v}),
    BodyEndpoint("POST", "/sla/select", lambda v: {"contactKey": v, "ticket": TICKET}),
]
PLACEHOLDER = "@@poison@@"
#: JSON texts Python's json.loads accepts and no database should see.
POISONS = {
    "escaped lone surrogate": b'"\\ud800"',
    "low surrogate first": b'"a\\udc00\\ud800b"',
    "raw surrogate bytes": b'"\xed\xa0\x80"',
    "NaN": b"NaN",
    "Infinity": b"Infinity",
    "-Infinity": b"-Infinity",
}


def _send(client: TestClient, endpoint: BodyEndpoint, content: bytes, token: str) -> Any:
    headers = bearer(token) | {"Content-Type": "application/json"}
    return client.request(endpoint.method, endpoint.path, content=content, headers=headers)


def _refused_as_json(response: Any) -> bool:
    if response.status_code != 422:
        return False
    error = response.json()["detail"][0]
    return bool(error["type"] == "json_invalid" and error["loc"][0] == "body")


@pytest.mark.parametrize("poison", POISONS.values(), ids=POISONS.keys())
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_a_lone_surrogate_or_non_finite_number_is_422_naming_it(
    client: TestClient, tokens: dict[str, str], endpoint: BodyEndpoint, poison: bytes
) -> None:
    content = json.dumps(endpoint.body(PLACEHOLDER)).encode().replace(f'"{PLACEHOLDER}"'.encode(), poison)
    response = _send(client, endpoint, content, tokens["all"])
    assert _refused_as_json(response), response.text
    message = response.json()["detail"][0]["ctx"]["error"]
    non_finite = b"Infinity" in poison or b"NaN" in poison
    assert ("numbers must be finite" if non_finite else "lone UTF-16 surrogate") in message


def test_surrogate_pairs_and_escaped_backslashes_are_accepted(
    client: TestClient, tokens: dict[str, str]
) -> None:
    context = '{"key": "u9", "plan": "\\ud83d\\ude00", "note": "\\\\ud800"}'
    response = client.put(
        "/contacts/u9", content=context, headers=bearer(tokens["all"]) | {"Content-Type": "application/json"}
    )
    assert response.status_code == 201, response.text
    assert response.json()["context"]["plan"] == "\U0001f600"
    assert response.json()["context"]["note"] == "\\ud800"


def test_the_strict_parser_names_the_field() -> None:
    with pytest.raises(json.JSONDecodeError, match=r"at definition\.rules\.1 "):
        loads_strict(b'{"definition": {"rules": ["ok", "\\udfff"]}}')
    with pytest.raises(json.JSONDecodeError, match="NaN is not valid JSON"):
        loads_strict(b'{"a": [1, NaN]}')


# --- Hypothesis: arbitrary JSON, with surrogates and non-finite numbers, in every body -------------------

_texts = st.text(st.characters(categories=["Cs", "L", "N", "P", "Zs"]), max_size=8)
_leaves = st.none() | st.booleans() | st.integers() | st.floats() | _texts
_values = st.recursive(
    _leaves,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_texts, children, max_size=3),
    max_leaves=8,
)


def _poisoned(value: Any) -> bool:
    """Whether `value` holds a non-finite float or a string (or key) that is not valid Unicode."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, str):
        return any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, list):
        return any(_poisoned(v) for v in value)
    if isinstance(value, dict):
        return any(_poisoned(k) or _poisoned(v) for k, v in value.items())
    return False


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_arbitrary_json_with_surrogates_and_non_finite_numbers_never_gets_a_5xx(
    client: TestClient, tokens: dict[str, str], endpoint: BodyEndpoint
) -> None:
    @given(value=_values)
    @settings(
        max_examples=25,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(value: Any) -> None:
        content = json.dumps(endpoint.body(value)).encode("utf-8", "surrogatepass")
        response = _send(client, endpoint, content, tokens["all"])
        assert response.status_code < 500, response.text
        if _poisoned(value):
            assert _refused_as_json(response), response.text

    check()
