"""The judge: verdict logprobs with the real embedded model; text verdicts and malformed output."""

from __future__ import annotations

import math

import pytest

from redline.backends.base import Completion, TokenLogprob
from redline.ledger import Ledger, use_ledger
from redline.verifiers.judge import JudgeMalformed, parse_verdicts, plain_step, verdict_probability
from tests.conftest import scripted_runtime

QUESTION = "Natalia sold 48 clips in April and half as many in May. How many clips did she sell in total?"
STEPS = ["Step 1: In May she sold 48/2 = 24 clips.", "Step 2: In total 48 + 24 = 72 clips. The answer is 72."]


def completion(*positions: dict[str, float]) -> Completion:
    logprobs = tuple(TokenLogprob(max(p, key=p.get), max(p.values()), p) for p in positions)
    return Completion("x", "stop", 1, len(positions), 0.0, logprobs)


def test_verdict_probability_normalises_yes_against_no():
    c = completion({"Yes": math.log(0.6), " No": math.log(0.2), "Maybe": math.log(0.1)})
    assert math.isclose(verdict_probability(c), 0.75)
    # the verdict may come after a filler token; an absent 'No' is bounded by the smallest top mass
    c = completion({"**": math.log(0.9), "The": math.log(0.05)}, {"yes": math.log(0.5), "I": math.log(0.1)})
    assert math.isclose(verdict_probability(c), 0.5 / 0.6)
    assert verdict_probability(completion({"The": -0.1, "A": -2.0})) is None


def test_parse_verdicts_lines_and_first_incorrect():
    assert parse_verdicts("Step 1: correct\nStep 2: incorrect\nStep 3: correct", 3, 0.5) == [0.9, 0.1, 0.9]
    assert parse_verdicts("First incorrect step: 2", 3, 0.5) == [0.9, 0.1, 0.5]
    assert parse_verdicts("Step 1 is correct. First incorrect step: none", 2, 0.5) == [0.9, 0.9]
    assert parse_verdicts("Step 7: incorrect", 2, 0.5) is None
    assert parse_verdicts("I like turtles", 2, 0.5) is None


def test_plain_step_removes_marker_and_shortens_long_steps():
    assert plain_step("**Step 3:** 5 + 5 = 10", 100) == "5 + 5 = 10"
    assert plain_step("", 100) == "(empty step)"
    long = plain_step("x" * 10_000, 200)
    assert len(long) <= 205 and " ... " in long


async def test_text_mode_fallback_parses_verdicts_and_records_verify_phase():
    runtime = scripted_runtime(["Step 1: correct\nStep 2: incorrect\nFirst incorrect step: 2"])
    judge = runtime.verifier("judge")
    ledger = Ledger("t")
    with use_ledger(ledger):
        scores = await judge.score(QUESTION, STEPS)
    assert scores == [0.9, 0.1]
    assert judge.mode == "text"  # the scripted backend returns no logprobs: auto fell back, once
    assert set(ledger.by_phase()) == {"verify"}
    # first the per-step logprob requests (2), then one critique
    requests = runtime.backend.inner.requests
    assert [r.logprobs for r in requests] == [5, 5, None]
    assert "Step 2: In total 48 + 24 = 72" in requests[-1].messages[-1]["content"]


async def test_malformed_critique_gives_neutral_scores_and_a_warning():
    runtime = scripted_runtime(["I think it is fine, whatever."])
    judge = runtime.verifier("judge:mode=text,neutral=0.4")
    with pytest.warns(JudgeMalformed, match="no readable verdicts"):
        scores = await judge.score(QUESTION, STEPS + ["", "y" * 50_000])
    assert scores == [0.4] * 4


async def test_logprob_mode_without_logprobs_warns_instead_of_crashing():
    runtime = scripted_runtime(["Yes"])
    with pytest.warns(JudgeMalformed, match="no logprobs"):
        assert await runtime.verifier("judge:mode=logprobs").score(QUESTION, STEPS) == [0.5, 0.5]


@pytest.mark.model
async def test_real_model_scores_each_step_from_verdict_logprobs(local_runtime):
    judge = local_runtime.verifier("judge")
    ledger = Ledger("judge-test")
    with use_ledger(ledger):
        scores = await judge.score(QUESTION, STEPS)
        again = await judge.score(QUESTION, STEPS[:1] + ["Step 2: In total 48 + 24 = 96 clips."])
    assert len(scores) == 2 and all(0.0 <= s <= 1.0 for s in scores)
    assert judge.mode == "auto"  # the embedded backend returns logprobs, so no text fallback
    assert again[0] == scores[0]  # the shared prefix was answered from the cache
    usage = ledger.by_phase()
    assert set(usage) == {"verify"} and usage["verify"].calls == 3  # 2 steps, then only the new step 2
    assert usage["verify"].completion_tokens <= 9


async def test_reference_calibration_removes_the_per_position_bias():
    """Scripted verdicts: the judge is biased against step 1 (even 'N/A' gets P(Yes) = 0.1 there)."""
    import re

    from redline.verifiers.judge import REFERENCE_STEP, calibrated

    p_yes = {(1, REFERENCE_STEP): 0.1, (2, REFERENCE_STEP): 0.7, (1, "In May she sold 48/2 = 24 clips."): 0.2,
             (2, "In total 48 + 24 = 72 clips. The answer is 72."): 0.6}

    def script(request, i):
        number, step = re.search(r"Step to check:\nStep (\d+): (.*)\n", request.messages[-1]["content"]).groups()
        p = p_yes[(int(number), step)]
        return completion({"Yes": math.log(p), "No": math.log(1 - p)})

    runtime = scripted_runtime(script)
    raw = await runtime.verifier("judge:mode=logprobs").score(QUESTION, STEPS)
    assert raw == pytest.approx([0.2, 0.6])  # raw: step 1 (right) looks worse than step 2
    judge = runtime.verifier("judge:mode=logprobs,calibrate=reference")
    scores = await judge.score(QUESTION, STEPS)
    assert scores == pytest.approx([calibrated(0.2, 0.1), calibrated(0.6, 0.7)])
    assert scores[0] > 0.5 > scores[1]  # step 1 beats its reference, step 2 falls short of its own
    assert scores[0] == pytest.approx(1 / (1 + (0.8 / 0.2) * (0.1 / 0.9)))
    calls = len(runtime.backend.inner.requests)
    p_yes[(2, "In total 48 + 24 = 96 clips.")] = 0.3
    assert (await judge.score(QUESTION, STEPS[:1] + ["Step 2: In total 48 + 24 = 96 clips."]))[1] < scores[1]
    assert len(runtime.backend.inner.requests) == calls + 1  # step 1 and both references came from the caches
