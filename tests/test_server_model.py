"""`stepco/local` through the server with the real embedded model and the official openai client:
the response's usage equals the ledger totals of the same solve run through the library."""

from __future__ import annotations

from dataclasses import replace

import openai
import pytest

from redline.loop import build_solver
from redline.types import Problem
from redline.server.background import running_server

QUESTION = "Tom has 3 apples and buys 4 more. How many apples does he have now?"


@pytest.mark.model
async def test_stepco_local_usage_equals_the_ledger(local_runtime):
    with running_server(local_runtime) as url:
        async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=300) as client:
            response = await client.chat.completions.create(
                model="stepco:max_iters=1,temperature=0/local", max_tokens=48,
                messages=[{"role": "user", "content": QUESTION}], extra_body={"redline": {"trace": True}})
            streamed = [c async for c in await client.chat.completions.create(
                model="cot/local", max_tokens=48, messages=[{"role": "user", "content": QUESTION}], stream=True,
                stream_options={"include_usage": True})]
    extra = response.model_extra["redline"]["choices"][0]
    phases = extra["usage"]
    assert response.usage.prompt_tokens == sum(p["prompt_tokens"] for p in phases.values()) > 0
    assert response.usage.completion_tokens == sum(p["completion_tokens"] for p in phases.values()) > 0
    # the same solve through the library costs the same: greedy, since llama.cpp may sample differently
    # after a prefix hit (its kernels round by batch size)
    runtime = replace(local_runtime, max_tokens=48)  # what the server makes of max_tokens=48
    result = await build_solver("stepco:max_iters=1,temperature=0", runtime).solve(Problem(QUESTION))
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == \
        (result.total.prompt_tokens, result.total.completion_tokens)
    assert response.choices[0].message.content.strip()
    assert extra["trace"]["kind"] == "solve"
    assert streamed[-1].usage.total_tokens > 0
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices).strip()
