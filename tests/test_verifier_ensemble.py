"""Ensembles combine member verifiers per step; members are built by spec through the runtime."""

from __future__ import annotations

import math

import pytest

from redline.errors import SpecError
from redline.verifiers.arith import ArithVerifier
from redline.verifiers.ensemble import member_specs
from redline.verifiers.scripted import ScriptedVerifier
from tests.conftest import scripted_runtime

STEPS = ["a", "b", "c"]


def runtime_with_members():
    low = ScriptedVerifier(lambda q, i, s: [0.2, 0.9, 0.5][i])
    high = ScriptedVerifier(lambda q, i, s: [0.8, 0.3, 0.5][i])
    return scripted_runtime(["unused"], verifiers={"low": low, "high": high}), low, high


@pytest.mark.parametrize("spec, expected", [
    ("ensemble:low+high", [0.2, 0.3, 0.5]),
    ("ensemble:low+high,mode=mean", [0.5, 0.6, 0.5]),
    ("ensemble:low+high,mode=mean,weights=(3,1)", [0.35, 0.75, 0.5]),
    ("ensemble:low+high,mode=prod", [0.16, 0.27, 0.25]),
])
async def test_modes_and_weights(spec, expected):
    runtime, low, high = runtime_with_members()
    scores = await runtime.verifier(spec).score("q", STEPS)
    assert len(scores) == len(expected) and all(math.isclose(a, b) for a, b in zip(scores, expected)), scores
    assert low.calls == [("q", tuple(STEPS))] and high.calls == [("q", tuple(STEPS))]


async def test_a_member_that_scores_fewer_steps_is_an_error_not_a_shorter_result():
    class DropsTheLastStep:
        name = "short"

        async def score(self, question, steps):
            return [0.7] * (len(steps) - 1)

    runtime, _, _ = runtime_with_members()
    runtime.verifiers["short"] = DropsTheLastStep()
    with pytest.raises(ValueError, match="'short' gave 2 scores for 3 steps"):
        await runtime.verifier("ensemble:low+short").score("q", STEPS)


async def test_members_with_their_own_params_and_real_arith():
    runtime = scripted_runtime(["unused"], verifiers={"one": ScriptedVerifier(lambda q, i, s: 1.0)})
    ensemble = runtime.verifier("ensemble:(arith:neutral=0.4)+one")
    assert isinstance(ensemble.members[0], ArithVerifier)
    assert await ensemble.score("q", ["48/2 = 24", "48/2 = 25", "words"]) == [0.95, 0.02, 0.4]


def test_member_specs_split_on_top_level_plus_only():
    assert member_specs("(judge:mode=text)+arith+learned:m.joblib") == ["judge:mode=text", "arith", "learned:m.joblib"]


@pytest.mark.parametrize("spec, message", [
    ("ensemble:low", "at least two members"),
    ("ensemble:low+high,weights=(1,2,3)", "2 members but 3 weights"),
    ("ensemble:low+high,mode=max", "mode"),
    ("ensemble:low+nope", "unknown verifier 'nope'"),
])
def test_bad_ensembles_are_spec_errors(spec, message):
    runtime, _, _ = runtime_with_members()
    with pytest.raises(SpecError, match=message):
        runtime.verifier(spec)
