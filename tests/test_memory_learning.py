"""Learning runs (control flow on the scripted backend, real SQLite and real MiniLM embeddings)."""

from __future__ import annotations

import json

import pytest

from redline.memory.learning import Learner, LearnSettings, problem_key
from redline.memory.principles import RetirePolicy, clean_principle
from redline.memory.stepbank import gold_steps
from redline.memory.store import MemoryStore
from redline.types import Candidate, Problem, Result, Solution
from tests.conftest import scripted_runtime
from tests.memory_fixtures import LEARN_ONLY, PRINCIPLE, TRAIN, learning_script


@pytest.fixture()
def store(tmp_path):
    return MemoryStore.open(tmp_path / "memory.db")


async def test_learn_grades_records_and_writes_principles(store):
    runtime = scripted_runtime(learning_script, memory_path=store.path)
    learner = Learner(runtime, store, "cot", LearnSettings(task="gsm8k", condense_every=50, holdout=0))
    report = await learner.learn(TRAIN)
    assert report.counts["correct"] == 1 and report.counts["wrong"] == 2 and report.accuracy == pytest.approx(1 / 3)
    rows = store.db.execute("SELECT q.source_id, a.answer, a.correct FROM attempts a JOIN problems q"
                            " ON q.id = a.problem_id ORDER BY a.id").fetchall()
    assert rows == [("t1", "72", 1), ("t2", "20", 0), ("t3", "20", 0)]
    mistakes = store.db.execute("SELECT wrong_answer, first_error, corrected_source, correct_answer, corrected_steps"
                                " FROM mistakes ORDER BY id").fetchall()
    assert [m[:4] for m in mistakes] == [("20", None, "gold", "10"), ("20", None, "gold", "624")]
    assert json.loads(mistakes[1][4]) == gold_steps(TRAIN[2].solution)
    # the second mistake's principle is the same text: merged into the first, not added twice
    principles = store.principles(task="gsm8k")
    assert [p.text for p, _ in principles] == [PRINCIPLE]
    assert principles[0][0].source_mistakes == [1, 2] and report.counts["merged"] == 1
    # principle writing is booked under its own ledger and phase, outside any solve
    assert learner.learn_usage.calls == 2 and set(learner.ledger.by_phase()) == {"learn"}
    # bank: 2 + 2 + 3 gold lines, plus the 2 steps of the one correct model solution
    assert store.db.execute("SELECT source, COUNT(*) FROM steps GROUP BY source ORDER BY source").fetchall() == [
        ("gold", 7), ("model", 2)]


async def test_learn_is_resumable_and_skips_problems_already_recorded(store):
    runtime = scripted_runtime(learning_script, memory_path=store.path)
    await Learner(runtime, store, "cot", LEARN_ONLY).learn(TRAIN[:2])
    calls_before = len(runtime.backend.inner.requests)
    report = await Learner(runtime, store, "cot", LEARN_ONLY).learn(TRAIN)
    assert report.counts["skipped"] == 2 and report.counts["wrong"] == 1
    assert store.counts()["problems"] == 3 and store.counts()["attempts"] == 3
    # only the new problem was solved (1 call) and got a principle (1 call)
    assert len(runtime.backend.inner.requests) - calls_before == 2


async def test_unparseable_or_missing_gold_is_recorded_as_ungradable_not_wrong(store):
    runtime = scripted_runtime(learning_script, memory_path=store.path)
    problems = [Problem("Pick the shape: circle or square?", "\\text{}", "u1"), Problem("Name a colour.", None, "u2")]
    report = await Learner(runtime, store, "cot", LEARN_ONLY).learn(problems)
    assert report.counts["ungradable"] == 2 and report.counts["wrong"] == 0 and report.accuracy is None
    assert store.db.execute("SELECT gradable, correct FROM problems JOIN attempts ON attempts.problem_id ="
                            " problems.id").fetchall() == [(0, None), (0, None)]
    assert store.counts()["mistakes"] == 0 and store.counts()["principles"] == 0


async def test_first_error_comes_from_verifier_scores_and_a_model_correction_is_preferred(store):
    runtime = scripted_runtime(learning_script, memory_path=store.path)
    problem = TRAIN[1]
    wrong = Solution.from_text("Step 1: 12/60 = 0.2 per minute.\n\nStep 2: 0.2 * 50 = 12. The answer is 12.")
    wrong = wrong.with_scores([0.9, 0.1])
    right = Solution.from_text("Step 1: 12/60 = 0.2 per minute.\n\nStep 2: 0.2 * 50 = 10. The answer is 10.")
    right = right.with_scores([0.9, 0.8])
    learner = Learner(runtime, store, "cot", LEARN_ONLY)
    # a StepCo-like result: the first path was wrong at step 2, the revision is right
    result = Result(problem, "stepco", "10", right, candidates=(Candidate(wrong, 0.1), Candidate(right, 0.8)))
    assert (await learner.record(problem, result)).status == "correct"
    row = store.db.execute("SELECT wrong_answer, first_error, corrected_source, corrected_steps FROM mistakes").fetchone()
    assert row[:3] == ("12", 1, "model") and json.loads(row[3]) == right.step_texts
    # a wrong final answer without any correct model solution: corrected by the gold solution
    result = Result(TRAIN[2], "stepco", "12", wrong, candidates=(Candidate(wrong, 0.1),))
    assert (await learner.record(TRAIN[2], result)).status == "wrong"
    rows = store.db.execute("SELECT first_error, corrected_source FROM mistakes ORDER BY id").fetchall()
    assert rows == [(1, "model"), (1, "gold")]
    # the verified steps of the correct solution are banked; its low-scored steps would not be
    flags = store.db.execute("SELECT verified FROM steps WHERE source = 'model'").fetchall()
    assert flags == [(1,), (1,)]


async def test_principles_that_hurt_accuracy_are_retired(store):
    runtime = scripted_runtime(learning_script, memory_path=store.path)
    learner = Learner(runtime, store, "cot+principles", LearnSettings(retire=RetirePolicy(min_uses=2, margin=0.1), holdout=0))
    await learner.learn([TRAIN[1]])  # wrong: writes the principle (not yet used)
    principle_id = store.principles()[0][0].id
    # two graded attempts without it (correct), then solves that use it go wrong
    with store.transaction():
        for i in range(2):
            pid = store.add_problem(f"x{i}", f"other {i}", "1", None, True, "default", store.principles()[0][1])
            store.add_attempt(pid, "cot", "1", ["Step 1: 1"], None, True, 1)
    report = await learner.learn([Problem(f"Tom has {n} pens and buys 5 more. How many pens?", str(n + 5), f"p{n}")
                                  for n in (3, 4)])
    row = store.principles(active_only=False)[0][0]
    assert row.id == principle_id and row.used == 2 and row.used_correct == 0
    assert row.unused == 2 and row.unused_correct == 2
    assert row.retired is not None and "when used" in row.retired and report.counts["retired"] == 1
    assert store.principles() == []


async def test_condensation_writes_high_level_principles(store):
    def script(request, index):
        text = " ".join(str(m["content"]) for m in request.messages or [] if m["role"] == "user")
        if "avoided this mistake" in text:  # a different principle per mistake, so none merge
            return [" Read the question twice before computing anything.", " Convert minutes to hours first.",
                    " Multiply weekly totals by the weeks in a year."][index % 3]
        return learning_script(request, index)

    runtime = scripted_runtime(script, memory_path=store.path)
    learner = Learner(runtime, store, "cot", LearnSettings(condense_every=2, merge_threshold=0.99, holdout=0))
    more = [Problem(f"A box holds {n} eggs. How many eggs are in 3 boxes?", str(3 * n), f"e{n}") for n in (4, 6)]
    report = await learner.learn(TRAIN[1:] + more)
    levels = [p.level for p, _ in store.principles()]
    assert report.counts["high_level"] >= 1 and "high" in levels
    high = [p for p, _ in store.principles(level="high")][0]
    assert high.text in ("Compute intermediate quantities first.", "Check the units of the answer.")
    assert len(high.source_mistakes) >= 2


def test_clean_principle_and_gold_steps():
    assert clean_principle('\n- Principle: "Check each unit."') == "Check each unit."
    assert clean_principle("ok") is None
    assert gold_steps("a = 1\n\nb = 2\n") == ["a = 1", "b = 2"]
    assert gold_steps("Step 1: a\nStep 2: b") == ["Step 1: a", "Step 2: b"]
    assert problem_key(Problem("What  is 2+2?")) == problem_key(Problem("What is 2+2? "))
