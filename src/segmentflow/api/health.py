"""Operations: `/healthz` (no auth: is the database reachable) and `/metrics` (Prometheus text, any key)."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter, Request, Response, status
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy.engine import Engine

from segmentflow.api.deps import AnyKey, ReadSlot
from segmentflow.api.errors import responses
from segmentflow.api.models import Health

__all__ = ["router"]

router = APIRouter(tags=["operations"])


@router.get(
    "/healthz",
    responses={status.HTTP_503_SERVICE_UNAVAILABLE: {"model": Health, "description": "Database down."}},
)
def healthz(request: Request, response: Response, _slot: ReadSlot) -> Health:
    """Liveness and readiness: 200 when the database answers, 503 otherwise. No auth."""
    engine: Engine = request.app.state.engine
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as exc:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return Health(status="unavailable", database=type(exc).__name__)
    return Health(status="ok", database=engine.dialect.name)


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        status.HTTP_200_OK: {"content": {"text/plain": {}}, "description": "Prometheus text format."},
        **responses(401),
    },
)
def metrics(request: Request, _key: AnyKey) -> Response:
    """Prometheus metrics: requests and latency per route. Any valid API key."""
    registry: CollectorRegistry = request.app.state.metrics_registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
