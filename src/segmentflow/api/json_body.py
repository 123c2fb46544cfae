"""Request bodies read as strict JSON (`segmentflow.strict_json.loads_strict`: no `NaN`/`Infinity`, no lone
surrogates), refused as FastAPI's own `json_invalid` 422 (`ctx.error` says what and where) before any
endpoint sees the body. Routers taking a body use `route_class=StrictJsonRoute`."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from segmentflow.strict_json import loads_strict

__all__ = ["StrictJsonRequest", "StrictJsonRoute", "loads_strict"]


class StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads_strict(await self.body())
        return self._json


class StrictJsonRoute(APIRoute):
    """An `APIRoute` whose endpoint reads its JSON body with `loads_strict` (FastAPI's own body reading,
    so a refusal is its usual `json_invalid` 422)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict
