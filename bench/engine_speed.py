"""The local backend's two engines on the same GGUF: llama.cpp against transformers.

    .venv/bin/python bench/engine_speed.py [--max-tokens 128] [--repeats 3] [--model smollm2-135m]

Same prompts, seeds and settings through both engines in one process, A/B alternated (the order
flips every round, so drift in machine load hits both); the prefix cache is off, so every call
computes its whole prompt. Prints each engine's load time and resident memory (the process's RSS
growth over its load; llama.cpp is loaded first), then tokens/s (completion tokens over wall time
of the call, median over rounds) for greedy, n=4 and n=8 sampling, and as its last line
`speedup greedy X.XX n=4 Y.YY` (llama.cpp over transformers). Targets: greedy >= 3x, n=4 >= 3x,
load <= 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

from redline.backends import GenerationRequest  # noqa: E402
from redline.backends.local import LLAMA_CPP, TRANSFORMERS, LocalBackend  # noqa: E402
from redline.text import solve_messages  # noqa: E402

QUESTIONS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?",
    "A shirt costs $12 and is 25% off. A pair of socks costs $3. What do I pay for the shirt and two pairs of socks?",
]
MODES = {"greedy": dict(n=1, temperature=0.0), "n=4": dict(n=4, temperature=0.8), "n=8": dict(n=8, temperature=0.8)}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def load(engine: str, model: str) -> tuple[LocalBackend, float, float]:
    backend = LocalBackend(model, prefix_cache_mb=0, engine=engine)
    before, t0 = rss_mb(), time.perf_counter()
    backend.load()
    return backend, time.perf_counter() - t0, rss_mb() - before


async def tokens_per_s(backend: LocalBackend, mode: str, question: str, seed: int, max_tokens: int) -> float:
    request = GenerationRequest(messages=solve_messages(question), max_tokens=max_tokens, seed=seed, **MODES[mode])
    t0 = time.perf_counter()
    completions = await backend.generate(request)
    return sum(c.completion_tokens for c in completions) / (time.perf_counter() - t0)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="rounds; each runs every question once per engine")
    parser.add_argument("--model", default="smollm2-135m", help="a GGUF model or a PEFT adapter over one")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
          f"{args.max_tokens} new tokens at most; {len(QUESTIONS)} prompts x {args.repeats} rounds")
    backends = {}
    for engine in (LLAMA_CPP, TRANSFORMERS):
        backends[engine], seconds, mb = load(engine, args.model)
        print(f"{engine:>12} load {seconds:5.2f} s, resident memory +{mb:6.0f} MB", flush=True)
    for backend in backends.values():  # warm-up: first-call allocations are not decoding speed
        await backend.generate(GenerationRequest(prompt="warm up", max_tokens=4, n=2, temperature=0.8, seed=0))
    speeds: dict[tuple[str, str], list[float]] = {}
    for round_ in range(args.repeats):
        order = [LLAMA_CPP, TRANSFORMERS] if round_ % 2 == 0 else [TRANSFORMERS, LLAMA_CPP]
        for mode in MODES:
            for q, question in enumerate(QUESTIONS):
                for engine in order:
                    speed = await tokens_per_s(backends[engine], mode, question, 1000 * round_ + q, args.max_tokens)
                    speeds.setdefault((engine, mode), []).append(speed)
    print(f"{'tokens/s':>12} " + " ".join(f"{mode:>8}" for mode in MODES))
    for engine in backends:
        print(f"{engine:>12} " + " ".join(f"{statistics.median(speeds[engine, mode]):8.1f}" for mode in MODES))
    ratio = {mode: statistics.median(speeds[LLAMA_CPP, mode]) / statistics.median(speeds[TRANSFORMERS, mode])
             for mode in MODES}
    print(f"{'speedup':>12} " + " ".join(f"{ratio[mode]:7.2f}x" for mode in MODES))
    print(f"speedup greedy {ratio['greedy']:.2f} n=4 {ratio['n=4']:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
