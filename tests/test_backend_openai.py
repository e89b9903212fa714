"""The `openai` backend over real HTTP on 127.0.0.1, against a small app serving the embedded model."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from redline.backends import GenerationRequest, LedgeredBackend
from redline.backends.endpoints import normalise_base_url, parse_base_urls
from redline.backends.openai_compat import OpenAIBackend, split_tokens
from redline.errors import BackendError
from redline.ledger import Ledger, use_ledger
from tests.openai_app import AppControl, closed_port, serve

pytestmark = pytest.mark.model

QUESTION = [{"role": "user", "content": "What is 2 + 3?"}]
REDLINE = str(Path(sys.executable).parent / "redline")


@pytest.fixture(scope="module")
def control() -> AppControl:
    return AppControl()


@pytest.fixture(scope="module")
def app_url(local_backend, control):
    with serve(local_backend.inner, control) as url:
        yield url


@pytest.fixture()
async def backend(app_url, control):
    control.reset()
    b = OpenAIBackend(base_url=app_url, max_retries=3)
    yield b
    await b.aclose()


def test_settings_helpers():
    assert normalise_base_url("http://h:8000") == "http://h:8000/v1"
    assert normalise_base_url("http://h:8000/api/v1/") == "http://h:8000/api/v1"
    assert parse_base_urls(["http://a:1,http://b:2/", "http://a:1/v1"]) == ["http://a:1/v1", "http://b:2/v1"]
    assert split_tokens(10, ["a", "abc", ""]) == [2, 6, 2]
    assert sum(split_tokens(7, ["xx", "yyyy", "z"])) == 7


async def test_plain_generation_matches_local_greedy(backend, local_backend, control):
    assert backend.model == local_backend.model  # found via GET /v1/models
    request = GenerationRequest(messages=QUESTION, max_tokens=16)
    [remote] = await backend.generate(request)
    [local] = await local_backend.inner.generate(request)
    assert remote.text == local.text and remote.text.strip()
    assert remote.prompt_tokens == local.prompt_tokens > 0
    assert remote.completion_tokens == local.completion_tokens > 0
    assert control.paths() == ["/v1/chat/completions"]


@pytest.mark.parametrize("status", [500, 429])
async def test_retries_until_the_server_answers(backend, control, status):
    control.reset(fail_first=2, fail_status=status)
    [c] = await backend.generate(GenerationRequest(messages=QUESTION, max_tokens=4))
    assert c.completion_tokens > 0
    assert len(control.seen) == 3


async def test_native_n_bills_the_prompt_once(backend, control):
    cs = await backend.generate(GenerationRequest(messages=QUESTION, n=3, temperature=0.9, seed=5, max_tokens=8))
    assert len(cs) == 3 and len(control.seen) == 1
    assert cs[0].prompt_tokens > 0 and cs[1].prompt_tokens == cs[2].prompt_tokens == 0


async def test_n_emulated_when_the_server_ignores_n(backend, control):
    control.reset(ignore_n=True)
    request = GenerationRequest(messages=QUESTION, n=3, temperature=0.9, seed=5, max_tokens=8)
    cs = await backend.generate(request)
    assert len(cs) == 3 and len(control.seen) == 3
    assert [body.get("seed") for _, body in control.seen] == [5, 6, 7]  # distinct samples, still repeatable
    control.seen.clear()
    cs = await backend.generate(GenerationRequest(messages=QUESTION, n=2, temperature=0.9, seed=5, max_tokens=8))
    assert len(cs) == 2 and [body["n"] for _, body in control.seen] == [1, 1]  # remembered: split at once


async def test_chat_prefix_uses_assistant_prefill(backend, local_backend, control):
    request = GenerationRequest(messages=QUESTION, prefix="Step 1:", max_tokens=12)
    [remote] = await backend.generate(request)
    [local] = await local_backend.inner.generate(request)
    assert remote.text == local.text
    _, body = control.seen[0]
    assert body["messages"][-1] == {"role": "assistant", "content": "Step 1:"}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False


async def test_raw_prompt_prefix_uses_completions(backend, local_backend, control):
    request = GenerationRequest(prompt="Question: 2 + 3 = ?\nAnswer:", prefix=" Step 1:", max_tokens=12, logprobs=2)
    [remote] = await backend.generate(request)
    [local] = await local_backend.inner.generate(request)
    assert control.paths() == ["/v1/completions"]
    assert control.seen[0][1]["prompt"].endswith("Answer: Step 1:")
    assert remote.text == local.text
    assert remote.logprobs is not None and len(remote.logprobs) == remote.completion_tokens
    assert all(len(t.top) == 2 and t.logprob <= 0 for t in remote.logprobs)


async def test_chat_logprobs(backend):
    [c] = await backend.generate(GenerationRequest(messages=QUESTION, max_tokens=6, logprobs=3))
    assert c.logprobs is not None and len(c.logprobs) == c.completion_tokens
    assert all(len(t.top) == 3 for t in c.logprobs)
    assert c.logprobs[0].logprob == pytest.approx(max(c.logprobs[0].top.values()), abs=1e-4)  # greedy picks the top


async def test_unknown_model_names_the_served_ones(app_url):
    b = OpenAIBackend(model="no-such-model", base_url=app_url, max_retries=0)
    with pytest.raises(BackendError, match="'no-such-model' is not served.*valid: smollm2-135m"):
        await b.generate(GenerationRequest(messages=QUESTION, max_tokens=4))
    await b.aclose()


async def test_unreachable_server_is_a_backend_error_after_retries():
    b = OpenAIBackend(model="m", base_url=f"http://127.0.0.1:{closed_port()}/v1", max_retries=2, timeout_s=5)
    t0 = time.perf_counter()
    with pytest.raises(BackendError, match="cannot reach .* after 3 attempts"):
        await b.generate(GenerationRequest(messages=QUESTION, max_tokens=4))
    assert time.perf_counter() - t0 > 0.5  # it backed off (0.5 s, then 1 s, with jitter) before giving up
    await b.aclose()


async def test_passthrough_plain_and_streamed_are_recorded(backend, control):
    body = {"model": "ignored", "messages": QUESTION + [{"role": "assistant", "content": "5"},
                                                      {"role": "user", "content": "And 3 + 4?"}],
            "max_tokens": 8, "temperature": 0}
    ledgered = LedgeredBackend(backend)  # the wrapper records pass-through calls, as it does generate calls
    assert ledgered.supports_passthrough
    ledger = Ledger(strategy="passthrough")
    with use_ledger(ledger):
        data = await ledgered.passthrough(body)
        chunks = [c async for c in ledgered.passthrough_stream({**body, "stream_options": {"include_usage": True}})]
    assert control.seen[0][1]["model"] == backend.model and len(control.seen[0][1]["messages"]) == 3
    text = data["choices"][0]["message"]["content"]
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text and streamed == text
    assert [r.completion_tokens for r in ledger.records] == [data["usage"]["completion_tokens"]] * 2


def test_cli_solve_over_openai(app_url):
    run = subprocess.run([REDLINE, "solve", "What is 2 + 3?", "--backend", "openai", "--base-url", app_url,
                          "--max-tokens", "24", "--json"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["usage"]["solve"]["calls"] == 1 and result["usage_total"]["completion_tokens"] > 0
    assert result["solution"]["steps"]


def test_cli_unreachable_server_is_one_line(tmp_path):
    run = subprocess.run([REDLINE, "solve", "What is 2 + 3?", "--backend", "openai", "--model", "m",
                          "--base-url", f"http://127.0.0.1:{closed_port()}"], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    assert "cannot reach" in run.stderr and len(run.stderr.strip().splitlines()) == 1


async def test_cached_prompt_tokens_reach_the_ledger(backend, control):
    control.reset(cached_tokens=3)
    ledgered = LedgeredBackend(backend)
    ledger = Ledger(strategy="cot")
    with use_ledger(ledger):
        cs = await ledgered.generate(GenerationRequest(messages=QUESTION, n=2, temperature=0.9, seed=1, max_tokens=4))
        await ledgered.passthrough({"messages": QUESTION, "max_tokens": 4})
    assert [c.cached_tokens for c in cs] == [3, 0]  # the prompt (and its cached part) is billed once per call
    assert [r.cached_prompt_tokens for r in ledger.records] == [3, 3]
    assert ledger.by_phase()["solve"].uncached_prompt_tokens == ledger.total().prompt_tokens - 6 > 0
    assert ledger.by_endpoint().keys() == {backend.where, ""}  # pass-through calls do not say which endpoint



async def test_passthrough_makes_the_samples_a_server_ignoring_n_drops(backend, control):
    control.reset(ignore_n=True)  # llama.cpp's server answers one choice whatever n is, streamed or not
    body = {"messages": QUESTION, "max_tokens": 6, "temperature": 0.9, "seed": 3, "n": 3}
    single = await backend.passthrough({**body, "n": 1})
    control.seen.clear()
    data = await backend.passthrough(body)
    assert [c["index"] for c in data["choices"]] == [0, 1, 2] and all(c["message"]["content"] for c in data["choices"])
    assert [b["n"] for _, b in control.seen] == [3, 1, 1] and [b["seed"] for _, b in control.seen] == [3, 4, 5]
    assert data["usage"]["prompt_tokens"] == 3 * single["usage"]["prompt_tokens"] > 0  # three calls, three bills
    assert 3 <= data["usage"]["completion_tokens"] <= 18
    control.seen.clear()
    chunks = [c async for c in backend.passthrough_stream({**body, "stream_options": {"include_usage": True}})]
    texts = ["".join(c["choices"][0]["delta"].get("content") or "" for c in chunks
                     if c["choices"] and c["choices"][0]["index"] == i) for i in range(3)]
    assert all(texts) and len(control.seen) == 3
    usage = [c["usage"] for c in chunks if c.get("usage")]
    assert len(usage) == 1 and chunks[-1].get("usage") == usage[0]  # one usage chunk, summed, sent last
    assert usage[0]["prompt_tokens"] == data["usage"]["prompt_tokens"]


def test_served_pass_through_stream_records_usage_and_sends_it_only_when_asked(app_url, control):
    """vLLM sends a stream's usage only when asked: the backend always asks (the ledger needs it), the
    server relays it only to a client that asked; a server that never sends it (llama.cpp) costs 0."""
    import openai

    from redline.runtime import Runtime
    from redline.server.background import running_server

    control.reset()
    runtime = Runtime(backend=LedgeredBackend(OpenAIBackend(base_url=app_url)))
    with running_server(runtime) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
        model = f"none/{runtime.backend.model}"

        def stream(**extra) -> list:
            return list(client.chat.completions.create(model=model, messages=QUESTION, max_tokens=6, stream=True,
                                                       **extra))

        quiet, asked = stream(), stream(stream_options={"include_usage": True})
        assert all(c.choices for c in quiet) and not any(c.usage for c in quiet)
        assert asked[-1].usage is not None and asked[-1].usage.completion_tokens > 0 and not asked[-1].choices
        assert all(b.get("stream_options") == {"include_usage": True} for _, b in control.seen)


async def test_pass_through_stream_usage_reaches_the_ledger_unasked(backend, control):
    ledgered, ledger = LedgeredBackend(backend), Ledger(strategy="passthrough")
    with use_ledger(ledger):
        chunks = [c async for c in ledgered.passthrough_stream({"messages": QUESTION, "max_tokens": 6})]
        control.reset(stream_usage=False)  # llama.cpp's server: no usage in streams, so nothing to record
        [c async for c in ledgered.passthrough_stream({"messages": QUESTION, "max_tokens": 6})]
    assert chunks[-1]["usage"]["completion_tokens"] == ledger.records[0].completion_tokens > 0
    assert ledger.records[1].completion_tokens == 0
