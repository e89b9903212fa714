"""OpenAI response bodies (ChatCompletion, Completion, their stream chunks) built from Results."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

from redline.types import Result, Usage

Kind = Literal["chat", "text"]


def usage_dict(usage: Usage) -> dict[str, Any]:
    """OpenAI's usage object; `prompt_tokens_details.cached_tokens` is the part of the prompt tokens
    that prefix caches served (the backend's server's, or the local KV cache)."""
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cached_prompt_tokens}}


def total_of(results: Sequence[Result]) -> Usage:
    total = Usage()
    for r in results:
        total = total + r.total
    return total


def answer_text(result: Result) -> str:
    """What the client reads: the chosen solution's steps (ending in 'The answer is N.')."""
    if result.solution is not None and result.solution.text.strip():
        return result.solution.text
    return f"The answer is {result.answer}." if result.answer is not None else ""


def finish_reason(result: Result) -> str:
    return "length" if result.stopped else "stop"


def redline_extra(spec: str, results: Sequence[Result], with_trace: bool) -> dict[str, Any]:
    """The `redline` field: per choice, the answer, why a budget stopped it, usage by phase, and the trace."""
    keep = ("answer", "stopped", "wall_s", "usage", "usage_total") + (("trace",) if with_trace else ())
    return {"strategy": spec, "choices": [{k: v for k, v in r.to_dict().items() if k in keep} for r in results]}


@dataclass
class ResponseBuilder:
    """Bodies for one request: a shared id, creation time and model name."""

    kind: Kind
    model: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def _id(self) -> str:
        return ("chatcmpl-" if self.kind == "chat" else "cmpl-") + self.id

    def _head(self, obj: str) -> dict[str, Any]:
        return {"id": self._id, "object": obj, "created": self.created, "model": self.model}

    def _choice(self, index: int, text: str, reason: str | None) -> dict[str, Any]:
        if self.kind == "chat":
            return {"index": index, "message": {"role": "assistant", "content": text}, "logprobs": None,
                    "finish_reason": reason}
        return {"index": index, "text": text, "logprobs": None, "finish_reason": reason}

    def complete(self, texts: Sequence[str], reasons: Sequence[str], usage: Usage,
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
        body = self._head("chat.completion" if self.kind == "chat" else "text_completion")
        body["choices"] = [self._choice(i, t, r) for i, (t, r) in enumerate(zip(texts, reasons))]
        body["usage"] = usage_dict(usage)
        if extra is not None:
            body["redline"] = extra
        return body

    def from_results(self, spec: str, results: Sequence[Result], with_trace: bool) -> dict[str, Any]:
        return self.complete([answer_text(r) for r in results], [finish_reason(r) for r in results],
                             total_of(results), redline_extra(spec, results, with_trace))

    # stream chunks
    def chunk(self, index: int, delta: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
        body = self._head("chat.completion.chunk" if self.kind == "chat" else "text_completion")
        if self.kind == "chat":
            body["choices"] = [{"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}]
        else:
            body["choices"] = [{"index": index, "text": delta.get("content", ""), "logprobs": None,
                                "finish_reason": reason}]
        return body

    def usage_chunk(self, usage: Usage) -> dict[str, Any]:
        """The last chunk when the client set stream_options.include_usage: no choices, the usage."""
        body = self._head("chat.completion.chunk" if self.kind == "chat" else "text_completion")
        body["choices"] = []
        body["usage"] = usage_dict(usage)
        return body
