"""Exports for training, each loaded back with the `datasets` library as TRL would."""

from __future__ import annotations

import datasets
import pytest

from redline.errors import RedlineError
from redline.memory.export import export
from redline.memory.learning import Learner
from redline.memory.store import MemoryStore
from redline.types import Candidate, Result, Solution
from tests.conftest import scripted_runtime
from tests.memory_fixtures import LEARN_ONLY, TRAIN, learning_script


@pytest.fixture(scope="module")
async def store(tmp_path_factory):
    """TRAIN learned with cot (no step scores), plus a StepCo-like result with a located first error.
    Built once: exports only read it."""
    store = MemoryStore.open(tmp_path_factory.mktemp("export") / "memory.db")
    runtime = scripted_runtime(learning_script, memory_path=store.path)
    learner = Learner(runtime, store, "cot", LEARN_ONLY)
    await learner.learn(TRAIN)
    problem = TRAIN[1].__class__("Lia earns $20 an hour. She works 30 minutes. How much does she earn?", "10", "x")
    wrong = Solution.from_text("Step 1: 30 minutes is 0.5 hours.\n\nStep 2: 20 * 0.5 = 12. The answer is 12.")
    right = Solution.from_text("Step 1: 30 minutes is 0.5 hours.\n\nStep 2: 20 * 0.5 = 10. The answer is 10.")
    result = Result(problem, "stepco", "10", right.with_scores([0.9, 0.9]),
                    candidates=(Candidate(wrong.with_scores([0.9, 0.2]), 0.2), Candidate(right, 0.9)))
    await learner.record(problem, result)
    return store


def _load(path, tmp_path) -> datasets.Dataset:
    return datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "hf"))


def test_sft_export_is_chat_jsonl_of_verified_correct_solutions(store, tmp_path):
    report = export(store, "sft", tmp_path / "sft.jsonl")
    data = _load(report.path, tmp_path)
    assert data.column_names == ["messages"] and len(data) == report.rows
    assert report.rows == 5  # 2 correct model solutions (Natalia, Lia) + 3 gold worked solutions (TRAIN)
    for row in data:
        assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
        assert row["messages"][2]["content"].startswith("Step 1:")
        assert "The answer is" in row["messages"][2]["content"]
    assert not any("The answer is 20" in row["messages"][2]["content"] for row in data)  # wrong ones excluded


def test_step_dpo_export_pairs_the_erroneous_step_with_the_correction(store, tmp_path):
    report = export(store, "step-dpo", tmp_path / "dpo.jsonl")
    data = _load(report.path, tmp_path)
    assert sorted(data.column_names) == ["chosen", "prompt", "rejected"]
    assert report.rows == 1 and report.skipped == 2  # the cot mistakes have no located first error
    row = data[0]
    assert row["prompt"].startswith("Lia earns $20") and row["prompt"].endswith("Step 1: 30 minutes is 0.5 hours.\n\n")
    assert row["rejected"] == "Step 2: 20 * 0.5 = 12. The answer is 12."
    assert row["chosen"] == "Step 2: 20 * 0.5 = 10. The answer is 10."


def test_prm_export_labels_steps_up_to_the_first_error(store, tmp_path):
    report = export(store, "prm", tmp_path / "prm.jsonl")
    data = _load(report.path, tmp_path)
    assert sorted(data.column_names) == ["completions", "labels", "prompt"]
    for row in data:
        assert len(row["completions"]) == len(row["labels"]) > 0
    negatives = [row for row in data if not all(row["labels"])]
    assert len(negatives) == 1
    assert negatives[0]["labels"] == [True, False] and negatives[0]["completions"][1].endswith("The answer is 12.")
    assert report.rows == 5 + 1 and report.skipped == 2


def test_export_refuses_unknown_formats_and_never_leaves_partial_files(store, tmp_path):
    with pytest.raises(RedlineError, match="sft, step-dpo, prm"):
        export(store, "csv", tmp_path / "x.jsonl")
    target = tmp_path / "keep.jsonl"
    target.write_text("old\n")
    with pytest.raises(RedlineError, match="directory"):
        export(store, "sft", tmp_path)
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.glob(".*jsonl*")) == []
