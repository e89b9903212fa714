"""The local backend's transformers engine: throughput (tokens/s at n=1 and batched n=8) and the overhead
of redline's backend layer + ledger over a raw transformers `generate` with the same settings
(bench/engine_speed.py compares it with the llama.cpp engine).

    .venv/bin/python bench/backend_throughput.py [--max-new-tokens 48] [--repeats 3]

Both paths run the same prompt, seed, sampling settings and max_new_tokens, so they generate the
same tokens, and both run on redline's compute thread: torch work from two threads in one process
slows both (see `redline.compute`), which would make the comparison measure that, not redline.
Two overhead figures, both as a share of redline's wall time (target: <= 5 %):
- A/B: raw and redline runs alternate and the fastest of each is compared; on a busy machine this
  one is noisy, since other processes slow either side at random;
- in-call: within the same redline call, ledger latency minus the time spent inside
  `model.generate`, i.e. exactly what the backend layer and the ledger add; immune to that noise.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

from redline.backends import GenerationRequest, create_backend  # noqa: E402
from redline.backends.local import LocalBackend  # noqa: E402
from redline.compute import run_sync  # noqa: E402
from redline.ledger import Ledger, use_ledger  # noqa: E402
from redline.text import solve_messages  # noqa: E402

QUESTION = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
            "How many clips did Natalia sell altogether in April and May?")


def raw_generate(local: LocalBackend, request: GenerationRequest) -> int:
    """What a user of transformers writes by hand: tokenize, generate, decode. Returns new tokens."""
    import torch

    lm = local.engine.loaded
    prompt = local.render_prompt(request)
    inputs = lm.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(lm.device)
    kwargs: dict[str, Any] = dict(max_new_tokens=request.max_tokens, num_return_sequences=request.n,
                                  pad_token_id=lm.tokenizer.pad_token_id)
    if request.temperature > 0:
        kwargs.update(do_sample=True, temperature=request.temperature, top_p=request.top_p, top_k=0)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    torch.manual_seed(request.seed or 0)
    with torch.inference_mode():
        out = lm.model.generate(**inputs, **kwargs)
    new = out[:, inputs["input_ids"].shape[1]:]
    lm.tokenizer.batch_decode(new, skip_special_tokens=True)
    eos = {lm.tokenizer.eos_token_id, lm.tokenizer.pad_token_id}
    return sum(next((k + 1 for k, t in enumerate(row) if t in eos), len(row)) for row in new.tolist())


async def measure(n: int, max_new_tokens: int, repeats: int) -> dict[str, float]:
    backend = create_backend("local", engine="transformers")  # LedgeredBackend over LocalBackend: the full path
    local: LocalBackend = backend.inner
    request = GenerationRequest(messages=solve_messages(QUESTION), n=n, temperature=0.0 if n == 1 else 0.8,
                                max_tokens=max_new_tokens, seed=1234)
    ledger = Ledger(strategy="bench")
    raw_s, redline_s, in_call, raw_tokens, redline_tokens = [], [], [], 0, 0
    with use_ledger(ledger):
        for _ in range(repeats):
            t0 = time.perf_counter()
            raw_tokens = run_sync(raw_generate, local, request)
            raw_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            completions = await backend.generate(request)
            redline_s.append(time.perf_counter() - t0)
            redline_tokens = sum(c.completion_tokens for c in completions)
            inside_generate = sum(c.latency_s for c in completions)  # LocalBackend splits generate time over n
            in_call.append((ledger.records[-1].latency_s - inside_generate) / ledger.records[-1].latency_s)
    assert len(ledger.records) == repeats, "the ledger dropped a call"
    raw, red = min(raw_s), min(redline_s)
    return {"n": n, "tokens": redline_tokens, "raw_tokens": raw_tokens, "raw_s": raw, "redline_s": red,
            "tokens_per_s": redline_tokens / red, "ab_pct": 100 * (red - raw) / red,
            "in_call_pct": 100 * statistics.median(in_call)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    backend = create_backend("local", engine="transformers")
    t0 = time.perf_counter()
    backend.load()
    print(f"model load: {time.perf_counter() - t0:.1f} s (once per process, not in any figure below)")
    run_sync(raw_generate, backend.inner, GenerationRequest(prompt="warm up", max_tokens=4))
    print(f"{'n':>3} {'tokens':>7} {'raw s':>8} {'redline s':>10} {'tokens/s':>9} {'A/B ovh':>8} {'in-call ovh':>12}")
    for n in (1, 8):
        r = await measure(n, args.max_new_tokens, args.repeats)
        same = "" if r["tokens"] == r["raw_tokens"] else f"  (raw made {r['raw_tokens']} tokens)"
        print(f"{r['n']:>3} {r['tokens']:>7} {r['raw_s']:>8.2f} {r['redline_s']:>10.2f} {r['tokens_per_s']:>9.1f} "
              f"{r['ab_pct']:>7.1f}% {r['in_call_pct']:>11.2f}%{same}", flush=True)
    print("overhead as a share of redline's wall time (A/B: fastest runs; in-call: median); target <= 5%")


if __name__ == "__main__":
    asyncio.run(main())
