"""StepCo's control flow on the scripted backend and a scripted verifier: the paper's reference
loop by default (whole path scored first, steps only when it fails), every option that departs
from it, and the loop's edge cases; then one run on the real embedded model."""

from __future__ import annotations

import json

import pytest

from redline.errors import SpecError
from redline.loop import build_solver
from redline.runtime import Runtime
from redline.strategies.generation import prefix_text
from redline.types import Problem
from tests.test_strategies_control import FIXED, Q, WRONG, marked_score, nodes, setup

FIXED_PATH = "Step 1: 2*3=6 apples.\n\n" + FIXED  # a rewrite writes the kept step out again
WRONG_STEPS = ("Step 1: 2*3=6 apples.", "Step 2: 6-1=4 apples. [s=0.1]", "Step 3: So 4 are left. The answer is 4.")


def whole_fails(question: str, i: int, step: str) -> float:
    """A whole path (it spans lines) scores 0.2; a single step scores its mark, else 0.9."""
    return 0.2 if "\n" in step else marked_score(question, i, step)


def stop_reason(result) -> str:
    return nodes(result.trace, "stop")[0]["reason"]


# --- the paper's reference loop (the default) ------------------------------------------------

async def test_paper_preset_scores_steps_only_after_the_whole_path_fails():
    solver, backend, verifier = setup("stepco:verifier=scripted", [WRONG, FIXED_PATH])
    result = await solver.solve(Q)
    question = Q.question
    assert verifier.calls == [(question, (WRONG,)),  # the first path, whole: 0.1 < 0.5
                              (question, WRONG_STEPS),  # only now its steps: step 2 is flagged
                              (question, (FIXED_PATH,))]  # the rewrite, whole: 0.9 passes; its steps never scored
    first, rewrite = backend.requests
    assert first.temperature == 0.7 and rewrite.temperature == 0.7  # the reference samples every path at 0.7
    assert rewrite.prefix == ""  # the model writes the path out again
    prompt = rewrite.messages[-1]["content"]
    assert "2*3=6 apples" in prompt and "Step 2 is probably wrong" in prompt and "0.10" in prompt
    assert [n["kind"] for n in result.trace["children"]] == ["generate", "score_steps", "revise", "stop"]
    assert nodes(result.trace, "score_steps")[0]["scores"] == [0.9, 0.1, 0.9]
    assert result.answer == "5" and result.solution.scores is None


async def test_paper_preset_accepts_a_passing_path_with_one_verifier_call():
    solver, backend, verifier = setup("stepco:verifier=scripted", [FIXED_PATH])
    result = await solver.solve(Q)
    assert verifier.calls == [(Q.question, (FIXED_PATH,))]
    assert len(backend.requests) == 1 and nodes(result.trace, "revise") == [] and "revise" not in result.usage


async def test_outcome_steps_scores_every_path_step_by_step_in_one_call():
    solver, _, verifier = setup("stepco:verifier=scripted,outcome=steps", [WRONG, FIXED_PATH])
    result = await solver.solve(Q)
    assert [steps for _, steps in verifier.calls] == [WRONG_STEPS, tuple(FIXED_PATH.split("\n\n"))]
    assert nodes(result.trace, "score_steps") == [] and result.solution.scores == [0.9, 0.9, 0.9]


async def test_no_step_below_threshold_stops_in_the_paper_and_revises_the_lowest_with_unflagged_lowest():
    path = "Step 1: 2*3=6 apples. [s=0.7]\n\nStep 2: 6-1=4 apples. [s=0.6]\n\nStep 3: The answer is 4."
    solver, backend, _ = setup("stepco:verifier=scripted", [path, FIXED_PATH], score=whole_fails)
    result = await solver.solve(Q)
    assert len(backend.requests) == 1 and result.answer == "4"
    assert "nothing to revise" in stop_reason(result)
    solver, backend, _ = setup("stepco:verifier=scripted,unflagged=lowest", [path, FIXED_PATH], score=whole_fails)
    result = await solver.solve(Q)
    assert len(backend.requests) > 1 and nodes(result.trace, "revise")[0]["flagged_step"] == 2  # 0.6, the lowest


async def test_greedy_first_samples_the_first_path_greedily():
    solver, backend, _ = setup("stepco:verifier=scripted,greedy_first=true", [WRONG, FIXED_PATH])
    await solver.solve(Q)
    assert [r.temperature for r in backend.requests] == [0.0, 0.7]


# --- edge cases of the loop (issue 24) --------------------------------------------------------

@pytest.mark.parametrize("outcome", ["whole", "steps"])
async def test_a_path_without_steps_stops_with_nothing_to_revise(outcome):
    solver, backend, _ = setup(f"stepco:verifier=scripted,outcome={outcome}", [""])
    result = await solver.solve(Q)
    assert len(backend.requests) == 1 and stop_reason(result) == "no steps to revise"
    assert result.answer is None and nodes(result.trace, "revise") == []


async def test_a_revision_without_steps_ends_the_loop():
    solver, backend, _ = setup("stepco:verifier=scripted", [WRONG, ""])
    result = await solver.solve(Q)
    assert len(backend.requests) == 2 and stop_reason(result) == "no steps to revise"
    assert nodes(result.trace, "revise")[0]["replacement"] == ""


@pytest.mark.parametrize("outcome, verifier_calls", [("whole", 1), ("steps", 1)])
async def test_max_iters_zero_never_revises_nor_scores_steps(outcome, verifier_calls):
    solver, backend, verifier = setup(f"stepco:verifier=scripted,max_iters=0,outcome={outcome}", [WRONG, FIXED_PATH])
    result = await solver.solve(Q)
    assert len(backend.requests) == 1 and len(verifier.calls) == verifier_calls
    assert stop_reason(result) == "max_iters=0 revisions done" and result.answer == "4"


@pytest.mark.parametrize("outcome", ["whole", "steps"])
async def test_an_outcome_exactly_at_the_threshold_is_accepted(outcome):
    path = "Step 1: 2*3=6 apples. [s=0.5]\n\nStep 2: 6-1=5. The answer is 5."
    solver, backend, verifier = setup(f"stepco:verifier=scripted,outcome={outcome}", [path, FIXED_PATH])
    result = await solver.solve(Q)
    assert len(backend.requests) == 1 and len(verifier.calls) == 1
    assert stop_reason(result) == "accepted: outcome score 0.50 >= threshold 0.5"


async def test_a_step_exactly_at_the_threshold_is_not_flagged():
    path = "Step 1: 2*3=6 apples. [s=0.6]\n\nStep 2: 6-1=4 apples. [s=0.3]\n\nStep 3: The answer is 4."
    solver, _, _ = setup("stepco:verifier=scripted,threshold=0.6,max_iters=1", [path, FIXED_PATH],
                         score=whole_fails)
    result = await solver.solve(Q)
    (revise,) = nodes(result.trace, "revise")
    assert (revise["flagged_step"], revise["flagged_score"]) == (2, 0.3)


@pytest.mark.parametrize("spec, revision", [
    ("revise=rewrite", "[s=0.2] The answer is 7."),  # one step where step 3 was flagged
    ("revise=prefix", ""),  # the kept steps 1-2 and nothing after them
])
async def test_a_revision_shorter_than_the_flagged_steps_index(spec, revision):
    path = "Step 1: 2*3=6 apples.\n\nStep 2: 6-1=5 apples.\n\nStep 3: So 4 are left. [s=0.1] The answer is 4."
    solver, backend, _ = setup(f"stepco:verifier=scripted,{spec},stop_unchanged=true,max_iters=2",
                               [path, revision, FIXED_PATH])
    result = await solver.solve(Q)
    first = nodes(result.trace, "revise")[0]
    assert first["flagged_step"] == 3 and first["replacement"] == ""
    assert stop_reason(result) != "the revision left the flagged step unchanged"  # nothing is not the same step


# --- redline's options (moved from test_strategies_control.py) ---------------------------------

async def test_stepco_prefix_keeps_exactly_the_steps_before_the_first_failing_one():
    solver, backend, _ = setup("stepco:verifier=scripted,revise=prefix", [WRONG, FIXED])
    result = await solver.solve(Q)
    first_request, revise_request = backend.requests
    assert first_request.prefix == ""
    assert revise_request.prefix == prefix_text(["Step 1: 2*3=6 apples."])
    prompt = revise_request.messages[-1]["content"]
    assert "Step 2 is probably wrong" in prompt and "0.10" in prompt and "Keep steps 1 to 1" in prompt
    assert result.answer == "5"
    assert result.solution.step_texts == ["Step 1: 2*3=6 apples.", "Step 2: 6-1=5 apples.",
                                          "Step 3: So 5 are left. The answer is 5."]
    (revise,) = nodes(result.trace, "revise")
    assert (revise["flagged_step"], revise["flagged_score"]) == (2, 0.1)
    assert revise["flagged_text"].startswith("Step 2: 6-1=4") and revise["replacement"] == "Step 2: 6-1=5 apples."
    assert "accepted" in stop_reason(result)
    assert result.usage["solve"].calls == 1 and result.usage["revise"].calls == 1
    json.dumps(result.trace)


async def test_stepco_stops_when_the_same_answer_comes_back_twice():
    solver, backend, _ = setup("stepco:verifier=scripted,max_iters=5", lambda req, i: f"Step 1: 7-3=4 [s=0.2]. The answer is {4 if i < 3 else 9}.")
    result = await solver.solve(Q)
    assert len(backend.requests) == 2  # initial + one revision with the same answer
    assert "twice in a row" in stop_reason(result)


async def test_stepco_stops_at_max_iters():
    solver, backend, _ = setup("stepco:verifier=scripted,max_iters=3", lambda req, i: f"Step 1: x [s=0.2]. The answer is {i}.")
    result = await solver.solve(Q)
    assert len(backend.requests) == 4  # initial + K revisions
    assert len(nodes(result.trace, "revise")) == 3
    assert stop_reason(result).startswith("max_iters=3")
    assert result.answer == "3"  # the last revision, as in the reference


async def test_stepco_revises_the_best_of_n_init_paths():
    script = ["Step 1: a [s=0.1]. The answer is 1.", "Step 1: b [s=0.3]. The answer is 2.", FIXED]
    solver, backend, _ = setup("stepco:verifier=scripted,n_init=2", script)
    result = await solver.solve(Q)
    assert backend.requests[0].n == 2 and backend.requests[0].temperature > 0
    revise_request = backend.requests[2]  # the scripted backend logs a request once per sample
    assert "The answer is 2" in revise_request.messages[-1]["content"]
    assert result.answer == "5"


async def test_stepco_flagged_feedback_resends_only_the_flagged_step_and_implies_prefix():
    solver, backend, _ = setup("stepco:verifier=scripted,feedback=flagged", [WRONG, FIXED])
    result = await solver.solve(Q)
    revise_request = backend.requests[1]
    prompt = revise_request.messages[-1]["content"]
    assert revise_request.prefix == prefix_text(["Step 1: 2*3=6 apples."])
    assert "6-1=4 apples" in prompt and "0.10" in prompt and "Steps 1 to 1 are kept" in prompt
    assert "2*3=6" not in prompt and "So 4 are left" not in prompt  # kept steps ride in the prefix; later ones go
    assert len(prompt.split()) < len(backend.requests[0].messages[-1]["content"].split()) + 60
    assert result.answer == "5"


async def test_stepco_no_feedback_resamples_under_the_solve_prompt():
    solver, backend, _ = setup("stepco:verifier=scripted,feedback=none", [WRONG, FIXED])
    await solver.solve(Q)
    first, revise_request = backend.requests
    assert revise_request.messages == first.messages and revise_request.prefix.endswith("apples.\n\n")


async def test_stepco_stop_unchanged_ends_when_the_flagged_step_comes_back():
    same = "Step 2: 6-1=4 apples. [s=0.1]\n\nStep 3: Then 4 remain. The answer is 7."
    for stop_unchanged, calls in ((True, 2), (False, 3)):
        script = [WRONG, same, "Step 2: 6-1=5 apples.\n\nStep 3: The answer is 5."]
        solver, backend, _ = setup(f"stepco:verifier=scripted,revise=prefix,stop_unchanged={str(stop_unchanged).lower()}", script)
        result = await solver.solve(Q)
        assert len(backend.requests) == calls
        if stop_unchanged:
            assert stop_reason(result) == "the revision left the flagged step unchanged"


def test_stepco_reduced_feedback_needs_prefix_revision():
    with pytest.raises(SpecError, match="revise=prefix"):
        setup("stepco:revise=rewrite,feedback=flagged", ["x"])


# --- the real embedded model --------------------------------------------------------------------

@pytest.mark.model
async def test_stepco_revises_when_the_threshold_is_above_arith_top_score(local_backend):
    """arith scores a step whose claims all hold 0.95, so at threshold 0.99 nothing is ever
    accepted: StepCo must revise (a threshold ignored, or a pass taken as >= 0.95, would not)."""
    runtime = Runtime(backend=local_backend, max_tokens=48, seed=0)
    problem = Problem("Sam has 3 bags with 4 apples each. How many apples does he have?", answer="12")
    result = await build_solver("stepco:max_iters=2,threshold=0.99", runtime).solve(problem)
    assert all((c.score or 0.0) <= 0.95 for c in result.candidates)
    assert nodes(result.trace, "revise") and result.usage["revise"].calls >= 1
    assert not stop_reason(result).startswith("accepted")

