"""Any OpenAI-compatible server (vLLM, SGLang, llama.cpp server, Ollama, hosted APIs) through the
official `openai` async client, over one endpoint or several replicas serving the same model.

Settings come from arguments, else the environment: OPENAI_BASE_URL (comma-separated for several
endpoints), OPENAI_API_KEY, REDLINE_MODEL (else the first endpoint's first model from GET /v1/models).

Endpoints and retries: `redline.backends.endpoints` routes each request to the endpoint with the
fewest requests in flight, takes an endpoint out after consecutive connection errors or 5xx and
probes it back in with GET /v1/models, and retries a failed request (408/409/429/5xx, timeouts,
connection errors) on another endpoint, backing off 0.5 s doubling to 8 s, with jitter, once every
endpoint has been tried. After the last retry the failure becomes a one-line `BackendError`. The
concurrency limit is per endpoint (32 by default: vLLM batches many requests at once; servers with
fewer slots queue the rest themselves).

Prefix continuation (the rule):
- a raw `prompt` request (plus prefix) goes to /v1/completions, which continues text verbatim;
- a chat request with a prefix sends the prefix as a final assistant message (prefill) with
  `continue_final_message=True, add_generation_prompt=False` (vLLM, SGLang). A server that rejects
  those fields with a 400 is asked again without them (llama.cpp and Ollama continue a final
  assistant message by themselves), and the backend remembers that.

`n`: requested natively; when a server returns fewer choices (llama.cpp's server and Ollama ignore
`n`, streamed or not), the missing ones are made by separate calls (seed + i for sample i), and the
backend remembers to split from then on. Pass-through replies get the same treatment: the extra
samples' choices are merged in (streams: renumbered and sent after the first) and usage is summed,
so a client never silently gets one sample for n.

Cached prompt tokens: `usage.prompt_tokens_details.cached_tokens`, when the server sends it (vLLM
with --enable-prompt-tokens-details, OpenAI), goes to `Completion.cached_tokens`.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Sequence

import openai

from redline.backends.base import Completion, GenerationRequest, TokenLogprob, estimate_prompt_tokens
from redline.backends.endpoints import AllAttemptsFailed, Endpoint, EndpointPool, Outcome, parse_base_urls
from redline.errors import BackendError

_PREFILL_EXTRA = {"continue_final_message": True, "add_generation_prompt": False}
DEFAULT_BASE_URL = "https://api.openai.com/v1"
PROBE_TIMEOUT_S = 5.0


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300] or type(error).__name__


def split_tokens(total: int, texts: Sequence[str]) -> list[int]:
    """Share a call's completion-token total among its choices by text length; the parts sum to `total`."""
    weights = [max(len(t), 1) for t in texts]
    shares = [total * w // sum(weights) for w in weights]
    for i in range(total - sum(shares)):
        shares[i % len(shares)] += 1
    return shares


def classify(error: BaseException) -> Outcome:
    """How the endpoint pool treats an error of the openai client (see `redline.backends.endpoints`)."""
    if isinstance(error, openai.APIConnectionError):  # timeouts included
        return Outcome.FAIL
    status = getattr(error, "status_code", None)
    if isinstance(error, openai.APIStatusError) and status is not None:
        if status >= 500:
            return Outcome.FAIL
        if status in (408, 409, 429):
            return Outcome.BUSY
    return Outcome.RAISE


def cached_tokens(usage: Any) -> int:
    """`usage.prompt_tokens_details.cached_tokens` of a response, 0 when the server does not say."""
    details = getattr(usage, "prompt_tokens_details", None)
    return int(getattr(details, "cached_tokens", None) or 0)


class OpenAIBackend:
    """The `openai` backend: endpoints with fail-over, retries, a concurrency limit, n emulation,
    prefix continuation, logprobs."""

    name = "openai"

    def __init__(self, model: str | None = None, base_url: str | Sequence[str] | None = None,
                 api_key: str | None = None, max_concurrency: int = 32, max_retries: int = 4,
                 timeout_s: float = 120.0, fail_after: int = 3, probe_interval_s: float = 1.0) -> None:
        urls = parse_base_urls(base_url or os.environ.get("OPENAI_BASE_URL")) or [DEFAULT_BASE_URL]
        # Local servers (vLLM, llama.cpp) accept any key; the client insists on one.
        key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.max_retries = max_retries
        self.endpoints: EndpointPool[openai.AsyncOpenAI] = EndpointPool(
            "generator", urls, lambda url: openai.AsyncOpenAI(base_url=url, api_key=key, max_retries=0,
                                                              timeout=timeout_s),
            classify, lambda client: client.with_options(timeout=PROBE_TIMEOUT_S).models.list(),
            max_retries=max_retries, fail_after=fail_after, probe_interval_s=probe_interval_s)
        self.model = model or os.environ.get("REDLINE_MODEL") or self._first_served_model(key, timeout_s)
        self._limit = asyncio.Semaphore(max_concurrency * len(urls))
        self._native_n = True       # False once the server ignored n
        self._native_n_seen = False  # True once the server answered n > 1 with n choices
        self._prefill_extra = True  # False once the server rejected continue_final_message

    @property
    def where(self) -> str:
        return ", ".join(self.endpoints.urls)

    def _first_served_model(self, key: str, timeout_s: float) -> str:
        """GET /v1/models once, synchronously, so the model name is known before the first call;
        the first endpoint that answers decides."""
        error: openai.APIError | None = None
        retries = self.max_retries if len(self.endpoints.urls) == 1 else 1  # a dead one must not hold up the rest
        for url in self.endpoints.urls:
            with openai.OpenAI(base_url=url, api_key=key, max_retries=retries, timeout=timeout_s) as client:
                try:
                    models = [m.id for m in client.models.list()]
                except openai.APIError as e:
                    error = e
                    continue
            if not models:
                raise BackendError(f"the server at {url} serves no models; pass --model")
            return models[0]
        assert error is not None
        raise self._error(AllAttemptsFailed(error, (retries + 1) * len(self.endpoints.urls))) from None

    def _error(self, e: BaseException) -> BackendError:
        """One line a user can act on, from whatever failed after the retries."""
        attempts = 1
        if isinstance(e, AllAttemptsFailed):
            e, attempts = e.last, e.attempts
        if isinstance(e, openai.APIConnectionError):
            return BackendError(f"cannot reach the OpenAI-compatible server at {self.where} after "
                                f"{attempts} attempts: {_one_line(e)}")
        if isinstance(e, openai.AuthenticationError):
            return BackendError(f"the server at {self.where} refused the API key (set OPENAI_API_KEY)")
        status = getattr(e, "status_code", "?")
        return BackendError(f"the server at {self.where} answered HTTP {status}: {_one_line(e)}")

    async def _call(self, make: Callable[[openai.AsyncOpenAI], Awaitable[Any]]) -> tuple[Any, str]:
        """`make(client)` on the endpoints, by the pool's rules; returns the response and its endpoint."""
        async def attempt(endpoint: Endpoint[openai.AsyncOpenAI]) -> tuple[Any, str]:
            try:
                return await make(endpoint.client), endpoint.stats.url
            except openai.NotFoundError as e:
                raise await self._not_found(e, endpoint.client) from None

        async with self._limit:
            try:
                return await self.endpoints.call(attempt)
            except AllAttemptsFailed as e:
                raise self._error(e) from None

    async def _not_found(self, e: openai.NotFoundError, client: openai.AsyncOpenAI) -> BackendError:
        """A 404 is usually an unknown model: name the ones the server has."""
        try:
            served = [m.id async for m in client.models.list()]
        except openai.APIError:
            return self._error(e)
        if self.model in served:
            return self._error(e)
        where = str(client.base_url).rstrip("/")
        return BackendError(f"model {self.model!r} is not served at {where}; valid: {', '.join(served)}")

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        try:
            if not self._native_n and request.n > 1:
                return await self._split_n(request, request.n)
            completions = await self._request(request, request.n, request.seed)
            self._native_n_seen = self._native_n_seen or len(completions) == request.n > 1
            if len(completions) < request.n:
                self._native_n = False
                completions += await self._split_n(request, request.n - len(completions), first_offset=1)
            return completions[: request.n]
        except openai.APIError as e:
            raise self._error(e) from None

    def prompt_cost(self, request: GenerationRequest) -> tuple[int, int]:
        """(prompt tokens, of which cached) a request may bill, for the ledger's booking: an
        over-estimate (the server's tokenizer is not known here, nor its cache), counted once per
        sample until the server has shown that it honours `n` (else each sample is its own call)."""
        copies = 1 if request.n == 1 or self._native_n_seen else request.n
        return estimate_prompt_tokens(request) * copies, 0

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
            prompt = request.prompt + request.prefix
            response, endpoint = await self._call(lambda c: c.completions.create(prompt=prompt, **common))
            texts = [c.text for c in response.choices]
            logprobs = [_completion_logprobs(c.logprobs) if request.logprobs is not None else None
                        for c in response.choices]
        else:
            if request.logprobs is not None:
                common.update(logprobs=True, top_logprobs=request.logprobs)
            response, endpoint = await self._chat(request, common)
            texts = [c.message.content or "" for c in response.choices]
            logprobs = [_chat_logprobs(c.logprobs) if request.logprobs is not None else None
                        for c in response.choices]
        latency = time.perf_counter() - t0
        usage = response.usage
        prompt_tokens, cached = (usage.prompt_tokens, cached_tokens(usage)) if usage else (0, 0)
        shares = split_tokens(usage.completion_tokens if usage else 0, texts) if texts else []
        return [Completion(text=text, finish_reason=choice.finish_reason or "stop",
                           prompt_tokens=prompt_tokens if i == 0 else 0,  # the server bills the prompt once
                           completion_tokens=shares[i], latency_s=latency / len(texts), logprobs=logprobs[i],
                           cached_tokens=cached if i == 0 else 0, endpoint=endpoint)
                for i, (text, choice) in enumerate(zip(texts, response.choices))]

    async def _chat(self, request: GenerationRequest, common: dict[str, Any]) -> tuple[Any, str]:
        messages = [dict(m) for m in request.messages or ()]
        if request.prefix:
            messages.append({"role": "assistant", "content": request.prefix})
            if self._prefill_extra:
                try:
                    return await self._call(lambda c: c.chat.completions.create(
                        messages=messages, extra_body=_PREFILL_EXTRA, **common))
                except openai.BadRequestError:
                    self._prefill_extra = False
        return await self._call(lambda c: c.chat.completions.create(messages=messages, **common))

    async def passthrough(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST a chat-completions body as-is (tools, multi-turn intact) with this backend's model;
        return the server's JSON (LedgeredBackend records its usage). A server that ignores `n`
        gets the missing samples as separate calls, merged into one reply."""
        n = _requested_n(body)
        try:
            data = await self._post_chat(body)
            missing = range(len(data.get("choices") or ()), n)
            if missing:
                self._native_n = False
                extra = await asyncio.gather(*(self._post_chat(_one_sample(body, i)) for i in missing))
                data = _merge_replies(data, list(extra))
        except openai.APIError as e:
            raise self._error(e) from None
        return data

    async def _post_chat(self, body: dict[str, Any]) -> dict[str, Any]:
        data, _ = await self._call(lambda c: c.post("/chat/completions", body={**body, "model": self.model},
                                                     cast_to=object))
        return data  # type: ignore[no-any-return]

    async def passthrough_stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """The streamed form of `passthrough`: each server-sent chunk as a dict. Fail-over happens
        until the stream opens; a stream cut halfway is an error. When the server streamed fewer
        choices than `n`, the missing ones follow as separate streams, their choices renumbered.
        The server is always asked for usage (vLLM sends it only when asked), so the ledger can
        record the call; usage chunks are summed into one, sent last. Whoever relays the stream to
        a client drops that chunk unless the client asked for it (`server.passthrough.pump_native`)."""
        n = _requested_n(body)
        body = {**body, "stream_options": {**(body.get("stream_options") or {}), "include_usage": True}}
        usages: list[dict[str, Any]] = []
        last: dict[str, Any] = {}
        try:
            seen: set[int] = set()
            async for chunk in self._stream_chat(body, None, usages):
                seen.update(c.get("index", 0) for c in chunk.get("choices") or ())
                last = chunk
                yield chunk
            if len(seen) < n:
                self._native_n = False
            for i in range(len(seen), n):
                async for chunk in self._stream_chat(_one_sample(body, i), i, usages):
                    yield chunk
        except openai.APIError as e:
            raise self._error(e) from None
        if usages:
            yield {**{k: last.get(k) for k in ("id", "object", "created", "model")}, "choices": [],
                   "usage": _sum_usage(usages)}

    async def _stream_chat(self, body: dict[str, Any], index: int | None,
                           usages: list[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        """One stream's chunks; choices renumbered to `index` when given; usage goes to `usages`."""
        stream, _ = await self._call(lambda c: c.post(
            "/chat/completions", body={**body, "model": self.model, "stream": True}, cast_to=object,
            stream=True, stream_cls=openai.AsyncStream[object]))
        async with self._limit:
            async for chunk in stream:
                if not isinstance(chunk, dict):
                    continue
                if chunk.get("usage"):
                    usages.append(chunk["usage"])
                    chunk = {k: v for k, v in chunk.items() if k != "usage"}
                    if not chunk.get("choices"):
                        continue
                if index is not None:
                    chunk = {**chunk, "choices": [{**c, "index": index} for c in chunk.get("choices") or ()]}
                yield chunk

    async def aclose(self) -> None:
        await self.endpoints.aclose(lambda client: client.close())


def _requested_n(body: dict[str, Any]) -> int:
    n = body.get("n")
    return n if isinstance(n, int) and n > 1 else 1


def _one_sample(body: dict[str, Any], i: int) -> dict[str, Any]:
    """Sample `i` of an n-sample body as its own call: n=1, and seed + i so samples differ yet repeat."""
    seed = body.get("seed")
    return {**body, "n": 1, **({"seed": seed + i} if isinstance(seed, int) else {})}


def _sum_usage(usages: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Several calls' usage as one: token counts and cached prompt tokens added up."""
    total: dict[str, Any] = {k: sum(int(u.get(k) or 0) for u in usages)
                             for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
    cached = [(u.get("prompt_tokens_details") or {}).get("cached_tokens") for u in usages]
    if any(c is not None for c in cached):
        total["prompt_tokens_details"] = {"cached_tokens": sum(int(c or 0) for c in cached)}
    return total


def _merge_replies(first: dict[str, Any], extra: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One chat-completions reply from the first call's and the extra samples' replies."""
    choices = list(first.get("choices") or ())
    for reply in extra:
        choices += [{**c, "index": len(choices)} for c in (reply.get("choices") or ())[:1]]
    usages = [r["usage"] for r in (first, *extra) if r.get("usage")]
    return {**first, "choices": choices, **({"usage": _sum_usage(usages)} if usages else {})}


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
