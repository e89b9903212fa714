"""A bounded load test: 500 requests at concurrency 50 through the official async openai client,
mixing strategies and pass-through, streamed and not. Zero 5xx, every response well-formed."""

from __future__ import annotations

import asyncio
import http.client
import time

import httpx
import openai

from redline.backends.base import LedgeredBackend
from redline.backends.scripted import ScriptedBackend
from redline.runtime import Runtime
from redline.server import ServerSettings
from redline.server.app import create_app
from redline.server.background import running_server, serve_in_thread
from redline.server.settings import KEEP_ALIVE_S

ANSWER = "Step 1: 6 * 7 = 42.\nThe answer is 42."
REQUESTS, CONCURRENCY = 500, 50


async def one(client: openai.AsyncOpenAI, i: int) -> str:
    model = ("cot/scripted", "none/scripted", "sc:n=3/scripted")[i % 3]
    messages = [{"role": "user", "content": f"Question {i}: what is 6 * 7?"}]
    if i % 2:
        stream = await client.chat.completions.create(model=model, messages=messages, stream=True,
                                                      stream_options={"include_usage": True})
        chunks = [c async for c in stream]
        assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    response = await client.chat.completions.create(model=model, messages=messages)
    assert response.object == "chat.completion" and response.usage.total_tokens > 0
    assert response.choices[0].finish_reason == "stop"
    return response.choices[0].message.content or ""


async def test_500_requests_at_concurrency_50_all_well_formed():
    runtime = Runtime(backend=LedgeredBackend(ScriptedBackend([ANSWER], delay_s=0.005)), max_tokens=48)
    with running_server(runtime, ServerSettings(max_concurrency=64)) as url:
        limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
        http = httpx.AsyncClient(limits=limits, timeout=60)
        async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0, http_client=http) as client:
            slots = asyncio.Semaphore(CONCURRENCY)

            async def bounded(i: int) -> str:
                async with slots:
                    return await one(client, i)
            texts = await asyncio.gather(*(bounded(i) for i in range(REQUESTS)), return_exceptions=True)
        failures = [(t, t.__cause__) for t in texts if isinstance(t, BaseException)]
        assert failures == []
        assert texts == [ANSWER] * REQUESTS
        metrics = httpx.get(url + "/metrics").text
    statuses = [line for line in metrics.splitlines() if line.startswith("redline_requests_total{")]
    assert sum(float(s.rsplit(" ", 1)[1]) for s in statuses if 'status="200"' in s) == REQUESTS
    assert not any('status="5' in s for s in statuses)


def test_the_server_never_closes_an_idle_connection_before_the_client_does():
    """When both sides expire idle connections after the same time (uvicorn's and httpx's 5 s),
    a request sent as the server closes fails with a connection error. The server must wait longer."""
    assert KEEP_ALIVE_S > openai.DEFAULT_CONNECTION_LIMITS.keepalive_expiry
    app = create_app(Runtime(backend=LedgeredBackend(ScriptedBackend([ANSWER]))))
    with serve_in_thread(app, keep_alive_s=0.3) as url:  # the setting reaches uvicorn: idle past it, closed
        conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=10)
        conn.request("GET", "/health")
        response = conn.getresponse()
        assert response.status == 200 and response.read()
        time.sleep(1.0)
        assert conn.sock.recv(1) == b""  # the server closed the idle connection
        conn.close()
