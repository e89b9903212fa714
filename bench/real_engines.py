"""redline against the real engines: vLLM (the CPU build) and llama.cpp's OpenAI-compatible server.

The stand-ins in tests/ agree with our reading of the engines; this script checks the engines
themselves. It needs the peers that `bench/peers.py` (`make peers`) sets up outside the project.
Each engine runs on 127.0.0.1 at a free port, with a bounded start-up wait, its log kept under
--logs, and is stopped at exit (Ctrl-C included). Checks, each a row of the final table:
- strategies: every strategy through `redline solve --backend openai`: exit 0, a parsed answer, and
  usage (prompt, cached, completion tokens) equal to what the engine's responses said, summed over
  the calls a recording proxy saw; on vLLM also its own counters (/metrics) for completion tokens;
- params: `n`, `logprobs` with top alternatives, `stop` and `seed` as the engine applies them, and
  what redline does where an engine ignores one (n: redline makes the missing calls itself);
- cache: the same prompt twice, and StepCo's share of cached prompt tokens (vLLM caches whole
  blocks only: the recipe uses --block-size 32, see the README);
- replicas: two vLLM replicas behind `--base-url a,b`: an eval with one replica killed halfway
  (no lost or duplicated rows, the survivor takes the load), and the killed one back in the
  backend's pool after a restart;
- prm: a token-classification PRM on vLLM's pooling runner, scored through `remote-prm`, against
  the same model in float32 through transformers;
- serve: `redline serve` in front of vLLM, called with the official `openai` client, streaming too.

    .venv/bin/python bench/real_engines.py [--quick] [--engines vllm,llamacpp] [--replica-problems 200]
        [--throughput 50] [--prm DIR] [--logs runs/real_engines]

--quick runs every check at its smallest size (under 10 minutes on a 2-core machine, start-ups
included). --throughput N adds a table of `redline eval` throughput (cot and bon:n=4 on N dev problems,
concurrency 1 and 4) on the local engine, llama.cpp's server and vLLM. Exit status 1 when a check fails,
2 when the peers are missing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import openai
from fastapi import FastAPI, Request
from fastapi.responses import Response

from peers import default_dir
from redline.backends.base import GenerationRequest
from redline.backends.openai_compat import OpenAIBackend
from redline.verifiers.calibration import read_center

ROOT = Path(__file__).resolve().parents[1]
REDLINE = str(Path(sys.executable).parent / "redline")
DEV = ROOT.parent / "shared" / "data" / "asdiv" / "test.jsonl"
QUESTION = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
            "How many clips did Natalia sell altogether in April and May?")
BLOCK_SIZE = 32  # vLLM's prefix cache keeps whole blocks; 32 tokens reuse more of a prompt than bigger ones
STRATEGIES = {  # quick size, full size
    "cot": ("cot", "cot"),
    "sc": ("sc:n=4", "sc:n=4"),
    "bon": ("bon:n=4", "bon:n=4"),
    "stepco": ("stepco:max_iters=2", "stepco"),
    "beam": ("beam:n=4,width=2,max_depth=4", "beam"),
    "mcts": ("mcts:sims=3,k=2,max_depth=4", "mcts"),
    "adaptive": ("adaptive:k=4,max_rounds=1", "adaptive"),
    "refine": ("refine:iterations=1", "refine"),
}


@dataclass
class Row:
    check: str
    engine: str
    ok: bool | None  # None: reported, not judged
    figure: str

    @property
    def result(self) -> str:
        return {True: "PASS", False: "FAIL", None: "info"}[self.ok]


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)

    def add(self, check: str, engine: str, ok: bool | None, figure: str) -> None:
        row = Row(check, engine, ok, figure)
        self.rows.append(row)
        print(f"  {row.result:4}  {check:22} {engine:9} {figure}", flush=True)

    def guard(self, check: str, engine: str, run: Callable[[], None]) -> None:
        """Run one check; an exception in it is that check's failure, not the script's end."""
        try:
            run()
        except Exception as e:  # noqa: BLE001 - a broken check is a FAIL row with its reason
            self.add(check, engine, False, f"{type(e).__name__}: {' '.join(str(e).split())[:160]}")

    def table(self) -> str:
        widths = [max(len(r.check) for r in self.rows), max(len(r.engine) for r in self.rows)]
        lines = [f"{'check':{widths[0]}}  {'engine':{widths[1]}}  result  figure"]
        lines += [f"{r.check:{widths[0]}}  {r.engine:{widths[1]}}  {r.result:6}  {r.figure}" for r in self.rows]
        return "\n".join(lines)

    @property
    def failed(self) -> bool:
        return any(r.ok is False for r in self.rows)


# ---------------------------------------------------------------- engines as child processes

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Engine:
    """A server process on 127.0.0.1:port in its own process group, its output in a log file."""

    running: list["Engine"] = []

    def __init__(self, name: str, command: list[str], logs: Path, env: dict[str, str] | None = None,
                 port: int | None = None) -> None:
        self.name, self.logs = name, logs
        self.port = port or free_port()
        self.command = [c.replace("{port}", str(self.port)) for c in command]
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_s = 0.0

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.root}/v1"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout_s: float) -> float:
        """Start and wait until GET /v1/models answers; the start-up time in seconds."""
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"{self.name}.log", "ab")
        log.write(f"\n==== {time.strftime('%H:%M:%S')} {' '.join(self.command)}\n".encode())
        log.flush()
        t0 = time.perf_counter()
        self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                        start_new_session=True)
        log.close()
        Engine.running.append(self)
        while time.perf_counter() - t0 < timeout_s:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode} while starting; "
                                   f"see {self.logs / (self.name + '.log')}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/models", timeout=2).status_code == 200:
                    self.startup_s = time.perf_counter() - t0
                    return self.startup_s
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer within {timeout_s:.0f} s; see "
                           f"{self.logs / (self.name + '.log')}")

    def kill(self) -> None:
        """SIGKILL, as a crashed replica."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        if self in Engine.running:
            Engine.running.remove(self)

    @classmethod
    def stop_all(cls) -> None:
        for engine in list(cls.running):
            engine.stop()


def metrics(engine: Engine) -> dict[str, float]:
    """vLLM's Prometheus counters, summed over label sets: {'vllm:prompt_tokens_total': ...}."""
    totals: dict[str, float] = {}
    for line in httpx.get(f"{engine.root}/metrics", timeout=10).text.splitlines():
        match = re.match(r"^(vllm:[a-z_]+)(?:\{[^}]*\})? ([0-9.e+-]+)$", line)
        if match:
            totals[match[1]] = totals.get(match[1], 0.0) + float(match[2])
    return totals


# ---------------------------------------------------------------- a recording proxy

@dataclass
class Seen:
    path: str
    n: int
    choices: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int


class RecordingProxy:
    """Forwards /v1/* to an engine and keeps what each call asked (n) and what the engine answered
    (choices, usage): the engine's own bill, to hold redline's accounting against."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.seen: list[Seen] = []
        app = FastAPI()

        @app.api_route("/v1/{path:path}", methods=["GET", "POST"])
        async def forward(path: str, request: Request) -> Response:
            body = await request.body()
            try:
                async with httpx.AsyncClient(timeout=600) as client:
                    reply = await client.request(request.method, f"{self.upstream}/{path}", content=body,
                                                 headers={"content-type": "application/json"})
            except httpx.TransportError as e:  # the engine is down: a gateway error, as a real proxy says
                return Response(json.dumps({"error": {"message": str(e)}}), status_code=502)
            if request.method == "POST" and reply.status_code == 200:
                self._record(path, json.loads(body or b"{}"), reply.json())
            return Response(reply.content, status_code=reply.status_code,
                            media_type=reply.headers.get("content-type"))

        self.app = app

    def _record(self, path: str, asked: dict[str, Any], answer: dict[str, Any]) -> None:
        usage = answer.get("usage") or {}
        details = usage.get("prompt_tokens_details") or {}
        self.seen.append(Seen(path, int(asked.get("n") or 1), len(answer.get("choices") or ()),
                              int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0),
                              int(details.get("cached_tokens") or 0)))

    @contextlib.contextmanager
    def serving(self) -> Iterator[str]:
        from redline.server.background import serve_in_thread

        with serve_in_thread(self.app) as url:
            yield f"{url}/v1"

    def totals(self) -> tuple[int, int, int, int]:
        """(calls, prompt, cached, completion tokens) over what was seen."""
        return (len(self.seen), sum(s.prompt_tokens for s in self.seen), sum(s.cached_tokens for s in self.seen),
                sum(s.completion_tokens for s in self.seen))


# ---------------------------------------------------------------- checks

def solve(url: str, spec: str, max_tokens: int) -> dict[str, Any]:
    run = subprocess.run([REDLINE, "solve", QUESTION, "--backend", "openai", "--base-url", url, "--strategy", spec,
                          "--max-tokens", str(max_tokens), "--json"], capture_output=True, text=True, timeout=900)
    if run.returncode != 0:
        raise RuntimeError(f"exit {run.returncode}: {run.stderr.strip()[-200:]}")
    return json.loads(run.stdout)  # type: ignore[no-any-return]


def check_strategies(report: Report, engine: Engine, quick: bool, max_tokens: int) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    proxy = RecordingProxy(engine.url)
    with proxy.serving() as url:
        for name, sizes in STRATEGIES.items():
            spec = sizes[0] if quick else sizes[1]

            def one() -> None:
                proxy.seen.clear()
                before = metrics(engine) if engine.name.startswith("vllm") else {}
                t0 = time.perf_counter()
                result = solve(url, spec, max_tokens)
                wall = time.perf_counter() - t0
                results[name] = result
                u = result["usage_total"]
                calls, prompt, cached, completion = proxy.totals()
                mine = (u["calls"], u["prompt_tokens"], u["cached_prompt_tokens"], u["completion_tokens"])
                ok = result["answer"] is not None and mine[1:] == (prompt, cached, completion)
                figure = (f"{spec}: answer {result['answer']!r}, {wall:.0f} s, redline {mine[0]} calls "
                          f"P/K/C {mine[1]}/{mine[2]}/{mine[3]}; engine {calls} calls {prompt}/{cached}/{completion}")
                if before:
                    time.sleep(1)  # the engine's counters follow its last step
                    after = metrics(engine)
                    generated = after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"]
                    ok = ok and generated == completion
                    figure += f"; /metrics C {generated:.0f}"
                report.add(f"strategy {name}", engine.name, ok, figure)

            if engine.alive:
                report.guard(f"strategy {name}", engine.name, one)
    return results


def check_params(report: Report, engine: Engine) -> None:
    client = openai.OpenAI(base_url=engine.url, api_key="EMPTY", max_retries=0, timeout=300)
    model = client.models.list().data[0].id
    messages = [{"role": "user", "content": QUESTION}]

    def native_n() -> None:
        one = client.chat.completions.create(model=model, messages=messages, max_tokens=16, temperature=0.8, seed=1)
        four = client.chat.completions.create(model=model, messages=messages, max_tokens=16, temperature=0.8,
                                              seed=1, n=4)
        assert one.usage and four.usage
        proxy = RecordingProxy(engine.url)
        with proxy.serving() as url:
            samples = run(_generate(url, GenerationRequest(messages=messages, n=4, temperature=0.8, seed=1,
                                                           max_tokens=16)))
        engine_gives = len(four.choices)
        ok = len(samples) == 4 and (engine_gives == 4 or len(proxy.seen) == 1 + (4 - engine_gives))
        billed = "once" if four.usage.prompt_tokens == one.usage.prompt_tokens else \
            f"{four.usage.prompt_tokens / one.usage.prompt_tokens:.1f}x"
        report.add("n=4", engine.name, ok,
                   f"engine: {engine_gives} choices, prompt billed {billed} ({four.usage.prompt_tokens} tokens); "
                   f"redline: {len(samples)} samples in {len(proxy.seen)} calls "
                   f"({len({s.text for s in samples})} distinct)")

    def logprobs() -> None:
        reply = client.chat.completions.create(model=model, messages=messages, max_tokens=8, temperature=0,
                                               logprobs=True, top_logprobs=3)
        content = reply.choices[0].logprobs.content if reply.choices[0].logprobs else None
        engine_top = sorted({len(t.top_logprobs) for t in content or ()})
        [mine] = run(_generate(engine.url, GenerationRequest(messages=messages, max_tokens=8, logprobs=3)))
        mine_ok = mine.logprobs is not None and len(mine.logprobs) == mine.completion_tokens and \
            all(len(t.top) == 3 for t in mine.logprobs)
        text = client.completions.create(model=model, prompt="2 + 3 =", max_tokens=4, temperature=0, logprobs=3)
        raw = text.choices[0].logprobs
        raw_top = sorted({len(t or {}) for t in (raw.top_logprobs or [])}) if raw else []
        report.add("logprobs top=3", engine.name, bool(mine_ok and engine_top == [3]),
                   f"chat: {len(content or ())} tokens with {engine_top} alternatives; completions: {raw_top}; "
                   f"redline: {len(mine.logprobs or ())} tokens, tops {sorted({len(t.top) for t in mine.logprobs or ()})}")

    def stop() -> None:
        free = client.chat.completions.create(model=model, messages=messages, max_tokens=64, temperature=0)
        cut = client.chat.completions.create(model=model, messages=messages, max_tokens=64, temperature=0,
                                             stop=["\n"])
        a, b = free.choices[0].message.content or "", cut.choices[0].message.content or ""
        [mine] = run(_generate(engine.url, GenerationRequest(messages=messages, max_tokens=64, stop=("\n",))))
        ok = "\n" not in b and "\n" not in mine.text and cut.choices[0].finish_reason == "stop" and \
            a.startswith(b) and mine.text == b
        report.add("stop", engine.name, ok,
                   f"without stop {len(a)} chars ({a.count(chr(10))} newlines); with stop=['\\n'] {len(b)} chars, "
                   f"finish {cut.choices[0].finish_reason!r}; redline {len(mine.text)} chars")

    def seed() -> None:
        texts = [client.chat.completions.create(model=model, messages=messages, max_tokens=24, temperature=1.0,
                                                seed=s).choices[0].message.content for s in (7, 7, 8)]
        report.add("seed", engine.name, texts[0] == texts[1],
                   f"same seed twice {'identical' if texts[0] == texts[1] else 'DIFFERENT'}; another seed "
                   f"{'differs' if texts[0] != texts[2] else 'identical'}")

    for name, check in (("n=4", native_n), ("logprobs top=3", logprobs), ("stop", stop), ("seed", seed)):
        report.guard(name, engine.name, check)


def check_cache(report: Report, engine: Engine, stepco: dict[str, Any] | None) -> None:
    def same_prompt_twice() -> None:
        long_question = " ".join([QUESTION] * 3)
        request = GenerationRequest(messages=[{"role": "user", "content": long_question}], max_tokens=4)
        first, second = (run(_generate(engine.url, request))[0] for _ in range(2))
        is_vllm = engine.name.startswith("vllm")
        # vLLM must report whole blocks; llama.cpp's server: reported, not judged
        ok = (second.cached_tokens > 0 and second.cached_tokens % BLOCK_SIZE == 0) if is_vllm else None
        report.add("cache same prompt", engine.name, ok,
                   f"prompt {second.prompt_tokens} tokens: cached {first.cached_tokens} then {second.cached_tokens}"
                   + (f" (whole {BLOCK_SIZE}-token blocks)" if is_vllm else ""))

    report.guard("cache same prompt", engine.name, same_prompt_twice)
    if stepco is not None:
        u = stepco["usage_total"]
        share = u["cached_prompt_tokens"] / max(u["prompt_tokens"], 1)
        revise = stepco["usage"].get("revise")
        report.add("cache stepco", engine.name, (share > 0) if engine.name.startswith("vllm") else None,
                   f"{u['cached_prompt_tokens']}/{u['prompt_tokens']} prompt tokens cached ({share:.0%}); revise phase "
                   + (f"{revise['cached_prompt_tokens']}/{revise['prompt_tokens']}" if revise else "not reached"))


def _sample_store(run_dir: Path) -> tuple[int, int, int]:
    """(rows, distinct problems, errors) in an eval store."""
    with contextlib.closing(sqlite3.connect(run_dir / "results.db")) as db:
        rows, distinct = db.execute("SELECT COUNT(*), COUNT(DISTINCT problem_id) FROM results").fetchone()
        errors = db.execute("SELECT COUNT(*) FROM errors").fetchone()[0]
    return int(rows), int(distinct), int(errors)


def check_replicas(report: Report, make_vllm: Callable[[str, int | None], Engine], first: Engine, problems: int,
                   logs: Path, timeout_s: float) -> None:
    second = make_vllm("vllm-b", None)
    report.add("start vllm-b", second.name, True, f"{second.start(timeout_s):.0f} s")
    urls = f"{first.url},{second.url}"

    def eval_with_kill() -> None:
        run_dir = logs / "replica-eval"
        subprocess.run(["rm", "-rf", str(run_dir)], check=True)
        served = {e.name: metrics(e)["vllm:request_success_total"] for e in (first, second)}
        t0 = time.perf_counter()
        child = subprocess.Popen([REDLINE, "eval", "--data", str(DEV), "--limit", str(problems), "--concurrency", "16",
                                  "--backend", "openai", "--base-url", urls, "--strategies", "cot", "--max-tokens", "128",
                                  "--out", str(run_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        killed_at = None
        while child.poll() is None:
            time.sleep(0.5)
            if killed_at is None and (run_dir / "results.db").exists():
                with contextlib.suppress(sqlite3.Error):
                    if _sample_store(run_dir)[0] >= max(1, problems // 3):
                        killed_at = _sample_store(run_dir)[0]
                        at_kill = metrics(first)["vllm:request_success_total"]
                        second.kill()
        stderr = child.stderr.read() if child.stderr else ""
        wall = time.perf_counter() - t0
        rows, distinct, errors = _sample_store(run_dir)
        survivor = metrics(first)["vllm:request_success_total"]
        after_kill = survivor - at_kill if killed_at is not None else 0
        ok = child.returncode == 0 and rows == distinct == problems and errors == 0 and killed_at is not None \
            and after_kill > 0
        report.add("replica kill eval", "vllm x2", ok,
                   f"{problems} problems at concurrency 16 in {wall:.0f} s, vllm-b killed after {killed_at} rows: "
                   f"{rows} rows, {distinct} distinct, {errors} errors; vllm-a served {after_kill:.0f} requests "
                   f"after the kill ({survivor - served['vllm-a']:.0f} in all)" + (f"; {stderr.strip()[-120:]}"
                                                                                      if child.returncode else ""))

    def comes_back() -> None:
        async def scenario() -> tuple[int, int, float, bool]:
            second.kill()  # down since the eval's kill; killed here when that check did not get so far
            backend = OpenAIBackend(base_url=urls, probe_interval_s=1.0, max_retries=4, timeout_s=120)
            request = GenerationRequest(messages=[{"role": "user", "content": QUESTION}], max_tokens=8)
            try:
                b = next(e.stats for e in backend.endpoints.endpoints if e.stats.url == second.url)
                results = await asyncio.gather(*(backend.generate(request) for _ in range(6)), return_exceptions=True)
                lost = sum(isinstance(r, BaseException) for r in results)
                taken_out = not b.in_service
                t0 = time.perf_counter()
                await asyncio.to_thread(second.start, timeout_s)
                while not b.in_service and time.perf_counter() - t0 < timeout_s + 30:
                    await asyncio.sleep(0.5)
                back_s = time.perf_counter() - t0
                before = b.ok
                await asyncio.gather(*(backend.generate(request) for _ in range(6)))
                return lost, b.ok - before, back_s, taken_out
            finally:
                await backend.aclose()

        lost, served_after, back_s, taken_out = run(scenario())
        report.add("replica comes back", "vllm x2", lost == 0 and taken_out and served_after > 0,
                   f"while down: taken out {taken_out}, {lost} of 6 requests lost; restarted, back in the pool "
                   f"{back_s:.0f} s later (start-up included), then served {served_after} of 6")

    report.guard("replica kill eval", "vllm x2", eval_with_kill)
    report.guard("replica comes back", "vllm x2", comes_back)
    second.stop()


def check_serve(report: Report, engine: Engine, logs: Path, timeout_s: float) -> None:
    server = Engine("redline-serve", [REDLINE, "serve", "--backend", "openai", "--base-url", engine.url,
                                      "--host", "127.0.0.1", "--port", "{port}", "--max-tokens", "96"], logs)
    server.start(timeout_s)
    try:
        client = openai.OpenAI(base_url=server.url, api_key="EMPTY", max_retries=0, timeout=300)
        messages = [{"role": "user", "content": QUESTION}]
        plain = client.chat.completions.create(model="cot", messages=messages)
        chunks = list(client.chat.completions.create(model="cot", messages=messages, stream=True,
                                                     stream_options={"include_usage": True}))
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        usage = next((c.usage for c in chunks if c.usage), None)
        text = plain.choices[0].message.content or ""
        ok = bool(text) and streamed == text and plain.usage is not None and plain.usage.completion_tokens > 0 \
            and usage is not None and usage.completion_tokens == plain.usage.completion_tokens
        report.add("redline serve", engine.name, ok,
                   f"started in {server.startup_s:.0f} s; cot: {len(text)} chars, "
                   f"{plain.usage.completion_tokens if plain.usage else '?'} completion tokens; stream: {len(chunks)} "
                   f"chunks, {'same text' if streamed == text else 'DIFFERENT text'}, usage "
                   f"{usage.completion_tokens if usage else 'missing'}")
        model = httpx.get(f"{engine.url}/models", timeout=10).json()["data"][0]["id"]  # bare name: pass-through
        both = client.chat.completions.create(model=model, messages=messages, n=2, temperature=0.8, seed=3,
                                              max_tokens=16)
        quiet = list(client.chat.completions.create(model=model, messages=messages, max_tokens=16, stream=True))
        asked = list(client.chat.completions.create(model=model, messages=messages, max_tokens=16, stream=True,
                                                    stream_options={"include_usage": True}))
        ok = len(both.choices) == 2 and all(c.choices for c in quiet) and asked[-1].usage is not None
        report.add("serve pass-through", engine.name, ok,
                   f"n=2: {len(both.choices)} choices; stream without include_usage: "
                   f"{sum(1 for c in quiet if not c.choices)} usage-only chunks; with it: usage "
                   f"{asked[-1].usage.completion_tokens if asked[-1].usage else 'missing'}")
    finally:
        server.stop()


def check_prm(report: Report, engine: Engine, prm_dir: Path, name: str) -> None:
    """remote-prm (format token-classify) against the same model in float32 through transformers, both
    cutting where the folder's calibration says."""
    from redline.runtime import Runtime

    steps = ["Natalia sold 48 / 2 = 24 clips in May.", "So she sold 48 + 24 = 72 clips.", "The answer is 72."]
    reference = token_classify_reference(prm_dir, QUESTION, steps)
    center = read_center(prm_dir)  # hf-prm applies the folder's fitted cut; remote-prm is told it
    cut = "" if center is None else f",center={center}"

    async def remote() -> list[float]:
        verifier = Runtime(backend=None).verifier(  # type: ignore[arg-type]
            f"remote-prm:{name},base_url={engine.url},format=token-classify{cut}")
        try:
            return list(await verifier.score(QUESTION, steps))
        finally:
            await verifier.aclose()

    scores = run(remote())
    gap = max(abs(a - b) for a, b in zip(scores, reference))
    report.add("prm pooling", engine.name, len(scores) == len(steps) and gap <= 0.02,
               f"remote-prm{cut} {[round(s, 3) for s in scores]} vs transformers float32 "
               f"{[round(s, 3) for s in reference]}: max gap {gap:.4f}")


def token_classify_reference(prm_dir: Path, question: str, steps: list[str]) -> list[float]:
    """hf-prm's scores of the same text (its token-classify reading), float32 on this machine."""
    from redline.runtime import Runtime

    verifier = Runtime(backend=None).verifier(f"hf-prm:{prm_dir},format=token-classify,device=cpu,dtype=float32")  # type: ignore[arg-type]
    return list(run(verifier.score(question, steps)))


# ---------------------------------------------------------------- throughput

def check_throughput(report: Report, engine: str, backend_args: list[str], problems: int, logs: Path) -> None:
    """`redline eval` of cot and bon:n=4 at concurrency 1 and 4: wall time and completion tokens/s."""
    for spec in ("cot", "bon:n=4"):
        for concurrency in (1, 4):
            run_dir = logs / "throughput" / f"{engine}-{spec.replace(':', '_')}-c{concurrency}"
            subprocess.run(["rm", "-rf", str(run_dir)], check=True)
            t0 = time.perf_counter()
            done = subprocess.run([REDLINE, "eval", "--data", str(DEV), "--limit", str(problems), "--concurrency",
                                   str(concurrency), "--strategies", spec, "--max-tokens", "256", "--out",
                                   str(run_dir), *backend_args], capture_output=True, text=True)
            wall = time.perf_counter() - t0
            with contextlib.closing(sqlite3.connect(run_dir / "results.db")) as db:
                completion, correct = db.execute(
                    "SELECT SUM(completion_tokens), SUM(correct) FROM results").fetchone()
            report.add(f"eval {spec} c={concurrency}", engine, done.returncode == 0,
                       f"{problems} problems in {wall:.0f} s, {(completion or 0) / wall:.1f} completion tokens/s, "
                       f"{correct or 0} correct")


# ---------------------------------------------------------------- main

def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _generate(url: str, request: GenerationRequest) -> list[Any]:
    backend = OpenAIBackend(base_url=url, max_retries=1, timeout_s=300)
    try:
        return await backend.generate(request)
    finally:
        await backend.aclose()


def generation_checks(report: Report, engine: Engine, args: argparse.Namespace) -> None:
    """Strategies, parameters, cache (and throughput when asked) on one engine; stops early when it died."""
    results = check_strategies(report, engine, args.quick, args.max_tokens)
    for check in (lambda: check_params(report, engine), lambda: check_cache(report, engine, results.get("stepco")),
                  lambda: check_throughput(report, engine.name, ["--backend", "openai", "--base-url", engine.url],
                                           args.throughput, args.logs) if args.throughput else None):
        if not engine.alive:
            raise RuntimeError(f"{engine.name} died; see {engine.logs / (engine.name + '.log')}")
        check()


def load_peers(path: Path) -> dict[str, Any] | None:
    manifest = path / "peers.json"
    return json.loads(manifest.read_text()) if manifest.exists() else None


def vllm_command(peers: dict[str, Any], model: str, name: str, pooling: bool = False) -> list[str]:
    command = [*peers["vllm_serve"], model, "--served-model-name", name, "--host", "127.0.0.1", "--port", "{port}",
               "--max-model-len", "2048", "--dtype", "bfloat16", "--enforce-eager"]
    if pooling:
        return command + ["--runner", "pooling"]
    return command + ["--enable-prefix-caching", "--enable-prompt-tokens-details", "--block-size", str(BLOCK_SIZE)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="every check at its smallest size")
    parser.add_argument("--peers", type=Path, default=default_dir(), help="the folder bench/peers.py set up")
    parser.add_argument("--engines", default="vllm,llamacpp", help="comma-separated: vllm, llamacpp")
    parser.add_argument("--replica-problems", type=int, default=200, help="size of the replica-kill eval")
    parser.add_argument("--throughput", type=int, default=0, metavar="N",
                        help="also measure eval throughput on N dev problems (0: no)")
    parser.add_argument("--max-tokens", type=int, default=None,
                        help="per generation call in the strategy checks (default 128 with --quick, else 256)")
    parser.add_argument("--startup-timeout", type=float, default=600, help="seconds an engine may take to start")
    parser.add_argument("--prm", type=Path, default=None,
                        help="a PRM folder from `redline train prm-export` to serve (default: the peers' random-head one)")
    parser.add_argument("--logs", type=Path, default=ROOT / "runs" / "real_engines", help="server logs, eval stores")
    args = parser.parse_args()
    peers = load_peers(args.peers.expanduser())
    if peers is None:
        print(f"no peers at {args.peers}: run `make peers` (bench/peers.py) first", file=sys.stderr)
        return 2
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    args.max_tokens = args.max_tokens or (128 if args.quick else 256)
    replica_problems = 8 if args.quick else args.replica_problems
    vllm_env = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind"}

    def make_vllm(name: str, port: int | None) -> Engine:
        return Engine(name, vllm_command(peers, peers["model"], peers["served_name"]), args.logs, vllm_env, port)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # exit through the finally below
    report = Report()
    t_start = time.perf_counter()
    try:
        if "llamacpp" in engines and "llamacpp_python" in peers:
            llama = Engine("llamacpp", [peers["llamacpp_python"], "-m", "llama_cpp.server", "--model", peers["gguf"],
                                        "--model_alias", peers["served_name"], "--host", "127.0.0.1",
                                        "--port", "{port}", "--n_ctx", "4096", "--n_threads", "2"], args.logs)
            report.guard("start", "llamacpp", lambda: report.add("start", "llamacpp", True,
                                                                  f"{llama.start(args.startup_timeout):.0f} s"))
            if llama.alive:
                report.guard("checks", "llamacpp", lambda: generation_checks(report, llama, args))
            llama.stop()
        if "vllm" in engines:
            vllm = make_vllm("vllm-a", None)
            report.guard("start", "vllm-a", lambda: report.add("start", "vllm-a", True,
                                                                f"{vllm.start(args.startup_timeout):.0f} s"))
            if vllm.alive:
                report.guard("checks", "vllm-a", lambda: generation_checks(report, vllm, args))
            if vllm.alive:
                report.guard("redline serve", "vllm-a", lambda: check_serve(report, vllm, args.logs,
                                                                            args.startup_timeout))
            prm_dir = args.prm or Path(peers["prm"])
            prm = Engine("vllm-prm", vllm_command(peers, str(prm_dir), peers["prm_name"], pooling=True), args.logs,
                         vllm_env)
            report.guard("start", "vllm-prm", lambda: report.add("start", "vllm-prm", True,
                                                                  f"{prm.start(args.startup_timeout):.0f} s"))
            if prm.alive:
                report.guard("prm pooling", "vllm-prm", lambda: check_prm(report, prm, prm_dir, peers["prm_name"]))
            prm.stop()
            if vllm.alive:
                report.guard("replicas", "vllm x2", lambda: check_replicas(report, make_vllm, vllm, replica_problems,
                                                                           args.logs, args.startup_timeout))
            vllm.stop()
        if args.throughput:
            report.guard("throughput", "local", lambda: check_throughput(report, "local", ["--backend", "local"],
                                                                          args.throughput, args.logs))
    except KeyboardInterrupt:
        print("interrupted: stopping the engines", file=sys.stderr)
        return 130
    finally:
        Engine.stop_all()
        if report.rows:  # also after an interruption: what ran so far
            print(f"\nredline against real engines ({'quick' if args.quick else 'full'}, "
                  f"{time.perf_counter() - t_start:.0f} s in all; logs in {args.logs})\n")
            print(report.table(), flush=True)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
