"""Reports: files from a scripted run, report.html rendered in headless Chromium, CLI errors,
and an end-to-end `redline eval` with the embedded model."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from redline.backends.base import Completion
from redline.bench.formats import cap_rows
from redline.bench.report import write_reports
from redline.bench.runner import run_eval
from redline.cli import app
from redline.types import Problem
from tests.conftest import scripted_runtime

REDLINE = str(Path(sys.executable).parent / "redline")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
runner = CliRunner()


def wrong_unless_revising(request, index):
    """A first draft adds wrongly; a revision request (it quotes the flagged step) gets it right."""
    if "2 + 2 = 5" in request.messages[-1]["content"]:
        return "Step 1: 2 + 2 = 4.\nStep 2: The answer is 4."
    return "Step 1: 2 + 2 = 5.\nStep 2: The answer is 5."


@pytest.fixture()
async def scripted_run(tmp_path):
    problems = [Problem(f"What is 2 + 2? (copy {i}) </script><b>bold</b>", "4", id=f"p{i}") for i in range(3)]
    runtime = scripted_runtime(wrong_unless_revising, max_tokens=32)
    # outcome=steps: every path's steps are scored, so the page has step scores to colour
    await run_eval(tmp_path, problems, "cot,stepco:max_iters=1,outcome=steps", runtime, concurrency=1)
    return tmp_path


async def test_reports_from_a_scripted_run(scripted_run):
    data, files = write_reports(scripted_run, prices={"*": {"prompt": 1.0, "completion": 2.0}})
    names = {f.name for f in files}
    assert names == {"report.md", "results.csv", "summary.json", "accuracy_vs_tokens.png", "report.html"}
    cot, stepco = data.summaries
    assert (cot.accuracy, stepco.accuracy) == (0.0, 1.0)  # StepCo fixed the flagged step, cot kept 5
    comparison = data.comparisons["stepco:max_iters=1,outcome=steps"]
    assert comparison.diff == 1.0 and comparison.only_strategy == 3 and comparison.p_value == pytest.approx(0.25)
    with (scripted_run / "results.csv").open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == 6 and {r["correct"] for r in table if r["strategy"] == "cot"} == {"0"}
    assert all(r["gold"] == "4" and int(r["billed_tokens"]) > 0 for r in table)
    md = (scripted_run / "report.md").read_text()
    assert "| stepco:max_iters=1,outcome=steps | 100.0% (3/3) |" in md and "+100.0 [+100.0, +100.0]" in md
    html = (scripted_run / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == 1
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), "report.html must not load anything"
    assert "</script><b>" not in html.split('id="problems-data">')[1].split("</script>")[0]


class CachedPrompts:
    """Answers 2 + 2 with made-up token counts, part of each prompt served from a cache, and keeps
    what it billed: a request bills its prompt once, on its first sample, as an API does."""

    def __init__(self) -> None:
        self.billed = self.computed = 0
        self.last_request = None

    def __call__(self, request, index: int) -> Completion:
        first = request is not self.last_request
        self.last_request = request
        prompt, cached, completion = (20 + index, 5 * (index % 3 + 1), 7 + index % 4) if first else (0, 0, 6)
        self.billed += prompt + completion
        self.computed += prompt - cached + completion
        return Completion("Step 1: 2 + 2 = 4.\nStep 2: The answer is 4.", "stop", prompt, completion, 0.0,
                          cached_tokens=cached)


async def test_billed_and_computed_tokens_add_up_in_the_ledger_the_report_and_the_csv(tmp_path):
    from redline.bench.store import ResultStore

    script = CachedPrompts()
    runtime = scripted_runtime(script, max_tokens=32)
    problems = [Problem(f"What is 2 + 2? ({i})", "4", id=f"p{i}") for i in range(4)]
    await run_eval(tmp_path, problems, "cot,sc:n=3", runtime, concurrency=1)
    assert script.computed < script.billed  # the cache served part of the prompts
    with ResultStore(tmp_path, create=False) as store:  # each solve's ledger, as its result stored it
        ledgers = [result["usage_total"] for p in problems for _, _, result in store.full_results(p.id).values()]
    assert len(ledgers) == 8 and sum(u["total_tokens"] for u in ledgers) == script.billed
    assert sum(u["computed_tokens"] for u in ledgers) == script.computed
    data, _ = write_reports(tmp_path)
    cot, sc = data.summaries
    assert cot.total_tokens + sc.total_tokens == script.billed  # the report
    assert cot.total_computed_tokens + sc.total_computed_tokens == script.computed
    with (tmp_path / "results.csv").open() as f:
        table = list(csv.DictReader(f))
    assert sum(int(r["billed_tokens"]) for r in table) == script.billed  # the CSV
    assert sum(int(r["computed_tokens"]) for r in table) == script.computed
    for r in table:
        assert int(r["computed_tokens"]) == int(r["uncached_prompt_tokens"]) + int(r["completion_tokens"])
    summary = json.loads((tmp_path / "summary.json").read_text())  # the JSON
    assert sum(s["total_computed_tokens"] for s in summary["strategies"]) == script.computed
    per_problem = {m: [int(r[f"{m}_tokens"]) for r in table if r["strategy"] == "sc:n=3"] for m in ("billed", "computed")}
    base = {m: [int(r[f"{m}_tokens"]) for r in table if r["strategy"] == "cot"] for m in ("billed", "computed")}
    for measure in ("billed", "computed"):  # the paired Δ of each measure, from the CSV by hand
        delta = data.token_deltas["sc:n=3"][measure]
        assert delta.diff == pytest.approx((sum(per_problem[measure]) - sum(base[measure])) / 4)
        assert summary["strategies"][1]["token_deltas"][measure]["diff"] == pytest.approx(delta.diff)
    md = (tmp_path / "report.md").read_text()
    assert f"| {data.summary('sc:n=3').mean_computed_tokens:.0f} | {data.token_deltas['sc:n=3']['computed'].diff:+.0f} [" in md


async def test_the_report_shows_each_token_caps_share_and_overshoot_from_the_rows(tmp_path):
    runtime = scripted_runtime(CachedPrompts(), max_tokens=32)
    problems = [Problem(f"What is 2 + 2? ({i})", "4", id=f"p{i}") for i in range(4)]
    specs = ["cot", "sc:n=3,max_tokens_total=300", "sc:n=3,max_tokens_total=300,budget=billed"]
    await run_eval(tmp_path, problems, specs, runtime, concurrency=1)
    data, _ = write_reports(tmp_path)
    with (tmp_path / "results.csv").open() as f:
        table = list(csv.DictReader(f))
    rows = {r["strategy"]: r for r in cap_rows(data)}
    assert set(rows) == set(specs[1:])  # cot has no cap
    for spec, measure in zip(specs[1:], ("computed", "billed")):
        spent = [int(r[f"{measure}_tokens"]) for r in table if r["strategy"] == spec]
        assert rows[spec]["cap"] == f"300 {measure}" and rows[spec]["dearest problem"] == str(max(spent))
        assert rows[spec]["share of cap"] == f"{sum(spent) / len(spent) / 300:.0%}"
        assert 0 < max(spent) <= 300 and rows[spec]["overshoot"] == "0"
    assert "## Token caps" in (tmp_path / "report.md").read_text()


async def test_solve_usage_table_shows_billed_and_computed_tokens():
    from rich.console import Console

    from redline.cli.render import usage_table
    from redline.loop import build_solver

    script = CachedPrompts()
    records = []
    solver = build_solver("sc:n=2", scripted_runtime(script, max_tokens=32))
    result = await solver.solve(Problem("What is 2 + 2?"), on_record=records.append)
    assert sum(r.prompt_tokens - r.cached_prompt_tokens + r.completion_tokens for r in records) == script.computed
    assert script.computed < script.billed
    console = Console(record=True, width=120)
    console.print(usage_table(result))
    header, *rows = [line.split() for line in console.export_text().splitlines() if "│" in line or "┃" in line]
    assert [c for c in header if c not in "┃│"][5:7] == ["billed", "computed"]
    all_row = [c for c in rows[-1] if c not in "┃│"]
    assert all_row[0] == "all" and (int(all_row[5]), int(all_row[6])) == (script.billed, script.computed)
    assert result.to_dict()["usage_total"]["computed_tokens"] == script.computed


def chromium_dom(path: Path, tmp_path: Path) -> str:
    if CHROMIUM is None:
        if os.environ.get("REDLINE_REQUIRE_BROWSER") == "1":
            pytest.fail("REDLINE_REQUIRE_BROWSER=1 but no chromium on PATH (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium); CI sets REDLINE_REQUIRE_BROWSER=1")
    run = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'chromium'}",
         "--virtual-time-budget=5000", "--dump-dom", path.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


@pytest.mark.browser
async def test_report_html_renders_table_and_trace_in_chromium(scripted_run, tmp_path):
    write_reports(scripted_run)
    dom = chromium_dom(scripted_run / "report.html", tmp_path)
    summary = dom.split('id="summary"')[1].split("</table>")[0]
    assert "stepco:max_iters=1,outcome=steps" in summary and "100.0% (3/3)" in summary
    # what the script built: the problem list, the first problem's cards, steps, trace and the revision diff
    assert dom.count('class="prob-row') == 3
    assert 'data-problem="p0"' in dom and dom.count('class="strategy-card"') == 2
    assert re.search(r'class="step" title="score [\d.]+" style="border-left-color: rgb\(\d+, \d+, \d+\)', dom)
    assert 'class="trace-kind">revise</span> flagged step 1' in dom
    diff = dom.split('<div class="diff">')[1].split("</div>")[0]
    assert "<del>5.</del>" in diff and "<ins>4.</ins>" in diff
    assert "3 shown" in dom


def write_problems(path: Path) -> Path:
    rows = [{"question": q, "answer": f"Worked.\n#### {a}"} for q, a in [
        ("Tom has 3 apples and buys 2 more. How many apples does he have?", 5),
        ("A box holds 4 pens. How many pens are in 2 boxes?", 8),
        ("Sara had 10 sweets and ate 3. How many are left?", 7),
        ("What is 6 plus 7?", 13),
    ]]
    lines = [json.dumps(r) for r in rows[:2]] + ["{this line is broken"] + [json.dumps(r) for r in rows[2:]]
    lines.append(json.dumps({"question": "What is 9 minus 4?", "answer": "#### 5"}))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.model
def test_eval_end_to_end_with_the_embedded_model(local_backend, tmp_path):
    data = write_problems(tmp_path / "easy.jsonl")
    out = tmp_path / "runs" / "easy"
    args = ["eval", "--data", str(data), "--strategies", "cot,sc:n=2", "--max-tokens", "40", "--concurrency", "2",
            "--out", str(out)]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "easy.jsonl:3: invalid JSON" in first.output  # the bad line is reported, with its line number
    for name in ("results.db", "report.md", "results.csv", "accuracy_vs_tokens.png", "sampling_curves.png",
                 "report.html"):
        assert (out / name).stat().st_size > 0, name
    db = sqlite3.connect(out / "results.db")
    stored = db.execute("SELECT problem_id, strategy, finished_at, prompt_tokens, completion_tokens, calls, result "
                        "FROM results ORDER BY problem_id, strategy").fetchall()
    assert len(stored) == 10 and {s for _, s, *_ in stored} == {"cot", "sc:n=2"}
    for pid, strategy, _, prompt, completion, calls, result in stored:
        assert prompt > 0 and 0 < completion <= 40 * (2 if strategy == "sc:n=2" else 1) and calls >= 1
        full = json.loads(result)
        assert full["usage_total"]["total_tokens"] == prompt + completion and full["trace"]["kind"] == "solve"
        if strategy == "sc:n=2":
            assert len(full["candidates"]) == 2
    assert "sc:n=2" in first.output and "cot" in first.output  # the summary table
    md = (out / "report.md").read_text()
    assert "| sc:n=2 |" in md and "pass@k (coverage)" in md

    again = runner.invoke(app, args)  # resumes: nothing left to solve, rows untouched
    assert again.exit_code == 0, again.output
    assert db.execute("SELECT problem_id, strategy, finished_at FROM results ORDER BY problem_id, strategy").fetchall() \
        == [(p, s, f) for p, s, f, *_ in stored]

    report = runner.invoke(app, ["report", str(out), "--baseline", "sc:n=2"])
    assert report.exit_code == 0, report.output
    assert "Δ vs sc:n=2" in report.output


@pytest.mark.parametrize("args, message", [
    (["eval", "--data", "/no/such.jsonl"], "no such file: /no/such.jsonl"),
    (["eval", "--data", "DATA", "--strategies", "cot,nope"], "unknown strategy or provider 'nope'"),
    (["eval", "--data", "DATA", "--strategies", "cot", "--baseline", "sc"], "--baseline 'sc' is not one of"),
    (["eval", "--data", "DATA", "--prices", "/no/prices.json"], "no such price file"),
    (["report", "/no/run"], "no eval run here"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    data = write_problems(tmp_path / "d.jsonl")
    args = [str(data) if a == "DATA" else a for a in args] + (["--out", str(tmp_path / "r")] if args[0] == "eval" else [])
    run = subprocess.run([REDLINE, *args], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in run.stderr


async def test_terminal_table_fits_80_columns(tmp_path):
    from rich.console import Console

    from redline.bench.formats import COMPACT_COLUMNS, rich_table

    problems = [Problem(f"What is 2 + 2? ({i})", "4", id=f"p{i}") for i in range(3)]
    runtime = scripted_runtime(wrong_unless_revising, max_tokens=32)
    specs = "cot,stepco:max_iters=1,threshold=0.55,agg=prod,revise=prefix,temperature=0.5,verifier=arith"
    await run_eval(tmp_path, problems, specs, runtime, concurrency=2)
    data, _ = write_reports(tmp_path)
    console = Console(width=80, record=True)
    console.print(rich_table(data))
    lines = console.export_text().splitlines()
    assert max(len(line) for line in lines) <= 80
    header = next(line for line in lines if "strategy" in line)
    assert all(col in header for col in COMPACT_COLUMNS)  # every header whole on one line
    assert any("100.0% [44–100]" in line and "+100.0 [+100.0,+100.0]" in line for line in lines)
    for part in (p for p in re.split("[,:]", specs) if "=" in p):  # wrapped between parameters, never inside one
        assert any(part in line for line in lines), part


def test_old_run_dirs_are_migrated(tmp_path):
    """A results.db written before the cached-token column opens, reports, and keeps its numbers."""
    from redline.bench.store import MIGRATIONS, ResultStore

    db = sqlite3.connect(tmp_path / "results.db")
    db.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "CREATE TABLE problems (problem_id TEXT PRIMARY KEY, position INTEGER NOT NULL, question TEXT NOT NULL,"
        " gold TEXT, solution TEXT, gradable INTEGER NOT NULL);"
        "CREATE TABLE results (run TEXT NOT NULL, problem_id TEXT NOT NULL, strategy TEXT NOT NULL, answer TEXT,"
        " correct INTEGER, gradable INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL,"
        " completion_tokens INTEGER NOT NULL, calls INTEGER NOT NULL, latency_s REAL NOT NULL, stopped TEXT,"
        " model TEXT NOT NULL, usage TEXT NOT NULL, candidates TEXT NOT NULL, result TEXT NOT NULL,"
        " finished_at REAL NOT NULL, UNIQUE (run, problem_id, strategy));"
        "CREATE TABLE errors (run TEXT NOT NULL, problem_id TEXT NOT NULL, strategy TEXT NOT NULL,"
        " error TEXT NOT NULL, at REAL NOT NULL);")
    usage = {"solve": {"calls": 1, "prompt_tokens": 30, "completion_tokens": 5, "cached_prompt_tokens": 12},
             "verify": {"calls": 1, "prompt_tokens": 10, "completion_tokens": 2}}  # older usage: no cached count
    result = {"answer": "4", "usage": usage, "usage_total": {}, "trace": {"kind": "solve"}, "candidates": [],
              "stopped": None, "wall_s": 0.5, "solution": None}
    db.execute("INSERT INTO meta VALUES ('run', '\"old\"'), ('strategies', '[\"cot\"]')")
    db.execute("INSERT INTO problems VALUES ('p0', 0, 'What is 2 + 2?', '4', NULL, 1)")
    db.execute("INSERT INTO results VALUES ('old', 'p0', 'cot', '4', 1, 1, 40, 7, 2, 0.5, NULL, 'm', ?, '[]', ?, 0)",
               (json.dumps(usage), json.dumps(result)))
    db.commit()
    db.close()
    with ResultStore(tmp_path, create=False) as store:
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        [row] = store.rows()
    assert (row.prompt_tokens, row.cached_prompt_tokens, row.uncached_prompt_tokens) == (40, 12, 28)
    data, _ = write_reports(tmp_path)
    assert data.summaries[0].mean_cached_prompt_tokens == 12
    with (tmp_path / "results.csv").open() as f:
        [line] = list(csv.DictReader(f))
    assert (line["cached_prompt_tokens"], line["uncached_prompt_tokens"]) == ("12", "28")
    assert "| uncached prompt | cached prompt |" in (tmp_path / "report.md").read_text()
