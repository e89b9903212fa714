"""A deterministic backend for control-flow tests. Never a default."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import Any, AsyncIterator, Callable, Sequence, Union

from redline.backends.base import Completion, GenerationRequest, truncate_at_stop

# A script returns text, or a whole Completion (with logprobs, or cut by the token limit); for
# pass-through it may also return a whole chat-completion body (a dict with "choices"), e.g. one
# whose message carries tool_calls.
Script = Union[Sequence[Any], Callable[[GenerationRequest, int], Any]]


class ScriptedBackend:
    """Answers from a list (in order, cycling) or from a function of (request, call index).

    Token counts are whitespace word counts, so tests can predict them exactly (`max_tokens` cuts
    a text after that many words, finish_reason "length"); a call bills its
    prompt once, on its first completion, whatever `n` is (`prompt_cost` gives it ahead). `passthrough`
    and `passthrough_stream` mirror the OpenAI backend's, for server tests; the bodies they
    received are kept in `bodies`.
    """

    name = "scripted"

    def __init__(self, script: Script, model: str = "scripted", delay_s: float = 0.0) -> None:
        self.script = script
        self.model = model
        self.delay_s = delay_s
        self.requests: list[GenerationRequest] = []
        self.bodies: list[dict[str, Any]] = []

    def _next(self, request: GenerationRequest) -> Any:
        index = len(self.requests)
        self.requests.append(request)
        if callable(self.script):
            return self.script(request, index)
        return self.script[index % len(self.script)]

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        prompt_words = _prompt_words(request)
        out: list[Completion] = []
        for _ in range(request.n):
            item = self._next(request)
            if isinstance(item, Completion):  # a whole completion: logprobs, finish_reason="length"
                out.append(item)
                continue
            text, _ = truncate_at_stop(item, request.stop)
            text, cut = _cut_words(text, request.max_tokens)
            out.append(Completion(text=text, finish_reason="length" if cut else "stop",
                                  prompt_tokens=0 if out else prompt_words,
                                  completion_tokens=len(text.split()), latency_s=self.delay_s))
        return out

    def prompt_cost(self, request: GenerationRequest) -> tuple[int, int]:
        """(prompt tokens, of which cached) a call of `request` bills: its words, none cached."""
        return _prompt_words(request), 0

    async def passthrough(self, body: dict[str, Any]) -> dict[str, Any]:
        """Answer a chat-completions body as an OpenAI server would, with its usage."""
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        self.bodies.append(body)
        request = GenerationRequest(messages=list(body.get("messages") or [{"role": "user", "content": ""}]),
                                    n=int(body.get("n") or 1))
        outputs = [self._next(request) for _ in range(request.n)]
        return outputs[0] if isinstance(outputs[0], dict) else _chat_body(self.model, outputs, _prompt_words(request))

    async def passthrough_stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """The streamed form of `passthrough`: a role chunk, one chunk per word or tool call, the
        finish chunk, and a usage chunk when `stream_options.include_usage` is set."""
        data = await self.passthrough(body)
        base = {"id": data.get("id", "chatcmpl-scripted"), "object": "chat.completion.chunk",
                "created": data.get("created", int(time.time())), "model": data.get("model", self.model)}
        for index, choice in enumerate(data["choices"]):
            message = choice["message"]
            yield base | {"choices": [{"index": index, "delta": {"role": "assistant", "content": ""}}]}
            for piece in _pieces(message.get("content") or ""):
                yield base | {"choices": [{"index": index, "delta": {"content": piece}}]}
            for k, call in enumerate(message.get("tool_calls") or ()):
                yield base | {"choices": [{"index": index, "delta": {"tool_calls": [call | {"index": k}]}}]}
            finish = choice.get("finish_reason", "stop")
            yield base | {"choices": [{"index": index, "delta": {}, "finish_reason": finish}]}
        if (body.get("stream_options") or {}).get("include_usage"):
            yield base | {"choices": [], "usage": data.get("usage")}

    async def aclose(self) -> None:
        return None


def _prompt_words(request: GenerationRequest) -> int:
    words = len(request.prompt.split()) if request.prompt is not None else sum(
        len(str(m.get("content") or "").split()) for m in request.messages or ())
    return words + len(request.prefix.split())


def _cut_words(text: str, max_words: int) -> tuple[str, bool]:
    """`text` cut after its first `max_words` words (a word is a token here), and whether it was cut."""
    ends = [m.end() for m in re.finditer(r"\S+", text)]
    return (text[: ends[max_words - 1]], True) if len(ends) > max_words else (text, False)


def _pieces(text: str) -> list[str]:
    """Split text into word-sized pieces that join back to it exactly."""
    return [p for p in re.split(r"(?<=\s)(?=\S)", text) if p]


def _chat_body(model: str, texts: list[str], prompt_tokens: int) -> dict[str, Any]:
    completion_tokens = sum(len(t.split()) for t in texts)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
        "model": model,
        "choices": [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop",
                     "logprobs": None} for i, t in enumerate(texts)],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }
