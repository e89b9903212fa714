"""Bad requests and limits over real HTTP: each gets an OpenAI-style JSON error and the server
stays up; auth, concurrency (429), timeout (504), token budget, and disconnect cancellation."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest

from redline.backends.base import LedgeredBackend
from redline.backends.scripted import ScriptedBackend
from redline.runtime import Runtime
from redline.server import ServerSettings
from redline.server.background import running_server

ANSWER = "Step 1: 5 + 7 = 12.\nThe answer is 12."
CHAT = {"model": "cot/scripted", "messages": [{"role": "user", "content": "What is 5 + 7?"}]}
KEY = {"Authorization": "Bearer k"}
SETTINGS = ServerSettings(api_keys=("k-one", "k-two"), max_body_bytes=20_000, max_n=4, max_tokens_limit=256,
                          max_request_tokens=1000)


def scripted(delay_s: float = 0.0) -> tuple[ScriptedBackend, Runtime]:
    backend = ScriptedBackend([ANSWER], delay_s=delay_s)
    return backend, Runtime(backend=LedgeredBackend(backend), max_tokens=48)


@pytest.fixture(scope="module")
def server():
    with running_server(scripted()[1], SETTINGS) as url:
        yield url


def post(url: str, *, key: str | None = "k-one", **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(url + "/v1/chat/completions", headers=headers | kwargs.pop("headers", {}), timeout=30,
                      **kwargs)


def assert_openai_error(response: httpx.Response, status: int, *words: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    for word in words:
        assert word in error["message"]
    return error


def test_auth_refuses_missing_and_wrong_keys_and_accepts_each_valid_one(server):
    assert_openai_error(post(server, key=None, json=CHAT), 401, "API key")
    assert_openai_error(post(server, key="wrong", json=CHAT), 401, "API key")
    for key in ("k-one", "k-two"):
        with openai.OpenAI(base_url=server + "/v1", api_key=key, max_retries=0) as client:
            assert client.chat.completions.create(**CHAT).choices[0].message.content == ANSWER
    with openai.OpenAI(base_url=server + "/v1", api_key="wrong", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError):
            client.models.list()
    assert httpx.get(server + "/health").status_code == 200  # health needs no key


BAD_REQUESTS = [
    ("malformed JSON", dict(content=b'{"model": "cot", "messages": [', headers={"Content-Type": "application/json"}),
     400, "malformed JSON"),
    ("not an object", dict(json=[1, 2]), 400, "JSON object"),
    ("missing messages", dict(json={"model": "cot/scripted"}), 400, "messages"),
    ("empty messages", dict(json={**CHAT, "messages": []}), 400, "messages"),
    ("messages of wrong type", dict(json={**CHAT, "messages": "hi"}), 400, "messages"),
    ("bad role", dict(json={**CHAT, "messages": [{"role": "robot", "content": "x"}]}), 400, "role"),
    ("negative n", dict(json={**CHAT, "n": -1}), 400, "n"),
    ("huge n", dict(json={**CHAT, "n": 10_000}), 400, "max_n=4"),
    ("n of wrong type", dict(json={**CHAT, "n": "many"}), 400, "n"),
    ("max_tokens over the limit", dict(json={**CHAT, "max_tokens": 100_000}), 400, "limit of 256"),
    ("unknown strategy", dict(json={**CHAT, "model": "nosuch/scripted"}), 400, "valid: none"),
    ("bad strategy parameter", dict(json={**CHAT, "model": "sc:n=lots/scripted"}), 400, "n"),
    ("unknown backend model", dict(json={**CHAT, "model": "cot/gpt-9"}), 400, "not served"),
    ("budget above the server's", dict(json={**CHAT, "model": "cot:max_tokens_total=99999/scripted"}), 400,
     "token budget"),
    ("no user message", dict(json={**CHAT, "messages": [{"role": "system", "content": "x"}]}), 400, "user message"),
    ("redline.params without redline.strategy", dict(json={**CHAT, "redline": {"params": {"n": 2}}}), 400,
     "redline.params needs redline.strategy"),
    ("a parameter in the spec and in redline.params", dict(json={**CHAT, "model": "scripted",
                                                               "redline": {"strategy": "sc:n=3", "params": {"n": 2}}}),
     400, "parameter 'n' given both in the strategy and in redline.params"),
    ("a parameter given twice in the spec", dict(json={**CHAT, "model": "sc:n=3,n=2/scripted"}), 400,
     "parameter 'n' given twice"),
    ("oversize body", dict(json={**CHAT, "messages": [{"role": "user", "content": "x" * 50_000}]}), 413,
     "20000 bytes"),
    ("wrong content type", dict(content=json.dumps(CHAT), headers={"Content-Type": "text/plain"}), 415,
     "application/json"),
    ("form body", dict(data={"model": "cot"}), 415, "application/json"),
]


@pytest.mark.parametrize("name,kwargs,status,word", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_input_gets_a_json_error_and_the_server_stays_up(server, name, kwargs, status, word):
    assert_openai_error(post(server, **kwargs), status, word)
    assert post(server, json=CHAT).status_code == 200


def test_unknown_route_and_method_are_json_errors(server):
    assert_openai_error(httpx.get(server + "/v1/nothing"), 404, "no route")
    assert_openai_error(httpx.get(server + "/v1/chat/completions", headers={"Authorization": "Bearer k-one"}),
                        405, "no route")


def test_unknown_strategy_through_the_openai_client_lists_valid_ones(server):
    with openai.OpenAI(base_url=server + "/v1", api_key="k-one", max_retries=0) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(**{**CHAT, "model": "stepcoo/scripted"})
    assert "stepco" in caught.value.message and "cot" in caught.value.message


def test_token_budget_stops_a_strategy_gracefully():
    with running_server(scripted()[1], ServerSettings(max_request_tokens=10)) as url:
        body = post(url, json={**CHAT, "model": "refine/scripted"}).json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert "max_tokens_total=10" in body["redline"]["choices"][0]["stopped"]


@pytest.mark.filterwarnings("ignore::redline.verifiers.judge.JudgeMalformed")  # scripted critiques have no verdicts
def test_the_request_token_cap_holds_while_the_judge_scores_samples_together():
    # bon's 8 samples come back in one call, then the judge scores every step of every sample at
    # once (10 ms a call, so they are in flight together): the cap must stop them, not one wave late.
    with running_server(scripted(delay_s=0.01)[1], ServerSettings(max_request_tokens=1000)) as url:
        body = post(url, json={**CHAT, "model": "bon:n=8,verifier=judge/scripted"}).json()
    assert "max_tokens_total=1000 reached" in body["redline"]["choices"][0]["stopped"]
    assert body["redline"]["choices"][0]["usage"]["verify"]["calls"] >= 1  # the cap stopped the judge, not the sampling
    assert body["usage"]["total_tokens"] <= 1000


async def test_saturated_server_answers_429_with_retry_after():
    backend, runtime = scripted(delay_s=3.0)  # ample time for the refused request, even on a loaded machine
    with running_server(runtime, ServerSettings(api_keys=("k",), max_concurrency=2)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30, headers={"Authorization": "Bearer k"}) as client:
            slow = [asyncio.create_task(client.post("/v1/chat/completions", json=CHAT)) for _ in range(2)]
            while (await client.get("/health")).json()["in_flight"] < 2:
                await asyncio.sleep(0.02)
            refused = await client.post("/v1/chat/completions", json=CHAT)
            assert_openai_error(refused, 429, "busy")
            assert refused.headers["retry-after"] == "1"
            assert [r.status_code for r in await asyncio.gather(*slow)] == [200, 200]
            assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200


def test_slow_request_gets_504_and_streams_get_an_error_event():
    _, runtime = scripted(delay_s=3.0)
    with running_server(runtime, ServerSettings(timeout_s=0.3)) as url:
        assert_openai_error(post(url, json=CHAT), 504, "timeout")
        with openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0) as client:
            with pytest.raises(openai.APIError, match="timeout"):
                list(client.chat.completions.create(**CHAT, stream=True))
        assert httpx.get(url + "/health").status_code == 200


@pytest.mark.parametrize("stream", [False, True])
def test_client_disconnect_cancels_the_backend_call(stream):
    backend, runtime = scripted(delay_s=3.0)
    with running_server(runtime, ServerSettings(api_keys=("k",))) as url:
        with pytest.raises(httpx.ReadTimeout):
            with httpx.stream("POST", url + "/v1/chat/completions", json={**CHAT, "stream": stream}, headers=KEY,
                              timeout=httpx.Timeout(30, read=0.3)) as response:
                response.read()
        deadline = time.monotonic() + 5
        while 'redline_cancelled_total{endpoint="/v1/chat/completions",strategy="cot"} 1.0' not in \
                httpx.get(url + "/metrics", headers=KEY).text:
            assert time.monotonic() < deadline, "the disconnect was not noticed"
            time.sleep(0.05)
        time.sleep(3.1)  # past the scripted backend's delay: a call that was not cancelled would finish now
        assert backend.requests == []
        assert httpx.get(url + "/health", headers=KEY).json()["in_flight"] == 0
