"""`redline train prm` on a tiny random Llama built here: two optimiser steps, then `hf-prm` loads the
adapter folder and scores each step, moved the way the labels pushed it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from typer.testing import CliRunner  # noqa: E402

from redline.cli import app  # noqa: E402
from redline.train.prm import read_stepwise  # noqa: E402
from redline.verifiers.calibration import CALIBRATION_FILE  # noqa: E402
from redline.verifiers.hf_prm import MATH_SHEPHERD_TAG  # noqa: E402
from tests.conftest import scripted_runtime  # noqa: E402
from tests.test_verifier_hf_prm import tiny_tokenizer  # noqa: E402

REDLINE = str(Path(sys.executable).parent / "redline")
WORDS = ["[UNK]", "[PAD]", "<s>", MATH_SHEPHERD_TAG, "+", "-", "=", "*", ".", "step", "the", "answer", "is",
         "2", "3", "5", "6", "12", "what", "?"]
QUESTION = "what is 2 * 3 ?"
STEPS = ["2 * 3 = 6", "the answer is 5 ."]


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("tiny-base")
    tok = tiny_tokenizer(words=WORDS)
    tok.eos_token = "<s>"
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def write_data(tmp_path: Path) -> tuple[Path, Path]:
    """The same solution in both accepted formats: step 1 right, step 2 wrong."""
    trl = tmp_path / "trl.jsonl"
    trl.write_text("".join(json.dumps({"prompt": QUESTION, "completions": STEPS, "labels": [True, False]}) + "\n"
                           for _ in range(4)) + "not json\n")
    records = tmp_path / "records.jsonl"
    records.write_text(json.dumps({"question": QUESTION, "steps": STEPS, "label": 1}) + "\n"
                       + json.dumps({"question": QUESTION, "steps": STEPS, "step_labels": [1.0, 0.0]}) + "\n"
                       + json.dumps({"prompt": QUESTION, "completions": STEPS, "labels": [True]}) + "\n")
    return trl, records


def test_both_input_formats_read_to_the_same_step_labels(tmp_path):
    trl, records = write_data(tmp_path)
    examples, bad = read_stepwise(trl)
    assert len(examples) == 4 and examples[0].labels == (1.0, 0.0) and bad == [(5, "invalid JSON (Expecting value)")]
    examples, bad = read_stepwise(records)
    assert [e.labels for e in examples] == [(1.0, 0.0), (1.0, 0.0)]  # label=1: the first error and after are wrong
    assert bad[0][0] == 3 and "one bool" in bad[0][1]


async def test_train_prm_then_hf_prm_scores_each_step(tiny_base, tmp_path):
    trl, records = write_data(tmp_path)
    out = tmp_path / "prm"
    run = CliRunner().invoke(app, ["train", "prm", str(trl), str(records), "--base", str(tiny_base), "-o", str(out),
                                   "--max-steps", "2", "--lr", "0.01", "--batch-size", "6", "--val-fraction", "0"])
    assert run.exit_code == 0, run.output
    assert "trained on 6 solutions / 12 steps (2 optimiser steps, 12 solutions seen)" in run.output and f"hf-prm:{out}" in run.output
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= {p.name for p in out.iterdir()}
    card = (out / "README.md").read_text()
    assert "trl.jsonl` (4 rows, sha256" in card and "2 of 2 planned optimiser steps" in card
    runtime = scripted_runtime(["unused"])
    trained = runtime.verifier(f"hf-prm:{out}")
    assert trained.loaded.format == "math-shepherd"
    scores = await trained.score(QUESTION, STEPS)
    assert len(scores) == 2 and all(0 <= s <= 1 for s in scores)
    before = await runtime.verifier(f"hf-prm:{tiny_base}").score(QUESTION, STEPS)
    assert scores[0] - scores[1] > before[0] - before[1] + 0.05  # the right step now clearly above the wrong one


def test_the_cut_is_fitted_on_the_held_out_solutions_and_hf_prm_uses_it(tiny_base, tmp_path):
    right = ["2 * 3 = 6", "the answer is 6 ."]
    data = tmp_path / "both.jsonl"
    data.write_text("".join(json.dumps({"prompt": QUESTION, "completions": steps, "labels": labels}) + "\n"
                            for steps, labels in [(STEPS, [True, False]), (right, [True, True])] * 10))
    out = tmp_path / "prm"
    (out).mkdir()
    (out / CALIBRATION_FILE).write_text('{"center": 0.9}')  # a stale cut of an earlier model is replaced
    run = CliRunner().invoke(app, ["train", "prm", str(data), "--base", str(tiny_base), "-o", str(out),
                                   "--max-steps", "2", "--lr", "0.01", "--val-fraction", "0.5"])
    assert run.exit_code == 0, run.output
    fitted = json.loads((out / CALIBRATION_FILE).read_text())
    assert fitted["solutions"] == 10 and fitted["center"] != 0.9 and "held out of training" in fitted["fitted_on"]
    assert f"cut: raw {fitted['center']:.3f} maps to 0.5" in (out / "README.md").read_text()
    assert "cut fitted on the held-out solutions" in run.output
    assert scripted_runtime(["unused"]).verifier(f"hf-prm:{out}").center == fitted["center"]


def test_one_class_labels_are_one_line_and_exit_2(tiny_base, tmp_path):
    data = tmp_path / "right.jsonl"
    data.write_text(json.dumps({"prompt": QUESTION, "completions": STEPS, "labels": [True, True]}) + "\n")
    run = subprocess.run([REDLINE, "train", "prm", str(data), "--base", str(tiny_base), "-o", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "only one class" in errors[0] and "Traceback" not in run.stderr


def test_training_on_dev_questions_is_refused(tiny_base, tmp_path):
    trl, _ = write_data(tmp_path)
    dev = tmp_path / "dev.jsonl"
    dev.write_text(json.dumps({"question": QUESTION, "answer": "6"}) + "\n")
    run = subprocess.run([REDLINE, "train", "prm", str(trl), "--base", str(tiny_base), "--dev", str(dev),
                          "-o", str(tmp_path / "o")], capture_output=True, text=True, timeout=300)
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert run.returncode == 2 and len(errors) == 1 and "in the dev set" in errors[0], run.stderr
    assert not (tmp_path / "o").exists()  # refused before anything was written
