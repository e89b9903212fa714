"""`cot`: one greedy chain of thought, the baseline every other strategy must beat."""

from __future__ import annotations

from redline.registry import STRATEGIES, Params
from redline.runtime import Runtime
from redline.strategies.base import SolveContext, candidate_dict
from redline.strategies.generation import sample_solutions
from redline.types import Candidate, Problem, Result


class CotParams(Params):
    pass


class ChainOfThought:
    async def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        solution = (await sample_solutions(ctx, problem, n=1, temperature=0.0))[0]
        candidate = Candidate(solution)
        ctx.propose(candidate)
        ctx.trace.child("generate", **candidate_dict(candidate))
        return ctx.finish(problem, solution, [candidate])


@STRATEGIES.register("cot", CotParams, "one greedy chain of thought")
def build_cot(params: CotParams, runtime: Runtime) -> ChainOfThought:
    return ChainOfThought()
