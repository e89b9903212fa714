"""Memory that earns its place: principles that are lessons, measured effects, abstaining retrieval,
StepCo revisions (scripted backend, real SQLite and MiniLM embeddings)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace

import numpy as np
import pytest
from typer.testing import CliRunner

from redline.bench.plots import legend_labels
from redline.bench.report import write_reports
from redline.bench.runner import run_eval, shared_runs
from redline.bench.store import ResultStore
from redline.cli import app
from redline.embeddings import EMBEDDING_DIM
from redline.loop import build_solver
from redline.memory import effects
from redline.memory.export import export
from redline.memory.learning import Learner, LearnSettings
from redline.memory.principles import check_principle
from redline.memory.providers import memory_notes
from redline.memory.store import RUNTIME_KEY, MemoryStore, ProviderEffect
from redline.types import Problem
from redline.verifiers.scripted import ScriptedVerifier
from tests.conftest import scripted_runtime
from tests.memory_fixtures import LEARN_ONLY, PRINCIPLE, PRINCIPLE_REPLY, TRAIN, learning_script

runner = CliRunner()
ZORBLAX = Problem("Zorblax the baker sold 36 muffins in June and half as many in July. "
                  "How many muffins did Zorblax sell in both months?", "54", "z1")
BOOK = Problem("A book has 120 pages. Tom tore out 12 pages. How many pages are left?", "108", "b1",
               "120 - 12 = 108 pages are left.")


def _user_text(request) -> str:
    return " ".join(str(m["content"]) for m in request.messages or [] if m["role"] == "user")


def _system(request) -> str:
    return str(request.messages[0]["content"])


@pytest.fixture()
def store(tmp_path):
    return MemoryStore.open(tmp_path / "memory.db")


async def test_a_principle_that_restates_the_questions_numbers_is_rejected(store):
    def script(request, index):
        if "avoided this mistake" in _user_text(request):
            return " the book has pages, the number of pages in the book is 120 - 12 = 118."
        return "Step 1: 120 - 12 = 118. The answer is 118."

    runtime = scripted_runtime(script, memory_path=store.path)
    report = await Learner(runtime, store, "cot", LEARN_ONLY).learn([BOOK])
    assert report.counts["wrong"] == 1 and report.counts["rejected"] == 1 and report.counts["principles"] == 0
    assert store.principles() == []
    # the principle prompt showed the wrong and the correct solution side by side, numbers hidden
    prompt = next(_user_text(r) for r in runtime.backend.inner.requests if "avoided this mistake" in _user_text(r))
    assert "[A]" in prompt and "120" not in prompt and "118" not in prompt and "108" not in prompt
    assert prompt.index("wrong solution") < prompt.index("Correct solution")


@pytest.mark.parametrize("draft, reason", [
    ("When pages are torn out, take 12 from 120.", "restates the problem's numbers (12, 120)"),
    ("When the answer is left over, it is what remains.", "states an answer"),
    ("When [A] pages are torn out, subtract [B].", "uses the hidden numbers"),
    ("When Tom tears pages out, subtract them.", "names the problem's Tom"),
    ("When the correct solution subtracts, do the same.", "describes this solution, not a rule"),
    ("When tom tore out pages, how many pages are left over.", "copies the question"),
    ("When writing a rule for any similar problem, be general.", "echoes the prompt"),
    ("When the solution is:", "unfinished"),
    ("When part of a total is removed, subtract the part from the total.", None),
])
def test_check_principle_names_why_a_draft_restates_its_problem(draft, reason):
    prompt = "Compare the wrong and the correct solution, write a rule for any similar problem."
    assert check_principle(draft, BOOK.question, [BOOK.solution, "118"], prompt) == reason


async def test_a_lesson_without_the_problems_details_is_kept(store):
    runtime = scripted_runtime(learning_script, memory_path=store.path)
    report = await Learner(runtime, store, "cot", LEARN_ONLY).learn([TRAIN[1]])
    assert report.counts["rejected"] == 0 and [p.text for p, _ in store.principles()] == [PRINCIPLE]


def _principles_hurt(request, index):
    """A model that is right on every problem, unless principles are in its context."""
    if "avoided this mistake" in _user_text(request):
        return f" {PRINCIPLE}"
    wrong = "Principles learned" in _system(request)
    return "Step 1: 2 + 2 = 5. The answer is 5." if wrong else "Step 1: 48/2 = 24. The answer is 72."


HELD = [Problem(f"Natalia sold clips to {n} friends in April and half as many in May. How many in all?", "72",
                f"h{n}") for n in (48, 49, 50)]


async def _harmful_store(path):
    store = MemoryStore.open(path)
    runtime = scripted_runtime(learning_script, memory_path=path)
    settings = LearnSettings(holdout=0, providers=("principles",))
    learner = Learner(runtime, store, "cot", settings)
    await learner.learn(TRAIN)  # Natalia right; two mistakes, one principle
    learner.runtime = scripted_runtime(_principles_hurt, memory_path=path)
    learner.runtime.cached(RUNTIME_KEY, lambda: store)
    learner.solver = build_solver("cot", learner.runtime)
    await learner.measure(HELD)
    return store, learner.report


async def test_a_provider_measured_harmful_is_off_by_default_and_says_so(tmp_path):
    path = tmp_path / "memory.db"
    store, report = await _harmful_store(path)
    effect = store.provider_effect("principles", "cot")
    assert effect is not None and effect.n == 3 and effect.bare_correct == 3 and effect.with_correct == 0
    assert effect.delta == pytest.approx(-1.0) and effect.harmful and report.effects == [effect]
    # the one principle it used lost on every held-out problem: retired
    assert store.principles() == [] and report.retired_items == {"principles": 1}

    runtime = scripted_runtime(_principles_hurt, memory_path=path)
    notes = memory_notes("cot+principles", runtime, allow_harmful=False)
    assert len(notes) == 1 and "'principles' is off: measured harmful" in notes[0] and "-100.0 points" in notes[0]
    result = await build_solver("cot+principles:floor=-1", runtime).solve(TRAIN[0])
    node = next(c for c in result.trace["children"] if c["kind"] == "memory")
    assert node["used"] is False and node["reason"].startswith("off: measured harmful")
    assert "Principles learned" not in _system(runtime.backend.inner.requests[-1])

    # run anyway only when asked: the flag (or force=true), with a note that says so
    with store.transaction():
        store.db.execute("UPDATE principles SET retired = NULL")
    assert "runs although measured harmful" in memory_notes("cot+principles", runtime, allow_harmful=True)[0]
    result = await build_solver("cot+principles:floor=-1", runtime).solve(TRAIN[0])
    assert "Principles learned" in _system(runtime.backend.inner.requests[-1]) and result.answer == "5"


async def test_a_strategy_learn_did_not_measure_follows_the_providers_measurement_with_another(tmp_path):
    path = tmp_path / "memory.db"
    store, _ = await _harmful_store(path)  # principles measured harmful with cot only
    runtime = scripted_runtime(_principles_hurt, memory_path=path)
    notes = memory_notes("stepco+principles", runtime, allow_harmful=False)
    assert len(notes) == 1 and "'principles' is off: measured harmful, -100.0 points vs bare cot" in notes[0]
    assert store.provider_effect("mistakes", "stepco") is None  # a provider never measured stays unmeasured
    # once stepco has a measurement of its own, that one decides
    with store.transaction():
        store.set_provider_effect(ProviderEffect("principles", "stepco", 2, 1, 2, 0.5, 0.0, 1.0, 100, 150, -1.0, 0.5))
    assert store.provider_effect("principles", "stepco").strategy == "stepco"
    assert memory_notes("stepco+principles", runtime, allow_harmful=False) == []
    assert store.provider_effect("principles", "cot").harmful


async def test_retrieval_below_the_floor_adds_nothing_to_the_prompt(tmp_path):
    path = tmp_path / "memory.db"
    store = MemoryStore.open(path)
    await Learner(scripted_runtime(learning_script, memory_path=path), store, "cot", LEARN_ONLY).learn(TRAIN)
    runtime = scripted_runtime(learning_script, memory_path=path)
    unrelated = Problem("Name the capital city of France in one word.")
    await build_solver("cot", runtime).solve(unrelated)
    bare = _system(runtime.backend.inner.requests[-1])
    for spec in ("cot+principles:floor=0.9", "cot+mistakes:floor=0.9,min_similarity=-1"):
        result = await build_solver(spec, runtime).solve(unrelated)
        assert _system(runtime.backend.inner.requests[-1]) == bare
        node = next(c for c in result.trace["children"] if c["kind"] == "memory")
        assert node["used"] is False and node["similarity"] < 0.9 and "ids" not in node
    # the same solves with no floor do put them in: the checks above can fail
    await build_solver("cot+principles:floor=-1", runtime).solve(unrelated)
    assert PRINCIPLE in _system(runtime.backend.inner.requests[-1])
    await build_solver("cot+mistakes:floor=-1,min_similarity=-1", runtime).solve(unrelated)
    assert "Incorrect solution" in _system(runtime.backend.inner.requests[-1])

    # boost below its fitted floor: one plain call, no step-by-step drafting, nothing retrieved
    with store.transaction():
        store.set_provider_effect(ProviderEffect("boost", "cot", 5, 1, 2, 0.2, -0.2, 0.6, 100, 300, 0.95, 0.2))
    calls = len(runtime.backend.inner.requests)
    result = await build_solver("cot+boost:min_similarity=-1", runtime).solve(ZORBLAX)
    assert len(runtime.backend.inner.requests) - calls == 1 and "retrieve" not in result.usage
    node = next(c for c in result.trace["children"] if c["kind"] == "memory")
    assert node["floor"] == 0.95 and node["similarity"] < 0.95 and "abstained" in node["reason"]
    assert not [c for c in result.trace["children"] if c["kind"] == "boost"]
    # with no floor it drafts and regenerates step by step: the check above can fail
    result = await build_solver("cot+boost:min_similarity=-1,floor=-1", runtime).solve(ZORBLAX)
    assert result.usage["retrieve"].calls >= 1


def _vector(i: int) -> np.ndarray:
    v = np.zeros(EMBEDDING_DIM, dtype=np.float32)
    v[i] = 1.0
    return v


async def test_effect_bookkeeping_matches_hand_computed_numbers(store):
    # 6 held-out problems; principles fired on each, with these similarities and items
    bare = [1, 0, 0, 1, 0, 1]
    used = [1, 1, 0, 0, 1, 1]
    similarity = [0.9, 0.8, 0.3, 0.7, 0.6, 0.2]
    items = [[1], [1, 2], [2], [2, 3], [1], []]
    mistakes_used = [0, 0, 0, 0, 0, 0]
    with store.transaction():
        for i in (1, 2, 3):
            store.add_principle(f"principle {i}", "low", "gsm8k", [], _vector(i))
        for h in range(6):
            hid = store.add_holdout(f"k{h}", f"question {h}", "1", "gsm8k")
            store.add_holdout_solve(hid, "cot", "", bool(bare[h]), 100, None, [])
            store.add_holdout_solve(hid, "cot", "principles", bool(used[h]), 160 + 10 * h, similarity[h], items[h])
            store.add_holdout_solve(hid, "cot", "mistakes", bool(mistakes_used[h]), 400, 0.5, [])
    update = effects.update(store, "cot")
    by = {e.provider: e for e in update.effects}
    p = by["principles"]
    # by hand: 3 of 6 bare, 4 of 6 with; changes per problem 0, +1, 0, -1, +1, 0
    assert (p.n, p.bare_correct, p.with_correct) == (6, 3, 4) and p.delta == pytest.approx(1 / 6)
    assert p.bare_tokens == 100 and p.with_tokens == pytest.approx((160 + 170 + 180 + 190 + 200 + 210) / 6)
    # cumulative net wins from the most similar down: 0.9: 0, 0.8: +1, 0.7: 0, 0.6: +1, ... -> floor 0.8
    assert p.floor == pytest.approx(0.8) and p.floor_delta == pytest.approx(1 / 6)
    assert p.ci_low <= p.delta <= p.ci_high and not p.harmful
    m = by["mistakes"]
    assert m.delta == pytest.approx(-0.5) and m.harmful and m.ci_high < 0 and m.floor == effects.FLOOR_NEVER
    # items: 1 -> uses 3, +2; 2 -> uses 3, one won one lost; 3 -> used once, lost: retired
    records = effects.item_records(store.holdout_solves("cot"))
    assert [(r.uses, r.wins, r.losses) for r in (records[("principles", i)] for i in (1, 2, 3))] == [
        (3, 2, 0), (3, 1, 1), (1, 0, 1)]
    assert update.retired == {"principles": 1}
    assert [row.id for row, _ in store.principles()] == [1, 2]
    assert "measured effect -1" in store.item_text("principles", 3)[1]
    assert store.provider_effect("principles", "cot") == p

    stats = runner.invoke(app, ["memory", "stats", "--json", "--memory", str(store.path)])
    assert stats.exit_code == 0, stats.output
    data = json.loads(stats.stdout)
    assert {e["provider"]: e["default"] for e in data["effects"]} == {"mistakes": "off (harmful)",
                                                                      "principles": "on above 0.80"}
    assert data["items"][0]["id"] == 3 and data["items"][0]["net"] == -1 and data["items"][0]["retired"]
    shown = runner.invoke(app, ["memory", "stats", "--memory", str(store.path)])
    text = " ".join(shown.stdout.split())
    assert shown.exit_code == 0 and "principles: +16.7 points vs bare cot" in text and "off (harmful)" in text
    assert "principles 3: net -1 (0 won, 1 lost, 1 uses) (retired)" in text


async def test_learning_with_stepco_stores_the_flagged_step_its_revision_and_whether_it_fixed_the_answer(store):
    def script(request, index):
        if "avoided this mistake" in _user_text(request):
            return PRINCIPLE_REPLY
        if request.prefix:  # the revision continues after the kept step 1
            return "Step 2: 48+24 = 72. The answer is 72."
        return "Step 1: 48/2 = 24 clips in May.\nStep 2: 48+24 = 20. The answer is 20."

    verifier = ScriptedVerifier(lambda question, i, step: 0.1 if "= 20" in step else 0.9)
    runtime = scripted_runtime(script, memory_path=store.path, verifiers={"scripted": verifier})
    spec = "stepco:verifier=scripted,outcome=steps,revise=prefix,max_iters=2"
    report = await Learner(runtime, store, spec, LEARN_ONLY).learn([TRAIN[0]])
    assert report.counts["correct"] == 1 and report.counts["revisions"] == 1 and report.counts["fixed"] == 1
    row = store.db.execute("SELECT position, prefix, flagged, flagged_score, revision, before_answer, after_answer,"
                           " before_correct, after_correct FROM revisions").fetchone()
    assert row == (1, json.dumps(["Step 1: 48/2 = 24 clips in May."]), "Step 2: 48+24 = 20. The answer is 20.",
                   pytest.approx(0.1), "Step 2: 48+24 = 72. The answer is 72.", "20", "72", 0, 1)
    out = store.path.parent / "step-dpo.jsonl"
    exported = export(store, "step-dpo", out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert exported.rows == 1 and rows[0]["chosen"] == "Step 2: 48+24 = 72. The answer is 72."
    assert rows[0]["rejected"] == "Step 2: 48+24 = 20. The answer is 20."
    assert rows[0]["prompt"].endswith("Step 1: 48/2 = 24 clips in May.\n\n") and "Natalia" in rows[0]["prompt"]


async def test_eval_computes_a_strategy_whose_providers_are_off_once_and_resumes_its_copies(tmp_path):
    path = tmp_path / "memory.db"
    store, _ = await _harmful_store(path)  # principles measured harmful with cot
    with store.transaction():
        store.db.execute("UPDATE principles SET retired = NULL")
    runtime = scripted_runtime(_principles_hurt, memory_path=path)
    runtime.cached(RUNTIME_KEY, lambda: store)
    keys = ["cot", "principles+cot", "cot+principles:force=true,floor=-1"]
    assert shared_runs(keys, runtime) == {"principles+cot": "cot"}
    assert shared_runs(keys, scripted_runtime(_principles_hurt)) == {}  # no memory: nothing is off

    run_dir = tmp_path / "run"
    tallies = await run_eval(run_dir, HELD, keys, runtime, concurrency=2)
    assert len(runtime.backend.inner.requests) == 2 * len(HELD)  # cot and the forced row; the copy costs nothing
    with ResultStore(run_dir) as results:
        by = {s: {r.problem_id: r for r in results.rows(s)} for s in keys}
        assert results.meta()["shared"] == {"principles+cot": "cot"}
    assert by["principles+cot"] == {pid: replace(r, strategy="principles+cot") for pid, r in by["cot"].items()}
    assert tallies["principles+cot"].correct == tallies["cot"].correct == 3
    assert tallies["cot+principles:force=true,floor=-1"].correct == 0  # computed: the principle is in its context
    data, _ = write_reports(run_dir)
    assert "`principles+cot` as `cot`" in (run_dir / "report.md").read_text()
    assert json.loads((run_dir / "summary.json").read_text())["shared"] == {"principles+cot": "cot"}
    forced = "cot+principles:force=true,floor=-1"
    assert legend_labels(data) == {"cot": "cot = principles+cot", forced: forced}

    with sqlite3.connect(run_dir / "results.db") as db:  # a run stopped before the copies were written
        db.execute("DELETE FROM results WHERE strategy = 'principles+cot' AND problem_id != 'h48'")
    calls = len(runtime.backend.inner.requests)
    tallies = await run_eval(run_dir, HELD, keys, runtime, concurrency=2)
    assert len(runtime.backend.inner.requests) == calls and tallies["principles+cot"].correct == 3
