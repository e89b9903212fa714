"""Deterministic control flow of the strategies: scripted backend, scripted verifier."""

from __future__ import annotations

import re

import pytest

from redline.errors import SpecError
from redline.loop import build_solver
from redline.types import Problem
from redline.verifiers.scripted import ScriptedVerifier
from tests.conftest import scripted_runtime

Q = Problem("Tom has 2 boxes of 3 apples and eats 1. How many are left?", answer="5")
MARK = re.compile(r"\[s=([\d.]+)\]")


def marked_score(question: str, i: int, step: str) -> float:
    """Steps carry their scripted score as '[s=0.3]'; unmarked steps pass."""
    m = MARK.search(step)
    return float(m.group(1)) if m else 0.9


def setup(spec: str, script, score=marked_score):
    verifier = ScriptedVerifier(score)
    runtime = scripted_runtime(script, seed=7, verifiers={"scripted": verifier})
    return build_solver(spec, runtime), runtime.backend.inner, verifier


def nodes(trace: dict, kind: str) -> list[dict]:
    found = [trace] if trace.get("kind") == kind else []
    for child in trace.get("children", []):
        found += nodes(child, kind)
    return found


# --- stepco (its own tests: test_stepco.py) ---------------------------------------------

WRONG = "Step 1: 2*3=6 apples.\n\nStep 2: 6-1=4 apples. [s=0.1]\n\nStep 3: So 4 are left. The answer is 4."
FIXED = "Step 2: 6-1=5 apples.\n\nStep 3: So 5 are left. The answer is 5."


# --- budget ------------------------------------------------------------------------------

async def test_budget_stop_returns_the_best_answer_so_far():
    script = lambda req, i: f"Step 1: y [s={[0.3, 0.45, 0.2][i % 3]}]. The answer is {i + 10}."
    solver, backend, _ = setup("stepco:verifier=scripted,max_calls=3", script)
    result = await solver.solve(Q)
    assert len(backend.requests) == 3
    assert result.stopped == "max_calls=3 reached"
    assert result.answer == "11" and result.candidates[0].score == pytest.approx(0.45)
    assert nodes(result.trace, "budget_stop")


# --- sc / bon ----------------------------------------------------------------------------

async def test_sc_groups_equivalent_answers():
    script = ["Step 1: half. The answer is 0.5.", "Step 1: 3. The answer is 3.", "Step 1: half. The answer is 1/2."]
    solver, backend, _ = setup("sc:n=3", script)
    result = await solver.solve(Q)
    assert backend.requests[0].n == 3 and result.usage["solve"].calls == 1
    assert result.answer == "0.5"
    (vote,) = nodes(result.trace, "vote")
    assert vote["votes"][0]["count"] == 2 and vote["votes"][1]["answer"] == "3"


async def test_sc_tie_breaks_by_verifier_score():
    script = ["Step 1: a [s=0.4]. The answer is 3.", "Step 1: b [s=0.8]. The answer is 4."]
    plain, _, _ = setup("sc:n=2", script)
    scored, _, verifier = setup("sc:n=2,verifier=scripted", script)
    assert (await plain.solve(Q)).answer == "3"  # tie: first seen wins
    assert (await scored.solve(Q)).answer == "4"
    assert len(verifier.calls) == 2


async def test_bon_aggregation_and_weighted_vote():
    script = ["Step 1: a [s=0.2]\n\nStep 2: b [s=0.95]. The answer is 6.",
              "Step 1: c [s=0.6]\n\nStep 2: d [s=0.6]. The answer is 5.",
              "Step 1: e [s=0.5]\n\nStep 2: f [s=0.5]. The answer is 5."]
    results = {}
    for spec in ("bon:n=3,verifier=scripted,agg=last", "bon:n=3,verifier=scripted,agg=min",
                 "bon:n=3,verifier=scripted,agg=min,mode=weighted", "bon:n=3,verifier=scripted,agg=last,mode=weighted"):
        solver, _, _ = setup(spec, script)
        results[spec.split(",", 2)[-1]] = (await solver.solve(Q)).answer
    assert results == {"agg=last": "6", "agg=min": "5", "agg=min,mode=weighted": "5", "agg=last,mode=weighted": "5"}


async def test_bon_breaks_a_tie_at_the_top_score_by_the_tied_samples_agreement():
    script = ["Step 1: a [s=0.9]. The answer is 3.", "Step 1: b [s=0.4]. The answer is 3.",
              "Step 1: c [s=0.9]. The answer is 4.", "Step 1: d [s=0.4]. The answer is 3.",
              "Step 1: e [s=0.9]. The answer is 4."]
    solver, _, _ = setup("bon:n=5,verifier=scripted", script)
    result = await solver.solve(Q)
    assert result.answer == "4"  # 3 has more votes overall, but only 4 has two top-scored samples
    (select,) = nodes(result.trace, "select")
    assert select["how"] == "highest outcome score; 3 tied, most agreed answer"


# --- specs -------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, expected", [
    ("stepco:thresh=0.6", "threshold"),
    ("stepco:revise=sideways", "prefix"),
    ("bon:agg=median", "min"),
    ("sc:n=0", "n (int, default 8)"),
])
def test_bad_specs_name_the_valid_parameters(spec, expected):
    with pytest.raises(SpecError) as err:
        build_solver(spec, scripted_runtime(["x"]))
    assert expected in str(err.value) and "\n" not in str(err.value)


# --- beam --------------------------------------------------------------------------------

def beam_script(request, i: int) -> str:
    if request.prefix == "Step 1:":
        return [" a [s=0.1]", " b [s=0.8]", " c [s=0.3]", " d [s=0.9]"][i]
    return f" so the answer is {'9' if 'd [s=0.9]' in request.prefix else '8'}."


async def test_beam_keeps_the_top_n_over_m_prefixes():
    solver, backend, _ = setup("beam:n=4,width=2,verifier=scripted", beam_script)
    result = await solver.solve(Q)
    first_depth, second_depth = backend.requests[:4], backend.requests[4:]
    assert {r.n for r in first_depth} == {4} and {r.n for r in second_depth} == {2}
    extended = [r.prefix for r in second_depth[::2]]
    assert extended == ["Step 1: d [s=0.9]\n\nStep 2:", "Step 1: b [s=0.8]\n\nStep 2:"]
    depth1, depth2 = nodes(result.trace, "depth")
    assert [c["score"] for c in depth1["kept"]] == [0.9, 0.8] and depth1["dropped"] == 2
    assert len(depth2["finished"]) == 4 and depth2["kept"] == []
    assert result.answer == "9" and len(result.candidates) == 4
    assert nodes(result.trace, "stop")[0]["reason"] == "every beam finished"


async def test_beam_stops_at_the_depth_limit():
    solver, backend, _ = setup("beam:n=2,width=2,max_depth=3,verifier=scripted", lambda req, i: " more work")
    result = await solver.solve(Q)
    assert len(nodes(result.trace, "depth")) == 3
    assert nodes(result.trace, "stop")[0]["reason"] == "max_depth=3 reached"
    assert len(result.solution.steps) == 3


async def test_beam_holds_finished_beams_to_the_final_answer_rule():
    def script(request, i: int) -> str:
        if request.prefix == "Step 1:":
            return [" some pears.", " 2*3=6 boxes.", " x", " y"][i]
        return "" if "pears" in request.prefix else " so the answer is 5."  # "": the model ends the sequence

    def score(question: str, i: int, step: str) -> float:
        return next((v for word, v in (("pears", 0.95), ("boxes", 0.9), ("answer", 0.6)) if word in step), 0.1)

    solver, _, _ = setup("beam:n=4,width=2,verifier=scripted", script, score)
    result = await solver.solve(Q)
    finished = nodes(result.trace, "depth")[1]["finished"]
    answerless = [c for c in finished if c["answer"] is None]
    assert answerless and all(c["score"] == 0.0 and c["sanity"] == ["no answer: no parseable final answer"]
                              for c in answerless)
    assert result.answer == "5"  # the 0.95 beam that ended without an answer no longer wins


class MarkingStepProvider:
    """A step-level provider (like BoostStep) that tags each step it rewrites."""

    name, step_level = "marker", True

    async def guidance(self, problem, ctx) -> str:
        return "Use whole numbers."

    async def refine_step(self, problem, prior_steps, draft, ctx) -> str:
        return draft + " (checked)"


async def test_beam_passes_extended_steps_through_step_level_providers():
    solver, backend, _ = setup("beam:n=2,width=2,verifier=scripted", beam_script)
    solver.providers.append(MarkingStepProvider())
    result = await solver.solve(Q)
    assert all(step.text.endswith("(checked)") for step in result.solution.steps)
    assert backend.requests[2].prefix.startswith("Step 1: ") and "(checked)\n\nStep 2:" in backend.requests[2].prefix
    assert "Use whole numbers." in backend.requests[0].messages[0]["content"]


class GuidanceProvider(MarkingStepProvider):
    name, step_level = "guide", False


async def test_revision_prompts_keep_the_providers_guidance():
    solver, backend, _ = setup("stepco:verifier=scripted,revise=rewrite", [WRONG, FIXED])
    solver.providers.append(GuidanceProvider())
    await solver.solve(Q)
    revise_requests = [r for r in backend.requests if "probably wrong" in r.messages[-1]["content"]]
    assert revise_requests and all("Use whole numbers." in r.messages[0]["content"] for r in revise_requests)


# --- refine ------------------------------------------------------------------------------

def refine_script(request, i: int) -> str:
    if "reviewing" in request.messages[0]["content"]:
        return "Step 2 subtracts wrongly."
    return f"Step 1: 6-1={i}. The answer is {i}."


async def test_refine_critiques_then_rewrites_a_fixed_number_of_times():
    solver, backend, _ = setup("refine:iterations=2", refine_script)
    result = await solver.solve(Q)
    assert [u.calls for u in result.usage.values()] == [1, 2, 2] and list(result.usage) == ["solve", "verify", "revise"]
    assert "Step 2 subtracts wrongly." in backend.requests[2].messages[-1]["content"]
    assert result.answer == "4" and len(result.candidates) == 3
    assert [n["critique"] for n in nodes(result.trace, "refine")] == ["Step 2 subtracts wrongly."] * 2


# --- adaptive ----------------------------------------------------------------------------

async def test_adaptive_easy_problem_takes_the_majority_without_refining():
    solver, backend, _ = setup("adaptive:k=4,verifier=scripted", ["Step 1: 5. The answer is 5."])
    result = await solver.solve(Q)
    assert result.answer == "5" and list(result.usage) == ["solve"] and result.usage["solve"].calls == 1
    assert nodes(result.trace, "route")[0]["route"] == "easy"


def hard_script(request, i: int) -> str:
    if request.prefix or "probably wrong" in request.messages[-1]["content"]:
        return "Step 2: fixed. The answer is 3."
    return ["Step 1: x [s=0.2]. The answer is 1.", "Step 1: y [s=0.3]. The answer is 2.",
            "Step 1: z. The answer is 3.", "Step 1: z. The answer is 3."][i]


async def test_adaptive_hard_problem_refines_only_low_scoring_candidates_and_revotes():
    solver, backend, _ = setup("adaptive:k=4,tau=0.75,verifier=scripted", hard_script)
    result = await solver.solve(Q)
    assert nodes(result.trace, "route")[0]["route"] == "hard"
    revisions = nodes(result.trace, "revise")
    assert [r["flagged_step"] for r in revisions] == [1, 1] and result.usage["revise"].calls == 2
    (round_,) = nodes(result.trace, "round")
    assert (round_["agreement_before"], round_["agreement_after"]) == (0.5, 1.0)
    assert result.answer == "3" and "after refinement" in nodes(result.trace, "stop")[0]["reason"]


async def test_adaptive_stops_when_agreement_does_not_improve():
    script = lambda req, i: f"Step 1: w [s=0.1]. The answer is {i}."
    solver, backend, _ = setup("adaptive:k=2,max_rounds=3,verifier=scripted", script)
    result = await solver.solve(Q)
    assert len(nodes(result.trace, "round")) == 1 and result.usage["revise"].calls == 2
    assert "did not improve" in nodes(result.trace, "stop")[0]["reason"]


async def test_adaptive_sampling_stops_once_the_majority_is_confident():
    solver, backend, _ = setup("adaptive:mode=sample,k=2,max_samples=10", ["Step 1: 5. The answer is 5."])
    result = await solver.solve(Q)
    samples = nodes(result.trace, "sample")
    assert [s["drawn"] for s in samples] == [2, 4]  # Beta(3,1): 0.875 < 0.95; Beta(5,1): 0.969
    assert result.usage["solve"].calls == 2 and result.answer == "5"
    split, _, _ = setup("adaptive:mode=sample,k=2,max_samples=6", lambda req, i: f"The answer is {i % 2}.")
    result = await split.solve(Q)
    assert result.usage["solve"].calls == 3 and nodes(result.trace, "stop")[0]["reason"] == "max_samples=6 drawn"


# --- rendering ---------------------------------------------------------------------------

async def test_solve_output_shows_scores_revisions_candidates_and_usage():
    from rich.console import Console

    from redline.cli.render import print_result

    solver, _, _ = setup("stepco:verifier=scripted,outcome=steps,revise=prefix", [WRONG, FIXED])
    console = Console(record=True, width=200)
    print_result(await solver.solve(Q), console)
    text = console.export_text()
    assert "0.90 Step 2: 6-1=5 apples." in text
    assert "revision flagged step 2 (score 0.10): 'Step 2: 6-1=4 apples. [s=0.1]' -> 'Step 2: 6-1=5 apples.'" in text
    assert "revision 1" in text and "stopped because accepted" in text
    assert "usage by phase" in text and "revise" in text
