"""The real embedded model end to end: solves, determinism, batched n, stop strings, logprobs."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest

from redline.backends import GenerationRequest
from redline.ledger import Ledger, use_ledger
from redline.loop import build_solver
from redline.runtime import Runtime
from redline.text import solve_messages
from redline.types import Problem

pytestmark = pytest.mark.model

QUESTIONS = [
    "Tom has 3 apples and buys 4 more. How many apples does he have?",
    "A pen costs 2 dollars. How much do 5 pens cost?",
]


@pytest.fixture()
def runtime(local_backend) -> Runtime:
    return Runtime(backend=local_backend, max_tokens=48, seed=7)


@pytest.mark.parametrize("question", QUESTIONS)
async def test_cot_solves_end_to_end_and_repeats(runtime, question):
    solver = build_solver("cot", runtime)
    first = await solver.solve(Problem(question))
    second = await solver.solve(Problem(question))
    assert first.solution is not None and len(first.solution.steps) >= 1
    usage = first.usage["solve"]
    assert usage.calls == 1 and usage.prompt_tokens > 20 and 0 < usage.completion_tokens <= 48
    assert usage.latency_s > 0
    assert second.solution == first.solution and second.answer == first.answer
    assert second.usage["solve"].total_tokens == usage.total_tokens


async def test_sampled_n_is_one_batched_call_and_repeats_with_a_seed(local_backend):
    request = GenerationRequest(messages=solve_messages(QUESTIONS[0]), n=3, temperature=0.9, max_tokens=16, seed=11)
    ledger = Ledger(strategy="test")
    with use_ledger(ledger):
        first = await local_backend.generate(request)
        again = await local_backend.generate(request)
    assert len(first) == 3 and [c.text for c in again] == [c.text for c in first]
    assert len({c.text for c in first}) > 1  # sampling, not three copies of one greedy answer
    assert len(ledger.records) == 2 and ledger.records[0].n == 3
    assert ledger.records[0].prompt_tokens == sum(c.prompt_tokens for c in first) > 0
    other = await local_backend.generate(GenerationRequest(**{**request.__dict__, "seed": 12}))
    assert [c.text for c in other] != [c.text for c in first]


async def test_stop_strings_are_honoured(local_backend):
    base = GenerationRequest(messages=solve_messages(QUESTIONS[1]), max_tokens=32)
    [full] = await local_backend.generate(base)
    words = full.text.split()
    assert len(words) >= 3
    stop = " " + words[2]
    [cut] = await local_backend.generate(GenerationRequest(**{**base.__dict__, "stop": (stop,)}))
    assert cut.text == full.text[: full.text.index(stop)]
    assert cut.finish_reason == "stop" and cut.completion_tokens < full.completion_tokens


async def test_logprobs_when_asked(local_backend):
    request = GenerationRequest(prompt="2 + 2 =", max_tokens=6, logprobs=3)
    [c] = await local_backend.generate(request)
    assert c.logprobs is not None and len(c.logprobs) == c.completion_tokens
    for token in c.logprobs:
        assert token.logprob <= 0 and len(token.top) == 3
        assert token.logprob == pytest.approx(max(token.top.values()), abs=1e-5)  # greedy takes the top token
    [plain] = await local_backend.generate(GenerationRequest(prompt="2 + 2 =", max_tokens=6))
    assert plain.logprobs is None and plain.text == c.text


async def test_greedy_n_generates_once_and_bills_once(local_backend):
    request = GenerationRequest(messages=solve_messages(QUESTIONS[1]), n=3, temperature=0.0, max_tokens=12)
    ledger = Ledger(strategy="test")
    with use_ledger(ledger):
        completions = await local_backend.generate(request)
        [single] = await local_backend.generate(GenerationRequest(**{**request.__dict__, "n": 1}))
    assert [c.text for c in completions] == [single.text] * 3
    assert ledger.records[0].completion_tokens == ledger.records[1].completion_tokens == single.completion_tokens
    assert ledger.records[0].prompt_tokens == single.prompt_tokens


async def test_generation_and_embeddings_run_on_the_one_compute_thread(local_backend):
    """torch from several threads gets slower (one OpenMP team per thread; see redline.compute)."""
    from redline.embeddings import embed, embedder

    threads: list[str] = []
    record = lambda module, args: threads.append(threading.current_thread().name)  # noqa: E731
    hooks = [local_backend.inner.loaded.model.register_forward_pre_hook(record),
             embedder().register_forward_pre_hook(record)]
    try:
        await local_backend.generate(GenerationRequest(prompt="2 + 2 =", max_tokens=2))
        await asyncio.to_thread(embed, ["from a worker thread"])
        embed(["from the event loop's thread"])
    finally:
        for hook in hooks:
            hook.remove()
    assert len(threads) >= 4  # two generation forwards, at least one per embedding call
    assert {name.rsplit("_", 1)[0] for name in threads} == {"redline-torch"}


async def test_turn_markers_both_stop_generation(local_backend):
    """SmolLM2's <|im_start|> (1) ends a turn as well as <|im_end|> (2): tuned models emit either."""
    loaded = local_backend.inner.loaded
    assert {1, 2} <= loaded.stop_ids
    assert {1, 2} <= set(loaded.model.generation_config.eos_token_id)


def test_adapter_folder_resolves_to_the_base_it_names(tmp_path):
    from redline.backends.local import embedded_model_path, resolve_model
    from redline.errors import BackendError

    fixture = "/work/shared/models/smollm2-gsm8k-lora"
    if not Path(fixture).is_dir():
        pytest.skip("benchmark fixture adapter not present")
    source = resolve_model(fixture)
    assert (source.directory, source.gguf) == (embedded_model_path().parent, embedded_model_path().name)
    assert source.adapter == Path(fixture)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "org/unknown-7b"}))
    (foreign / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(BackendError, match="neither the embedded"):
        resolve_model(str(foreign))
    (foreign / "adapter_model.safetensors").unlink()
    (foreign / "adapter_model.bin").write_bytes(b"")
    with pytest.raises(BackendError, match="no adapter_model.safetensors"):
        resolve_model(str(foreign))
