"""The sanity rules every strategy applies: hand-written cases, the two garbage solutions that used to
pass (issue 13), and the rules at work inside stepco and bon with the real arith verifier."""

from __future__ import annotations

import pytest

from redline.ledger import Ledger
from redline.loop import build_solver
from redline.strategies.base import SolveContext
from redline.strategies.generation import sample_solutions
from redline.strategies.scoring import score_all
from redline.types import Problem, Solution
from redline.verifiers.arith import ArithVerifier
from redline.verifiers.sanity import UNVERIFIED, loops, outcome, solution_problems, step_problems
from tests.conftest import scripted_runtime

Q = Problem("Tom has 2 boxes of 3 apples and eats 1. How many are left?", answer="5")
PARROT = "Step 2 is probably wrong: it answers the question. The answer is 4."
LABELS = "Step 1: Step 2: Step 3: … Step 78: Step 7"
LABELS_FULL = " ".join(f"Step {i}:" for i in range(1, 79)) + " Step 7"
GOOD = "Step 1: 2*3=6 apples.\n\nStep 2: 6-1=5 apples. The answer is 5."
# The revision `make demo` accepted at 0.60 (issue 13): a true claim in step 1, then a parroted step with another answer.
DEMO_REVISION = ("Natalia sold 20 clips in April, and she sold 10 clips in May. So, she sold\n20 / 10 = 2 clips in May.\n"
                 "The answer is 2.\n\n" + PARROT)


def test_step_rules_on_hand_written_cases():
    steps = ["Step 1: 2*3 = 6 apples.", "Step 2:", "**Step 3:** ...", "Step 4: 2*3 = 6 apples.",
             "Step 5: so she has 5 apples, so she has 5 apples, so she has 5 apples", "Step 6: $5 + $5 + $5 = $15, so 15 - 1 = 14.",
             "Step 7: The answer is 14."]
    assert step_problems(steps) == [None, "empty: no content beyond a step label",
                                    "empty: no content beyond a step label", "repeats step 1", "loops on an n-gram",
                                    None, None]
    assert loops("7 7 7 7 7 7 7 7 7 7 7 7 7")
    assert not loops("she buys 3 apples at $2 each and 3 pears at $2 each, so 3 * 2 + 3 * 2 = 12 dollars")


def test_the_loop_rule_needs_its_repeats_to_cover_half_the_words():
    # "he has 5 apples" three times is 12 words: in 24 words it covers half (a loop), in 25 it does not.
    repeats = "he has 5 apples " * 3
    assert loops(repeats + "then " * 12)
    assert not loops(repeats + "then " * 13)
    assert not loops("he has 5 apples " * 2 + "then " * 4)  # two repeats cover 8 of 12 words, but 3 are needed


def test_solution_rules_truncation_and_final_answer():
    cut = Solution.from_text("Step 1: 2*3=6 apples. The answer is 6", finish_reason="length")
    assert solution_problems(cut) == ["truncated: cut off by the token limit"]
    answerless = Solution.from_text("Step 1: Tom eats some apples.")
    assert solution_problems(answerless) == ["no answer: no parseable final answer"]
    assert solution_problems(answerless, complete=False) == []  # a beam/MCTS prefix needs no answer yet
    assert solution_problems(Solution.from_text(GOOD)) == []


async def score(text: str, complete: bool = True, finish_reason: str | None = None):
    runtime = scripted_runtime(["unused"])
    ctx = SolveContext(runtime=runtime, ledger=Ledger(strategy="t"), strategy="t")
    solution = Solution.from_text(text, finish_reason)
    return (await score_all(ctx, ArithVerifier(), Q, [solution], "min", propose=complete))[0]


def test_the_unverified_cap_needs_every_step_neutral():
    neutral = 0.6
    assert outcome([0.6, 0.6], [], 0.6, neutral) == UNVERIFIED  # nothing checked anywhere: capped
    assert outcome([0.6, 0.95], [], 0.6, neutral) == 0.6        # one checked step: not capped
    assert outcome([0.95, 0.6], [], 0.8, neutral) == 0.8
    assert outcome([0.6, 0.6], [], 0.6, None) == 0.6             # a verifier with no neutral score: never capped
    assert outcome([0.3, 0.3], [], 0.3, 0.3) == 0.3              # the cap only lowers


async def test_arith_caps_a_claimless_solution_but_not_one_with_a_checked_step():
    unchecked = await score("Step 1: Tom eats some apples.\n\nStep 2: So he has few left. The answer is 5.")
    checked = await score("Step 1: Tom eats some apples.\n\nStep 2: 6-1=5 apples left. The answer is 5.")
    assert unchecked.solution.scores == [pytest.approx(0.6)] * 2 and unchecked.score == UNVERIFIED
    assert checked.solution.scores == [pytest.approx(0.6), pytest.approx(0.95)]
    assert checked.score == pytest.approx(0.6)  # min over steps, above the cap: the checked step counts


async def test_the_two_garbage_solutions_no_longer_pass_with_arith():
    parrot = await score(PARROT)  # arith: no claim anywhere, neutral 0.6 -> unverified, capped below theta
    assert parrot.solution.scores == [pytest.approx(0.6)] and parrot.score == UNVERIFIED < 0.5
    assert parrot.sanity == ()
    for text in (LABELS, LABELS_FULL):  # one step of nothing but labels (its answer '7' is the last number)
        labels = await score(text)
        assert labels.score == 0.0 and labels.solution.scores == [0.0]
        assert labels.sanity == ("step 1 empty: no content beyond a step label",)
    verified = await score(GOOD)
    assert verified.score == pytest.approx(0.95) and verified.sanity == ()


async def test_a_solution_stating_two_different_answers_scores_zero():
    demo = await score(DEMO_REVISION)
    assert demo.solution.answer == "4" and demo.solution.scores[0] == pytest.approx(0.95)  # step 1's claim is true
    assert demo.score == 0.0 and demo.sanity == ("conflicting answers: '2' then '4'",)
    restated = await score(GOOD + " So the answer is 5 apples.")  # the same answer twice is no conflict
    assert restated.sanity == () and restated.score == pytest.approx(0.95)


async def test_truncated_and_answerless_solutions_score_zero_at_their_last_step():
    cut = await score(GOOD, finish_reason="length")
    assert cut.score == 0.0 and cut.solution.scores == [pytest.approx(0.95), 0.0]
    assert cut.sanity == ("truncated: cut off by the token limit",)
    prefix = await score("Step 1: 2*3=6 apples.", complete=False)
    assert prefix.score == pytest.approx(0.95) and prefix.sanity == ()
    assert (await score("Step 1: 2*3=6 apples.\n\nStep 2: so Tom has some left.")).score > 0  # last number: 6
    assert (await score("Step 1: Tom eats an apple.")).score == 0.0


async def test_stepco_revises_the_parroted_revision_instead_of_accepting_it():
    runtime = scripted_runtime([PARROT, "Step 1: 2*3=6 apples.\n\nStep 2: 6-1=5. The answer is 5."], seed=1)
    result = await build_solver("stepco:verifier=arith", runtime).solve(Q)
    generate, revise, stop = (n for n in result.trace["children"] if n["kind"] in ("generate", "revise", "stop"))
    assert generate["score"] == UNVERIFIED and revise["score"] == pytest.approx(0.95)
    assert "accepted" in stop["reason"] and result.answer == "5"


async def test_bon_never_picks_garbage_and_the_trace_says_why():
    script = [LABELS_FULL, "Step 1: 6 apples.\n\nStep 2: 6 apples.", "Step 1: 2*3=6 apples. The answer is 6",
              GOOD.replace("6-1=5", "6-1=4").replace("is 5", "is 4")]
    result = await build_solver("bon:n=4,verifier=arith", scripted_runtime(script, seed=1)).solve(Q)
    scored = [n for n in result.trace["children"] if n["kind"] == "scored"]
    assert [n.get("sanity") for n in scored] == [["step 1 empty: no content beyond a step label"],
                                                 ["step 2 repeats step 1"], None, None]
    assert [n["score"] for n in scored][:2] == [0.0, 0.0]
    assert result.answer == "6"  # verified (0.95) beats the refuted one (0.02) and both garbage ones (0)


async def test_solve_output_says_why_candidates_were_zeroed():
    from rich.console import Console

    from redline.cli.render import print_result

    script = [LABELS_FULL, "Step 1: 6 apples.\n\nStep 2: 6 apples.", GOOD]
    result = await build_solver("bon:n=3,verifier=arith", scripted_runtime(script, seed=1)).solve(Q)
    console = Console(record=True, width=200)
    print_result(result, console)
    text = console.export_text()
    assert "zeroed because" in text and "step 1 empty: no content beyond a step label" in text
    assert "step 2 repeats step 1" in text and "zeroed by the sanity rules" not in text  # the chosen one is clean
    lone = await build_solver("bon:n=1,verifier=arith", scripted_runtime([DEMO_REVISION], seed=1)).solve(Q)
    console = Console(record=True, width=200)
    print_result(lone, console)  # one candidate: no table, so the reason is printed under the steps
    assert "zeroed by the sanity rules: conflicting answers: '2' then '4'" in console.export_text()


async def test_sample_solutions_threads_the_token_limit_from_the_real_model(local_runtime):
    ctx = SolveContext(runtime=local_runtime, ledger=Ledger(strategy="t"), strategy="t")
    (cut,) = await sample_solutions(ctx, Q, max_tokens=4)
    assert cut.finish_reason == "length"
    candidate = await ctx.score(ArithVerifier(), Q.question, cut)
    assert candidate.score == 0.0 and "truncated: cut off by the token limit" in candidate.sanity
