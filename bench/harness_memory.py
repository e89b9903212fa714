"""Eval harness memory: peak RSS at 1k and 10k problems with the scripted backend (flat is the goal).

    .venv/bin/python bench/harness_memory.py [--sizes 1000,10000] [--strategies cot]

Each size runs in a fresh process so peaks do not mix. Results go to SQLite as they finish and
workers pull pairs from a generator, so the only per-problem memory is the problem list itself.
The scripted backend normally keeps every request for tests to inspect; here it keeps the last.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(size: int, strategies: str) -> None:
    from redline.backends.base import LedgeredBackend
    from redline.backends.scripted import ScriptedBackend
    from redline.bench.runner import run_eval
    from redline.runtime import Runtime
    from redline.types import Problem

    scripted = ScriptedBackend(lambda request, index: "Step 1: 3 + 2 = 5.\nStep 2: The answer is 5.")
    scripted.requests = collections.deque(maxlen=1)  # type: ignore[assignment]
    runtime = Runtime(backend=LedgeredBackend(scripted), max_tokens=64)
    problems = [Problem(f"Tom has {i} apples and buys 2 more. How many now?", str(i + 2), id=f"p{i}")
                for i in range(size)]
    baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        asyncio.run(run_eval(Path(tmp), problems, strategies, runtime, concurrency=8))
        wall = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{size}\t{peak_kb / 1024:.1f}\t{(peak_kb - baseline_kb) / 1024:.1f}\t{wall:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--strategies", default="cot")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.strategies)
        return
    print(f"strategies={args.strategies}, concurrency 8")
    print("problems\tpeak RSS MiB\tgrowth during eval MiB\twall s")
    for size in (int(s) for s in args.sizes.split(",")):
        out = subprocess.run([sys.executable, __file__, "--child", str(size), "--strategies", args.strategies],
                             capture_output=True, text=True, check=True)
        print(out.stdout.strip())


if __name__ == "__main__":
    main()
