"""Several OpenAI-compatible endpoints behind the `openai` backend, over real HTTP on 127.0.0.1:
least-loaded routing, fail-over when one dies mid-eval, probing it back in, per-endpoint counts in
the ledger and in /metrics, and cached prompt tokens from the servers' usage down to the report."""

from __future__ import annotations

import asyncio
import csv
import socket
import threading
import time
from contextlib import contextmanager
from typing import Iterator

import httpx
import uvicorn

from redline.backends.base import GenerationRequest, LedgeredBackend
from redline.backends.openai_compat import OpenAIBackend
from redline.backends.scripted import ScriptedBackend
from redline.bench.report import write_reports
from redline.bench.runner import run_eval
from redline.bench.store import ResultStore
from redline.ledger import Ledger, use_ledger
from redline.runtime import Runtime
from redline.server.background import running_server
from redline.server.http import uvicorn_config
from tests.openai_app import AppControl, create_app

ANSWER = "Step 1: 2 + 2 = 4.\nThe answer is 4."
QUESTION = [{"role": "user", "content": "What is 2 + 2?"}]


class Replica:
    """An OpenAI-compatible app on the scripted backend, on a fixed port so it can die and come back."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.control = AppControl()
        self.served = 0  # requests answered by earlier lives of this replica
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.start()

    def start(self) -> None:
        self.backend = ScriptedBackend([ANSWER], delay_s=self.delay_s)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.server = uvicorn.Server(uvicorn_config(create_app(self.backend, self.control), port=self.port,
                                                    timeout_graceful_shutdown=1))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
        self.served += len(self.backend.requests)

    @property
    def total_served(self) -> int:
        return self.served + len(self.backend.requests)


@contextmanager
def replicas(count: int, delay_s: float = 0.0) -> Iterator[list[Replica]]:
    started = [Replica(delay_s) for _ in range(count)]
    try:
        yield started
    finally:
        for r in started:
            if r.thread.is_alive():
                r.stop()


def backend_over(reps: list[Replica], **options) -> OpenAIBackend:
    return OpenAIBackend(base_url=[r.url for r in reps], probe_interval_s=0.1, **options)


async def test_least_in_flight_spreads_the_load():
    with replicas(3, delay_s=0.05) as reps:
        backend = backend_over(reps)
        assert backend.model == "scripted"  # from the first endpoint's /v1/models
        ledger = Ledger(strategy="cot")
        with use_ledger(ledger):
            await asyncio.gather(*(LedgeredBackend(backend).generate(GenerationRequest(messages=QUESTION))
                                   for _ in range(30)))
        assert [len(r.backend.requests) for r in reps] == [10, 10, 10]
        assert {url: u.calls for url, u in ledger.by_endpoint().items()} == {r.url: 10 for r in reps}
        assert [s.ok for s in backend.endpoints.stats()] == [10, 10, 10]
        await backend.aclose()


async def test_a_failing_endpoint_is_taken_out_and_retried_elsewhere():
    with replicas(2) as (bad, good):
        bad.control.reset(fail_first=10_000, fail_status=503)
        backend = backend_over([bad, good])
        for _ in range(8):
            [c] = await backend.generate(GenerationRequest(messages=QUESTION))
            assert c.text == ANSWER and c.endpoint == good.url
        bad_stats, good_stats = backend.endpoints.stats()
        assert bad_stats.errors == bad_stats.calls == 3 and not bad_stats.in_service  # out after 3 in a row
        assert good_stats.ok == 8
        bad.control.reset()  # healthy again: the probe puts it back
        for _ in range(50):
            if bad_stats.in_service:
                break
            await asyncio.sleep(0.05)
        assert bad_stats.in_service
        await backend.aclose()


async def test_killing_an_endpoint_mid_eval_loses_nothing(tmp_path):
    from redline.types import Problem

    problems = [Problem(f"What is 2 + 2? (copy {i})", "4", id=f"p{i}") for i in range(300)]
    with replicas(3, delay_s=0.03) as reps:
        backend = backend_over(reps)
        runtime = Runtime(backend=LedgeredBackend(backend), max_tokens=16)
        victim, pool = reps[0], backend.endpoints
        stats = pool.stats()[0]
        attempts: dict[str, int] = {}

        async def kill_and_restart() -> None:
            while sum(r.total_served for r in reps) < 60:
                await asyncio.sleep(0.01)
            attempts["before the kill"] = stats.calls
            await asyncio.to_thread(victim.stop)
            while stats.in_service:
                await asyncio.sleep(0.01)
            attempts["when taken out"] = stats.calls  # none are sent to it while it is out
            await asyncio.to_thread(victim.start)

        tallies, _ = await asyncio.gather(run_eval(tmp_path, problems, "cot", runtime, concurrency=12),
                                          kill_and_restart())
        assert tallies["cot"].done == 300 and tallies["cot"].errors == 0 and tallies["cot"].correct == 300
        with ResultStore(tmp_path, create=False) as store:
            rows = list(store.rows())
        assert len(rows) == 300 and {r.problem_id for r in rows} == {p.id for p in problems}
        assert all(r.calls == 1 for r in rows)  # retries are not counted as calls twice
        answered = sum(s.ok for s in pool.stats())
        assert answered == 300 and stats.taken_out == 1
        served = sum(r.total_served for r in reps)  # a request the dying server finished but never sent back
        assert 300 <= served <= 300 + stats.errors   # is served twice at most once per error
        # Taken out promptly, counted in attempts rather than seconds (a loaded machine stretches any
        # clock window): each of the <= 12 requests in flight at the kill may succeed and reset the
        # count of failures in a row, so at most fail_after x (12 + 1) attempts reach it before it is out.
        assert attempts["when taken out"] - attempts["before the kill"] <= pool.fail_after * (12 + 1)
        # back in after the restart: it is probed in and gets work again
        for _ in range(100):
            if stats.in_service:
                break
            await asyncio.sleep(0.05)
        before = len(victim.backend.requests)
        await asyncio.gather(*(backend.generate(GenerationRequest(messages=QUESTION)) for _ in range(15)))
        assert stats.in_service and len(victim.backend.requests) > before
        await backend.aclose()


async def test_cached_tokens_and_endpoint_counts_reach_report_usage_and_metrics(tmp_path):
    from redline.types import Problem

    with replicas(2) as reps:
        for r in reps:
            r.control.reset(cached_tokens=3)
        backend = backend_over(reps)
        runtime = Runtime(backend=LedgeredBackend(backend), max_tokens=16)
        problems = [Problem(f"What is 2 + 2? ({i})", "4", id=f"p{i}") for i in range(4)]
        await run_eval(tmp_path, problems, "cot,sc:n=2", runtime, concurrency=4)
        data, _ = write_reports(tmp_path)
        cot, sc = data.summaries
        assert cot.mean_cached_prompt_tokens == 3 and cot.mean_uncached_prompt_tokens == cot.mean_prompt_tokens - 3
        assert sc.total_cached_prompt_tokens == 4 * 3  # n=2 in one call: the prompt (and its cache) billed once
        with (tmp_path / "results.csv").open() as f:
            assert {row["cached_prompt_tokens"] for row in csv.DictReader(f)} == {"3"}
        md = (tmp_path / "report.md").read_text()
        assert "| uncached prompt | cached prompt |" in md

        await backend.aclose()
        backend = backend_over(reps)  # a fresh one: its connections belong to the server's event loop
        with running_server(Runtime(backend=LedgeredBackend(backend), max_tokens=16)) as url:
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                reply = (await client.post("/v1/chat/completions",
                                           json={"model": "cot/scripted", "messages": QUESTION})).json()
                metrics = (await client.get("/metrics")).text
        assert reply["usage"]["prompt_tokens_details"] == {"cached_tokens": 3}
        for r, s in zip(reps, backend.endpoints.stats()):
            assert f'redline_upstream_calls_total{{endpoint="{r.url}",pool="generator"}} {float(s.calls)}' in metrics
            assert f'redline_upstream_in_service{{endpoint="{r.url}",pool="generator"}} 1.0' in metrics
        assert 'redline_tokens_total{kind="cached_prompt",strategy="cot"} 3.0' in metrics


async def test_a_dead_first_endpoint_does_not_stop_the_start():
    from tests.openai_app import closed_port

    with replicas(1) as (live,):
        dead = f"http://127.0.0.1:{closed_port()}/v1"
        t0 = time.perf_counter()
        backend = OpenAIBackend(base_url=f"{dead},{live.url}", probe_interval_s=0.1)
        assert backend.model == "scripted" and time.perf_counter() - t0 < 5
        for _ in range(4):
            [c] = await backend.generate(GenerationRequest(messages=QUESTION))
            assert c.endpoint == live.url
        dead_stats, _ = backend.endpoints.stats()
        assert 1 <= dead_stats.errors <= 3
        await backend.aclose()


async def test_n_emulation_and_prefix_continuation_across_endpoints():
    with replicas(2) as reps:
        for r in reps:
            r.control.reset(ignore_n=True)
        backend = backend_over(reps)
        completions = await backend.generate(GenerationRequest(messages=QUESTION, n=4, temperature=0.8, seed=3))
        assert len(completions) == 4 and all(c.text == ANSWER for c in completions)
        seeds = sorted(body["seed"] for r in reps for _, body in r.control.seen)
        assert seeds == [3, 4, 5, 6] and all(r.control.seen for r in reps)  # split calls spread over both
        await backend.generate(GenerationRequest(messages=QUESTION, prefix="Step 1:"))
        _, body = max((b for r in reps for b in r.control.seen), key=lambda b: len(b[1]["messages"]))
        assert body["messages"][-1] == {"role": "assistant", "content": "Step 1:"}
        assert body["continue_final_message"] is True
        await backend.aclose()


def test_cli_eval_over_two_base_urls_and_an_80_column_report(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    data = tmp_path / "easy.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is 2 + 2? ({i})", "answer": "#### 4"}) + "\n"
                            for i in range(6)))
    redline = str(Path(sys.executable).parent / "redline")
    with replicas(2) as reps:
        for r in reps:
            r.control.reset(cached_tokens=2)
        run = subprocess.run([redline, "eval", "--data", str(data), "--backend", "openai", "--base-url", reps[0].url,
                              "--base-url", reps[1].url, "--strategies", "cot,sc:n=2", "--out", str(tmp_path / "run")],
                             capture_output=True, text=True, timeout=120, env={"COLUMNS": "80", "PATH": "/usr/bin"})
    assert run.returncode == 0, run.stderr
    assert "over 2 endpoints" in run.stderr and all(r.backend.requests for r in reps)
    table = run.stdout.splitlines()
    assert max(len(line) for line in table) <= 80 and any(line.startswith("sc:n=2") for line in table)
    assert "| 2 |" in (tmp_path / "run" / "report.md").read_text()  # cached prompt tokens per problem
