"""Server-sent events in the shape the official openai client parses.

A strategy's stream opens with the role, sends a progress note per finished internal call
(as `delta.reasoning_content` for chat, an SSE comment for plain completions: clients that
do not know them ignore them), then the answer text, the finish reason, and -- with
`stream_options.include_usage` -- a last chunk with the usage of all internal calls.
Errors after the stream started arrive as a `data: {"error": ...}` event, which the openai
client raises as an APIError.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Generic, Iterator, Sequence, TypeVar

from redline.errors import RedlineError
from redline.ledger import CallRecord
from redline.server.errors import APIError, from_redline, internal_error
from redline.server.limits import ClientDisconnected, Guard
from redline.server.record import RequestRecord
from redline.server.responses import ResponseBuilder
from redline.types import Usage

R = TypeVar("R")
DONE = b"data: [DONE]\n\n"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
log = logging.getLogger("redline.server")


def sse(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


@dataclass(frozen=True)
class Finished(Generic[R]):
    value: R


_END = object()


async def relay(guard: Guard, work: Callable[[Callable[[Any], None]], Awaitable[R]]) -> AsyncIterator[Any]:
    """Run `work(emit)` as a task and yield what it emits as it emits it, then `Finished(result)`.

    `emit` is safe to call from worker threads. Leaving early (timeout, disconnect, a closed
    stream) cancels the work, and with it the backend calls it is waiting on.
    """
    queue: asyncio.Queue[Any] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work(lambda item: loop.call_soon_threadsafe(queue.put_nowait, item)))
    task.add_done_callback(lambda _: queue.put_nowait(_END))
    try:
        while (item := await guard.run(queue.get())) is not _END:
            yield item
        yield Finished(task.result())
    finally:
        task.cancel()


def progress(builder: ResponseBuilder, record: CallRecord) -> bytes:
    note = (f"[{record.phase}] {record.n} sample(s): {record.prompt_tokens} prompt + "
            f"{record.completion_tokens} completion tokens in {record.latency_s:.2f} s\n")
    if builder.kind == "chat":
        return sse(builder.chunk(0, {"reasoning_content": note}))
    return b": " + note.strip().encode() + b"\n\n"


def opening(builder: ResponseBuilder, n: int) -> Iterator[bytes]:
    if builder.kind == "chat":
        for i in range(n):
            yield sse(builder.chunk(i, {"role": "assistant", "content": ""}))


def closing(builder: ResponseBuilder, texts: Sequence[str], reasons: Sequence[str], usage: Usage,
            include_usage: bool, extra: dict[str, Any] | None = None) -> Iterator[bytes]:
    """The answer text line by line, each choice's finish reason, then the usage chunk if asked.
    `extra` (the `redline` field) rides on the last chunk."""
    chunks = []
    for i, (text, reason) in enumerate(zip(texts, reasons)):
        chunks += [builder.chunk(i, {"content": line}) for line in text.splitlines(keepends=True)]
        chunks.append(builder.chunk(i, {}, reason))
    if include_usage:
        chunks.append(builder.usage_chunk(usage))
    if extra is not None:
        chunks[-1]["redline"] = extra
    return (sse(c) for c in chunks)


async def event_stream(chunks: AsyncIterator[bytes], record: RequestRecord, guard: Guard) -> AsyncIterator[bytes]:
    """Terminate a stream properly: `[DONE]` on success, an error event on failure, nothing
    once the client is gone."""
    try:
        async for chunk in chunks:
            yield chunk
        yield DONE
    except ClientDisconnected:
        record.cancelled = True
    except asyncio.CancelledError:
        record.cancelled = True
        raise
    except (APIError, RedlineError) as e:
        record.error = e if isinstance(e, APIError) else from_redline(e, record)
        yield sse(record.error.body())
    except Exception:  # a bug: report it in-band, keep serving
        log.exception("error while streaming %s", record.path)
        record.error = internal_error(record)
        yield sse(record.error.body())
    finally:
        guard.close()
