"""The FastAPI app: OpenAI-compatible endpoints over redline strategies.

    POST /v1/chat/completions   POST /v1/completions   GET /v1/models   GET /health   GET /metrics

Everything but /health needs `Authorization: Bearer <key>` when keys are configured. /health
answers `{"status": "ok"}` to anyone; its details (backend, models, requests in flight) only to a
request with a valid key, so a server without keys shows them to nobody (use /metrics there).
"""

from __future__ import annotations

import hmac
from typing import Callable

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from redline.runtime import Runtime
from redline.server.errors import APIError, install_error_handlers
from redline.server.limits import ConcurrencyGate
from redline.server.metrics import Metrics, endpoint_pools
from redline.server.record import ObserveMiddleware
from redline.server.routing import public_models, served_models, strategy_names
from redline.server.service import ServerState, handle
from redline.server.settings import ServerSettings


def _key_check(keys: tuple[str, ...]) -> Callable[[Request], bool]:
    """Whether a request carries one of `keys` as `Authorization: Bearer <key>`."""
    encoded = [k.encode() for k in keys]

    def has_key(request: Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = token.strip().encode()
        # compare against every key, so timing does not reveal which one nearly matched
        return scheme.lower() == "bearer" and sum(hmac.compare_digest(given, k) for k in encoded) > 0
    return has_key


def _authenticator(has_key: Callable[[Request], bool], open_server: bool):  # type: ignore[no-untyped-def]
    async def authenticate(request: Request) -> None:
        if not open_server and not has_key(request):
            raise APIError(401, "missing or invalid API key: send 'Authorization: Bearer <key>'",
                           code="invalid_api_key")
    return authenticate


def create_app(runtime: Runtime, settings: ServerSettings | None = None) -> FastAPI:
    """An app serving every registered strategy (and `none`) on `runtime`'s backend."""
    settings = settings or ServerSettings()
    gate = ConcurrencyGate(settings.max_concurrency, settings.retry_after_s)
    state = ServerState(runtime, settings, gate, Metrics(in_flight=lambda: gate.active,
                                                            upstream=lambda: endpoint_pools(runtime)))
    app = FastAPI(title="redline", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.redline = state
    install_error_handlers(app)
    app.add_middleware(ObserveMiddleware, metrics=state.metrics)
    has_key = _key_check(settings.api_keys)
    auth = [Depends(_authenticator(has_key, open_server=not settings.api_keys))]

    @app.post("/v1/chat/completions", dependencies=auth)
    async def chat_completions(request: Request) -> Response:
        return await handle(request, state, "chat")

    @app.post("/v1/completions", dependencies=auth)
    async def completions(request: Request) -> Response:
        return await handle(request, state, "text")

    @app.get("/v1/models", dependencies=auth)
    async def models() -> JSONResponse:
        model = public_models(runtime)[0]
        return JSONResponse({"object": "list", "data": [
            {"id": f"{name}/{model}", "object": "model", "created": 0, "owned_by": "redline"}
            for name in strategy_names()]})

    @app.get("/health")
    async def health(request: Request) -> JSONResponse:
        if not has_key(request):
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "ok", "backend": runtime.backend.name, "model": runtime.backend.model,
                             "served_models": served_models(runtime), "verifiers": sorted(runtime.declared),
                             "in_flight": gate.active})

    @app.get("/metrics", dependencies=auth)
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type=state.metrics.content_type)

    return app
