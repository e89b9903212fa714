"""The one backend protocol: `await backend.generate(request) -> list[Completion]`."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from typing import Any, AsyncIterator, Mapping, Protocol, Sequence, runtime_checkable

from redline.ledger import CallRecord, Hold, Ledger, current_ledger, current_phase

Message = Mapping[str, Any]


@dataclass(frozen=True)
class GenerationRequest:
    """Messages (chat) or a raw prompt, optionally continued from an assistant `prefix`."""

    messages: Sequence[Message] | None = None
    prompt: str | None = None
    prefix: str = ""
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 512
    stop: Sequence[str] = ()
    seed: int | None = None
    logprobs: int | None = None  # how many top alternatives per token; None = no logprobs

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("a GenerationRequest needs exactly one of messages or prompt")
        if self.n < 1:
            raise ValueError("n must be >= 1")


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float
    top: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Completion:
    """One sampled continuation. `prompt_tokens` is what this completion was billed for
    its prompt, so summing over a call's completions gives the call's prompt tokens."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    logprobs: tuple[TokenLogprob, ...] | None = None
    cached_tokens: int = 0  # of prompt_tokens, served from a prefix cache (KV cache or the server's)
    endpoint: str = ""  # which server answered, for backends with several


@runtime_checkable
class Backend(Protocol):
    name: str
    model: str

    async def generate(self, request: GenerationRequest) -> list[Completion]: ...

    async def aclose(self) -> None: ...


MESSAGE_OVERHEAD_TOKENS = 8
"""Tokens a chat template may add per message (role markers, separators), counted high."""
TEMPLATE_OVERHEAD_TOKENS = 32
"""Tokens a chat template may add once (a default system prompt, the generation prompt), counted high."""


def estimate_prompt_tokens(request: GenerationRequest) -> int:
    """A safe over-estimate of a request's prompt tokens without its tokenizer: its UTF-8 bytes
    (a byte-level BPE token covers at least one byte) plus a template's overheads."""
    if request.prompt is not None:
        return len((request.prompt + request.prefix).encode("utf-8")) + TEMPLATE_OVERHEAD_TOKENS
    texts = [str(m.get("content") or "") for m in request.messages or ()] + [request.prefix]
    return sum(len(t.encode("utf-8")) + MESSAGE_OVERHEAD_TOKENS for t in texts) + TEMPLATE_OVERHEAD_TOKENS


def estimate_body_tokens(body: Mapping[str, Any]) -> int:
    """`estimate_prompt_tokens` for a raw chat body: the JSON bytes of its messages (tool calls
    included) and tools."""
    messages = list(body.get("messages") or ())
    shown = [messages] + [body[k] for k in ("tools", "functions") if body.get(k)]
    return (len(json.dumps(shown, ensure_ascii=False).encode("utf-8")) + MESSAGE_OVERHEAD_TOKENS * len(messages)
            + TEMPLATE_OVERHEAD_TOKENS)


class LedgeredBackend:
    """Wraps a backend so that every call is booked against the current ledger's budget before it
    starts (see `redline.ledger`) and recorded when it ends.

    The booking needs the prompt's cost: the inner backend's `prompt_cost(request) -> (prompt
    tokens, of which cached)` when it has one (exact for local and scripted), else
    `estimate_prompt_tokens`, which errs high."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name = inner.name
        self.model = inner.model

    @property
    def supports_passthrough(self) -> bool:
        """Whether the inner backend takes raw chat-completions bodies (openai, scripted)."""
        return hasattr(self.inner, "passthrough")

    def prompt_cost(self, request: GenerationRequest) -> tuple[int, int]:
        """(prompt tokens, of which cached) of `request`: the inner backend's count, else an over-estimate."""
        exact = getattr(self.inner, "prompt_cost", None)
        return exact(request) if exact is not None else (estimate_prompt_tokens(request), 0)

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        ledger = current_ledger()
        hold = ledger.reserve(*self.prompt_cost(request), request.max_tokens, request.n)
        if hold.max_tokens is not None and hold.max_tokens < request.max_tokens:
            request = replace(request, max_tokens=hold.max_tokens)
        t0 = time.perf_counter()
        try:
            completions = await self.inner.generate(request)
        except BaseException:
            ledger.release(hold)
            raise
        self._settle(ledger, hold, sum(c.prompt_tokens for c in completions),
                     sum(c.completion_tokens for c in completions), t0, request.n,
                     sum(c.cached_tokens for c in completions), completions[0].endpoint if completions else "")
        return completions

    def _reserve_body(self, ledger: Ledger, body: dict[str, Any]) -> tuple[Hold, dict[str, Any]]:
        """Book a raw chat body; a budget that shrinks the call sets its max_tokens."""
        asked = body.get("max_completion_tokens") or body.get("max_tokens")
        hold = ledger.reserve(estimate_body_tokens(body), 0, int(asked) if asked else None, int(body.get("n") or 1))
        if hold.max_tokens is not None and hold.max_tokens != asked:
            key = "max_completion_tokens" if body.get("max_completion_tokens") else "max_tokens"
            body = {**body, key: hold.max_tokens}
        return hold, body

    async def passthrough(self, body: dict[str, Any]) -> dict[str, Any]:
        """Forward a raw chat-completions body; its reported usage goes to the ledger."""
        ledger = current_ledger()
        hold, body = self._reserve_body(ledger, body)
        t0 = time.perf_counter()
        try:
            data = await self.inner.passthrough(body)  # type: ignore[attr-defined]
        except BaseException:
            ledger.release(hold)
            raise
        self._settle_usage(ledger, hold, data.get("usage") if isinstance(data, dict) else None, t0)
        return data  # type: ignore[no-any-return]

    async def passthrough_stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """The streamed form of `passthrough`; usage is recorded from the usage chunk, when sent."""
        ledger = current_ledger()
        hold, body = self._reserve_body(ledger, body)
        t0 = time.perf_counter()
        usage = None
        try:
            async for chunk in self.inner.passthrough_stream(body):  # type: ignore[attr-defined]
                if isinstance(chunk, dict) and chunk.get("usage"):
                    usage = chunk["usage"]
                yield chunk
        except BaseException:
            ledger.release(hold)
            raise
        self._settle_usage(ledger, hold, usage, t0)

    def _settle_usage(self, ledger: Ledger, hold: Hold, usage: Mapping[str, Any] | None, t0: float) -> None:
        usage = usage or {}
        cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
        self._settle(ledger, hold, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0),
                     t0, cached_prompt_tokens=cached)

    def _settle(self, ledger: Ledger, hold: Hold, prompt_tokens: int, completion_tokens: int, t0: float,
                n: int = 1, cached_prompt_tokens: int = 0, endpoint: str = "") -> None:
        ledger.settle(hold, CallRecord(strategy=ledger.strategy, phase=current_phase(), model=self.model,
                                       prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                                       latency_s=time.perf_counter() - t0, n=n,
                                       cached_prompt_tokens=cached_prompt_tokens, endpoint=endpoint))

    async def aclose(self) -> None:
        await self.inner.aclose()

    def __getattr__(self, item: str) -> Any:  # backend-specific extras, e.g. load()
        return getattr(self.inner, item)


def truncate_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut `text` at the first stop string (excluded, as the OpenAI API does)."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
