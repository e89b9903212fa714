"""A small OpenAI-compatible app serving the embedded model, for tests of the `openai` backend.

It answers as vLLM does (checked against vLLM's CPU build by bench/real_engines.py): `n` choices
with the prompt billed once, and a stream's usage chunk only when the request sets
`stream_options.include_usage`. Switches on `AppControl` make it answer like other real servers:
fail the first K requests with a status code (500, 429); ignore `n` (`ignore_n`) and send no usage
chunk in a stream even when asked (`stream_usage=False`), as llama.cpp's server does; or report prompt tokens served from a prefix
cache (`usage.prompt_tokens_details.cached_tokens`, as vLLM with --enable-prompt-tokens-details
does). Any backend serves: the embedded model, or the scripted one for routing tests.
"""

from __future__ import annotations

import json
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from redline.backends.base import Backend, Completion, GenerationRequest
from redline.server.background import serve_in_thread


@dataclass
class AppControl:
    fail_first: int = 0
    fail_status: int = 500
    ignore_n: bool = False
    stream_usage: bool = True  # False: no usage chunk even when asked (llama.cpp's server)
    cached_tokens: int = 0  # reported per call, at most the prompt's tokens
    seen: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def reset(self, **values: Any) -> None:
        self.fail_first, self.fail_status, self.ignore_n, self.stream_usage, self.cached_tokens = 0, 500, False, True, 0
        self.seen.clear()
        for k, v in values.items():
            setattr(self, k, v)

    def paths(self) -> list[str]:
        return [p for p, _ in self.seen]


def _request_from(body: dict[str, Any], ignore_n: bool) -> GenerationRequest:
    stop = body.get("stop") or ()
    common = dict(n=1 if ignore_n else int(body.get("n") or 1), temperature=float(body.get("temperature", 1.0)),
                  top_p=float(body.get("top_p", 1.0)), max_tokens=int(body.get("max_tokens") or 64),
                  stop=[stop] if isinstance(stop, str) else list(stop), seed=body.get("seed"))
    if "prompt" in body:
        return GenerationRequest(prompt=body["prompt"], logprobs=body.get("logprobs"), **common)
    messages = list(body["messages"])
    prefix = ""
    if messages and messages[-1]["role"] == "assistant":  # prefill: continue the final assistant message
        prefix = messages.pop()["content"]
    logprobs = int(body.get("top_logprobs") or 0) if body.get("logprobs") else None
    return GenerationRequest(messages=messages, prefix=prefix, logprobs=logprobs, **common)


def _usage(completions: list[Completion], cached: int) -> dict[str, Any]:
    prompt = completions[0].prompt_tokens  # billed once per call
    completion = sum(c.completion_tokens for c in completions)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": min(cached, prompt)}}


def _chat_choice(i: int, c: Completion) -> dict[str, Any]:
    logprobs = None if c.logprobs is None else {"content": [
        {"token": t.token, "logprob": t.logprob, "bytes": None,
         "top_logprobs": [{"token": k, "logprob": v, "bytes": None} for k, v in t.top.items()]}
        for t in c.logprobs]}
    return {"index": i, "message": {"role": "assistant", "content": c.text}, "finish_reason": c.finish_reason,
            "logprobs": logprobs}


def _text_choice(i: int, c: Completion) -> dict[str, Any]:
    logprobs = None if c.logprobs is None else {
        "tokens": [t.token for t in c.logprobs], "token_logprobs": [t.logprob for t in c.logprobs],
        "top_logprobs": [dict(t.top) for t in c.logprobs], "text_offset": []}
    return {"index": i, "text": c.text, "finish_reason": c.finish_reason, "logprobs": logprobs}


def create_app(backend: Backend, control: AppControl) -> FastAPI:
    app = FastAPI()

    def failure(path: str, body: dict[str, Any]) -> JSONResponse | None:
        control.seen.append((path, body))
        if len(control.seen) <= control.fail_first:
            return JSONResponse({"error": {"message": "injected failure", "type": "server_error"}},
                                status_code=control.fail_status)
        return None

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": backend.model, "object": "model", "owned_by": "redline-tests"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        if (failed := failure("/v1/chat/completions", body)) is not None:
            return failed
        if body.get("model") != backend.model:
            return JSONResponse({"error": {"message": f"model {body.get('model')!r} not found"}}, status_code=404)
        completions = await backend.generate(_request_from(body, control.ignore_n))
        head = {"id": "chatcmpl-test", "created": int(time.time()), "model": backend.model}
        if body.get("stream"):
            usage = control.stream_usage and bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(_chat_stream(head, completions, control.cached_tokens if usage else None),
                                     media_type="text/event-stream")
        return {**head, "object": "chat.completion", "usage": _usage(completions, control.cached_tokens),
                "choices": [_chat_choice(i, c) for i, c in enumerate(completions)]}

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        body = await request.json()
        if (failed := failure("/v1/completions", body)) is not None:
            return failed
        out = await backend.generate(_request_from(body, control.ignore_n))
        return {"id": "cmpl-test", "object": "text_completion", "created": int(time.time()), "model": backend.model,
                "usage": _usage(out, control.cached_tokens), "choices": [_text_choice(i, c) for i, c in enumerate(out)]}

    return app


def _chat_stream(head: dict[str, Any], completions: list[Completion], cached: int | None) -> Iterator[str]:
    """One content chunk per choice, a finish chunk, a usage chunk (`cached` None: none), then [DONE]."""
    for i, c in enumerate(completions):
        for delta, finish in (({"role": "assistant", "content": c.text}, None), ({}, c.finish_reason)):
            chunk = {**head, "object": "chat.completion.chunk",
                     "choices": [{"index": i, "delta": delta, "finish_reason": finish}]}
            yield f"data: {json.dumps(chunk)}\n\n"
    if cached is not None:
        usage = {**head, "object": "chat.completion.chunk", "choices": [], "usage": _usage(completions, cached)}
        yield f"data: {json.dumps(usage)}\n\n"
    yield "data: [DONE]\n\n"


@contextmanager
def serve(backend: Backend, control: AppControl) -> Iterator[str]:
    """Run the app on a free 127.0.0.1 port in a background thread; yield its base URL."""
    with serve_in_thread(create_app(backend, control)) as url:
        yield f"{url}/v1"


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
