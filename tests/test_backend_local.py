"""The real embedded model end to end on both local engines (llama.cpp, the default for GGUF, and
transformers): solves, determinism, n samples billed once, stop strings, logprobs, the compute thread."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from pathlib import Path

import pytest

from redline.backends import GenerationRequest, create_backend
from redline.ledger import Ledger, use_ledger
from redline.loop import build_solver
from redline.runtime import Runtime
from redline.text import solve_messages
from redline.types import Problem

SHARED = Path(__file__).resolve().parents[1].parent / "shared"  # ../shared from the repository root
QUESTIONS = [
    "Tom has 3 apples and buys 4 more. How many apples does he have?",
    "A pen costs 2 dollars. How much do 5 pens cost?",
]


def fixture_adapter() -> Path:
    """The benchmark fixture adapter in ../shared; skipped where ../shared is absent, a failure under CI."""
    path = SHARED / "models" / "smollm2-gsm8k-lora"
    if not (path / "adapter_config.json").is_file():
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the benchmark fixture adapter at {path} (../shared from the repository root)")
        pytest.skip(f"benchmark fixture adapter not present at {path}")
    return path


@pytest.fixture(scope="module", params=["llama.cpp", "transformers"])
def backend(request, local_backend):
    """The session's backend (llama.cpp), and the same model on transformers."""
    if request.param == "llama.cpp":
        assert local_backend.inner.engine_name == "llama.cpp"
        return local_backend
    hf = create_backend("local", engine="transformers")
    hf.load()
    return hf


@pytest.fixture()
def runtime(backend) -> Runtime:
    return Runtime(backend=backend, max_tokens=48, seed=7)


@pytest.mark.model
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


@pytest.mark.model
async def test_sampled_n_is_one_call_billed_once_and_repeats_with_a_seed(backend):
    request = GenerationRequest(messages=solve_messages(QUESTIONS[0]), n=3, temperature=0.9, max_tokens=16, seed=11)
    ledger = Ledger(strategy="test")
    with use_ledger(ledger):
        first = await backend.generate(request)
        again = await backend.generate(request)
        [single] = await backend.generate(GenerationRequest(**{**request.__dict__, "n": 1}))
    assert len(first) == 3 and [c.text for c in again] == [c.text for c in first]
    assert len({c.text for c in first}) > 1  # sampling, not three copies of one greedy answer
    assert len(ledger.records) == 3 and ledger.records[0].n == 3
    # the prompt is billed once per request, whatever n is, as OpenAI-compatible servers bill it
    assert first[0].prompt_tokens == single.prompt_tokens > 0 and [c.prompt_tokens for c in first[1:]] == [0, 0]
    assert ledger.records[0].prompt_tokens == ledger.records[2].prompt_tokens == single.prompt_tokens
    assert ledger.records[0].completion_tokens == sum(c.completion_tokens for c in first)
    other = await backend.generate(GenerationRequest(**{**request.__dict__, "seed": 12}))
    assert [c.text for c in other] != [c.text for c in first]


@pytest.mark.model
async def test_stop_strings_are_honoured(backend):
    base = GenerationRequest(messages=solve_messages(QUESTIONS[1]), max_tokens=32)
    [full] = await backend.generate(base)
    words = full.text.split()
    assert len(words) >= 3
    stop = " " + words[2]
    [cut] = await backend.generate(GenerationRequest(**{**base.__dict__, "stop": (stop,)}))
    assert cut.text == full.text[: full.text.index(stop)]
    assert cut.finish_reason == "stop" and cut.completion_tokens < full.completion_tokens


@pytest.mark.model
async def test_logprobs_when_asked(backend):
    request = GenerationRequest(prompt="2 + 2 =", max_tokens=6, logprobs=3)
    [c] = await backend.generate(request)
    assert c.logprobs is not None and len(c.logprobs) == c.completion_tokens
    for token in c.logprobs:
        assert token.logprob <= 0 and len(token.top) == 3
        assert token.logprob == pytest.approx(max(token.top.values()), abs=1e-5)  # greedy takes the top token
    [plain] = await backend.generate(GenerationRequest(prompt="2 + 2 =", max_tokens=6))
    assert plain.logprobs is None and plain.text == c.text


@pytest.mark.model
async def test_greedy_n_generates_once_and_bills_once(backend):
    request = GenerationRequest(messages=solve_messages(QUESTIONS[1]), n=3, temperature=0.0, max_tokens=12)
    ledger = Ledger(strategy="test")
    with use_ledger(ledger):
        completions = await backend.generate(request)
        [single] = await backend.generate(GenerationRequest(**{**request.__dict__, "n": 1}))
    assert [c.text for c in completions] == [single.text] * 3
    assert ledger.records[0].completion_tokens == ledger.records[1].completion_tokens == single.completion_tokens
    assert ledger.records[0].prompt_tokens == single.prompt_tokens


@pytest.mark.model
async def test_turn_markers_both_stop_generation(backend):
    """SmolLM2's <|im_start|> (1) ends a turn as well as <|im_end|> (2): tuned models emit either."""
    engine = backend.inner.engine
    assert {1, 2} <= engine.stop_ids
    if backend.inner.engine_name == "transformers":
        assert {1, 2} <= set(engine.loaded.model.generation_config.eos_token_id)


@pytest.mark.model
async def test_both_engines_render_and_tokenize_a_chat_alike(local_backend):
    hf = create_backend("local", engine="transformers").inner
    llama = local_backend.inner
    for messages in (solve_messages(QUESTIONS[0]), [{"role": "user", "content": "Hi"}]):
        request = GenerationRequest(messages=messages, prefix="Step 1:")
        text = llama.render_prompt(request)
        assert text == hf.render_prompt(request) and text.endswith("<|im_start|>assistant\nStep 1:")
        assert llama.engine.tokenize(text) == hf.engine.tokenize(text)


@pytest.mark.model
async def test_generation_and_embeddings_run_on_the_one_compute_thread(local_backend, monkeypatch):
    """Native compute from several threads gets slower (one thread team per calling thread; see
    redline.compute): llama.cpp's decode and torch's embeddings both run on the compute thread."""
    import llama_cpp

    from redline.embeddings import embed, embedder

    threads: list[str] = []
    decode = llama_cpp.llama_decode

    def recording_decode(ctx, batch):
        threads.append(threading.current_thread().name)
        return decode(ctx, batch)

    monkeypatch.setattr(llama_cpp, "llama_decode", recording_decode)
    hook = embedder().register_forward_pre_hook(lambda module, args: threads.append(threading.current_thread().name))
    try:
        await local_backend.generate(GenerationRequest(prompt="2 + 2 =", max_tokens=2))
        await asyncio.to_thread(embed, ["from a worker thread"])
        embed(["from the event loop's thread"])
    finally:
        hook.remove()
    assert len(threads) >= 4  # a prefill and a step, at least one forward per embedding call
    assert {name.rsplit("_", 1)[0] for name in threads} == {"redline-torch"}


def test_adapters_that_cannot_run_are_refused_by_name(tmp_path):
    from redline.backends.local import resolve_model
    from redline.errors import BackendError

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


def test_the_fixture_adapter_resolves_to_the_embedded_base():
    from redline.backends.local import embedded_model_path, resolve_model

    fixture = fixture_adapter()
    source = resolve_model(str(fixture))
    assert (source.directory, source.gguf) == (embedded_model_path().parent, embedded_model_path().name)
    assert source.adapter == fixture.resolve()


@pytest.mark.parametrize("engine", ["llama.cpp", "transformers"])
def test_an_adapter_with_corrupt_weights_is_a_one_line_error(tmp_path, monkeypatch, engine):
    from redline.backends.local import LocalBackend
    from redline.errors import BackendError

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # no converted copy of a good adapter to reuse
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "adapter_config.json").write_text((fixture_adapter() / "adapter_config.json").read_text())
    (corrupt / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(BackendError, match=r"adapter .*corrupt.*header") as failure:
        LocalBackend(str(corrupt), engine=engine).load()
    assert "\n" not in str(failure.value)
