"""Throughput and latency of `redline serve` pass-through (strategy `none`) on the scripted backend.

Prints requests/s and p50/p95 latency at concurrency 1, 10 and 50 over loopback HTTP, and the
latency the server adds over calling the same backend directly (target: under 2 ms at p50).

    .venv/bin/python bench/server_throughput.py [--requests 400] [--delay-ms 0]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import httpx

from redline.backends.base import LedgeredBackend
from redline.backends.scripted import ScriptedBackend
from redline.ledger import Ledger, use_ledger
from redline.runtime import Runtime
from redline.server import ServerSettings
from redline.server.background import running_server

ANSWER = "Step 1: 6 * 7 = 42.\nThe answer is 42."
BODY = {"model": "none/scripted", "messages": [{"role": "user", "content": "What is 6 * 7?"}]}


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


async def direct(backend: ScriptedBackend, count: int) -> list[float]:
    """Latency of calling the backend's pass-through in-process (what the server wraps)."""
    out = []
    for _ in range(count):
        t0 = time.perf_counter()
        with use_ledger(Ledger(strategy="none")):
            await backend.passthrough(dict(BODY))
        out.append(time.perf_counter() - t0)
    return out


async def through_server(url: str, count: int, concurrency: int) -> tuple[list[float], float]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        for _ in range(min(concurrency, 20)):  # warm the connections
            (await client.post("/v1/chat/completions", json=BODY)).raise_for_status()
        slots = asyncio.Semaphore(concurrency)
        latencies: list[float] = []

        async def one() -> None:
            async with slots:
                t0 = time.perf_counter()
                response = await client.post("/v1/chat/completions", json=BODY)
                latencies.append(time.perf_counter() - t0)
                assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == ANSWER

        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(count)))
        return latencies, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="requests per concurrency level")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="scripted backend latency per call")
    args = parser.parse_args()

    backend = ScriptedBackend([ANSWER], delay_s=args.delay_ms / 1000)
    runtime = Runtime(backend=LedgeredBackend(backend))
    base = asyncio.run(direct(backend, args.requests))
    print(f"direct backend call: p50 {percentile(base, 50) * 1e3:.3f} ms, p95 {percentile(base, 95) * 1e3:.3f} ms")
    print(f"{'concurrency':>11} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'added p50 ms':>13}")
    with running_server(runtime, ServerSettings(max_concurrency=256)) as url:
        for concurrency in (1, 10, 50):
            latencies, wall = asyncio.run(through_server(url, args.requests, concurrency))
            p50 = percentile(latencies, 50)
            print(f"{concurrency:>11} {len(latencies) / wall:>8.0f} {p50 * 1e3:>8.2f} "
                  f"{percentile(latencies, 95) * 1e3:>8.2f} {(p50 - percentile(base, 50)) * 1e3:>13.2f}")


if __name__ == "__main__":
    main()
