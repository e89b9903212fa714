"""Issue 15 over real HTTP with the official openai client: a client cannot make the server open a
file, a folder, a hub id or code; the operator declares what is loadable; nothing leaks.

The server runs on the scripted backend (deterministic control flow); the exploit files are real
pickles whose payload would create a marker file.
"""

from __future__ import annotations

import pathlib
import pickle
import subprocess
import sys

import httpx
import numpy as np
import openai
import pytest

from redline.backends.base import LedgeredBackend
from redline.backends.scripted import ScriptedBackend
from redline.cli.serve import declare_verifiers
from redline.errors import RedlineError, SpecError
from redline.runtime import Runtime
from redline.server import ServerSettings
from redline.server.background import running_server
from redline.verifiers.features import DENSE_FEATURES, HASHED_FEATURES
from redline.verifiers.learned import LearnedVerifier, load_model_file, write_model_file

KEY = "k-sec"
RIGHT = "Step 1: 2 + 2 = 4.\nThe answer is 4."
WRONG = "Step 1: 2 + 2 = 5.\nThe answer is 5."
QUESTION = [{"role": "user", "content": "What is 2 + 2?"}]
SECRET_MODEL = "/srv/models/secret-model"


class Payload:
    """Unpickling this calls Path.touch(marker): the stand-in for code an attacker would run."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: D105
        return (pathlib.Path.touch, (self.marker,))


def two_answers(request, index):
    """Candidates alternate: a right and a wrong arithmetic claim."""
    return RIGHT if index % 2 == 0 else WRONG


def contrarian_model(path: pathlib.Path) -> pathlib.Path:
    """A learned model that prefers steps whose arithmetic is false: only it picks the wrong answer."""
    coef = np.zeros(HASHED_FEATURES + DENSE_FEATURES)
    coef[HASHED_FEATURES + 1] = 6.0  # dense feature 1: the arith verdict is 'false'
    return write_model_file(path, coef, -2.0, {"note": "test"})


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("security")
    marker = tmp / "pwned"
    evil = tmp / "evil.joblib"
    evil.write_bytes(pickle.dumps(Payload(marker)))
    return {"tmp": tmp, "marker": marker, "evil": evil, "model": contrarian_model(tmp / "prm.safetensors")}


@pytest.fixture(scope="module")
def runtime(files):
    runtime = Runtime(backend=LedgeredBackend(ScriptedBackend(two_answers, model=SECRET_MODEL)), max_tokens=48)
    declare_verifiers(runtime, [f"mine={'learned:' + str(files['model'])}"])
    return runtime


@pytest.fixture(scope="module")
def server(runtime):
    with running_server(runtime, ServerSettings(api_keys=(KEY,))) as url:
        yield url


@pytest.fixture()
def client(server):
    with openai.OpenAI(base_url=server + "/v1", api_key=KEY, max_retries=0) as client:
        yield client


def test_the_exploit_file_really_runs_code_when_unpickled(files):
    """The regression below would be vacuous if the payload were inert."""
    pickle.loads(files["evil"].read_bytes())
    assert files["marker"].exists()
    files["marker"].unlink()


def refused(client, files, model: str, **kwargs) -> str:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=model, messages=QUESTION, **kwargs)
    error = caught.value.body
    assert caught.value.status_code == 400 and error["type"] == "invalid_request_error"
    assert not files["marker"].exists()
    assert str(files["tmp"]) not in error["message"] and "Traceback" not in error["message"]
    return error["message"]


def test_the_pickle_exploit_is_refused_before_anything_is_opened(client, files):
    message = refused(client, files, f"bon:n=1,verifier=(learned:{files['evil']})/scripted")
    assert "'learned' opens files or runs code" in message
    assert "verifiers clients may use: arith" in message and "mine" in message and "--verifier NAME=SPEC" in message
    # the same file named by the operator: refused as a pickle, and still nothing runs
    with pytest.raises(RedlineError, match="old joblib/pickle .* retrain it with `redline verifier train"):
        load_model_file(files["evil"])
    assert not files["marker"].exists()


@pytest.mark.parametrize("spec", [
    "bon:n=1,verifier=(learned:../..)",
    "bon:n=1,verifier=(hf-prm:/)",
    "bon:n=1,verifier=(hf-prm:Qwen/Qwen2.5-Math-PRM-7B,trust_remote_code=true)",
    "bon:n=1,verifier=(ensemble:arith+(learned:EVIL))",
    "bon:n=1,verifier=(ensemble:(ensemble:judge+(hf-prm:/tmp,trust_remote_code=true))+arith)",
    "bon:n=1,verifier=(remote-prm:m,base_url=http://169.254.169.254)",
    "cot:trust_remote_code=true",
    "bon:verifier=(judge:path=../x)",
    "bon:n=1,verifier=(mine:path=EVIL)",
    "bon:n=1,verifier=(../../etc/passwd)",
])
def test_variants_that_name_files_hub_ids_or_code_are_400(client, files, spec):
    message = refused(client, files, spec.replace("EVIL", str(files["evil"])) + "/scripted")
    assert "operator" in message or "clients may not name" in message


def test_the_same_specs_in_extra_body_are_refused(client, files):
    evil = f"learned:{files['evil']}"
    refused(client, files, "scripted", extra_body={"redline": {"strategy": f"bon:n=1,verifier=({evil})"}})
    refused(client, files, "scripted", extra_body={"redline": {"strategy": "bon", "params": {"verifier": evil}}})
    refused(client, files, "scripted", extra_body={"redline": {"strategy": "bon",
                                                               "params": {"trust_remote_code": True}}})
    message = refused(client, files, "scripted", extra_body={"redline": {"strategy": "bon",
                                                                         "params": {"n=1,verifier": evil}}})
    assert "redline.params" in message


def test_deep_nesting_and_huge_specs_are_400_and_the_server_stays_up(client, files, server):
    deep = "bon:verifier=" + "(" * 10_000 + "arith" + ")" * 10_000
    assert "nested deeper than 16" in refused(client, files, deep + "/scripted")
    assert "spec too long" in refused(client, files, "bon:n=1,verifier=" + "a" * 990_000 + "/scripted")
    with pytest.raises(openai.APIStatusError) as caught:  # over the 1 MB body limit
        client.chat.completions.create(model="bon:n=1,verifier=" + "a" * 1_000_001, messages=QUESTION)
    assert caught.value.status_code == 413
    for text in ("cot:n=1\x00", "sc:n=" + "9" * 40, "stepco:threshold=nan", "sc:temperature=inf",
                 "cot:max_tokens_total=-5", "sc:n=2,n=3", "sc:n=-1"):
        refused(client, files, text + "/scripted")
    auth = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    messages = b'"messages": [{"role": "user", "content": "hi"}]'
    for raw, words in ((b'{"model": "sc:n=\\ud800/scripted", ' + messages + b"}", "not valid UTF-8"),
                       (b'{"model": "sc:n=\xff/scripted", ' + messages + b"}", "malformed JSON"),
                       (b'{"model": "cot/scripted", "model": "bon:verifier=x/scripted", ' + messages + b"}",
                        "appears twice"),
                       (b'{"model": "cot/scripted", "temperature": NaN, ' + messages + b"}", "NaN"),
                       (b'{"model": "cot/scripted", "n": 1' + b"0" * 5000 + b", " + messages + b"}", "too large")):
        response = httpx.post(server + "/v1/chat/completions", content=raw, headers=auth)
        assert response.status_code == 400 and words in response.json()["error"]["message"], response.text
    assert client.chat.completions.create(model="cot/scripted", messages=QUESTION).choices[0].message.content


def test_operator_declared_verifier_works_end_to_end(client, runtime):
    by_arith = client.chat.completions.create(model="bon:n=2/scripted", messages=QUESTION)
    by_mine = client.chat.completions.create(model="bon:n=2,verifier=mine/scripted", messages=QUESTION)
    assert by_arith.choices[0].message.content.endswith("4.")
    assert by_mine.choices[0].message.content.endswith("5.")  # only the declared model prefers the false claim
    assert isinstance(runtime.verifiers["mine"], LearnedVerifier)
    nested = client.chat.completions.create(model="bon:n=2,verifier=(ensemble:mine+arith,mode=mean)/scripted",
                                            messages=QUESTION)
    assert nested.choices[0].message.content


def test_declarations_are_checked_at_start_up(files, tmp_path):
    runtime = Runtime(backend=LedgeredBackend(ScriptedBackend([RIGHT])))
    for item, match in [("mine", "NAME=SPEC"), ("arith=learned:x", "not a built-in name"),
                        ("ok=nosuch:x", "unknown verifier"), (f"ok=learned:{files['evil']}", "old joblib")]:
        with pytest.raises((RedlineError, SpecError), match=match):
            declare_verifiers(Runtime(backend=runtime.backend), [item])
    assert not files["marker"].exists()
    run = subprocess.run([str(pathlib.Path(sys.executable).with_name("redline")), "serve", "--backend", "openai",
                          "--base-url", "http://127.0.0.1:9/v1", "--model", "m",
                          "--verifier", f"mine=learned:{tmp_path / 'none.safetensors'}"],
                         capture_output=True, text=True, timeout=120)
    output = run.stdout + run.stderr
    assert run.returncode == 2 and "no learned verifier at" in output and "Traceback" not in output


def test_health_shows_details_only_to_a_key_holder_and_no_message_names_the_model_path(server, client):
    assert httpx.get(server + "/health").json() == {"status": "ok"}
    assert httpx.get(server + "/health", headers={"Authorization": "Bearer wrong"}).json() == {"status": "ok"}
    details = httpx.get(server + "/health", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert details["model"] == SECRET_MODEL and details["verifiers"] == ["mine"] and details["in_flight"] == 0
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="cot/gpt-9", messages=QUESTION)
    assert "scripted" in caught.value.message and "/srv" not in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="stepcoo/scripted", messages=QUESTION)
    assert "/srv" not in caught.value.message
    assert all("/srv" not in m.id for m in client.models.list().data)


def test_backend_failures_and_bugs_reach_the_client_without_their_text():
    from redline.errors import BackendError

    def failing(request, index):
        if "bug" in request.messages[-1]["content"]:
            raise KeyError("/srv/secret/thing")
        raise BackendError("cannot reach http://10.1.2.3:8000/v1 after 3 attempts (ConnectError: refused)")

    runtime = Runtime(backend=LedgeredBackend(ScriptedBackend(failing)))
    with running_server(runtime) as url, openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0) as client:
        for content, status in (("backend", 502), ("bug", 500)):
            with pytest.raises(openai.APIStatusError) as caught:
                client.chat.completions.create(model="cot/scripted", messages=[{"role": "user", "content": content}])
            assert caught.value.status_code == status
            text = caught.value.response.text
            assert "10.1.2.3" not in text and "/srv" not in text and "ConnectError" not in text
            assert "KeyError" not in text and "Traceback" not in text and "log" in caught.value.message
            with pytest.raises(openai.APIError) as streamed:  # the same failures, in-band after a 200
                list(client.chat.completions.create(model="cot/scripted", stream=True,
                                                    messages=[{"role": "user", "content": content}]))
            assert "10.1.2.3" not in streamed.value.message and "/srv" not in streamed.value.message
            assert "request " in streamed.value.message and "log" in streamed.value.message


def test_a_client_runtime_checks_every_verifier_it_builds_and_new_file_verifiers_are_operator_only(files):
    from pydantic import Field

    from redline.registry import Params, Registry

    operator = Runtime(backend=LedgeredBackend(ScriptedBackend([RIGHT])))
    operator.declare_verifier("both", f"ensemble:arith+(learned:{files['model']})")
    client = Runtime(backend=operator.backend, declared=operator.declared, verifiers=operator.verifiers, clients=True)
    assert client.verifier("both").members[1].name == "learned"  # the operator's spec may open its own file
    for spec in (f"learned:{files['model']}", f"ensemble:arith+(learned:{files['evil']})", "hf-prm:/"):
        with pytest.raises(SpecError, match="only the server's operator may use it"):
            client.verifier(spec)
    assert operator.verifier(f"learned:{files['model']}").name == "learned"  # the CLI still takes paths
    assert not files["marker"].exists()

    class WithCheckpoint(Params):
        checkpoint: str = Field(description="a file")

    registry: Registry[object] = Registry("verifier")
    registry.register("new-prm", WithCheckpoint)(lambda params, runtime: None)
    registry.register("plain", Params)(lambda params, runtime: None)
    assert registry.get("new-prm").operator_only and not registry.get("plain").operator_only
