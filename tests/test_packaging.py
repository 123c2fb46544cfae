"""The shape we ship: one top-level import name, a valid compose file, a worker that starts and stops."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest
from segmentflow.plugins import RECOMPUTE_SCHEDULE_ID, missing_search_attributes
from temporalio.client import Client, ScheduleIntervalSpec


def test_wheel_installs_only_the_segmentflow_package(repo_root: Path, tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(repo_root),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("segmentflow-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top_level == {"segmentflow"}
    for module in (
        "workflows/recompute.py",
        "activities/membership.py",
        "plugins/_plugin.py",
        "db/migrations/versions/0001_initial.py",
        "sample/segments.json",
        "py.typed",
    ):
        assert f"segmentflow/{module}" in names


def test_compose_file_validates(repo_root: Path) -> None:
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.skip("no docker-compose client on this machine (apt-get install docker-compose)")
    result = subprocess.run(
        [compose, "-f", str(repo_root / "docker-compose.temporal.yml"), "config", "-q"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_worker_dev_mode_embeds_a_server_creates_the_schedule_and_stops_on_sigterm(
    repo_root: Path, tmp_path: Path
) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "SEGMENTFLOW_TEMPORAL_ADDRESS": f"127.0.0.1:{port}",
        "SEGMENTFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'worker.db'}",
        "SEGMENTFLOW_RECOMPUTE_EVERY": "PT2M",
        "SEGMENTFLOW_SEARCH_ATTRIBUTES": "true",  # the worker refuses to start unless they are registered
    }
    process = subprocess.Popen(
        [sys.executable, str(repo_root / "worker.py"), "--dev"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        client = None
        description = None
        # The schedule is made before the worker starts, and the plugin migrates the database as the worker
        # starts: wait for both.
        for _ in range(300):
            try:
                client = await Client.connect(f"127.0.0.1:{port}")
                description = await client.get_schedule_handle(RECOMPUTE_SCHEDULE_ID).describe()
                if (tmp_path / "worker.db").exists():
                    break
            except Exception:  # not up yet
                pass
            assert process.poll() is None, "the worker exited before serving"
            await asyncio.sleep(0.2)
        else:
            raise AssertionError(
                "the worker never created its schedule"
                if description is None
                else "the worker never migrated its database"
            )
        assert description is not None and client is not None
        assert await missing_search_attributes(client) == []  # --dev registered them
        interval = description.schedule.spec.intervals[0]
        assert isinstance(interval, ScheduleIntervalSpec) and interval.every == timedelta(minutes=2)
    finally:
        process.send_signal(signal.SIGTERM)
        raw, _ = process.communicate(timeout=60)
    output = raw.decode()
    assert process.returncode == 0, output
    assert "worker stopped" in output
    with socket.socket() as sock, pytest.raises(OSError):
        sock.connect(("127.0.0.1", port))  # the embedded server went down with it
