"""`segmentflow serve` runs the API in its own process over loopback; keys with `%`, `:` and spaces travel
percent-encoded in the path (a real server decodes the path once, as clients expect)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest

from tests.api.conftest import bearer


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server(database_url: str, seeded: None) -> Iterator[str]:
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "segmentflow.cli",
            "--database-url",
            database_url,
            "serve",
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, "the server exited before serving"
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not come up in 30 s"
            time.sleep(0.1)
        yield base
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output.decode()


def test_serve_answers_over_loopback_with_encoded_keys(server: str, tokens: dict[str, str]) -> None:
    with httpx.Client(base_url=server, headers=bearer(tokens["all"])) as client:
        context = {"kind": "organization", "key": "a:b%c d", "seats": 20}
        path_key = quote("organization:a%3Ab%25c d", safe="")
        created = client.put(f"/contacts/{path_key}", json=context)
        assert created.status_code == 201, created.text
        assert created.json()["segments"] == ["orgs"]
        check = client.get(f"/contacts/segments/orgs/contacts/{path_key}").json()
        assert check["isMember"] is True and check["contactKey"] == "organization:a%3Ab%25c d"
        assert client.get("/contacts/segments", headers={"Authorization": ""}).status_code == 401
