"""`remote-prm`: a process reward model served over HTTP by vLLM's pooling API.

The server: `vllm serve Qwen/Qwen2.5-Math-PRM-7B --runner pooling`. The wire format, as vLLM's
own classes define it (vllm/entrypoints/pooling/pooling/protocol.py and base/protocol.py):

    POST /pooling   {"model": NAME, "input": [TEXT, ...]}        (input: a string or a list of them)
    200             {"id", "object": "list", "created", "model",
                     "data": [{"index": i, "object": "pooling", "data": [[p_negative, p_positive], ...]}, ...],
                     "usage": {"prompt_tokens", "total_tokens", ...}}

`Qwen2ForProcessRewardModel` pools with STEP (vllm/model_executor/layers/pooler/tokwise/methods.py,
`StepPool`): it keeps one softmaxed two-class row per `<extra_0>` token (its default step tag id
151651), so a solution of k steps gets exactly k rows, and a step's score is the row's p_positive.
The request sends no `task`: the server uses the model's own pooling task.

Formats:
- `qwen-prm` (default): the Qwen2.5-Math-PRM ChatML conversation (system prompt, question, and the
  steps each followed by `<extra_0>`), as the model card builds it with the chat template.
- `token-classify`: a PRM that `redline train prm --export vllm DIR` wrote
  (`LlamaForTokenClassification`, 2 labels), served by `vllm serve DIR --runner pooling`. The
  text is "question step1 TAG\\nstep2 TAG" with the model's one-token step tag, found once by
  asking the server (POST /tokenize, /detokenize) which of `hf_prm.STEP_TAGS` its tokenizer
  holds whole, as `hf-prm` picks it.
  Each input is tokenized there too, and sent as token ids with `"task": "token_classify"`, so
  the reply's rows line up with known tokens: one [p_negative, p_positive] row per token (ALL
  pooling, the default) is read at the tag positions; one row per tag (STEP pooling:
  `--pooler-config '{"tok_pooling_type": "STEP", "step_tag_id": ID}'`) is read as it is.
- `math-shepherd`: "question step1 ки\\nstep2 ки"; the server must be started with
  `--pooler-config '{"pooling_type": "STEP", "step_tag_id": <id of ки>, "returned_token_ids": [<id of +>,
  <id of ->]}'`; a step's score is P(+) / (P(+) + P(-)). vLLM is reported to return wrong numbers
  for these models (https://github.com/vllm-project/vllm/issues/13559), so it is used only when
  asked for by name, with a warning.

Batching: the solutions scored at the same moment (best-of-N's candidates, concurrent problems)
go to the server as one request with a list of inputs, up to `batch_size` inputs, with at most
`max_in_flight` requests per endpoint. Endpoints, fail-over and retries work as for the `openai`
backend (`redline.backends.endpoints`). The served model's name is checked once against
GET /v1/models. A reply with the wrong number of results or step rows is an error, never a
silent score. PRM tokens are not generation tokens and do not go to the ledger (as with `hf-prm`).
"""

from __future__ import annotations

import asyncio
import math
import os
import warnings
from typing import Any, Literal, Sequence

import httpx
from pydantic import Field

from redline.backends.endpoints import AllAttemptsFailed, Endpoint, EndpointPool, Outcome, parse_base_urls
from redline.errors import BackendError, RedlineError
from redline.registry import VERIFIERS, Params
from redline.runtime import Runtime
from redline.verifiers.base import clamp01
from redline.verifiers.batching import MicroBatcher
from redline.verifiers.calibration import recenter
from redline.verifiers.hf_prm import STEP_TAGS, build_input, single_token_id

MATH_SHEPHERD_ISSUE = "https://github.com/vllm-project/vllm/issues/13559"
BASE_URL_ENV = "REDLINE_PRM_BASE_URL"
API_KEY_ENV = "REDLINE_PRM_API_KEY"
PROBE_TIMEOUT_S = 5.0


class RemotePrmParams(Params):
    model: str = Field(description="the model name the pooling server serves (checked against /v1/models)")
    base_url: str | None = Field(None, description=f"server URL(s), comma-separated (default: ${BASE_URL_ENV})")
    format: Literal["qwen-prm", "token-classify", "math-shepherd"] = Field(
        "qwen-prm", description="input/output convention")
    batch_size: int = Field(32, ge=1, description="most solutions per /pooling request")
    max_in_flight: int = Field(4, ge=1, description="most requests in flight per endpoint")
    timeout_s: float = Field(60.0, gt=0, description="per request")
    max_retries: int = Field(4, ge=0, description="retries of a failed request, on other endpoints first")
    center: float = Field(0.5, gt=0, lt=1, description="the raw score that maps to 0.5: the `center` in the "
                          "model's redline_calibration.json (the server's files stay out of reach)")


class ChatML:
    """Renders Qwen's chat template (what `apply_chat_template` gives for Qwen2.5-Math-PRM) without the
    tokenizer, which lives on the server."""

    chat_template = "chatml"

    @staticmethod
    def apply_chat_template(messages: Sequence[dict[str, str]], tokenize: bool = False,
                            add_generation_prompt: bool = False) -> str:
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def pooling_input(fmt: str, question: str, steps: Sequence[str], tag: str | None = None) -> str:
    """The text the PRM reads: one step tag after each (sanitised) step."""
    return build_input(fmt, ChatML, question, steps, tag)[0]


def step_scores(fmt: str, rows: Any, steps: int) -> list[float]:
    """Scores from one result's rows; anything but `steps` rows of two probabilities is an error."""
    if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
        raise ValueError(f"expected a list of rows per input, got {type(rows).__name__} "
                         "(is the served model a PRM with step pooling?)")
    if len(rows) != steps:
        raise ValueError(f"{len(rows)} step rows for {steps} steps (each step needs one step tag; is the "
                         "served model a PRM with step pooling, and the format right?)")
    scores = []
    for row in rows:
        if len(row) != 2 or not all(isinstance(p, (int, float)) and math.isfinite(p) for p in row):
            raise ValueError(f"a step row must be two probabilities, got {row!r:.80}")
        if not all(0.0 <= p <= 1.0 for p in row):
            raise ValueError(f"step row {row!r:.80} is not probabilities (logits? the pooler's activation is off)")
        if fmt == "math-shepherd":  # returned_token_ids [+, -]
            scores.append(clamp01(row[0] / (row[0] + row[1])) if row[0] + row[1] > 0 else 0.5)
        else:  # [p_negative, p_positive]
            scores.append(clamp01(row[1]))
    return scores


def tag_rows(rows: Any, tokens: Sequence[int], tag_id: int) -> Any:
    """The rows of a token-classify result at the step tags: one row per token (ALL pooling) is
    cut down to the tags' rows; anything else (STEP pooling's one row per tag) is left as it is
    for `step_scores` to check."""
    if isinstance(rows, list) and len(rows) == len(tokens):
        return [rows[i] for i, t in enumerate(tokens) if t == tag_id]
    return rows


def classify(error: BaseException) -> Outcome:
    if isinstance(error, httpx.TransportError):  # connection errors and timeouts
        return Outcome.FAIL
    if isinstance(error, httpx.HTTPStatusError):
        status = error.response.status_code
        return Outcome.FAIL if status >= 500 else Outcome.BUSY if status in (408, 409, 429) else Outcome.RAISE
    return Outcome.RAISE


async def _probe(client: httpx.AsyncClient) -> None:
    (await client.get("/v1/models", timeout=PROBE_TIMEOUT_S)).raise_for_status()


def _root(url: str) -> str:
    """The server root: /pooling and /tokenize live there, next to /v1."""
    return url[: -len("/v1")] if url.endswith("/v1") else url


Solution = tuple[str, list[str]]  # question, steps


class RemotePrmVerifier:
    name = "remote-prm"

    def __init__(self, params: RemotePrmParams) -> None:
        urls = parse_base_urls(params.base_url or os.environ.get(BASE_URL_ENV))
        if not urls:
            raise RedlineError(f"remote-prm needs the pooling server: remote-prm:{params.model},base_url=URL "
                               f"(several: base_url=(URL1,URL2)) or ${BASE_URL_ENV}")
        if params.format == "math-shepherd":
            warnings.warn("remote-prm format=math-shepherd: vLLM is reported to return wrong step scores for "
                          f"Math-Shepherd-style PRMs ({MATH_SHEPHERD_ISSUE}); check them against hf-prm",
                          stacklevel=2)
        self.params = params
        key = os.environ.get(API_KEY_ENV)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.endpoints: EndpointPool[httpx.AsyncClient] = EndpointPool(
            "remote-prm", [_root(u) for u in urls],
            lambda root: httpx.AsyncClient(base_url=root, timeout=params.timeout_s, headers=headers),
            classify, _probe, max_retries=params.max_retries)
        self.batcher: MicroBatcher[Solution, list[float]] = MicroBatcher(self._score_batch, params.batch_size)
        self._slots: asyncio.Semaphore | None = None
        self._checked: asyncio.Lock | None = None
        self._model_ok = False
        self._tag: tuple[str, int] | None = None  # token-classify: the step tag and its id

    async def score(self, question: str, steps: Sequence[str]) -> list[float]:
        if not steps:
            return []
        return await self.batcher.submit((question, list(steps)))

    async def _score_batch(self, batch: list[Solution]) -> list[list[float] | BaseException]:
        """One /pooling request for the batch; a malformed result fails only its own solution."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.params.max_in_flight * len(self.endpoints.endpoints))
        await self._check_model()
        fmt = self.params.format
        body: dict[str, Any] = {"model": self.params.model}
        if fmt == "token-classify":
            tag, tag_id = await self._step_tag()
            tokens = await asyncio.gather(*(self._tokenize(pooling_input(fmt, q, s, tag)) for q, s in batch))
            body |= {"task": "token_classify", "input": list(tokens)}
        else:
            body["input"] = [pooling_input(fmt, q, s) for q, s in batch]
        async with self._slots:
            data, url = await self._post("/pooling", body)
        results: list[list[float] | BaseException] = []
        for i, (result, (_, steps)) in enumerate(zip(self._results(data, len(batch), url), batch)):
            rows = result.get("data")
            if fmt == "token-classify":
                rows = tag_rows(rows, body["input"][i], tag_id)
            try:
                scores = step_scores(fmt, rows, len(steps))
                results.append(scores if self.params.center == 0.5
                               else [recenter(x, self.params.center) for x in scores])
            except ValueError as e:
                results.append(BackendError(f"remote-prm: malformed reply from {url}: {e}"))
        return results

    async def _tokenize(self, text: str, special: bool = True) -> list[int]:
        """The server's token ids of `text` (vLLM's POST /tokenize)."""
        data, url = await self._post("/tokenize", {"model": self.params.model, "prompt": text,
                                                   "add_special_tokens": special})
        tokens = data.get("tokens") if isinstance(data, dict) else None
        if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
            raise BackendError(f"remote-prm: malformed reply from {url}/tokenize: no 'tokens' list: {str(data)[:200]}")
        return tokens

    async def _detokenize(self, token: int) -> str:
        """The server's text of one token id (vLLM's POST /detokenize)."""
        data, url = await self._post("/detokenize", {"model": self.params.model, "tokens": [token]})
        text = data.get("prompt") if isinstance(data, dict) else None
        if not isinstance(text, str):
            raise BackendError(f"remote-prm: malformed reply from {url}/detokenize: no 'prompt': {str(data)[:200]}")
        return text

    async def _step_tag(self) -> tuple[str, int]:
        """Once: the first of STEP_TAGS the served tokenizer holds as one token, as `hf-prm` picks it."""
        if self._tag is None:
            for tag in STEP_TAGS:
                alone, in_context = await asyncio.gather(self._tokenize(tag, False), self._tokenize(f"x {tag}", False))
                decoded = await self._detokenize(alone[0]) if len(alone) == 1 else ""
                tag_id = single_token_id(alone, in_context, lambda _: decoded, tag)
                if tag_id is not None:
                    self._tag = tag, tag_id
                    break
            else:
                raise BackendError(f"remote-prm: the tokenizer of {self.params.model!r} holds none of "
                                   f"{', '.join(STEP_TAGS)} as one token; is it a PRM exported by redline?")
        return self._tag

    @staticmethod
    def _results(data: Any, expected: int, url: str) -> list[dict[str, Any]]:
        """The reply's results in input order; a reply that is not vLLM's PoolingResponse is an error."""
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise BackendError(f"remote-prm: malformed reply from {url}: no 'data' list of results "
                               f"(is it vLLM's /pooling?): {str(data)[:200]}")
        if len(items) != expected:
            raise BackendError(f"remote-prm: malformed reply from {url}: {len(items)} results for {expected} inputs")
        ordered = sorted(items, key=lambda i: i.get("index", 0) if isinstance(i.get("index"), int) else -1)
        if [i.get("index") for i in ordered] != list(range(expected)):
            raise BackendError(f"remote-prm: malformed reply from {url}: result indexes are not 0..{expected - 1}")
        return ordered

    async def _post(self, path: str, body: dict[str, Any]) -> tuple[Any, str]:
        async def attempt(endpoint: Endpoint[httpx.AsyncClient]) -> tuple[Any, str]:
            response = await endpoint.client.post(path, json=body)
            response.raise_for_status()
            try:
                return response.json(), endpoint.stats.url
            except ValueError:
                raise BackendError(f"remote-prm: the server at {endpoint.stats.url} answered with no JSON: "
                                   f"{response.text[:200]!r}") from None

        try:
            return await self.endpoints.call(attempt)
        except AllAttemptsFailed as e:
            raise BackendError(f"remote-prm: cannot get scores from {', '.join(self.endpoints.urls)} after "
                               f"{e.attempts} attempts: {_describe(e.last)}") from None
        except httpx.HTTPStatusError as e:
            raise BackendError(f"remote-prm: the server at {e.request.url} answered HTTP "
                               f"{e.response.status_code}: {e.response.text[:300]}") from None

    async def _check_model(self) -> None:
        """Once: the model must be one the server lists, so a typo fails with the valid names."""
        if self._model_ok:
            return
        if self._checked is None:
            self._checked = asyncio.Lock()
        async with self._checked:
            if self._model_ok:
                return

            async def models(endpoint: Endpoint[httpx.AsyncClient]) -> tuple[list[str], str]:
                response = await endpoint.client.get("/v1/models")
                response.raise_for_status()
                return [m.get("id") for m in response.json().get("data", [])], endpoint.stats.url

            try:
                served, url = await self.endpoints.call(models)
            except AllAttemptsFailed as e:
                raise BackendError(f"remote-prm: cannot reach {', '.join(self.endpoints.urls)} after "
                                   f"{e.attempts} attempts: {_describe(e.last)}") from None
            except (httpx.HTTPStatusError, ValueError, AttributeError) as e:
                raise BackendError(f"remote-prm: GET /v1/models failed: {_describe(e)}") from None
            if self.params.model not in served:
                raise BackendError(f"remote-prm: model {self.params.model!r} is not served at {url}; "
                                   f"valid: {', '.join(map(str, served)) or '(none)'}")
            self._model_ok = True

    async def aclose(self) -> None:
        await self.endpoints.aclose(lambda client: client.aclose())


def _describe(error: BaseException) -> str:
    if isinstance(error, httpx.HTTPStatusError):
        return f"HTTP {error.response.status_code}: {error.response.text[:200]}"
    return " ".join(str(error).split())[:300] or type(error).__name__


@VERIFIERS.register("remote-prm", RemotePrmParams,
                    "a PRM served by vLLM's pooling API: remote-prm:MODEL,base_url=URL"
                    "[,format=token-classify|math-shepherd]",
                    positional=("model",), operator_only=True)  # it names servers to call: not for HTTP clients
def build_remote_prm(params: RemotePrmParams, runtime: Runtime) -> RemotePrmVerifier:
    key = f"remote-prm:{params.model_dump_json()}"
    return runtime.cached(key, lambda: RemotePrmVerifier(params))
