"""Throughput and latency of `redline serve` pass-through (strategy `none`) on the scripted backend.

Prints requests/s and p50/p95 latency at concurrency 1, 10 and 50 over loopback HTTP, and the
latency the server adds over calling the same backend directly (target: under 2 ms at p50).
The server runs in its own process; clients are threads with keep-alive `http.client`
connections (the lightest client, so the figures are the server's, not the client's).

    .venv/bin/python bench/server_throughput.py [--requests 400] [--delay-ms 0]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import multiprocessing
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from redline.backends.base import LedgeredBackend
from redline.backends.scripted import ScriptedBackend
from redline.ledger import Ledger, use_ledger
from redline.runtime import Runtime
from redline.server import ServerSettings
from redline.server.background import running_server

ANSWER = "Step 1: 6 * 7 = 42.\nThe answer is 42."
BODY = {"model": "none/scripted", "messages": [{"role": "user", "content": "What is 6 * 7?"}]}
HEADERS = {"Content-Type": "application/json"}


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def backend(delay_ms: float) -> ScriptedBackend:
    return ScriptedBackend([ANSWER], delay_s=delay_ms / 1000)


async def direct(scripted: ScriptedBackend, count: int) -> list[float]:
    """Latency of calling the backend's pass-through in-process: what the server wraps."""
    out = []
    for _ in range(count):
        t0 = time.perf_counter()
        with use_ledger(Ledger(strategy="none")):
            await scripted.passthrough(dict(BODY))
        out.append(time.perf_counter() - t0)
    return out


def serve(delay_ms: float, urls: "multiprocessing.Queue[str]", stop: "multiprocessing.Event") -> None:
    runtime = Runtime(backend=LedgeredBackend(backend(delay_ms)))
    with running_server(runtime, ServerSettings(max_concurrency=256)) as url:
        urls.put(url)
        stop.wait()


def load(url: str, count: int, concurrency: int) -> tuple[list[float], float]:
    """`count` requests from `concurrency` threads, each on its own keep-alive connection."""
    host, port = url.split("//")[1].split(":")
    body = json.dumps(BODY)
    latencies: list[float] = []
    lock = threading.Lock()
    per_thread = [count // concurrency + (i < count % concurrency) for i in range(concurrency)]

    def worker(n: int) -> None:
        conn = http.client.HTTPConnection(host, int(port))
        conn.request("POST", "/v1/chat/completions", body=body, headers=HEADERS)  # warm the connection
        conn.getresponse().read()
        mine = []
        for _ in range(n):
            t0 = time.perf_counter()
            conn.request("POST", "/v1/chat/completions", body=body, headers=HEADERS)
            response = conn.getresponse()
            data = json.loads(response.read())
            mine.append(time.perf_counter() - t0)
            assert response.status == 200 and data["choices"][0]["message"]["content"] == ANSWER
        conn.close()
        with lock:
            latencies.extend(mine)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, per_thread))
    return latencies, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="requests per concurrency level")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="scripted backend latency per call")
    args = parser.parse_args()

    base = asyncio.run(direct(backend(args.delay_ms), args.requests))
    base_p50 = percentile(base, 50)
    print(f"direct backend call: p50 {base_p50 * 1e3:.3f} ms, p95 {percentile(base, 95) * 1e3:.3f} ms")
    urls: multiprocessing.Queue[str] = multiprocessing.Queue()
    stop = multiprocessing.Event()
    server = multiprocessing.Process(target=serve, args=(args.delay_ms, urls, stop), daemon=True)
    server.start()
    try:
        url = urls.get(timeout=60)
        print(f"{'concurrency':>11} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'added p50 ms':>13}")
        for concurrency in (1, 10, 50):
            latencies, wall = load(url, args.requests, concurrency)
            p50 = percentile(latencies, 50)
            print(f"{concurrency:>11} {len(latencies) / wall:>8.0f} {p50 * 1e3:>8.2f} "
                  f"{percentile(latencies, 95) * 1e3:>8.2f} {(p50 - base_p50) * 1e3:>13.2f}")
    finally:
        stop.set()
        server.join(timeout=10)


if __name__ == "__main__":
    main()
