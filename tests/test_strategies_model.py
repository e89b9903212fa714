"""Every strategy end to end on the real embedded model (small settings): a result comes
back, the trace is JSON, the usage by phase adds up to the ledger's records, and the strategy
did what it is for (one greedy call, a majority vote, a weighted vote, a revision, a bounded
search, a critique and rewrite, a route, a stop on confidence)."""

from __future__ import annotations

import json
import math
from typing import Any, Callable

import pytest
from scipy.stats import beta

from redline.ledger import CallRecord
from redline.loop import build_solver
from redline.runtime import Runtime
from redline.text import answers_equal
from redline.types import Problem, Result

SPECS = [
    "cot",
    "sc:n=3",
    "bon:n=2,mode=weighted",
    "stepco:max_iters=2,threshold=0.99",
    "beam:n=2,width=2,max_depth=2,step_tokens=40",
    "refine:iterations=1,critique_tokens=32",
    "adaptive:k=2,max_rounds=1,tau=1.0",
    "adaptive:mode=sample,k=2,max_samples=4",
]
PROBLEM = Problem("Sam has 3 bags with 4 apples each. How many apples does he have?", answer="12")


@pytest.fixture(scope="module")
def runtime(local_backend):
    return Runtime(backend=local_backend, max_tokens=48, seed=0)


def nodes(trace: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    found = [trace] if trace.get("kind") == kind else []
    for child in trace.get("children", []):
        found += nodes(child, kind)
    return found


def count_answer(result: Result, answer: str | None) -> int:
    return sum(1 for c in result.candidates if answer is not None and answers_equal(c.solution.answer, answer))


def is_cot(result: Result, records: list[CallRecord]) -> None:
    """One greedy solve call of one sample."""
    assert [(r.phase, r.n) for r in records] == [("solve", 1)]
    assert result.answer == result.solution.answer and len(result.candidates) == 1


def is_majority_vote(result: Result, records: list[CallRecord]) -> None:
    """Three samples in one call; the answer is one that most samples give."""
    assert [(r.phase, r.n) for r in records] == [("solve", 3)] and len(result.candidates) == 3
    answers = [c.solution.answer for c in result.candidates]
    most = max(count_answer(result, a) for a in answers)
    if most:
        assert count_answer(result, result.answer) == most
    (vote,) = nodes(result.trace, "vote")
    assert sum(v["count"] for v in vote["votes"]) == sum(a is not None for a in answers)


def is_weighted_vote(result: Result, records: list[CallRecord]) -> None:
    """Two scored samples; each answer's votes are the sum of its samples' scores, the answer has the most."""
    assert len(result.candidates) == 2 and all(c.score is not None for c in result.candidates)
    for c in result.candidates:
        if c.solution.answer is not None:
            same = [o.score for o in result.candidates if answers_equal(o.solution.answer, c.solution.answer)]
            assert math.isclose(c.votes, sum(same))
    if result.answer is not None:
        assert max(c.votes for c in result.candidates) == next(
            c.votes for c in result.candidates if answers_equal(c.solution.answer, result.answer))


def revises(result: Result, records: list[CallRecord]) -> None:
    """arith's best score is 0.95, under threshold 0.99: StepCo must revise at least once."""
    assert len(nodes(result.trace, "revise")) >= 1 and result.usage["revise"].calls >= 1


def searches_within_bounds(result: Result, records: list[CallRecord]) -> None:
    """At most max_depth=2 levels of n=2 step samples; every path scored step by step."""
    assert 1 <= len(nodes(result.trace, "depth")) <= 2
    assert all(r.n == 2 for r in records if r.phase == "solve")
    assert all(len(c.solution.steps) <= 2 and c.solution.scores is not None for c in result.candidates)


def critiques_then_rewrites(result: Result, records: list[CallRecord]) -> None:
    """One solution, one critique of it (verify), one rewrite with that critique (revise)."""
    assert [r.phase for r in records] == ["solve", "verify", "revise"]
    (refine,) = nodes(result.trace, "refine")
    assert refine["critique"] and result.solution.text == result.candidates[-1].solution.text


def routes_on_agreement(result: Result, records: list[CallRecord]) -> None:
    """Two samples; with tau=1.0 only full agreement is easy, and only a hard problem is refined."""
    (route,) = nodes(result.trace, "route")
    answers = [c["answer"] for c in route["candidates"]]
    agreed = max((sum(1 for b in answers if a is not None and answers_equal(a, b)) for a in answers), default=0) / 2
    assert records[0].n == 2 and math.isclose(route["agreement"], agreed)
    assert route["route"] == ("easy" if agreed >= 1.0 else "hard")
    if agreed >= 1.0:
        assert "revise" not in result.usage and nodes(result.trace, "round") == []
    assert len(nodes(result.trace, "round")) <= 1


def samples_until_confident(result: Result, records: list[CallRecord]) -> None:
    """Batches of 2 up to 4 samples; each batch's confidence is the Beta posterior's P(share > 1/2),
    and sampling stops at the first confident batch or at 4."""
    batches = nodes(result.trace, "sample")
    assert [r.n for r in records] == [2] * len(batches) and batches[-1]["drawn"] <= 4
    for b in batches:
        top, drawn = b["majority_count"], b["drawn"]
        assert math.isclose(b["confidence"], beta.sf(0.5, top + 1, drawn - top + 1))
    assert all(b["confidence"] < 0.95 for b in batches[:-1])
    assert batches[-1]["confidence"] >= 0.95 or batches[-1]["drawn"] == 4


PURPOSE: dict[str, Callable[[Result, list[CallRecord]], None]] = dict(zip(SPECS, [
    is_cot, is_majority_vote, is_weighted_vote, revises, searches_within_bounds, critiques_then_rewrites,
    routes_on_agreement, samples_until_confident]))


@pytest.mark.model
@pytest.mark.parametrize("spec", SPECS)
async def test_strategy_runs_on_the_embedded_model(spec, runtime):
    records: list[CallRecord] = []
    result = await build_solver(spec, runtime).solve(PROBLEM, on_record=records.append)
    assert isinstance(result, Result) and result.solution is not None and result.candidates
    assert result.stopped is None
    trace = json.loads(json.dumps(result.trace))
    assert trace["kind"] == "solve" and trace["children"]
    json.dumps(result.to_dict())
    total = result.total
    assert total.calls == len(records) > 0
    assert total.prompt_tokens == sum(r.prompt_tokens for r in records)
    assert total.completion_tokens == sum(r.completion_tokens for r in records)
    assert set(result.usage) == {r.phase for r in records}
    for phase, usage in result.usage.items():
        assert usage.calls == sum(1 for r in records if r.phase == phase)
    PURPOSE[spec](result, records)
