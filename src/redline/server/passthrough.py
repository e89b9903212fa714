"""Strategy `none`: the request goes to the backend unchanged (tools, multi-turn, streaming).

Backends with `passthrough`/`passthrough_stream` (openai, scripted) get the chat body as sent,
less the `redline` field. Others (local) and plain completions are converted to one
`GenerationRequest`, which keeps messages, n, sampling and stop, but not tools.
"""

from __future__ import annotations

from typing import Any, Callable

from redline.backends.base import Backend, Completion, GenerationRequest
from redline.ledger import Ledger, use_ledger
from redline.server.errors import APIError
from redline.server.responses import ResponseBuilder
from redline.server.schemas import ChatRequest, CompletionBase, CompletionRequest
from redline.types import Usage

OPENAI_DEFAULT_TEMPERATURE = 1.0


def forward_body(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "redline"}


def native(backend: Backend, request: CompletionBase) -> bool:
    """Whether the backend takes chat bodies as they are."""
    return isinstance(request, ChatRequest) and getattr(backend, "supports_passthrough", False)


async def call_native(backend: Any, body: dict[str, Any]) -> dict[str, Any]:
    with use_ledger(Ledger(strategy="none")):
        return await backend.passthrough(body)  # type: ignore[no-any-return]


async def pump_native(backend: Any, body: dict[str, Any], emit: Callable[[Any], None]) -> None:
    """Emit each chunk of the backend's stream; its usage-only chunk (the backend asks for usage, to
    record it) only when the client set stream_options.include_usage."""
    wanted = bool((body.get("stream_options") or {}).get("include_usage"))
    with use_ledger(Ledger(strategy="none")):
        async for chunk in backend.passthrough_stream({**body, "stream": True}):
            if wanted or not (isinstance(chunk, dict) and chunk.get("usage") and not chunk.get("choices")):
                emit(chunk)


def generation_request(request: CompletionBase, default_max_tokens: int) -> GenerationRequest:
    """The request for backends without native pass-through."""
    if request.model_extra and request.model_extra.get("tools"):
        raise APIError(400, "tools need a backend with pass-through (--backend openai)", "tools")
    common: dict[str, Any] = dict(
        n=request.n, max_tokens=request.token_limit or default_max_tokens, stop=request.stop_list, seed=request.seed,
        temperature=OPENAI_DEFAULT_TEMPERATURE if request.temperature is None else request.temperature,
        top_p=1.0 if request.top_p is None else request.top_p)
    if isinstance(request, CompletionRequest):
        return GenerationRequest(prompt=request.prompt_text, **common)
    assert isinstance(request, ChatRequest)
    return GenerationRequest(messages=[{"role": m.role, "content": m.text} for m in request.messages], **common)


async def generate(backend: Backend, request: GenerationRequest) -> tuple[list[Completion], Usage]:
    with use_ledger(Ledger(strategy="none")) as ledger:
        completions = await backend.generate(request)
    return completions, ledger.total()


def completion_body(builder: ResponseBuilder, completions: list[Completion], usage: Usage) -> dict[str, Any]:
    return builder.complete([c.text for c in completions], [c.finish_reason for c in completions], usage)


