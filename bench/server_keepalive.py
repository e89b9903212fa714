"""The keep-alive race, made frequent: connection errors when the server closes idle connections
as soon as (or before) the client expires them, none when the server waits longer.

uvicorn's default keep-alive (5 s) equals the idle expiry of httpx, which the openai SDK uses;
`redline serve` keeps idle connections 75 s. This bench shrinks both timers so that the race
shows in seconds, and prints the failures for each pair.

    .venv/bin/python bench/server_keepalive.py [--requests 2000] [--concurrency 50] [--client-expiry 0.3]
"""

from __future__ import annotations

import argparse
import asyncio
import collections

import httpx
import openai

from redline.backends.base import LedgeredBackend
from redline.backends.scripted import ScriptedBackend
from redline.runtime import Runtime
from redline.server import create_app
from redline.server.background import serve_in_thread

ANSWER = "Step 1: 6 * 7 = 42.\nThe answer is 42."


async def load(url: str, requests: int, concurrency: int, client_expiry: float) -> list[BaseException]:
    """`requests` chat completions; every seventh waits just under the client's expiry first, so
    some pooled connections sit idle near it."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency,
                          keepalive_expiry=client_expiry)
    http = httpx.AsyncClient(limits=limits, timeout=60)
    async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0, http_client=http) as client:
        slots = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with slots:
                if i % 7 == 0:
                    await asyncio.sleep(client_expiry * 0.9)
                await client.chat.completions.create(model="cot/scripted",
                                                     messages=[{"role": "user", "content": f"Question {i}"}])
        results = await asyncio.gather(*(one(i) for i in range(requests)), return_exceptions=True)
    return [r for r in results if isinstance(r, BaseException)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--client-expiry", type=float, default=0.3, help="httpx keepalive_expiry (s)")
    args = parser.parse_args()
    runtime = Runtime(backend=LedgeredBackend(ScriptedBackend([ANSWER], delay_s=0.005)), max_tokens=48)
    for ratio in (1.0, 3.0):
        server_keep_alive = args.client_expiry * ratio
        with serve_in_thread(create_app(runtime), keep_alive_s=server_keep_alive) as url:
            failures = asyncio.run(load(url, args.requests, args.concurrency, args.client_expiry))
        kinds = collections.Counter(type(f.__cause__ or f).__name__ for f in failures)
        print(f"server keep-alive {server_keep_alive:.2f} s, client expiry {args.client_expiry:.2f} s: "
              f"{len(failures)} of {args.requests} requests failed {dict(kinds) or ''}")


if __name__ == "__main__":
    main()
