"""`remote-prm` over real HTTP on 127.0.0.1 against a server speaking vLLM's /pooling JSON."""

from __future__ import annotations

import asyncio

import pytest

from redline.backends.base import LedgeredBackend
from redline.backends.scripted import ScriptedBackend
from redline.errors import BackendError, RedlineError, SpecError
from redline.registry import VERIFIERS
from redline.runtime import Runtime
from redline.server.background import serve_in_thread
from redline.spec import parse_component
from redline.verifiers.remote_prm import MATH_SHEPHERD_ISSUE, RemotePrmParams, RemotePrmVerifier, pooling_input
from tests.openai_app import closed_port
from tests.pooling_app import MODEL, PoolingControl, create_pooling_app, step_probability

QUESTION = "Tom has 3 apples and buys 4 more. How many now?"
GOOD = ["Tom starts with 3 apples.", "He buys 4, so 3 + 4 = 7.", "The answer is 7."]


@pytest.fixture(scope="module")
def control() -> PoolingControl:
    return PoolingControl()


@pytest.fixture(scope="module")
def url(control):
    with serve_in_thread(create_pooling_app(control)) as base:
        yield base


@pytest.fixture()
async def prm(url, control):
    control.reset()
    verifier = RemotePrmVerifier(RemotePrmParams(model=MODEL, base_url=url))
    yield verifier
    await verifier.aclose()


def test_input_is_the_qwen_prm_conversation():
    text = pooling_input("qwen-prm", QUESTION, ["a <extra_0> b", "c"])
    assert text.startswith("<|im_start|>system\nPlease reason step by step")
    assert f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n" in text
    assert text.endswith("c<extra_0><|im_end|>\n") and text.count("<extra_0>") == 2  # tags in steps are removed
    shepherd = pooling_input("math-shepherd", QUESTION, ["a", "b"])
    assert shepherd == f"{QUESTION} a ки\nb ки"


async def test_scores_match_the_server_and_candidates_share_one_request(prm, control):
    solutions = [GOOD, GOOD[:1] + ["This step is wrong: 3 + 4 = 8."], ["One step only."], GOOD[1:]]
    scores = await asyncio.gather(*(prm.score(QUESTION, s) for s in solutions))
    assert len(control.inputs) == 1 and len(control.inputs[0]) == 4  # batched: one /pooling request
    assert scores == control.computed  # exactly the p_positive the server computed, in order
    assert scores[0] == [step_probability(s) for s in GOOD]
    assert scores[1][1] == 0.05
    assert await prm.score(QUESTION, []) == [] and len(control.inputs) == 1  # no steps, no request


async def test_batches_are_bounded(url, control):
    control.reset()
    verifier = RemotePrmVerifier(RemotePrmParams(model=MODEL, base_url=url, batch_size=3))
    scores = await asyncio.gather(*(verifier.score(QUESTION, GOOD[: 1 + i % 3]) for i in range(7)))
    assert sorted(len(batch) for batch in control.inputs) == [1, 3, 3]
    assert [len(s) for s in scores] == [1 + i % 3 for i in range(7)]
    await verifier.aclose()


@pytest.mark.parametrize("fault, message", [
    ("drop_row", r"2 step rows for 3 steps"),
    ("drop_result", r"1 results for 2 inputs"),
    ("no_data", r"no 'data' list of results"),
    ("logits", r"not probabilities"),
    ("not_json", r"no 'data' list"),
])
async def test_malformed_replies_are_clear_errors(prm, control, fault, message):
    control.reset(fault)
    with pytest.raises(BackendError, match=f"remote-prm: malformed reply from http://127.0.0.1:\\d+: .*{message}"):
        await asyncio.gather(prm.score(QUESTION, GOOD[:1]), prm.score(QUESTION, GOOD))


async def test_unknown_model_names_the_served_ones(url):
    verifier = RemotePrmVerifier(RemotePrmParams(model="Qwen/Other-PRM", base_url=url))
    with pytest.raises(BackendError, match=f"'Qwen/Other-PRM' is not served at .*; valid: {MODEL}"):
        await verifier.score(QUESTION, GOOD)
    await verifier.aclose()


async def test_a_dead_endpoint_is_skipped(url, control):
    control.reset()
    dead = f"http://127.0.0.1:{closed_port()}"
    verifier = RemotePrmVerifier(RemotePrmParams(model=MODEL, base_url=f"{dead},{url}"))
    for _ in range(4):
        assert await verifier.score(QUESTION, GOOD) == [step_probability(s) for s in GOOD]
    dead_stats, live_stats = verifier.endpoints.stats()
    assert dead_stats.errors == dead_stats.calls >= 1 and live_stats.errors == 0 and live_stats.ok >= 4
    await verifier.aclose()


async def test_unreachable_server_is_one_error_after_retries():
    verifier = RemotePrmVerifier(RemotePrmParams(model=MODEL, base_url=f"http://127.0.0.1:{closed_port()}",
                                                 max_retries=1))
    with pytest.raises(BackendError, match="remote-prm: cannot reach .* after 2 attempts"):
        await verifier.score(QUESTION, GOOD)
    await verifier.aclose()


def test_spec_builds_with_several_endpoints_and_math_shepherd_warns(url):
    runtime = Runtime(backend=LedgeredBackend(ScriptedBackend(["x"])))
    spec = f"remote-prm:{MODEL},base_url=({url},{url.replace('127.0.0.1', 'localhost')})"
    verifier = VERIFIERS.build(parse_component(spec), runtime)
    assert verifier.endpoints.urls == [url, url.replace("127.0.0.1", "localhost")]
    with pytest.warns(UserWarning, match=MATH_SHEPHERD_ISSUE):
        VERIFIERS.build(parse_component(f"remote-prm:{MODEL},base_url={url},format=math-shepherd"), runtime)
    with pytest.raises(SpecError, match="format"):
        VERIFIERS.build(parse_component(f"remote-prm:{MODEL},base_url={url},format=auto"), runtime)
    with pytest.raises(RedlineError, match="needs the pooling server"):
        VERIFIERS.build(parse_component(f"remote-prm:{MODEL}"), runtime)


async def test_prm_endpoints_show_in_server_metrics(url, control):
    from redline.server.metrics import Metrics, endpoint_pools

    control.reset()
    runtime = Runtime(backend=LedgeredBackend(ScriptedBackend(["x"])))
    verifier = runtime.verifier(f"remote-prm:{MODEL},base_url={url}")
    await verifier.score(QUESTION, GOOD)
    text = Metrics(in_flight=lambda: 0, upstream=lambda: endpoint_pools(runtime)).render().decode()
    assert f'redline_upstream_calls_total{{endpoint="{url}",pool="remote-prm"}} 2.0' in text  # /v1/models, /pooling
    assert f'redline_upstream_errors_total{{endpoint="{url}",pool="remote-prm"}} 0.0' in text
    await verifier.aclose()


def test_server_clients_use_the_prm_by_its_declared_name_only(url, control):
    import httpx

    from redline.server.background import running_server

    control.reset()
    runtime = Runtime(backend=LedgeredBackend(ScriptedBackend(["Step 1: 3 + 4 = 7.\nThe answer is 7."])))
    runtime.declare_verifier("prm", f"remote-prm:{MODEL},base_url={url}")
    with running_server(runtime) as server:
        ok = httpx.post(f"{server}/v1/chat/completions", timeout=30, json={
            "model": "bon:n=2,verifier=prm/scripted", "messages": [{"role": "user", "content": QUESTION}]})
        refused = httpx.post(f"{server}/v1/chat/completions", timeout=30, json={
            "model": f"bon:n=2,verifier=(remote-prm:{MODEL},base_url=http://169.254.169.254)/scripted",
            "messages": [{"role": "user", "content": QUESTION}]})
    assert ok.status_code == 200 and ok.json()["redline"]["choices"][0]["answer"] == "7", ok.text
    assert [len(batch) for batch in control.inputs] == [2]  # both candidates in one /pooling request
    assert refused.status_code == 400 and "remote-prm" in refused.json()["error"]["message"]


async def test_token_classify_against_a_server_without_tokenize_is_one_clear_error(url, control):
    control.reset()
    verifier = RemotePrmVerifier(RemotePrmParams(model=MODEL, base_url=url, format="token-classify", max_retries=0))
    with pytest.raises(BackendError, match=r"remote-prm: the server at http://127.0.0.1:\d+/tokenize answered HTTP 404"):
        await verifier.score(QUESTION, GOOD)
    assert control.inputs == []  # nothing was sent to /pooling
    await verifier.aclose()
