"""One request's account (status, strategy, tokens, error, timing), filled in as it is handled,
then turned into metrics and one JSON log line by `observe`."""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from redline.server.errors import APIError
    from redline.server.metrics import Metrics

access_log = logging.getLogger("redline.server.access")
ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics")


@dataclass
class RequestRecord:
    method: str
    path: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    started: float = field(default_factory=time.perf_counter)
    status: int = 0
    strategy: str = ""
    model: str = ""
    stream: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    error: "APIError | None" = None
    cancelled: bool = False
    latency_s: float = 0.0
    release: Callable[[], None] | None = None  # gives back the concurrency slot

    @property
    def endpoint(self) -> str:
        return self.path if self.path in ENDPOINTS else "other"

    @property
    def error_type(self) -> str | None:
        if self.error is not None:
            return self.error.type
        return "server_error" if self.status >= 500 else None

    def count_usage(self, usage: dict[str, Any] | None) -> None:
        usage = usage or {}
        self.prompt_tokens += int(usage.get("prompt_tokens") or 0)
        self.completion_tokens += int(usage.get("completion_tokens") or 0)
        self.cached_prompt_tokens += int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)

    def log_line(self) -> str:
        data = {"request_id": self.id, "method": self.method, "path": self.path, "status": self.status,
                "latency_ms": round(self.latency_s * 1000, 2), "strategy": self.strategy or None,
                "model": self.model or None, "stream": self.stream, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "cancelled": self.cancelled,
                "error": self.error.message if self.error is not None else None}
        return json.dumps(data)


class ObserveMiddleware:
    """Pure ASGI middleware (streams stay streams): gives each request a record, and when the
    response is over -- finished, failed or abandoned -- frees its slot, counts it and logs it."""

    def __init__(self, app: ASGIApp, metrics: "Metrics") -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        record = RequestRecord(scope["method"], scope["path"])
        scope["redline.record"] = record

        async def send_with_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", record.id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        except BaseException:
            record.status = record.status or 500
            raise
        finally:
            if record.release is not None:
                record.release()
            if record.cancelled:
                record.status = 499  # client closed the request (nginx's convention)
            record.latency_s = time.perf_counter() - record.started
            self.metrics.observe(record)
            access_log.info(record.log_line())
