"""`sc`: self-consistency. Sample n solutions and return the majority answer, with answers
grouped by mathematical equivalence; a verifier, when given, breaks ties."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from redline.registry import STRATEGIES, Params
from redline.runtime import Runtime
from redline.strategies.base import SolveContext, candidate_dict
from redline.strategies.generation import sample_solutions
from redline.strategies.scoring import propose_all, score_all
from redline.strategies.voting import tally, votes_dict, winner, with_group_votes
from redline.types import Problem, Result
from redline.verifiers.base import Aggregation


class SelfConsistencyParams(Params):
    n: int = Field(8, ge=1, le=256, description="samples to draw")
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="sampling temperature")
    verifier: str = Field("", description="verifier spec that breaks ties between equally voted answers; empty = none")
    agg: Aggregation = Field("min", description="step-score aggregation for the tie-break: last, min, prod, mean")


class SelfConsistency:
    def __init__(self, params: SelfConsistencyParams, verifier: Any | None) -> None:
        self.params = params
        self.verifier = verifier

    async def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        p = self.params
        solutions = await sample_solutions(ctx, problem, n=p.n, temperature=p.temperature, seed=ctx.seed())
        if self.verifier is not None:
            candidates = await score_all(ctx, self.verifier, problem, solutions, p.agg)
        else:
            candidates = propose_all(ctx, solutions)
        for c in candidates:
            ctx.trace.child("generate", **candidate_dict(c))
        groups = tally(candidates, tie_break_by_score=self.verifier is not None)
        chosen = winner(groups)
        ctx.trace.child("vote", votes=votes_dict(groups), chosen=groups[0].answer if groups else None)
        candidates = with_group_votes(candidates, groups)
        if chosen is None:
            return ctx.finish(problem, candidates[0].solution if candidates else None, candidates)
        ctx.propose(chosen)
        return ctx.finish(problem, chosen.solution, candidates)


@STRATEGIES.register("sc", SelfConsistencyParams, "self-consistency: majority vote over equivalent answers")
def build_sc(params: SelfConsistencyParams, runtime: Runtime) -> SelfConsistency:
    return SelfConsistency(params, runtime.verifier(params.verifier) if params.verifier else None)
