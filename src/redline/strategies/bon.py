"""`bon`: best-of-N by verifier. Each sample's outcome score is aggregated from its step
scores (last, min or prod); `mode=weighted` instead sums scores per equivalent answer
(PRM-weighted voting).

A coarse verifier such as `arith` gives its top score to every solution whose arithmetic
checks out, so several samples often tie at the top. The tie goes to the answer most of the
tied samples agree on (first seen on a further tie), not blindly to the first sample."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from redline.registry import STRATEGIES, Params
from redline.runtime import Runtime
from redline.strategies.base import SolveContext, candidate_dict
from redline.strategies.generation import sample_solutions
from redline.strategies.scoring import score_all
from redline.strategies.voting import score_vote, tally, votes_dict, winner, with_group_votes
from redline.types import Candidate, Problem, Result
from redline.verifiers.base import Aggregation


class BestOfNParams(Params):
    n: int = Field(8, ge=1, le=256, description="samples to draw")
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="sampling temperature")
    verifier: str = Field("arith", min_length=1, description="verifier spec that scores every step")
    agg: Aggregation = Field("min", description="outcome score from step scores: last, min, prod, mean")
    mode: Literal["best", "weighted"] = Field("best", description="best = top outcome score; weighted = "
                                              "sum of scores per equivalent answer")


class BestOfN:
    def __init__(self, params: BestOfNParams, verifier: Any) -> None:
        self.params = params
        self.verifier = verifier

    async def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        p = self.params
        solutions = await sample_solutions(ctx, problem, n=p.n, temperature=p.temperature, seed=ctx.seed())
        candidates = await score_all(ctx, self.verifier, problem, solutions, p.agg)
        for c in candidates:
            ctx.trace.child("scored", **candidate_dict(c))
        if self.params.mode == "weighted":
            groups = tally(candidates, weight=score_vote)
            ctx.trace.child("vote", weighted=True, votes=votes_dict(groups))
            candidates = with_group_votes(candidates, groups)
            chosen = winner(groups) or self.best(candidates, ctx)
        else:
            chosen = self.best(candidates, ctx)
        return ctx.finish(problem, chosen.solution if chosen else None, candidates)

    def best(self, candidates: list[Candidate], ctx: SolveContext) -> Candidate | None:
        top = max((c.score or 0.0 for c in candidates), default=0.0)
        tied = [c for c in candidates if (c.score or 0.0) >= top - 1e-9]
        best = (winner(tally(tied)) if len(tied) > 1 else None) or next(iter(tied), None)
        how = f"highest outcome score; {len(tied)} tied, most agreed answer" if len(tied) > 1 else "highest outcome score"
        ctx.trace.child("select", how=how, answer=best.solution.answer if best else None,
                        score=best.score if best else None)
        return best


@STRATEGIES.register("bon", BestOfNParams, "best-of-N by verifier score, or PRM-weighted voting (mode=weighted)")
def build_bon(params: BestOfNParams, runtime: Runtime) -> BestOfN:
    return BestOfN(params, runtime.verifier(params.verifier))
