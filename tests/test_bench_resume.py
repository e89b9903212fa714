"""Resume: kill a real eval process mid-way with a signal, rerun it, and lose or duplicate nothing."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from redline.bench.runner import run_eval
from redline.bench.store import ResultStore
from redline.errors import RedlineError, SpecError
from redline.types import Problem
from tests.conftest import scripted_runtime

PROBLEMS = 24
STRATEGIES = "cot,cot:max_calls=1"

HELD_FROM = 12  # in a held run, problems from this number on never get an answer

# The runner in its own process, over a scripted backend. A held run (argv[2] == "hold") answers the
# problems below HELD_FROM and waits forever on the rest, so it cannot end before the test kills it,
# however slow the machine: the test waits for rows (an event), not for a window of time.
EVAL_SCRIPT = textwrap.dedent(f"""
    import asyncio, signal, sys
    from pathlib import Path
    from redline.backends.base import LedgeredBackend
    from redline.backends.scripted import ScriptedBackend
    from redline.bench.runner import run_eval
    from redline.runtime import Runtime
    from redline.types import Problem

    def number(request):
        return int(request.messages[-1]["content"].split("number ")[1].split(".")[0])

    def answer(request, index):
        return f"Add one.\\nThe answer is {{number(request) + 1}}."

    class Held(ScriptedBackend):
        async def generate(self, request):
            if sys.argv[2] == "hold" and number(request) >= {HELD_FROM}:
                await asyncio.Event().wait()
            return await super().generate(request)

    problems = [Problem(f"What is number {{i}}. plus one?", str(i + 1), id=f"p{{i}}") for i in range({PROBLEMS})]
    runtime = Runtime(backend=LedgeredBackend(Held(answer)), max_tokens=32)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if the parent ignores SIGINT (background jobs)
    asyncio.run(run_eval(Path(sys.argv[1]), problems, "{STRATEGIES}", runtime, concurrency=3))
""")


def rows(run_dir):
    path = run_dir / "results.db"
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute("SELECT problem_id, strategy, correct, finished_at FROM results").fetchall()
    except sqlite3.OperationalError:  # not created yet
        return []
    finally:
        db.close()


def start(tmp_path, run_dir, mode):
    script = tmp_path / "eval_script.py"
    script.write_text(EVAL_SCRIPT)
    return subprocess.Popen([sys.executable, str(script), str(run_dir), mode], stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_killed_run_resumes_without_lost_or_duplicated_rows(tmp_path, sig):
    run_dir = tmp_path / "run"
    proc = start(tmp_path, run_dir, "hold")
    deadline = time.monotonic() + 300  # only a run that never starts writing meets it
    while len(rows(run_dir)) < 6 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"the held run ended on its own: {proc.stderr.read()[-500:]}"
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    before = rows(run_dir)
    assert 6 <= len(before) <= 2 * HELD_FROM, "the kill lands mid-way: held problems have no rows"

    finish = start(tmp_path, run_dir, "open")
    assert finish.wait(timeout=60) == 0, finish.stderr.read()
    after = rows(run_dir)
    keys = [(pid, strategy) for pid, strategy, _, _ in after]
    assert len(keys) == len(set(keys)) == 2 * PROBLEMS
    assert {k for k, _ in keys} == {f"p{i}" for i in range(PROBLEMS)}
    assert all(correct == 1 for _, _, correct, _ in after)
    # every row written before the kill survives unchanged: it was skipped, not solved again
    assert set(before) <= set(after)


async def test_rerun_skips_done_pairs_and_adds_new_strategies(tmp_path):
    problems = [Problem(f"q{i}", str(i), id=f"p{i}") for i in range(4)]
    runtime = scripted_runtime(lambda request, index: "The answer is 1.", max_tokens=16)
    first = await run_eval(tmp_path, problems, "cot", runtime, concurrency=2)
    calls = len(runtime.backend.inner.requests)
    assert first["cot"].done == 4 and first["cot"].correct == 1 and calls == 4
    second = await run_eval(tmp_path, problems, "cot,cot:max_calls=1", runtime, concurrency=2)
    assert len(runtime.backend.inner.requests) == calls + 4  # only the new strategy ran
    assert second["cot"].done == 4 and second["cot:max_calls=1"].done == 4
    with ResultStore(tmp_path) as store:
        assert store.count() == 8 and store.strategies() == ["cot", "cot:max_calls=1"]


async def test_ungradable_gold_is_recorded_as_ungradable_not_wrong(tmp_path):
    problems = [Problem("q", "", id="blank"), Problem("q2", "5", id="ok")]
    runtime = scripted_runtime(lambda request, index: "The answer is 5.", max_tokens=16)
    tallies = await run_eval(tmp_path, problems, "cot", runtime)
    assert (tallies["cot"].done, tallies["cot"].graded, tallies["cot"].correct) == (2, 1, 1)
    with ResultStore(tmp_path) as store:
        by_id = {r.problem_id: r for r in store.rows()}
    assert by_id["blank"].correct is None and not by_id["blank"].gradable and by_id["ok"].correct is True


async def test_a_failing_solve_is_stored_as_an_error_and_retried(tmp_path):
    problems = [Problem(f"q{i}", "1", id=f"p{i}") for i in range(3)]

    def flaky(request, index):
        if "q1" in request.messages[-1]["content"] and index < 3:
            raise RuntimeError("backend hiccup")
        return "The answer is 1."

    runtime = scripted_runtime(flaky, max_tokens=16)
    tallies = await run_eval(tmp_path, problems, "cot", runtime, concurrency=1)
    assert tallies["cot"].done == 2 and tallies["cot"].errors == 1
    with ResultStore(tmp_path) as store:
        assert store.errors() == [("p1", "cot", "RuntimeError: backend hiccup")]
    retry = await run_eval(tmp_path, problems, "cot", runtime, concurrency=1)
    assert retry["cot"].done == 3 and retry["cot"].errors == 0
    with ResultStore(tmp_path) as store:
        assert store.errors() == [] and store.count() == 3


async def test_bad_runs_are_refused_before_any_work(tmp_path):
    runtime = scripted_runtime(["The answer is 1."], max_tokens=16)
    problems = [Problem("q", "1", id="same"), Problem("q2", "1", id="same")]
    with pytest.raises(RedlineError, match="problem id 'same' appears more than once"):
        await run_eval(tmp_path, problems, "cot", runtime)
    with pytest.raises(SpecError, match="strategy 'cot' listed twice"):
        await run_eval(tmp_path, problems[:1], "cot, cot", runtime)
    with pytest.raises(SpecError, match="unknown strategy or provider 'nope'"):
        await run_eval(tmp_path, problems[:1], "nope", runtime)
    await run_eval(tmp_path, problems[:1], "cot", runtime)
    other = scripted_runtime(["The answer is 1."], max_tokens=99)
    with pytest.raises(RedlineError, match=r"was run with other settings \(max_tokens: 16 -> 99\)"):
        await run_eval(tmp_path, problems[:1], "cot", other)
    assert len(runtime.backend.inner.requests) == 1
