"""`segmentflow demo --serve`: the demo, then the console on its data, with a URL and a key to sign in."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_demo_serve_keeps_the_console_running_on_the_demo_data(tmp_path: Path) -> None:
    port = _free_port()
    command = Path(sys.executable).with_name("segmentflow")
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    process = subprocess.Popen(
        [str(command), "demo", "--no-temporal", "--database-url", url, "--serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines: list[str] = []
        token = None
        deadline = time.monotonic() + 120
        while token is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if re.fullmatch(r"sf_[0-9a-f]{12}_[A-Za-z0-9_-]{43}\n", line):
                token = line.strip()
        printed = "".join(lines)
        assert token is not None, printed
        assert f"http://127.0.0.1:{port}/ui/" in printed
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10, follow_redirects=True) as client:
            for _ in range(100):
                try:
                    form = client.get("/ui/")
                    break
                except httpx.ConnectError:
                    time.sleep(0.1)
            csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert csrf is not None
            signed_in = client.post("/ui/sign-in", data={"token": token, "csrf": csrf.group(1)})
            assert signed_in.status_code == 200 and str(signed_in.url).endswith("/ui/segments")
            assert re.findall(r'<tr data-segment-key="([^"]+)"', signed_in.text)
        assert process.poll() is None  # still serving
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
