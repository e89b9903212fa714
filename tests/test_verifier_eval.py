"""Planted errors, labelled-file reading with bad lines, ProcessBench figures, and the CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from redline.cli import app
from redline.errors import RedlineError
from redline.verifiers.arith import ArithVerifier, check_step
from redline.train.verifier_eval import evaluate, harmonic_mean
from redline.train.planted import plant_file, split_gsm8k, visible_steps
from redline.train.records import LabeledSolution, read_labeled
from redline.verifiers.scripted import ScriptedVerifier
from tests.verifier_fixtures import GSM8K_ROWS, write_gsm8k

REDLINE = str(Path(sys.executable).parent / "redline")
runner = CliRunner()


def planted(tmp_path, n=30, **kw):
    items = list(plant_file(write_gsm8k(tmp_path / "gsm.jsonl", repeat=5), n, **kw))
    return [r for r in items if isinstance(r, LabeledSolution)]


def original_steps(record):
    row = GSM8K_ROWS[(record.meta["source_line"] - 1) % len(GSM8K_ROWS)]
    lines, final = split_gsm8k(row["answer"])
    return visible_steps(lines, final)


def test_planted_errors_are_single_carried_forward_and_labelled(tmp_path):
    records = planted(tmp_path, seed=3)
    kinds = {r.kind for r in records}
    assert kinds == {"correct", "arith", "operator"}
    for r in records:
        original = original_steps(r)
        assert not any("<<" in s for s in r.steps)  # annotations are stripped from what verifiers see
        if r.kind == "correct":
            assert r.label == -1 and list(r.steps) == original
            continue
        assert r.steps[: r.label] == tuple(original[: r.label])  # steps before the error are untouched
        assert r.steps[r.label] != original[r.label]
        assert r.meta["planted_answer"] != r.meta["answer"]
        assert f"The answer is {r.meta['planted_answer']}." in r.steps[-1]
        # later steps are consistent with the wrong value: only the planted step can be an arithmetic slip
        assert all(check_step(s).false == 0 for s in r.steps[r.label + 1:])
        assert (check_step(r.steps[r.label]).false > 0) == (r.kind == "arith")


def test_operator_share_weights_the_error_kinds(tmp_path):
    from collections import Counter

    from redline.train.planted import error_kind

    assert [error_kind(i, 0.5) for i in range(4)] == ["arith", "operator", "arith", "operator"]  # the old alternation
    assert Counter(error_kind(i, 0.75) for i in range(100)) == {"operator": 75, "arith": 25}
    default = planted(tmp_path, n=60, seed=2)
    heavy = planted(tmp_path, n=60, seed=2, operator_share=0.8)
    share = lambda rs: Counter(r.kind for r in rs if r.kind != "correct")  # noqa: E731
    assert share(heavy)["operator"] > 2 * share(heavy)["arith"]
    assert share(heavy)["operator"] > share(default)["operator"]
    assert {r.kind for r in planted(tmp_path, n=30, seed=2, operator_share=0.0)} == {"correct", "arith"}
    with pytest.raises(RedlineError, match="operator share"):
        planted(tmp_path, operator_share=1.5)


def test_plant_reports_bad_lines_by_number(tmp_path):
    items = list(plant_file(write_gsm8k(tmp_path / "gsm.jsonl", bad_lines=True), 100, seed=0))
    bad = [x for x in items if isinstance(x, tuple)]
    assert [n for n, _ in bad] == [2, 3]
    assert "invalid JSON" in bad[0][1] and "#### N" in bad[1][1]
    with pytest.raises(RedlineError, match="no such data file"):
        list(plant_file(tmp_path / "missing.jsonl", 3))


async def test_arith_catches_slips_but_not_wrong_operations(tmp_path):
    records = planted(tmp_path, seed=1)
    report = await evaluate(ArithVerifier(), records, threshold=0.5)
    kinds = report.by_kind
    assert kinds["arith"].accuracy == 1.0 and kinds["correct"].accuracy == 1.0
    assert kinds["operator"].accuracy == 0.0 and kinds["operator"].missed == 1.0
    assert report.f1 == harmonic_mean(report.error_accuracy, report.correct_accuracy)
    assert 0.4 < report.error_accuracy < 0.7
    assert report.steps == sum(len(r.steps) for r in records) and report.calls == 0


async def test_figures_for_a_known_scripted_verifier():
    records = [LabeledSolution("a", "q", ("s0", "s1", "s2"), 1, kind="arith"),
               LabeledSolution("b", "q", ("s0", "s1"), -1, kind="correct"),
               LabeledSolution("c", "q", ("s0", "s1", "s2"), 2, kind="operator")]
    # flags step 1 everywhere: exact on 'a', early on 'c', a false alarm on 'b'
    report = await evaluate(ScriptedVerifier(lambda q, i, s: 0.1 if s == "s1" else 0.9), records)
    assert report.error_accuracy == 0.5 and report.correct_accuracy == 0.0 and report.f1 == 0.0
    assert report.by_kind["operator"].early == 1.0 and report.by_kind["correct"].early == 1.0
    # known steps (right=1): a:[1,0] b:[1,1] c:[1,1,0]; scores a:[.9,.1] b:[.9,.1] c:[.9,.1,.9]
    # 10 right/wrong pairs: 3 wins, 5 ties, 2 losses -> (3 + 5/2) / 10
    assert report.auroc == pytest.approx(0.55)


def test_read_labeled_skips_bad_lines_with_numbers(tmp_path):
    path = tmp_path / "labels.jsonl"
    rows = [
        json.dumps({"question": "q", "steps": ["a", "b"], "label": 1}),
        "{broken",
        json.dumps({"question": "q", "steps": ["a"], "label": 5}),
        json.dumps({"problem": "q", "steps": ["a", "b"], "step_labels": [1, 0.25]}),
        json.dumps({"question": "q", "steps": ["a", "b"], "step_labels": [1]}),
        json.dumps(["not", "an", "object"]),
        "",
        json.dumps({"question": "q", "steps": []}),
    ]
    path.write_text("\n".join(rows) + "\n")
    result = read_labeled(path)
    assert len(result.records) == 2 and result.records[1].step_labels == (1.0, 0.25)
    assert [n for n, _ in result.bad_lines] == [2, 3, 5, 6, 8]


def test_cli_plant_then_eval_prints_the_table_and_reports_bad_lines(tmp_path):
    data = write_gsm8k(tmp_path / "gsm.jsonl", repeat=3)
    out = tmp_path / "planted.jsonl"
    run = runner.invoke(app, ["verifier", "plant", "--data", str(data), "-n", "12", "-o", str(out)])
    assert run.exit_code == 0, run.output
    assert len(out.read_text().splitlines()) == 12
    with out.open("a") as f:
        f.write("garbage line\n")
    report = tmp_path / "report.json"
    run = runner.invoke(app, ["verifier", "eval", "--verifier", "arith", "--data", str(out), "--json", str(report)])
    assert run.exit_code == 0, run.output
    assert "planted.jsonl:13: invalid JSON" in run.output
    assert re.search(r"kind=arith\s*│\s*\d+\s*│\s*100\.0%", run.output), run.output
    saved = json.loads(report.read_text())
    assert saved["n"] == 12 and saved["skipped_lines"] == [[13, "invalid JSON (Expecting value)"]]
    assert len(saved["predictions"]) == 12


@pytest.mark.parametrize("args, message", [
    (["verifier", "eval", "--verifier", "arith", "--data", "/no/such.jsonl"], "no such labelled file"),
    (["verifier", "eval", "--verifier", "learned:/no/prm.joblib", "--data", "DATA"], "no learned verifier at /no/prm.joblib"),
    (["verifier", "eval", "--verifier", "hf-prm:/no/model", "--data", "DATA"], "hf-prm: no model at '/no/model'"),
    (["verifier", "eval", "--verifier", "arith:bogus=1", "--data", "DATA"], "valid parameters of 'arith'"),
    (["verifier", "train", "DATA", "-o", "OUT"], "the labels hold only one class"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    data = tmp_path / "labels.jsonl"
    data.write_text(json.dumps({"question": "q", "steps": ["1 + 1 = 2"], "label": -1}) + "\n")
    args = [str(data) if a == "DATA" else str(tmp_path / "m.joblib") if a == "OUT" else a for a in args]
    run = subprocess.run([REDLINE, *args], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in run.stderr
