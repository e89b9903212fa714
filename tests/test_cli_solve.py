"""`redline solve`, `redline backends`, `redline strategies`: output, stdin, and one-line errors."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from redline.cli import app
from redline.cli.render import print_result
from redline.loop import build_solver
from redline.types import Problem
from tests.conftest import scripted_runtime

REDLINE = str(Path(sys.executable).parent / "redline")
runner = CliRunner()


def redline(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The installed console script, so errors go through the real entry point."""
    return subprocess.run([REDLINE, *args], input=stdin, capture_output=True, text=True, timeout=120)


@pytest.mark.model
def test_solve_json_with_the_embedded_model(local_backend):
    result = runner.invoke(app, ["solve", "What is 12 + 30?", "--max-tokens", "48", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["strategy"] == "cot" and data["problem"]["question"] == "What is 12 + 30?"
    assert data["solution"]["steps"] and all(s["text"] for s in data["solution"]["steps"])
    assert "answer" in data
    solve = data["usage"]["solve"]
    assert solve["calls"] == 1 and solve["prompt_tokens"] > 0 and 0 < solve["completion_tokens"] <= 48


@pytest.mark.model
def test_solve_reads_stdin_and_prints_usage(local_backend):
    result = runner.invoke(app, ["solve", "-", "--max-tokens", "16"], input="What is 7 + 8?\n")
    assert result.exit_code == 0, result.output
    assert "answer:" in result.stdout and "usage by phase" in result.stdout
    assert "solve" in result.stdout and "all" in result.stdout


@pytest.mark.parametrize("args, stdin, message", [
    (["solve", ""], None, "empty question"),
    (["solve", "-"], "  \n", "empty question"),
    (["solve", "2+2?", "--backend", "nope"], None, "unknown backend 'nope'; valid: local, openai"),
    (["solve", "2+2?", "--model", "/no/such/model.gguf"], None, "unknown local model '/no/such/model.gguf'"),
    (["solve", "2+2?", "--strategy", "nope"], None, "unknown strategy or provider 'nope'; strategies:"),
    (["solve", "2+2?", "--base-url", "http://127.0.0.1:9"], None, "--base-url only applies to --backend openai"),
])
def test_bad_input_is_one_line_and_exit_2(args, stdin, message):
    run = redline(*args, stdin=stdin)
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]


def test_backends_and_strategies_list_things():
    backends = runner.invoke(app, ["backends"])
    assert backends.exit_code == 0 and "local" in backends.stdout and "openai" in backends.stdout
    strategies = runner.invoke(app, ["strategies"])
    assert strategies.exit_code == 0
    assert "cot" in strategies.stdout and "max_tokens_total" in strategies.stdout


def test_help_explains_every_option():
    top = runner.invoke(app, ["--help"])
    assert top.exit_code == 0 and "solve" in top.stdout and "backends" in top.stdout
    solve = runner.invoke(app, ["solve", "--help"], env={"COLUMNS": "200", "TERM": "dumb"})
    assert solve.exit_code == 0
    for option in ("--backend", "--model", "--base-url", "--max-tokens", "--seed", "--json", "--strategy"):
        assert option in solve.stdout


async def test_no_parsable_answer_is_null():
    runtime = scripted_runtime(["I am not sure how to do this."])
    result = await build_solver("cot", runtime).solve(Problem("What is 2 + 2?"))
    assert result.answer is None and result.to_dict()["answer"] is None
    assert json.loads(json.dumps(result.to_dict()))["answer"] is None
    text = io.StringIO()
    print_result(result, Console(file=text, width=120))
    assert "answer: null (no parsable answer)" in text.getvalue()
