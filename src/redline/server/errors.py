"""OpenAI-style JSON errors, {"error": {"message", "type", "param", "code"}}, for every failure.

Clients (the openai SDK included) read `error.message` and map the HTTP status to an
exception class, so every path -- our checks, library errors, unknown routes, bugs --
answers in this one shape and never as HTML or a bare traceback.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from redline.errors import RedlineError

log = logging.getLogger("redline.server")

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
          405: "invalid_request_error", 413: "invalid_request_error", 415: "invalid_request_error",
          429: "rate_limit_error", 502: "upstream_error", 504: "timeout_error"}


class APIError(Exception):
    """An error the server answers with `status` and an OpenAI-style body."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    @property
    def type(self) -> str:
        return _TYPES.get(self.status, "invalid_request_error" if self.status < 500 else "server_error")

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def from_redline(e: RedlineError) -> APIError:
    """A library error (bad spec, unreachable backend) keeps its one-line message and http_status."""
    return APIError(e.http_status, str(e), code=type(e).__name__)


def _respond(request: Request, error: APIError) -> JSONResponse:
    record = request.scope.get("redline.record")
    if record is not None:
        record.error = error
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception type a request can raise to one OpenAI-style JSON answer."""

    async def api_error(request: Request, e: Exception) -> JSONResponse:
        assert isinstance(e, APIError)
        return _respond(request, e)

    async def redline_error(request: Request, e: Exception) -> JSONResponse:
        assert isinstance(e, RedlineError)
        return _respond(request, from_redline(e))

    async def validation_error(request: Request, e: Exception) -> JSONResponse:
        assert isinstance(e, RequestValidationError)
        first = e.errors()[0] if e.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return _respond(request, APIError(400, f"{param or 'body'}: {first.get('msg', 'invalid request')}", param))

    async def http_error(request: Request, e: Exception) -> JSONResponse:
        assert isinstance(e, StarletteHTTPException)
        message = f"no route {request.method} {request.url.path}" if e.status_code in (404, 405) else str(e.detail)
        return _respond(request, APIError(e.status_code, message, headers=dict(e.headers or {})))

    async def server_error(request: Request, e: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _respond(request, APIError(500, f"internal error ({type(e).__name__}); see the server log"))

    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(RedlineError, redline_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, server_error)
