"""The FastAPI app: OpenAI-compatible endpoints over redline strategies.

    POST /v1/chat/completions   POST /v1/completions   GET /v1/models   GET /health   GET /metrics

Everything but /health needs `Authorization: Bearer <key>` when keys are configured.
"""

from __future__ import annotations

import hmac

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from redline.runtime import Runtime
from redline.server.errors import APIError, install_error_handlers
from redline.server.limits import ConcurrencyGate
from redline.server.metrics import Metrics
from redline.server.record import ObserveMiddleware
from redline.server.routing import served_models, strategy_names
from redline.server.service import ServerState, handle
from redline.server.settings import ServerSettings


def _authenticator(keys: tuple[str, ...]):  # type: ignore[no-untyped-def]
    encoded = [k.encode() for k in keys]

    async def authenticate(request: Request) -> None:
        if not encoded:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = token.strip().encode()
        # compare against every key, so timing does not reveal which one nearly matched
        if scheme.lower() != "bearer" or not sum(hmac.compare_digest(given, k) for k in encoded):
            raise APIError(401, "missing or invalid API key: send 'Authorization: Bearer <key>'",
                           code="invalid_api_key")
    return authenticate


def create_app(runtime: Runtime, settings: ServerSettings | None = None) -> FastAPI:
    """An app serving every registered strategy (and `none`) on `runtime`'s backend."""
    settings = settings or ServerSettings()
    gate = ConcurrencyGate(settings.max_concurrency, settings.retry_after_s)
    state = ServerState(runtime, settings, gate, Metrics(in_flight=lambda: gate.active))
    app = FastAPI(title="redline", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.redline = state
    install_error_handlers(app)
    app.add_middleware(ObserveMiddleware, metrics=state.metrics)
    auth = [Depends(_authenticator(settings.api_keys))]

    @app.post("/v1/chat/completions", dependencies=auth)
    async def chat_completions(request: Request) -> Response:
        return await handle(request, state, "chat")

    @app.post("/v1/completions", dependencies=auth)
    async def completions(request: Request) -> Response:
        return await handle(request, state, "text")

    @app.get("/v1/models", dependencies=auth)
    async def models() -> JSONResponse:
        model = runtime.backend.model
        return JSONResponse({"object": "list", "data": [
            {"id": f"{name}/{model}", "object": "model", "created": 0, "owned_by": "redline"}
            for name in strategy_names()]})

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse({"status": "ok", "backend": runtime.backend.name, "model": runtime.backend.model,
                             "served_models": served_models(runtime), "in_flight": gate.active})

    @app.get("/metrics", dependencies=auth)
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type=state.metrics.content_type)

    return app
