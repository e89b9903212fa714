"""A deterministic backend for control-flow tests. Never a default."""

from __future__ import annotations

import asyncio
from typing import Callable, Sequence, Union

from redline.backends.base import Completion, GenerationRequest, truncate_at_stop

Script = Union[Sequence[str], Callable[[GenerationRequest, int], str]]


class ScriptedBackend:
    """Answers from a list (in order, cycling) or from a function of (request, call index).

    Token counts are whitespace word counts, so tests can predict them exactly.
    """

    name = "scripted"

    def __init__(self, script: Script, model: str = "scripted", delay_s: float = 0.0) -> None:
        self.script = script
        self.model = model
        self.delay_s = delay_s
        self.requests: list[GenerationRequest] = []

    def _next(self, request: GenerationRequest) -> str:
        index = len(self.requests)
        self.requests.append(request)
        if callable(self.script):
            return self.script(request, index)
        return self.script[index % len(self.script)]

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        prompt_words = len(request.prompt.split()) if request.prompt is not None else sum(
            len(str(m.get("content") or "").split()) for m in request.messages or ())
        prompt_words += len(request.prefix.split())
        out = []
        for _ in range(request.n):
            text, stopped = truncate_at_stop(self._next(request), request.stop)
            out.append(Completion(text=text, finish_reason="stop", prompt_tokens=prompt_words,
                                  completion_tokens=len(text.split()), latency_s=self.delay_s))
        return out

    async def aclose(self) -> None:
        return None
