"""The learned verifier: MC labelling (resumable), training on labels, scoring through a spec."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import save_file
from typer.testing import CliRunner

from redline.cli import app
from redline.errors import RedlineError
from redline.types import Problem
from redline.verifiers.features import (DENSE_FEATURES, FEATURE_VERSION, HASHED_FEATURES, dense_features,
                                        step_features, text_tokens)
from redline.verifiers.learned import LearnedVerifier, load_model_file, write_model_file
from redline.train.mc_labels import LabelSettings, label_problems
from redline.train.planted import plant_file
from redline.train.records import LabeledSolution, read_labeled
from redline.train.learned_trainer import coefficients, fit, step_dataset, train
from tests.conftest import scripted_runtime
from tests.verifier_fixtures import write_gsm8k

SOLUTION = "Step 1: 2 + 2 = 4\n\nStep 2: 4 * 3 = 12\n\nStep 3: The answer is 12."


def scripted_solver(request, index):
    """A whole solution without a prefix; rollouts after step 1 are right half the time, after step 2 always."""
    if not request.prefix:
        return SOLUTION
    if request.prefix.rstrip().endswith("2 + 2 = 4"):
        return "Step 2: 4 * 3 = 12. The answer is 12." if index % 2 else "Step 2: 4 * 2 = 8. The answer is 8."
    return "Step 3: The answer is 12."


async def test_mc_labels_are_rollout_fractions_and_the_run_resumes(tmp_path):
    runtime = scripted_runtime(scripted_solver, max_tokens=64)
    out = tmp_path / "labels.jsonl"
    problems = [Problem("What is (2 + 2) * 3?", "12", id="p1")]
    settings = LabelSettings(k=4, temperature=0.7, max_tokens=64)
    assert await label_problems(runtime, problems, out, settings) == (1, 0)
    record = json.loads(out.read_text())
    assert record["id"] == "p1" and len(record["steps"]) == 3
    assert record["step_labels"] == [0.5, 1.0, 1.0]
    requests = runtime.backend.inner.requests
    calls_before = len(requests)
    assert [r.n for r in requests[:1]] == [1] and {r.n for r in requests[1:]} == {4}

    with out.open("a") as f:
        f.write("{half a line")  # an interrupted write: ignored, never fatal
    more = problems + [Problem("And (2 + 2) * 3 again?", "11", id="p2")]
    assert await label_problems(runtime, more, out, settings) == (1, 1)
    assert len(requests) - calls_before == calls_before  # only p2 was labelled
    result = read_labeled(out)
    assert [r.id for r in result.records] == ["p1", "p2"] and len(result.bad_lines) == 1
    assert result.records[1].step_labels[-1] == 0.0  # p2's gold is 11: the final answer is wrong


@pytest.mark.model
def test_label_command_with_the_real_model_resumes(local_backend, tmp_path):
    data = write_gsm8k(tmp_path / "gsm.jsonl")
    out = tmp_path / "labels.jsonl"
    args = ["verifier", "label", "--data", str(data), "--limit", "1", "-k", "2", "--max-tokens", "32",
            "--max-steps", "2", "-o", str(out)]
    run = CliRunner().invoke(app, args)
    assert run.exit_code == 0, run.output
    record = json.loads(out.read_text())
    assert record["answer"] == "72" and 1 <= len(record["steps"]) <= 2
    assert len(record["step_labels"]) == len(record["steps"])
    assert all(x in (0.0, 0.5, 1.0) for x in record["step_labels"])
    assert record["calls"] == len(record["steps"])  # one solution call, then one n=2 call per non-final step
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "labelled 0 problems (1 already in" in again.output
    assert len(out.read_text().splitlines()) == 1


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("learned")
    records = [r for r in plant_file(write_gsm8k(tmp / "gsm.jsonl", repeat=6), 36, seed=2)
               if isinstance(r, LabeledSolution)]
    path = tmp / "prm.safetensors"
    report = train(records, path, val_fraction=0.25)
    return path, records, report


async def test_trained_model_scores_through_its_spec(trained):
    path, records, report = trained
    assert report.steps > 0 and report.train_auroc is not None and report.train_auroc > 0.8
    runtime = scripted_runtime(["unused"])
    verifier = runtime.verifier(f"learned:{path}")
    assert isinstance(verifier, LearnedVerifier)
    assert scripted_runtime(["unused"]).verifier(f"learned:{path}") is not verifier
    slips = [r for r in records if r.kind == "arith"]
    wrong, right = [], []
    for r in slips:
        scores = await verifier.score(r.question, list(r.steps))
        assert len(scores) == len(r.steps) and all(0.0 <= s <= 1.0 for s in scores)
        wrong.append(scores[r.label])
        right += scores[: r.label]
    assert sum(wrong) / len(wrong) < sum(right) / max(len(right), 1)
    assert await verifier.score("q", []) == []
    odd = await verifier.score("q", ["", "7 " * 20_000])
    assert len(odd) == 2 and all(0.0 <= s <= 1.0 for s in odd)


def test_missing_or_foreign_model_files_are_clear_errors(tmp_path):
    runtime = scripted_runtime(["unused"])
    with pytest.raises(RedlineError, match="no learned verifier at .*train one with"):
        runtime.verifier(f"learned:{tmp_path / 'nope.safetensors'}")
    foreign = tmp_path / "foreign.safetensors"
    foreign.write_text("not a model")
    with pytest.raises(RedlineError, match="is not a learned verifier file"):
        runtime.verifier(f"learned:{foreign}")
    other = tmp_path / "other.safetensors"  # a real safetensors file, but not ours
    save_file({"coef": np.zeros(3)}, str(other), metadata={"format": "something-else"})
    with pytest.raises(RedlineError, match="is not a learned verifier file"):
        runtime.verifier(f"learned:{other}")


def test_safetensors_round_trip_equals_sklearn_and_old_joblib_files_are_refused(trained, tmp_path):
    import joblib

    _, records, _ = trained
    x, y = step_dataset(records)
    model = fit(x, y, c=0.5, seed=1)
    path = write_model_file(tmp_path / "m.safetensors", *coefficients(model), {"trained_on": 3})
    coef, intercept, info = load_model_file(path)
    assert info["trained_on"] == 3 and info["feature_version"] == FEATURE_VERSION
    assert info["hashed_features"] == HASHED_FEATURES
    ours = LearnedVerifier(coef, intercept).probabilities(x)
    np.testing.assert_allclose(ours, model.predict_proba(x)[:, 1], rtol=1e-9, atol=1e-12)
    assert 0.05 < ours.std()  # the model separates steps: equality is not between two constants

    old = tmp_path / "prm.joblib"
    joblib.dump({"format": "redline-learned-prm", "feature_version": FEATURE_VERSION, "model": model}, old)
    compressed = tmp_path / "prm-z.joblib"
    joblib.dump({"model": model}, compressed, compress=3)
    for stale in (old, compressed):
        with pytest.raises(RedlineError, match="old joblib/pickle .*retrain it with `redline verifier train "
                                               "LABELS.jsonl -o prm(-z)?.safetensors`"):
            load_model_file(stale)
    stale_features = tmp_path / "v1.safetensors"
    write_model_file(stale_features, coef, intercept, {"feature_version": 1})
    with pytest.raises(RedlineError, match="feature version 1.*retrain"):
        load_model_file(stale_features)


def test_features_pair_question_words_with_step_operators_and_flag_made_up_operands():
    question = "Natalia sold 48 clips in April, and half as many in May."
    tokens = text_tokens({"half", "april"}, "Step 1: She sold 48 * 2 = 96 clips in May.")
    assert {"q:half|*", "clips|*", "sold", "sold_"} - set(tokens) == {"sold_"}
    assert not any(t.startswith("step") for t in tokens)  # the 'Step k:' marker is not text
    dense = dense_features(question, ["48 / 2 = 24 clips", "24 + 17 = 41 clips"])
    assert dense[:, 3].tolist() == [1.0, 0.5]  # 17 appears nowhere before: half the operands grounded
    assert dense[:, 0].tolist() == [1.0, 1.0] and dense[:, 5].tolist() == [0.0, 1.0]
    x = step_features(question, ["48 / 2 = 24", "48 + 24 = 72", "The answer is 72."])
    assert x.shape == (3, HASHED_FEATURES + DENSE_FEATURES)
