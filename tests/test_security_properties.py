"""Property tests (hypothesis) for issue 15: the spec grammar round-trips and fails only with
SpecError, and no chat request body -- valid, mutated or random -- gets a 5xx or a traceback, in
the response or in the server's log. Real HTTP on 127.0.0.1, scripted backend."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redline.backends.base import LedgeredBackend
from redline.backends.scripted import ScriptedBackend
from redline.errors import SpecError
from redline.loop import is_component_name
from redline.runtime import Runtime
from redline.server import ServerSettings
from redline.server.background import running_server
from redline.spec import Component, parse_component, parse_pipeline, split_spec_list
from redline.trust import check_client_spec

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NAMES = st.from_regex(r"[A-Za-z][A-Za-z0-9_\-.]{0,6}", fullmatch=True)
KEYS = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True)
PLAIN = st.from_regex(r"[A-Za-z0-9_.\-]{1,8}", fullmatch=True)


def components(depth: int = 2) -> st.SearchStrategy[Component]:
    """Valid components whose values are plain words, comma lists, or nested components."""
    value = PLAIN | st.lists(PLAIN, min_size=2, max_size=3).map(",".join)
    if depth:
        value = value | st.deferred(lambda: components(depth - 1)).map(str)
    return st.builds(lambda name, args, params: Component(name, tuple(args), params), NAMES,
                     st.lists(value, max_size=2), st.dictionaries(KEYS, value, max_size=3))


@FAST
@given(components())
def test_str_of_a_parsed_spec_parses_back_to_the_same_component(component):
    assert parse_component(str(component)) == component
    assert parse_component(str(parse_component(str(component)))) == component


SPEC_ALPHABET = st.sampled_from(list("()+,:=/\\ ~.-_") + ["cot", "bon", "n", "verifier", "learned", "arith",
                                                        "ensemble", "judge", "8", "\x00", "\ud800", "é"])
SPEC_TEXT = st.lists(SPEC_ALPHABET, max_size=40).map("".join) | st.text(max_size=60)


@FAST
@given(SPEC_TEXT)
def test_parsing_any_text_returns_or_raises_spec_error(text):
    for parse in (parse_component, lambda t: parse_pipeline(t, is_component_name), split_spec_list,
                  lambda t: check_client_spec(t, {"mine"})):
        try:
            parse(text)
        except SpecError:
            pass


GOOD = {"model": "cot/scripted", "messages": [{"role": "user", "content": "What is 2 + 2?"}]}
SPECS = ["cot", "sc:n=2", "bon:n=2,verifier=arith", "bon:n=2,verifier=mine", "beam:n=2,width=1,max_depth=1",
         "stepco:max_iters=1", "bon:verifier=(ensemble:arith+judge,mode=min)", "none", "refine"]
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
JSON_VALUES = st.recursive(SCALARS,
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                      max_size=3), max_leaves=8)


def mutated(spec: str, cuts: list[tuple[int, str]]) -> str:
    for position, text in cuts:
        position %= len(spec) + 1
        spec = spec[:position] + text + spec[position:]
    return spec


FIELDS = st.sampled_from(["model", "messages", "n", "max_tokens", "temperature", "stream", "redline", "stop", "seed",
                          "top_p", "prompt", "tools"])
MUTATED = st.builds(mutated, st.sampled_from(SPECS), st.lists(st.tuples(st.integers(0, 60), SPEC_TEXT), max_size=2))
PARAMS = st.dictionaries(KEYS | st.text(max_size=8), PLAIN | st.integers() | st.booleans() | SPEC_TEXT, max_size=2)


@st.composite
def bodies(draw: st.DrawFn) -> dict:
    """Mostly near-valid specs (some mutated) in `model` or `redline`, sometimes odd fields of any JSON type."""
    kind = draw(st.integers(0, 9))
    body = dict(GOOD)
    if kind < 6:
        body["model"] = draw(MUTATED) + draw(st.sampled_from(["/scripted", "/scripted", "", "/other", "/"]))
    elif kind == 6:
        body["model"] = draw(SPEC_TEXT | JSON_VALUES)
    else:
        body["model"] = "scripted"
        body["redline"] = draw(st.fixed_dictionaries({"strategy": MUTATED}, optional={"params": PARAMS,
                                                                                      "trace": st.booleans()}))
    if draw(st.integers(0, 3)) == 0:
        body.update(draw(st.dictionaries(FIELDS, JSON_VALUES, min_size=1, max_size=2)))
    return body


BODIES = bodies()


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(logging.Formatter().format(record))


@pytest.fixture(scope="module")
def server():
    backend = ScriptedBackend(["Step 1: 2 + 2 = 4.\nThe answer is 4."])
    runtime = Runtime(backend=LedgeredBackend(backend), max_tokens=32)
    runtime.declare_verifier("mine", "arith:neutral=0.5")
    with running_server(runtime, ServerSettings(max_n=2, max_tokens_limit=64, timeout_s=20)) as url:
        with httpx.Client(base_url=url, timeout=30) as client:
            yield client


@pytest.fixture(scope="module")
def server_log(server):
    """Lines logged by redline and by uvicorn (which does not propagate), once the server has started."""
    handler = _Lines()
    loggers = [logging.getLogger("redline"), logging.getLogger("uvicorn")]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler
    for logger in loggers:
        logger.removeHandler(handler)


@FAST
@given(body=BODIES, stream=st.booleans())
def test_no_request_body_gets_a_5xx_or_a_traceback(server, server_log, body, stream):
    body = {**body, "stream": stream} if "stream" not in body else body
    response = server.post("/v1/chat/completions", content=json.dumps(body).encode("utf-8", "surrogatepass"),
                           headers={"Content-Type": "application/json"})
    assert response.status_code < 500, response.text
    assert "Traceback" not in response.text and 'File "' not in response.text
    assert "server_error" not in response.text  # a stream reports a failure in-band, after its 200
    if response.status_code >= 400:
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert not [line for line in server_log.lines if "Traceback" in line], server_log.lines[-1]
