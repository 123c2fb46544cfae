"""The compose file publishes Temporal's frontend and web UI on loopback only: the server has no
authentication, so reaching it from another host must be a deliberate change (with mTLS, see README)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

COMPOSE = Path(__file__).resolve().parent.parent / "docker-compose.temporal.yml"


def _published(service: dict[str, Any]) -> list[str]:
    return [str(port) for port in service.get("ports", [])]


def test_every_published_port_binds_loopback() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    published = {name: _published(service) for name, service in services.items() if _published(service)}
    assert set(published) == {"temporal", "temporal-ui"}
    assert published["temporal"] == ["127.0.0.1:7233:7233"]
    assert published["temporal-ui"] == ["127.0.0.1:8080:8080"]
