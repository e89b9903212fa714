"""OpenAI-style JSON errors, {"error": {"message", "type", "param", "code"}}, for every failure.

Clients (the openai SDK included) read `error.message` and map the HTTP status to an
exception class, so every path -- our checks, library errors, unknown routes, bugs --
answers in this one shape and never as HTML or a bare traceback.

What a client reads names no server path, URL, stack frame or library exception: spec errors
(about the client's own text) keep their message with path-like words masked; other library
errors (a backend that failed, a bug) are named by kind only, and their detail goes to the log.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from redline.errors import RedlineError, SpecError

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


_URL = re.compile(r"\b[A-Za-z][\w+.-]*://[^\s'\"]+")
_PATH = re.compile(r"(?<![\w<>])(?:~|\.{1,2})?(?:[/\\][^\s'\"/\\,;:()]+)+[/\\]?")


def public_text(message: str) -> str:
    """`message` with URLs and file paths masked, for a client to read."""
    return _PATH.sub("<path>", _URL.sub("<url>", message))


def from_redline(e: RedlineError, record: Any = None) -> APIError:
    """A library error as a client sees it: a 4xx keeps its one-line message (paths masked); a 5xx
    (a backend or other upstream that failed) is named by kind, with the detail in the server log only."""
    if e.http_status < 500:
        return APIError(e.http_status, public_text(str(e)), code=type(e).__name__)
    log.warning("request %s: %s: %s", getattr(record, "id", "-"), type(e).__name__, e)
    return APIError(e.http_status, f"{type(e).__name__}: a service this server relies on failed; the details are "
                                   f"in the server's log{_request_ref(record)}", code=type(e).__name__)


def spec_error(e: SpecError) -> APIError:
    """A bad strategy spec in the request's `model` (or `redline`) field."""
    return APIError(400, public_text(str(e)), "model", "invalid_strategy")


def internal_error(record: Any) -> APIError:
    """A bug, answered without its text (the server log has the traceback)."""
    return APIError(500, f"internal error; see the server's log{_request_ref(record)}")


def _request_ref(record: Any) -> str:
    request_id = getattr(record, "id", None)
    return f" (request {request_id})" if request_id else ""


def _respond(request: Request, error: APIError) -> JSONResponse:
    record = request.scope.get("redline.record")
    if record is not None:
        record.error = error
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


class CatchBugs:
    """Pure ASGI middleware: an unexpected exception becomes the 500 answer (its traceback goes to the
    log) and the connection stays usable. Starlette's own handler for `Exception` re-raises after
    answering, and uvicorn then closes the client's keep-alive connection."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if started:  # too late for an answer of our own
                raise
            record = scope.get("redline.record")
            error = internal_error(record)
            if record is not None:
                record.error = error
            await JSONResponse(error.body(), status_code=500)(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception type a request can raise to one OpenAI-style JSON answer."""

    async def api_error(request: Request, e: Exception) -> JSONResponse:
        assert isinstance(e, APIError)
        return _respond(request, e)

    async def redline_error(request: Request, e: Exception) -> JSONResponse:
        assert isinstance(e, RedlineError)
        return _respond(request, from_redline(e, request.scope.get("redline.record")))

    async def validation_error(request: Request, e: Exception) -> JSONResponse:
        assert isinstance(e, RequestValidationError)
        first = e.errors()[0] if e.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return _respond(request, APIError(400, f"{param or 'body'}: {first.get('msg', 'invalid request')}", param))

    async def http_error(request: Request, e: Exception) -> JSONResponse:
        assert isinstance(e, StarletteHTTPException)
        message = f"no route {request.method} {request.url.path}" if e.status_code in (404, 405) else str(e.detail)
        return _respond(request, APIError(e.status_code, message, headers=dict(e.headers or {})))

    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(RedlineError, redline_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_middleware(CatchBugs)
