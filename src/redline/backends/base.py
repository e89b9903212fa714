"""The one backend protocol: `await backend.generate(request) -> list[Completion]`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Mapping, Protocol, Sequence, runtime_checkable

from redline.ledger import CallRecord, current_ledger, current_phase

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


class LedgeredBackend:
    """Wraps a backend so that every call is budget-checked and recorded in the current ledger."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name = inner.name
        self.model = inner.model

    @property
    def supports_passthrough(self) -> bool:
        """Whether the inner backend takes raw chat-completions bodies (openai, scripted)."""
        return hasattr(self.inner, "passthrough")

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        current_ledger().check_budget()
        t0 = time.perf_counter()
        completions = await self.inner.generate(request)
        self._record(sum(c.prompt_tokens for c in completions), sum(c.completion_tokens for c in completions),
                     t0, request.n, sum(c.cached_tokens for c in completions),
                     completions[0].endpoint if completions else "")
        return completions

    async def passthrough(self, body: dict[str, Any]) -> dict[str, Any]:
        """Forward a raw chat-completions body; its reported usage goes to the ledger."""
        current_ledger().check_budget()
        t0 = time.perf_counter()
        data = await self.inner.passthrough(body)  # type: ignore[attr-defined]
        self._record_usage(data.get("usage") if isinstance(data, dict) else None, t0)
        return data  # type: ignore[no-any-return]

    async def passthrough_stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """The streamed form of `passthrough`; usage is recorded from the usage chunk, when sent."""
        current_ledger().check_budget()
        t0 = time.perf_counter()
        usage = None
        async for chunk in self.inner.passthrough_stream(body):  # type: ignore[attr-defined]
            if isinstance(chunk, dict) and chunk.get("usage"):
                usage = chunk["usage"]
            yield chunk
        self._record_usage(usage, t0)

    def _record_usage(self, usage: Mapping[str, Any] | None, t0: float) -> None:
        usage = usage or {}
        cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
        self._record(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0), t0,
                     cached_prompt_tokens=cached)

    def _record(self, prompt_tokens: int, completion_tokens: int, t0: float, n: int = 1,
                cached_prompt_tokens: int = 0, endpoint: str = "") -> None:
        ledger = current_ledger()
        ledger.record(CallRecord(strategy=ledger.strategy, phase=current_phase(), model=self.model,
                                 prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                                 latency_s=time.perf_counter() - t0, n=n, cached_prompt_tokens=cached_prompt_tokens,
                                 endpoint=endpoint))

    async def aclose(self) -> None:
        await self.inner.aclose()

    def __getattr__(self, item: str) -> Any:  # backend-specific extras, e.g. load()
        return getattr(self.inner, item)


def truncate_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut `text` at the first stop string (excluded, as the OpenAI API does)."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
