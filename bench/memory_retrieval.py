"""Step-bank retrieval latency at 10k and 100k banked steps (target: < 20 ms per query on CPU).

The bank is filled with SYNTHETIC unit vectors (random, 384-d, as MiniLM gives), written
through the real store (SQLite BLOBs) and searched through the real `similar_steps` path:
index refresh, dot-product scan, and the SQLite join that fetches step and problem text.
Query embedding (MiniLM, one sentence) is timed separately, with the real model.

    .venv/bin/python bench/memory_retrieval.py [--sizes 10000 100000] [--queries 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from redline.memory.store import MemoryStore


def fill(store: MemoryStore, n: int, rng: np.random.Generator, per_problem: int = 5) -> None:
    vectors = rng.standard_normal((n, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with store.transaction():
        for start in range(0, n, per_problem):
            pid = store.add_problem(f"p{start}", f"synthetic problem {start}", "1", None, True, "bench", vectors[start])
            chunk = vectors[start:start + per_problem]
            store.add_steps(pid, [f"step {start + i}" for i in range(len(chunk))], "gold", [True] * len(chunk), chunk)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=4)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            store = MemoryStore.open(Path(tmp) / f"bank{size}.db")
            t0 = time.perf_counter()
            fill(store, size, rng)
            fill_s = time.perf_counter() - t0
            queries = rng.standard_normal((args.queries, 384)).astype(np.float32)
            queries /= np.linalg.norm(queries, axis=1, keepdims=True)
            t0 = time.perf_counter()
            store.similar_steps(queries[0], args.k)  # first query loads the index from SQLite
            load_s = time.perf_counter() - t0
            times = []
            cpu0 = time.process_time()
            for q in queries:
                t0 = time.perf_counter()
                hits = store.similar_steps(q, args.k)
                times.append((time.perf_counter() - t0) * 1000)
                assert len(hits) == args.k
            cpu_ms = (time.process_time() - cpu0) / len(queries) * 1000
            times.sort()
            print(f"{size:>7} steps (synthetic vectors): fill {fill_s:.1f} s, index load {load_s * 1000:.0f} ms; "
                  f"query k={args.k}: median {statistics.median(times):.2f} ms, "
                  f"p95 {times[int(0.95 * len(times)) - 1]:.2f} ms, max {times[-1]:.2f} ms, "
                  f"process CPU {cpu_ms:.2f} ms/query over {len(times)} queries")
            store.close()
    from redline.embeddings import embed

    embed(["warm up"])
    sentences = [f"Natalia sold {i} clips in April and half as many in May." for i in range(50)]
    t0 = time.perf_counter()
    for s in sentences:
        embed([s])
    print(f"query embedding (real MiniLM, 1 sentence, CPU): {(time.perf_counter() - t0) / len(sentences) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
