"""What keeps one request from hurting the others: body size, n, max_tokens, concurrency,
a deadline, and cancelling work whose client has gone."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any, Awaitable, Callable, TypeVar

from starlette.requests import Request

from redline.server.errors import APIError
from redline.server.schemas import CompletionBase
from redline.server.settings import ServerSettings

T = TypeVar("T")


class ClientDisconnected(Exception):
    """The client closed the connection; its work was cancelled and nobody is left to answer."""


async def read_json(request: Request, max_bytes: int) -> dict[str, Any]:
    """The body as a JSON object: 415 for another content type, 413 when too large, 400 when malformed."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise APIError(415, f"Content-Type must be application/json, got {content_type or 'none'!r}",
                       code="unsupported_media_type")
    too_large = APIError(413, f"request body exceeds this server's limit of {max_bytes} bytes",
                         code="request_too_large")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise too_large
    data = parse_json(bytes(body))
    if not isinstance(data, dict):
        raise APIError(400, f"the body must be a JSON object, got {type(data).__name__}", code="invalid_json")
    return data


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        twice = next(k for k in keys if keys.count(k) > 1)
        raise APIError(400, f"malformed JSON body: key {twice[:100]!r} appears twice in one object",
                       code="invalid_json")
    return dict(pairs)


def _no_constant(name: str) -> Any:
    raise APIError(400, f"malformed JSON body: {name} is not a JSON number", code="invalid_json")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise APIError(400, f"malformed JSON body: the number {text[:50]} is too large", code="invalid_json")
    return value


def parse_json(body: bytes) -> Any:
    """Strict JSON: UTF-8 text, no duplicated keys, no NaN/Infinity, numbers and nesting that
    Python can hold; each violation is a 400 that quotes no library message."""
    try:
        data = json.loads(body, object_pairs_hook=_no_duplicates, parse_constant=_no_constant,
                          parse_float=_finite)
        json.dumps(data, ensure_ascii=False).encode("utf-8")  # lone surrogates (\ud800) are not UTF-8
    except json.JSONDecodeError as e:
        raise APIError(400, f"malformed JSON body: {e.msg} at line {e.lineno} column {e.colno}",
                       code="invalid_json") from None
    except UnicodeError:
        raise APIError(400, "malformed JSON body: the text is not valid UTF-8", code="invalid_json") from None
    except RecursionError:
        raise APIError(400, "malformed JSON body: nested too deeply", code="invalid_json") from None
    except ValueError:  # an integer with more digits than Python converts
        raise APIError(400, "malformed JSON body: a number is too large", code="invalid_json") from None
    return data


def check_limits(request: CompletionBase, settings: ServerSettings) -> None:
    """400 for an n or max_tokens above what this server allows."""
    if request.n > settings.max_n:
        raise APIError(400, f"n={request.n} exceeds this server's max_n={settings.max_n}", "n")
    limit = request.token_limit
    if limit is not None and limit > settings.max_tokens_limit:
        param = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
        raise APIError(400, f"{param}={limit} exceeds this server's limit of {settings.max_tokens_limit}", param)


class ConcurrencyGate:
    """Admits at most `limit` requests at once; the next one gets 429 with Retry-After at once
    rather than waiting in an unbounded queue."""

    def __init__(self, limit: int, retry_after_s: int = 1) -> None:
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.active = 0

    def enter(self) -> Callable[[], None]:
        """Take a slot; returns the (idempotent) function that gives it back."""
        if self.active >= self.limit:
            raise APIError(429, f"server busy: {self.limit} requests in flight; retry shortly",
                           code="server_busy", headers={"Retry-After": str(self.retry_after_s)})
        self.active += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.active -= 1
        return release


async def _disconnect(request: Request) -> None:
    """Return when the client closes the connection (the body has been read by then)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class Guard:
    """Runs a request's work under its deadline (504) and cancels it when the client disconnects."""

    def __init__(self, request: Request, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._deadline = asyncio.get_running_loop().time() + timeout_s
        self._gone = asyncio.ensure_future(_disconnect(request))

    async def run(self, work: Awaitable[T]) -> T:
        """Await `work`; on timeout or disconnect cancel it and raise APIError(504) or ClientDisconnected."""
        task = asyncio.ensure_future(work)
        remaining = self._deadline - asyncio.get_running_loop().time()
        try:
            done, _ = await asyncio.wait({task, self._gone}, timeout=max(remaining, 0),
                                         return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task in done:
            return task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if self._gone in done:
            raise ClientDisconnected()
        raise APIError(504, f"request took longer than this server's timeout of {self.timeout_s:g} s",
                       code="timeout")

    def close(self) -> None:
        self._gone.cancel()
