"""Learning throughput: problems per minute of `redline learn` with the embedded model.

Runs the real Learner (solve, grade, LEAP principle on each mistake, embed, bank, one
transaction per problem) over the first --limit problems of a GSM8K file into a fresh store.

    .venv/bin/python bench/memory_learn.py --data ../shared/data/gsm8k/train.jsonl --limit 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # model-load progress bars would bury the figures

from redline.backends import create_backend
from redline.bench.datasets import load_problems
from redline.memory.learning import Learner, LearnSettings
from redline.memory.store import MemoryStore
from redline.runtime import Runtime


async def run(args: argparse.Namespace) -> None:
    problems = load_problems(args.data, "gsm8k", limit=args.limit)
    backend = create_backend("local")
    backend.load()
    from redline.embeddings import embed

    embed(["warm up"])  # model loads are not part of the throughput
    with tempfile.TemporaryDirectory() as tmp:
        store = MemoryStore.open(Path(tmp) / "memory.db")
        runtime = Runtime(backend=backend, max_tokens=args.max_tokens, memory_path=store.path)
        learner = Learner(runtime, store, args.strategy, LearnSettings(task="gsm8k", holdout=0))
        t0 = time.perf_counter()
        report = await learner.learn(problems)
        wall = time.perf_counter() - t0
        c = report.counts
        print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print(f"{len(problems)} problems, strategy {args.strategy}, max_tokens {args.max_tokens}: {wall:.1f} s, "
              f"{len(problems) / wall * 60:.2f} problems/minute")
        print(f"correct {c['correct']}, wrong {c['wrong']}, principles {c['principles']} (+{c['merged']} merged), "
              f"mistakes {c['mistakes']}, banked steps {c['steps']}; solve tokens {report.solve_usage.total_tokens}, "
              f"learning tokens {learner.learn_usage.total_tokens}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/gsm8k/train.jsonl")
    parser.add_argument("--limit", type=int, default=5)
    parser.add_argument("--strategy", default="cot")
    parser.add_argument("--max-tokens", type=int, default=128)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
