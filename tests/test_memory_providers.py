"""Context providers over a learned store: principles, mistakes, boost (inside cot and stepco), separation."""

from __future__ import annotations

import shutil

import pytest

from redline.errors import RedlineError
from redline.loop import build_solver
from redline.memory.learning import Learner, learn_online, problem_key
from redline.memory.store import RUNTIME_KEY, MemoryStore
from redline.types import Problem
from redline.verifiers.scripted import ScriptedVerifier
from tests.conftest import scripted_runtime
from tests.memory_fixtures import LEARN_ONLY, PRINCIPLE, TRAIN, learning_script

EVAL = Problem("Zorblax the baker sold 36 muffins in June and half as many in July. "
               "How many muffins did Zorblax sell in both months?", "54", "eval-1")


@pytest.fixture(scope="module")
async def learned_once(tmp_path_factory):
    """A store after a learning run on TRAIN: 1 correct, 2 mistakes, 1 principle, banked gold steps."""
    path = tmp_path_factory.mktemp("learned") / "memory.db"
    store = MemoryStore.open(path)
    runtime = scripted_runtime(learning_script, memory_path=path)
    await Learner(runtime, store, "cot", LEARN_ONLY).learn(TRAIN)
    store.close()  # checkpoints the WAL: the .db file alone holds everything
    return path


@pytest.fixture()
def learned(learned_once, tmp_path):
    """A private copy of the learned store for one test."""
    path = tmp_path / "memory.db"
    shutil.copyfile(learned_once, path)
    return path


def _system_prompts(runtime) -> list[str]:
    return [r.messages[0]["content"] for r in runtime.backend.inner.requests]


async def test_principles_provider_injects_principles_and_learn_runs_record_their_use(learned):
    runtime = scripted_runtime(learning_script, memory_path=learned)
    result = await build_solver("cot+principles:k=2", runtime).solve(EVAL)
    assert PRINCIPLE in _system_prompts(runtime)[0]
    node = next(c for c in result.trace["children"] if c["kind"] == "memory" and c["provider"] == "principles")
    assert node["texts"] == [PRINCIPLE] and node["used"] and node["floor"] == -1.0
    store = MemoryStore.open(learned)
    learner = Learner(runtime, store, "cot+principles", LEARN_ONLY)
    await learner.learn([Problem("Sam has 4 boxes of 6 pens. How many pens?", "24", "s1")])
    row = store.principles()[0][0]
    assert row.used == 1 and row.used_correct == 0


async def test_mistakes_provider_shows_a_wrong_and_a_correct_solution_of_a_similar_problem(learned):
    runtime = scripted_runtime(learning_script, memory_path=learned)
    similar = Problem("Weng earns $15 an hour for babysitting. She babysat for 40 minutes. How much did she earn?")
    await build_solver("cot+mistakes:k=1", runtime).solve(similar)
    system = _system_prompts(runtime)[0]
    assert "Weng earns $12 an hour" in system
    assert "Incorrect solution (answer 20)" in system and "Correct solution (answer 10)" in system
    assert "0.2 x 50 = $10" in system
    unrelated = Problem("Name the capital city of France in one word.")
    await build_solver("cot+mistakes:k=1,min_similarity=0.5", runtime).solve(unrelated)
    assert "Incorrect solution" not in _system_prompts(runtime)[1]


async def test_boost_regenerates_each_step_with_retrieved_verified_steps_under_retrieve_phase(learned):
    runtime = scripted_runtime(learning_script, memory_path=learned, max_tokens=64)
    result = await build_solver("cot+boost:k=2,min_similarity=0.3", runtime).solve(EVAL)
    boosts = [c for c in result.trace["children"] if c["kind"] == "boost"]
    assert boosts and all(b["examples"] for b in boosts) and boosts[0]["step"] == 0
    regen = [r for r in runtime.backend.inner.requests if "Verified steps from similar problems" in r.messages[0]["content"]]
    assert len(regen) == len(boosts)
    store = MemoryStore.open(learned)
    for request, boost in zip(regen, boosts):  # the retrieved steps, with their problems, are the examples
        for step_id in boost["examples"]:
            text, question = store.db.execute("SELECT s.text, q.question FROM steps s JOIN problems q"
                                              " ON q.id = s.problem_id WHERE s.id = ?", (step_id,)).fetchone()
            assert f"Problem: {question}\nStep: {text}" in request.messages[0]["content"]
    assert result.usage["retrieve"].calls == len(boosts) and result.usage["solve"].calls == len(boosts)


async def test_boost_works_inside_stepco_for_the_first_path_and_the_revision(learned):
    verifier = ScriptedVerifier(lambda question, i, step: 0.2 if i == 1 else 0.9)
    runtime = scripted_runtime(learning_script, memory_path=learned, verifiers={"scripted": verifier})
    spec = "stepco:verifier=scripted,max_iters=1,outcome=steps,revise=prefix+boost:min_similarity=0.3"
    result = await build_solver(spec, runtime).solve(EVAL)
    boosts = [c for c in result.trace["children"] if c["kind"] == "boost"]
    revise = [c for c in result.trace["children"] if c["kind"] == "revise"]
    assert revise, "stepco should have revised the low-scored step"
    # steps of the first path (0 and 1) and the regenerated step 1 of the revision were all boosted
    assert [b["step"] for b in boosts] == [0, 1, 1]
    assert result.usage["retrieve"].calls == 3


async def test_providers_never_write_eval_problems_into_the_memory_they_read(learned):
    before = MemoryStore.open(learned).counts()
    runtime = scripted_runtime(learning_script, memory_path=learned)
    assert runtime.learn_online is False
    verifier = ScriptedVerifier(lambda question, i, step: 0.9)
    runtime.verifiers["scripted"] = verifier
    for spec in ("cot+principles+mistakes+boost:min_similarity=0", "stepco:verifier=scripted+boost+principles"):
        result = await build_solver(spec, runtime).solve(EVAL)
        assert result.answer is not None
        store = runtime.cached(RUNTIME_KEY, lambda: None)
        assert await learn_online(runtime, store, spec, EVAL, result) is None  # off: nothing recorded
    assert MemoryStore.open(learned).counts() == before
    needle = b"Zorblax"
    files = [p for p in learned.parent.iterdir() if p.name.startswith("memory.db")]
    assert files and all(needle not in p.read_bytes() for p in files)
    # the same path with learning switched on does write: the check above can fail
    runtime.learn_online = True
    assert (await learn_online(runtime, store, "cot", EVAL, result)).status == "wrong"
    assert store.has_problem(problem_key(EVAL))
    assert any(needle in p.read_bytes() for p in learned.parent.iterdir() if p.name.startswith("memory.db"))


def test_provider_on_a_missing_store_is_a_clear_error(tmp_path):
    runtime = scripted_runtime(learning_script, memory_path=tmp_path / "typo.db")
    with pytest.raises(RedlineError, match="no memory store"):
        build_solver("cot+principles", runtime)
    assert not (tmp_path / "typo.db").exists()


def test_bad_provider_params_name_the_valid_ones(learned):
    runtime = scripted_runtime(learning_script, memory_path=learned)
    with pytest.raises(RedlineError, match="min_similarity"):
        build_solver("cot+boost:kk=2", runtime)
