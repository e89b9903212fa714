"""Any OpenAI-compatible server (vLLM, SGLang, llama.cpp server, Ollama, hosted APIs) through the
official `openai` async client.

Settings come from arguments, else the environment: OPENAI_BASE_URL, OPENAI_API_KEY, REDLINE_MODEL
(else the server's first model from GET /v1/models).

Retries: the client's own machinery, which retries 408/409/429/5xx, timeouts and connection errors
with exponential backoff (0.5 s doubling to 8 s, with jitter, honouring Retry-After). After the last
retry the failure becomes a one-line `BackendError`.

Prefix continuation (the rule):
- a raw `prompt` request (plus prefix) goes to /v1/completions, which continues text verbatim;
- a chat request with a prefix sends the prefix as a final assistant message (prefill) with
  `continue_final_message=True, add_generation_prompt=False` (vLLM, SGLang). A server that rejects
  those fields with a 400 is asked again without them (llama.cpp and Ollama continue a final
  assistant message by themselves), and the backend remembers that.

`n`: requested natively; when a server returns fewer choices (llama.cpp, Ollama ignore `n`), the
missing ones are made by separate calls, and the backend remembers to split from then on.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, AsyncIterator, Sequence
from urllib.parse import urlsplit

import openai

from redline.backends.base import Completion, GenerationRequest, TokenLogprob
from redline.errors import BackendError

_PREFILL_EXTRA = {"continue_final_message": True, "add_generation_prompt": False}


def normalise_base_url(url: str | None) -> str | None:
    """'http://host:8000' -> 'http://host:8000/v1'; URLs with a path are kept as given."""
    if not url:
        return None
    url = url.rstrip("/")
    return url + "/v1" if urlsplit(url).path in ("", "/") else url


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300] or type(error).__name__


def split_tokens(total: int, texts: Sequence[str]) -> list[int]:
    """Share a call's completion-token total among its choices by text length; the parts sum to `total`."""
    weights = [max(len(t), 1) for t in texts]
    shares = [total * w // sum(weights) for w in weights]
    for i in range(total - sum(shares)):
        shares[i % len(shares)] += 1
    return shares


class OpenAIBackend:
    """The `openai` backend: retries, a concurrency limit, n emulation, prefix continuation, logprobs."""

    name = "openai"

    def __init__(self, model: str | None = None, base_url: str | None = None, api_key: str | None = None,
                 max_concurrency: int = 8, max_retries: int = 4, timeout_s: float = 120.0) -> None:
        self.base_url = normalise_base_url(base_url or os.environ.get("OPENAI_BASE_URL"))
        # Local servers (vLLM, llama.cpp) accept any key; the client insists on one.
        key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.max_retries = max_retries
        self.client = openai.AsyncOpenAI(base_url=self.base_url, api_key=key, max_retries=max_retries,
                                         timeout=timeout_s)
        self.model = model or os.environ.get("REDLINE_MODEL") or self._first_served_model(key, timeout_s)
        self._limit = asyncio.Semaphore(max_concurrency)
        self._native_n = True       # False once the server ignored n
        self._prefill_extra = True  # False once the server rejected continue_final_message

    @property
    def where(self) -> str:
        return str(self.client.base_url).rstrip("/")

    def _first_served_model(self, key: str, timeout_s: float) -> str:
        """GET /v1/models once, synchronously, so the model name is known before the first call."""
        with openai.OpenAI(base_url=self.base_url, api_key=key, max_retries=self.max_retries,
                           timeout=timeout_s) as client:
            try:
                models = [m.id for m in client.models.list()]
            except openai.APIError as e:
                raise self._error(e) from None
        if not models:
            raise BackendError(f"the server at {self.where} serves no models; pass --model")
        return models[0]

    def _error(self, e: openai.APIError) -> BackendError:
        """One line a user can act on, from whatever the client raised after its retries."""
        if isinstance(e, (openai.APIConnectionError, openai.APITimeoutError)):
            return BackendError(f"cannot reach the OpenAI-compatible server at {self.where} after "
                                f"{self.max_retries + 1} attempts: {_one_line(e)}")
        if isinstance(e, openai.AuthenticationError):
            return BackendError(f"the server at {self.where} refused the API key (set OPENAI_API_KEY)")
        status = getattr(e, "status_code", "?")
        return BackendError(f"the server at {self.where} answered HTTP {status}: {_one_line(e)}")

    async def _call(self, make: Any, **kwargs: Any) -> Any:
        async with self._limit:
            try:
                return await make(**kwargs)
            except openai.NotFoundError as e:
                raise await self._not_found(e) from None

    async def _not_found(self, e: openai.NotFoundError) -> BackendError:
        """A 404 is usually an unknown model: name the ones the server has."""
        try:
            served = [m.id async for m in self.client.models.list()]
        except openai.APIError:
            return self._error(e)
        if self.model in served:
            return self._error(e)
        return BackendError(f"model {self.model!r} is not served at {self.where}; valid: {', '.join(served)}")

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        try:
            if not self._native_n and request.n > 1:
                return await self._split_n(request, request.n)
            completions = await self._request(request, request.n, request.seed)
            if len(completions) < request.n:
                self._native_n = False
                completions += await self._split_n(request, request.n - len(completions), first_offset=1)
            return completions[: request.n]
        except openai.APIError as e:
            raise self._error(e) from None

    async def _split_n(self, request: GenerationRequest, count: int, first_offset: int = 0) -> list[Completion]:
        """`count` single-choice calls; seeds differ so sampled calls do not repeat each other."""
        seeds = [None if request.seed is None else request.seed + first_offset + i for i in range(count)]
        batches = await asyncio.gather(*(self._request(request, 1, s) for s in seeds))
        return [c for batch in batches for c in batch[:1]]

    async def _request(self, request: GenerationRequest, n: int, seed: int | None) -> list[Completion]:
        fields = dict(model=self.model, n=n, temperature=request.temperature, top_p=request.top_p,
                      max_tokens=request.max_tokens, stop=list(request.stop) or None, seed=seed)
        common: dict[str, Any] = {k: v for k, v in fields.items() if v is not None}  # unset, not null
        t0 = time.perf_counter()
        if request.prompt is not None:
            if request.logprobs is not None:
                common["logprobs"] = request.logprobs
            response = await self._call(self.client.completions.create,
                                        prompt=request.prompt + request.prefix, **common)
            texts = [c.text for c in response.choices]
            logprobs = [_completion_logprobs(c.logprobs) if request.logprobs is not None else None
                        for c in response.choices]
        else:
            if request.logprobs is not None:
                common.update(logprobs=True, top_logprobs=request.logprobs)
            response = await self._chat(request, common)
            texts = [c.message.content or "" for c in response.choices]
            logprobs = [_chat_logprobs(c.logprobs) if request.logprobs is not None else None
                        for c in response.choices]
        latency = time.perf_counter() - t0
        usage = response.usage
        prompt_tokens = usage.prompt_tokens if usage else 0
        shares = split_tokens(usage.completion_tokens if usage else 0, texts) if texts else []
        return [Completion(text=text, finish_reason=choice.finish_reason or "stop",
                           prompt_tokens=prompt_tokens if i == 0 else 0,  # the server bills the prompt once
                           completion_tokens=shares[i], latency_s=latency / len(texts), logprobs=logprobs[i])
                for i, (text, choice) in enumerate(zip(texts, response.choices))]

    async def _chat(self, request: GenerationRequest, common: dict[str, Any]) -> Any:
        messages = [dict(m) for m in request.messages or ()]
        if not request.prefix:
            return await self._call(self.client.chat.completions.create, messages=messages, **common)
        messages.append({"role": "assistant", "content": request.prefix})
        if self._prefill_extra:
            try:
                return await self._call(self.client.chat.completions.create, messages=messages,
                                        extra_body=_PREFILL_EXTRA, **common)
            except openai.BadRequestError:
                self._prefill_extra = False
        return await self._call(self.client.chat.completions.create, messages=messages, **common)

    async def passthrough(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST a chat-completions body as-is (tools, multi-turn intact) with this backend's model;
        return the server's JSON (LedgeredBackend records its usage)."""
        try:
            async with self._limit:
                data = await self.client.post("/chat/completions", body={**body, "model": self.model},
                                              cast_to=object)
        except openai.APIError as e:
            raise self._error(e) from None
        return data  # type: ignore[no-any-return]

    async def passthrough_stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """The streamed form of `passthrough`: each server-sent chunk as a dict."""
        try:
            async with self._limit:
                stream = await self.client.post("/chat/completions",
                                                body={**body, "model": self.model, "stream": True},
                                                cast_to=object, stream=True, stream_cls=openai.AsyncStream[object])
                async for chunk in stream:
                    yield chunk  # type: ignore[misc]
        except openai.APIError as e:
            raise self._error(e) from None

    async def aclose(self) -> None:
        await self.client.close()


def _chat_logprobs(lp: Any) -> tuple[TokenLogprob, ...] | None:
    if lp is None or lp.content is None:
        return None
    return tuple(TokenLogprob(t.token, t.logprob, {a.token: a.logprob for a in t.top_logprobs or ()})
                 for t in lp.content)


def _completion_logprobs(lp: Any) -> tuple[TokenLogprob, ...] | None:
    if lp is None or lp.tokens is None:
        return None
    tops = lp.top_logprobs or [None] * len(lp.tokens)
    return tuple(TokenLogprob(tok, float(p if p is not None else 0.0), dict(top or {}))
                 for tok, p, top in zip(lp.tokens, lp.token_logprobs or [], tops))
