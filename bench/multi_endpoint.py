"""The `openai` backend over 1, 2 and 3 endpoints: throughput, latency, router overhead, fail-over.

Each endpoint is a redline server on the scripted backend (pass-through, so it answers like an
OpenAI-compatible server) in its own process; the scripted delay stands in for generation time and
the backend's per-endpoint concurrency limit for a server's batch slots, so more endpoints can
carry more load. Prints:
- requests/s and p50/p95 latency of `backend.generate` for `--requests` requests at `--concurrency`,
  through 1, 2 and 3 endpoints;
- the router's own cost per request: `EndpointPool.call` around an attempt that does nothing
  (target: under 1 ms at p50), and, end to end, `backend.generate` against the bare openai client
  on the same endpoint, one request at a time;
- fail-over: one of 3 endpoints is SIGKILLed under load; the time until the router takes it out
  (target: under 2 s), requests lost (target: 0), and the time until it is back in after a restart.

    .venv/bin/python bench/multi_endpoint.py [--requests 500] [--concurrency 50] [--delay-ms 200] [--slots 8]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import signal
import socket
import statistics
import time

from redline.backends.base import GenerationRequest
from redline.backends.endpoints import EndpointPool, Outcome
from redline.backends.openai_compat import OpenAIBackend

ANSWER = "Step 1: 6 * 7 = 42.\nThe answer is 42."
REQUEST = GenerationRequest(messages=[{"role": "user", "content": "What is 6 * 7?"}], max_tokens=16)


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(port: int, delay_ms: float) -> None:
    """A redline server on the scripted backend at 127.0.0.1:port (runs in a child process)."""
    import uvicorn

    from redline.backends.base import LedgeredBackend
    from redline.backends.scripted import ScriptedBackend
    from redline.runtime import Runtime
    from redline.server import ServerSettings
    from redline.server.app import create_app
    from redline.server.http import uvicorn_config

    runtime = Runtime(backend=LedgeredBackend(ScriptedBackend([ANSWER], delay_s=delay_ms / 1000)))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    app = create_app(runtime, ServerSettings(max_concurrency=1024))
    uvicorn.Server(uvicorn_config(app, port=port)).run(sockets=[sock])


def start(port: int, delay_ms: float) -> multiprocessing.Process:
    process = multiprocessing.Process(target=serve, args=(port, delay_ms), daemon=True)
    process.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.is_alive():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server on port {port} did not start")


async def load(backend: OpenAIBackend, count: int, concurrency: int) -> tuple[list[float], float, int]:
    """`count` generate calls, `concurrency` at a time: latencies, wall time, failures."""
    latencies: list[float] = []
    failures = 0
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        nonlocal failures
        async with gate:
            t0 = time.perf_counter()
            try:
                [c] = await backend.generate(REQUEST)
                assert c.text == ANSWER
            except Exception:
                failures += 1
                return
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    return latencies, time.perf_counter() - t0, failures


async def throughput(urls: list[str], args: argparse.Namespace) -> None:
    print(f"{'endpoints':>9} {'req/s':>7} {'p50 ms':>7} {'p95 ms':>7} {'failed':>6} {'retried':>7}  calls per endpoint")
    for k in (1, 2, 3):
        backend = OpenAIBackend(model="scripted", base_url=urls[:k], max_concurrency=args.slots)
        await load(backend, 3 * args.concurrency, args.concurrency)  # warm the connections
        before = [s.calls for s in backend.endpoints.stats()]
        latencies, wall, failed = await load(backend, args.requests, args.concurrency)
        stats = backend.endpoints.stats()
        print(f"{k:>9} {len(latencies) / wall:>7.0f} {percentile(latencies, 50) * 1e3:>7.1f} "
              f"{percentile(latencies, 95) * 1e3:>7.1f} {failed:>6} {sum(s.errors for s in stats):>7}  "
              f"{[s.calls - b for s, b in zip(stats, before)]}")
        await backend.aclose()


async def router_overhead(count: int = 20000) -> None:
    async def nothing(_client: object) -> None:
        return None

    async def attempt(endpoint: object) -> None:
        return None

    pool: EndpointPool[object] = EndpointPool("bench", ["a", "b", "c"], lambda url: object(),
                                              lambda e: Outcome.RAISE, nothing)
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        await pool.call(attempt)
        times.append(time.perf_counter() - t0)
    print(f"router overhead per request (EndpointPool.call, no-op attempt, {count} calls): "
          f"p50 {percentile(times, 50) * 1e6:.1f} us, p95 {percentile(times, 95) * 1e6:.1f} us")


async def backend_overhead(url: str, count: int = 300) -> None:
    """What the backend (router, retries, Completion building) adds over the openai client alone."""
    import openai

    backend = OpenAIBackend(model="scripted", base_url=[url])
    client = openai.AsyncOpenAI(base_url=url, api_key="EMPTY", max_retries=0)
    raw, ours = [], []
    for i in range(2 * count):
        t0 = time.perf_counter()
        if i % 2:
            await backend.generate(REQUEST)
            ours.append(time.perf_counter() - t0)
        else:
            await client.chat.completions.create(model="scripted", messages=list(REQUEST.messages or ()),
                                                 max_tokens=16, temperature=0.0, top_p=1.0, n=1)
            raw.append(time.perf_counter() - t0)
    print(f"one request at a time, {count} each: openai client p50 {percentile(raw, 50) * 1e3:.2f} ms, "
          f"backend.generate p50 {percentile(ours, 50) * 1e3:.2f} ms "
          f"(added {(percentile(ours, 50) - percentile(raw, 50)) * 1e3:+.2f} ms)")
    await backend.aclose()
    await client.close()


async def failover(urls: list[str], ports: list[int], processes: list[multiprocessing.Process],
                   args: argparse.Namespace) -> None:
    backend = OpenAIBackend(model="scripted", base_url=urls, max_concurrency=args.slots, probe_interval_s=0.5)
    victim = backend.endpoints.stats()[0]
    await load(backend, 3 * args.concurrency, args.concurrency)
    marks: dict[str, float] = {}

    async def kill_and_restart() -> None:
        await asyncio.sleep(0.5)
        os.kill(processes[0].pid, signal.SIGKILL)  # type: ignore[arg-type]
        marks["killed"] = time.perf_counter()
        while victim.in_service:
            await asyncio.sleep(0.001)
        marks["out"] = time.perf_counter()
        processes[0] = await asyncio.to_thread(start, ports[0], args.delay_ms)
        marks["restarted"] = time.perf_counter()
        while not victim.in_service:
            await asyncio.sleep(0.01)
        marks["back"] = time.perf_counter()

    (latencies, wall, failed), _ = await asyncio.gather(load(backend, 4 * args.requests, args.concurrency),
                                                        kill_and_restart())
    print(f"fail-over under load ({4 * args.requests} requests at concurrency {args.concurrency}, 3 endpoints, "
          f"one SIGKILLed): taken out {(marks['out'] - marks['killed']) * 1e3:.0f} ms after the kill; "
          f"requests failed {failed}; p95 {percentile(latencies, 95) * 1e3:.1f} ms; "
          f"back in {(marks['back'] - marks['restarted']) * 1e3:.0f} ms after the restart "
          f"(probe every 0.5 s); attempts on the killed endpoint that failed: {victim.errors}")
    await backend.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--delay-ms", type=float, default=200.0, help="scripted latency per call (generation time)")
    parser.add_argument("--slots", type=int, default=8, help="requests in flight per endpoint (batch slots)")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; scripted delay {args.delay_ms:g} ms; {args.slots} slots per endpoint")
    asyncio.run(router_overhead())
    ports = [free_port() for _ in range(3)]
    processes = [start(p, args.delay_ms) for p in ports]
    urls = [f"http://127.0.0.1:{p}/v1" for p in ports]
    try:
        asyncio.run(backend_overhead(urls[0]))
        asyncio.run(throughput(urls, args))
        asyncio.run(failover(urls, ports, processes, args))
    finally:
        for p in processes:
            p.kill()
            p.join(timeout=5)


if __name__ == "__main__":
    main()
