"""Under `segmentflow serve` (real uvicorn over loopback), a 9 MB upload without a valid token is answered
401, and one with a valid token 413, after only its first 64 KiB were sent: the server answers without
waiting for (or buffering) the rest."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import pytest

from tests.api.conftest import seeded
from tests.api.test_server import server

__all__ = ["seeded", "server"]


def _upload_start(base: str, token: str | None) -> int:
    """Send the headers of a 9 MB POST and 64 KiB of its body; the status code that comes back."""
    url = urlsplit(base)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    head = (
        f"POST /contacts/segments HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n"
        f"Content-Length: 9000000\r\n{auth}\r\n"
    )
    with socket.create_connection((url.hostname, url.port), timeout=5) as sock:
        sock.sendall(head.encode() + b" " * 65536)
        status_line = sock.makefile("rb").readline()  # times out (test fails) if the server waits for more
    return int(status_line.split()[1])


@pytest.mark.parametrize("token", [None, "sf_000000000000_" + "A" * 43], ids=["no token", "unknown token"])
def test_an_unauthenticated_9mb_upload_is_401_before_it_is_sent(server: str, token: str | None) -> None:
    assert _upload_start(server, token) == 401


def test_an_authenticated_9mb_upload_is_413_before_it_is_sent(server: str, tokens: dict[str, str]) -> None:
    assert _upload_start(server, tokens["all"]) == 413
