"""Eval harness overhead: wall time outside backend calls, per problem, with the scripted backend.

    .venv/bin/python bench/harness_overhead.py [--problems 200] [--strategies cot,sc:n=4]

Runs sequentially (concurrency 1) so wall time = time in backend calls + everything else: prompts,
parsing, the strategy, grading, the SQLite write per result and the bookkeeping.
Report writing (tables, plots, HTML) is timed separately.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from redline.backends.base import LedgeredBackend
from redline.backends.scripted import ScriptedBackend
from redline.bench.report import write_reports
from redline.bench.runner import run_eval
from redline.bench.store import ResultStore
from redline.runtime import Runtime
from redline.types import Problem


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--problems", type=int, default=200)
    parser.add_argument("--strategies", default="cot,sc:n=4")
    args = parser.parse_args()
    problems = [Problem(f"Tom has {i} apples and buys 2 more. How many now?", str(i + 2), id=f"p{i}")
                for i in range(args.problems)]
    backend = LedgeredBackend(ScriptedBackend(lambda request, index: "Step 1: 3 + 2 = 5.\nStep 2: The answer is 5."))
    runtime = Runtime(backend=backend, max_tokens=64)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        start = time.perf_counter()
        asyncio.run(run_eval(run_dir, problems, args.strategies, runtime, concurrency=1))
        wall = time.perf_counter() - start
        with ResultStore(run_dir) as store:
            solves_s = sum(r.latency_s for r in store.rows())  # each solve's wall time
            rows = store.count()
            calls = sum(r.calls for r in store.rows())
            usage = [json.loads(u) for (u,) in store.db.execute("SELECT usage FROM results")]
        backend_s = sum(phase["latency_s"] for u in usage for phase in u.values())  # time inside backend calls
        start = time.perf_counter()
        write_reports(run_dir)
        report_s = time.perf_counter() - start
    strategies = len(args.strategies.split(","))
    print(f"problems={args.problems} strategies={args.strategies} results={rows} backend calls={calls}")
    print(f"eval wall {wall:.2f} s; inside backend calls {backend_s:.2f} s; inside solves {solves_s:.2f} s")
    print(f"outside backend calls: {1000 * (wall - backend_s) / args.problems:.2f} ms/problem "
          f"({1000 * (wall - backend_s) / (args.problems * strategies):.2f} ms per problem x strategy)")
    print(f"of which the eval harness (outside solves: grading, SQLite, bookkeeping): "
          f"{1000 * (wall - solves_s) / args.problems:.2f} ms/problem")
    print(f"report (md, csv, png, html): {report_s:.2f} s")


if __name__ == "__main__":
    main()
