"""The OpenAI-compatible server over real HTTP with the official openai client, on the scripted
backend (deterministic control flow): strategies, streaming, pass-through, models, metrics."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from redline.backends.base import LedgeredBackend
from redline.backends.scripted import ScriptedBackend
from redline.loop import build_solver
from redline.runtime import Runtime
from redline.types import Problem
from redline.server.background import running_server

ANSWER = "Step 1: 2 + 2 = 4.\nStep 2: 4 * 3 = 12.\nThe answer is 12."
QUESTION = "What is (2 + 2) * 3?"
TOOL_CALL = {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})}}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                           "parameters": {"type": "object",
                                                          "properties": {"city": {"type": "string"}}}}}]


def reply(request, index):
    """Tool requests get a tool call; a conversation ending in a tool result gets a summary."""
    if request.messages is None:
        return ANSWER
    last = request.messages[-1]
    if last["role"] == "tool":
        return f"It is {json.loads(last['content'])['temp']} degrees in Paris."
    if "weather" in str(last.get("content")):
        return {"id": "chatcmpl-tool", "object": "chat.completion", "created": 1, "model": "scripted",
                "choices": [{"index": 0, "finish_reason": "tool_calls",
                             "message": {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]}}],
                "usage": {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}}
    return ANSWER


@pytest.fixture(scope="module")
def backend():
    return ScriptedBackend(reply)


@pytest.fixture(scope="module")
def runtime(backend):
    return Runtime(backend=LedgeredBackend(backend), max_tokens=48)


@pytest.fixture(scope="module")
def server(runtime):
    with running_server(runtime) as url:
        yield url


@pytest.fixture()
def client(server):
    with openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0) as c:
        yield c


async def test_chat_usage_equals_the_strategy_ledger(client, runtime):
    response = client.chat.completions.create(model="cot/scripted", messages=[{"role": "user", "content": QUESTION}],
                                              extra_body={"redline": {"trace": True}})
    expected = await build_solver("cot", runtime).solve(Problem(QUESTION))
    assert response.choices[0].message.content == ANSWER
    assert response.choices[0].finish_reason == "stop"
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == \
        (expected.total.prompt_tokens, expected.total.completion_tokens)
    assert response.usage.total_tokens == expected.total.total_tokens > 0
    extra = response.model_extra["redline"]
    assert extra["strategy"] == "cot"
    assert extra["choices"][0]["answer"] == "12"
    assert extra["choices"][0]["usage_total"]["total_tokens"] == response.usage.total_tokens
    assert extra["choices"][0]["trace"]["kind"] == "solve"


def test_trace_only_when_asked_and_strategy_from_extra_body(client):
    response = client.chat.completions.create(model="scripted", messages=[{"role": "user", "content": QUESTION}],
                                              extra_body={"redline": {"strategy": "sc", "params": {"n": 2}}})
    extra = response.model_extra["redline"]
    assert extra["strategy"].startswith("sc:") and "n=2" in extra["strategy"]
    assert "trace" not in extra["choices"][0]
    assert extra["choices"][0]["answer"] == "12"


def test_the_question_leaves_out_system_messages_and_keeps_the_conversation(client, backend):
    messages = [{"role": "system", "content": "You are terse and answer in French."},
                {"role": "user", "content": "I have 2 boxes."},
                {"role": "assistant", "content": "Noted: 2 boxes."},
                {"role": "system", "content": "Never mention boxes."},
                {"role": "user", "content": QUESTION}]
    client.chat.completions.create(model="cot/scripted", messages=messages)
    question = backend.requests[-1].messages[-1]["content"]
    assert "I have 2 boxes." in question and "Noted: 2 boxes." in question and QUESTION in question
    assert "French" not in question and "Never mention" not in question
    assert not any("French" in str(m["content"]) for m in backend.requests[-1].messages)
    client.chat.completions.create(model="cot/scripted", messages=[messages[0], messages[-1]])
    assert backend.requests[-1].messages[-1]["content"].endswith(QUESTION)
    assert "French" not in backend.requests[-1].messages[-1]["content"]


def _collect(stream):
    chunks = list(stream)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    progress = [c.choices[0].delta.model_extra.get("reasoning_content") for c in chunks
                if c.choices and (c.choices[0].delta.model_extra or {}).get("reasoning_content")]
    return chunks, content, progress


def test_streaming_without_usage(client):
    chunks, content, progress = _collect(client.chat.completions.create(
        model="cot/scripted", messages=[{"role": "user", "content": QUESTION}], stream=True))
    assert content == ANSWER
    assert progress and "[solve]" in progress[0]
    first_content = next(i for i, c in enumerate(chunks) if c.choices and c.choices[0].delta.content)
    first_progress = next(i for i, c in enumerate(chunks)
                          if c.choices and (c.choices[0].delta.model_extra or {}).get("reasoning_content"))
    assert first_progress < first_content  # progress arrives while the strategy works, before the answer
    assert all(c.usage is None for c in chunks)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]


def test_streaming_with_usage_matches_non_streaming(client):
    messages = [{"role": "user", "content": QUESTION}]
    plain = client.chat.completions.create(model="cot/scripted", messages=messages)
    chunks, content, _ = _collect(client.chat.completions.create(
        model="cot/scripted", messages=messages, stream=True, stream_options={"include_usage": True}))
    assert content == plain.choices[0].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == plain.usage.total_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_passthrough_tool_call(client, backend):
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    response = client.chat.completions.create(model="none/scripted", messages=messages, tools=TOOLS,
                                              tool_choice="auto")
    call = response.choices[0].message.tool_calls[0]
    assert response.choices[0].finish_reason == "tool_calls"
    assert (call.id, call.function.name, json.loads(call.function.arguments)) == ("call_1", "get_weather",
                                                                                  {"city": "Paris"})
    assert response.usage.total_tokens == 12
    sent = backend.bodies[-1]
    assert sent["tools"] == TOOLS and sent["tool_choice"] == "auto" and sent["messages"] == messages


def test_passthrough_multi_turn_with_tool_result(client, backend):
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": json.dumps({"temp": 21})},
    ]
    response = client.chat.completions.create(model="none/scripted", messages=messages, tools=TOOLS)
    assert response.choices[0].message.content == "It is 21 degrees in Paris."
    assert backend.bodies[-1]["messages"] == messages  # every turn forwarded unchanged


def test_passthrough_streaming_tool_call_and_text(client):
    chunks = list(client.chat.completions.create(
        model="none/scripted", messages=[{"role": "user", "content": "weather in Paris?"}], tools=TOOLS,
        stream=True, stream_options={"include_usage": True}))
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls[0].function.name == "get_weather" and chunks[-1].usage.total_tokens == 12
    chunks = list(client.chat.completions.create(
        model="none/scripted", messages=[{"role": "user", "content": "hello"}], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWER


def test_completions_endpoint_with_a_strategy_and_passthrough(client):
    response = client.completions.create(model="cot/scripted", prompt=QUESTION, max_tokens=40)
    assert response.choices[0].text == ANSWER and response.usage.total_tokens > 0
    streamed = list(client.completions.create(model="cot/scripted", prompt=QUESTION, stream=True,
                                              stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in streamed if c.choices) == ANSWER
    assert streamed[-1].usage.total_tokens == response.usage.total_tokens
    raw = client.completions.create(model="scripted", prompt="Say something", n=2)  # the bare model: none
    assert [c.text for c in raw.choices] == [ANSWER, ANSWER]


def test_n_choices_each_solved(client):
    response = client.chat.completions.create(model="cot/scripted", n=3,
                                              messages=[{"role": "user", "content": QUESTION}])
    assert [c.index for c in response.choices] == [0, 1, 2]
    single = client.chat.completions.create(model="cot/scripted", messages=[{"role": "user", "content": QUESTION}])
    assert response.usage.total_tokens == 3 * single.usage.total_tokens


def test_multi_turn_history_reaches_the_strategy(client, backend):
    client.chat.completions.create(model="cot/scripted", messages=[
        {"role": "user", "content": "A box holds 4 apples."},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": "How many apples are in 3 boxes?"}])
    prompt = " ".join(str(m["content"]) for m in backend.requests[-1].messages)
    assert "A box holds 4 apples." in prompt and "How many apples are in 3 boxes?" in prompt


def test_models_health_and_metrics(client, server):
    ids = [m.id for m in client.models.list()]
    assert {"none/scripted", "cot/scripted", "stepco/scripted"} <= set(ids)
    assert httpx.get(server + "/health").json()["status"] == "ok"
    client.chat.completions.create(model="cot/scripted", messages=[{"role": "user", "content": QUESTION}])
    text = httpx.get(server + "/metrics").text
    assert 'redline_requests_total{endpoint="/v1/chat/completions",status="200",strategy="cot"}' in text
    assert 'redline_tokens_total{kind="completion",strategy="cot"}' in text
    assert 'redline_request_latency_seconds_bucket{le="+Inf",strategy="cot"}' in text
