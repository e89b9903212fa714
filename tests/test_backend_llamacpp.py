"""The llama.cpp engine of the local backend on the real embedded model: n samples from one prefill,
seeds, stop ids, logprobs, prefix reuse per scope, the budget's prompt cost, engine choice, GGUF LoRA
adapters (against the transformers engine), and one-line errors for a bad GGUF."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from redline.backends import GenerationRequest, create_backend
from redline.backends.local import LocalBackend, choose_engine, resolve_model
from redline.backends.prefix_cache import SCOPE, PrefixCache
from redline.errors import BackendError
from redline.ledger import Ledger, use_ledger
from redline.text import solve_messages
from tests.test_backend_local import fixture_adapter

pytestmark = pytest.mark.model

QUESTION = "Tom has 3 apples and buys 4 more. How many apples does he have?"
REDLINE = str(Path(sys.executable).parent / "redline")


@pytest.fixture()
def cold(local_backend):
    """The session's llama.cpp backend with its prefix cache off for the test, restored after."""
    inner = local_backend.inner
    saved, inner.prefix_cache = inner.prefix_cache, None
    yield local_backend
    inner.prefix_cache = saved


def test_gguf_models_run_on_llama_cpp_unless_asked_otherwise(monkeypatch, tmp_path):
    source = resolve_model("smollm2-135m")
    monkeypatch.delenv("REDLINE_ENGINE", raising=False)
    assert choose_engine(source) == "llama.cpp"
    monkeypatch.setenv("REDLINE_ENGINE", "transformers")
    assert choose_engine(source) == "transformers" and choose_engine(source, "llama.cpp") == "llama.cpp"
    monkeypatch.setenv("REDLINE_ENGINE", "vllm")
    with pytest.raises(BackendError, match="unknown engine 'vllm'"):
        choose_engine(source)
    monkeypatch.delenv("REDLINE_ENGINE")
    hf_folder = tmp_path / "hf"
    hf_folder.mkdir()
    (hf_folder / "config.json").write_text("{}")
    assert choose_engine(resolve_model(str(hf_folder)), "") == "transformers"
    with pytest.raises(BackendError, match="runs GGUF files"):
        choose_engine(resolve_model(str(hf_folder)), "llama.cpp")


async def test_greedy_repeats_and_ends_on_a_turn_marker(cold):
    request = GenerationRequest(messages=solve_messages(QUESTION), max_tokens=200, logprobs=1)
    first, again = [(await cold.generate(request))[0] for _ in range(2)]
    assert first.finish_reason == "stop" and first.text == again.text and first.text
    assert first.logprobs is not None and first.logprobs[-1].token in ("<|im_end|>", "<|im_start|>")
    assert first.completion_tokens == len(first.logprobs)
    assert "<|im" not in first.text


async def test_n_samples_share_one_prefill(cold, monkeypatch):
    """The prompt is decoded once for all n samples and billed once; samples differ; a seed repeats them."""
    import llama_cpp

    decoded: list[int] = []
    decode = llama_cpp.llama_decode

    def counting_decode(ctx, batch):
        decoded.append(batch.n_tokens)
        return decode(ctx, batch)

    request = GenerationRequest(messages=solve_messages(QUESTION), n=4, temperature=0.9, max_tokens=12, seed=3)
    ledger = Ledger(strategy="test")
    monkeypatch.setattr(llama_cpp, "llama_decode", counting_decode)
    with use_ledger(ledger):
        samples = await cold.generate(request)
    monkeypatch.undo()
    prompt = samples[0].prompt_tokens
    assert prompt > 30 and [c.prompt_tokens for c in samples[1:]] == [0, 0, 0]
    assert ledger.records[0].prompt_tokens == prompt and ledger.records[0].n == 4
    generated = sum(c.completion_tokens for c in samples)
    # one prefill of the prompt, then one token per unfinished sample per step (each sample's last token
    # is never fed back)
    assert sum(decoded) == prompt + generated - 4
    assert max(decoded[1:]) <= 4 and len(decoded) == 1 + max(c.completion_tokens for c in samples) - 1
    assert len({c.text for c in samples}) > 1
    with use_ledger(Ledger()):
        again = await cold.generate(request)
        other = await cold.generate(GenerationRequest(**{**request.__dict__, "seed": 4}))
    assert [c.text for c in again] == [c.text for c in samples]
    assert [c.text for c in other] != [c.text for c in samples]


async def test_greedy_logprobs_are_finite_and_their_top_k_holds_the_chosen_token(cold):
    [c] = await cold.generate(GenerationRequest(messages=solve_messages(QUESTION), max_tokens=10, logprobs=5))
    assert c.logprobs is not None and len(c.logprobs) == c.completion_tokens == 10
    for token in c.logprobs:
        assert math.isfinite(token.logprob) and token.logprob <= 0 and len(token.top) == 5
        assert token.top[token.token] == pytest.approx(token.logprob) == pytest.approx(max(token.top.values()))
    total = sum(math.exp(v) for v in c.logprobs[0].top.values())
    assert 0 < total <= 1 + 1e-4  # log-probabilities of one distribution, not raw logits


async def test_each_scope_computes_its_own_prefix_and_prompt_cost_says_so_before_the_call(local_backend):
    inner: LocalBackend = local_backend.inner
    saved, inner.prefix_cache = inner.prefix_cache, PrefixCache(64 << 20)
    request = GenerationRequest(messages=solve_messages(QUESTION + " Be brief."), max_tokens=4)
    seen: dict[str, list[tuple[int, int, int]]] = {}
    try:
        with use_ledger(Ledger()):
            for scope in ("cot", "bon:n=4"):
                token = SCOPE.set(scope)
                try:
                    for _ in range(2):
                        cost = local_backend.prompt_cost(request)
                        [c] = await local_backend.generate(request)
                        seen.setdefault(scope, []).append((*cost, c.cached_tokens))
                finally:
                    SCOPE.reset(token)
    finally:
        inner.prefix_cache = saved
    prompt = seen["cot"][0][0]
    assert seen["cot"] == [(prompt, 0, 0), (prompt, prompt - 1, prompt - 1)]
    assert seen["bon:n=4"] == seen["cot"]  # the second scope starts cold: it computes its own prefix


async def test_an_adapter_changes_greedy_output_and_matches_the_transformers_engine(cold, monkeypatch, tmp_path):
    """The fixture adapter, converted to a GGUF LoRA, gives the tokens transformers gives with it merged."""
    adapter = fixture_adapter()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    tuned = create_backend("local", str(adapter), prefix_cache_mb=0)
    tuned_hf = create_backend("local", str(adapter), prefix_cache_mb=0, engine="transformers")
    base_hf = create_backend("local", prefix_cache_mb=0, engine="transformers")
    request = GenerationRequest(messages=solve_messages("A pen costs 2 dollars. How much do 5 pens cost?"),
                                max_tokens=32)
    with use_ledger(Ledger()):
        texts = {name: (await backend.generate(request))[0].text
                 for name, backend in [("base", cold), ("tuned", tuned), ("base_hf", base_hf), ("tuned_hf", tuned_hf)]}
    assert texts["tuned"] != texts["base"] and texts["tuned_hf"] != texts["base_hf"]
    assert texts["tuned"] == texts["tuned_hf"]
    converted = list((tmp_path / "redline" / "lora").glob("*.gguf"))
    assert len(converted) == 1 and converted[0].name.startswith(adapter.name)


def test_a_conversion_is_cached_by_content(tmp_path, monkeypatch):
    from redline.backends.gguf_lora import gguf_adapter
    from redline.backends.local import embedded_model_path

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    adapter = tmp_path / "adapter"
    shutil.copytree(fixture_adapter(), adapter)
    first = gguf_adapter(adapter, embedded_model_path())
    stamp = first.stat().st_mtime_ns
    assert gguf_adapter(adapter, embedded_model_path()) == first and first.stat().st_mtime_ns == stamp
    config = adapter / "adapter_config.json"
    config.write_text(config.read_text().replace('"lora_alpha": 64', '"lora_alpha": 32'))
    assert gguf_adapter(adapter, embedded_model_path()) != first


@pytest.mark.parametrize("engine", ["llama.cpp", "transformers"])
def test_a_corrupt_gguf_is_one_line_and_exit_2(tmp_path, engine):
    corrupt = tmp_path / "broken.gguf"
    corrupt.write_bytes(b"GGUF" + os.urandom(4096))
    run = subprocess.run([REDLINE, "solve", "What is 2+2?", "--model", str(corrupt)], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "REDLINE_ENGINE": engine})
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "broken.gguf" in lines[0] and "Traceback" not in run.stderr
