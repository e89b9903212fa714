"""With vs without each memory provider, on problems held apart from the learning run.

1. `learn` on the first --train easy problems (--max-steps) of the data file into a fresh store;
2. solve --limit other easy problems (taken from the END of the file, never seen by learning)
   with the base strategy alone and with each provider composed onto it;
3. print accuracy with a 95% Wilson interval and mean tokens per problem for each spec.

The issue asks for 200 held-apart problems; on a 2-core CPU with the 135M embedded model
that takes hours, so pass what fits (--limit) and read the intervals, not the point values.

    .venv/bin/python bench/memory_providers.py --train 8 --limit 5 --max-tokens 128
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from scipy.stats import binomtest

os.environ.setdefault("TQDM_DISABLE", "1")  # model-load progress bars would bury the figures

from redline.backends import create_backend
from redline.bench.datasets import easy_problems, load_problems
from redline.loop import build_solver
from redline.memory.learning import Learner, LearnSettings, problem_key
from redline.memory.store import MemoryStore
from redline.runtime import Runtime
from redline.text import answers_equal


async def run(args: argparse.Namespace) -> None:
    problems = load_problems(args.data, "gsm8k")
    if args.max_steps:
        problems = easy_problems(problems, args.max_steps)
    train, held = problems[:args.train], problems[-args.limit:]
    assert not {problem_key(p) for p in train} & {problem_key(p) for p in held}, "held-apart sets overlap"
    backend = create_backend("local")
    backend.load()
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "memory.db"
        runtime = Runtime(backend=backend, max_tokens=args.max_tokens, memory_path=path)
        t0 = time.perf_counter()
        report = await Learner(runtime, MemoryStore.open(path), args.strategy, LearnSettings(task="gsm8k")).learn(train)
        print(f"learned on {len(train)} problems in {time.perf_counter() - t0:.0f} s: {report.counts}")
        specs = [args.strategy] + [f"{args.strategy}+{p}" for p in args.providers]
        print(f"{'spec':<28} {'accuracy':>9} {'95% CI':>15} {'tokens/problem':>15} {'retrieve tok':>13} {'s/problem':>10}")
        for spec in specs:
            solver = build_solver(spec, runtime)
            correct = tokens = retrieve = 0
            t0 = time.perf_counter()
            for problem in held:
                result = await solver.solve(problem)
                correct += answers_equal(result.answer, problem.answer)
                tokens += result.total.total_tokens
                retrieve += result.usage["retrieve"].total_tokens if "retrieve" in result.usage else 0
            n = len(held)
            ci = binomtest(correct, n).proportion_ci(method="wilson")
            print(f"{spec:<28} {correct / n:>9.1%} [{ci.low:5.1%}, {ci.high:5.1%}] {tokens / n:>15.0f} "
                  f"{retrieve / n:>13.0f} {(time.perf_counter() - t0) / n:>10.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/gsm8k/train.jsonl")
    parser.add_argument("--train", type=int, default=8, help="problems to learn from (start of the file)")
    parser.add_argument("--limit", type=int, default=5, help="held-apart problems to compare on (end of the file)")
    parser.add_argument("--max-steps", type=int, default=2,
                        help="only problems whose worked solution has at most this many lines (0: all)")
    parser.add_argument("--strategy", default="cot")
    parser.add_argument("--providers", nargs="+", default=["principles", "mistakes", "boost"])
    parser.add_argument("--max-tokens", type=int, default=128)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
