"""`refine`: the Self-Refine baseline (Madaan et al., 2023). Generate a solution, have the
model critique the whole of it, rewrite with that feedback; a fixed number of rounds.
No verifier: the model judges itself, which is what StepCo's verifier is compared against."""

from __future__ import annotations

from pydantic import Field

from redline.backends.base import GenerationRequest
from redline.registry import STRATEGIES, Params
from redline.runtime import Runtime
from redline.strategies.base import SolveContext, candidate_dict
from redline.strategies.generation import sample_solutions
from redline.strategies.scoring import propose_all
from redline.text import render
from redline.types import Problem, Result, Solution


class RefineParams(Params):
    iterations: int = Field(2, ge=0, le=10, description="critique-and-rewrite rounds")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="temperature for the solution and rewrites")
    critique_tokens: int = Field(128, ge=8, le=2048, description="token limit for one critique")


class SelfRefine:
    def __init__(self, params: RefineParams) -> None:
        self.params = params

    async def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        p = self.params
        solution = (await sample_solutions(ctx, problem, n=1, temperature=p.temperature, seed=ctx.seed()))[0]
        candidates = propose_all(ctx, [solution], origin="initial")
        ctx.trace.child("generate", **candidate_dict(candidates[0]))
        for iteration in range(1, p.iterations + 1):
            critique = await self.critique(ctx, problem, solution, iteration)
            messages = [{"role": "system", "content": render("solve_system", guidance=ctx.guidance)},
                        {"role": "user", "content": render("refine_rewrite", question=problem.question,
                                                           solution=solution.text, feedback=critique)}]
            solution = (await sample_solutions(ctx, problem, n=1, temperature=p.temperature, phase_name="revise",
                                               seed=ctx.seed(iteration), messages=messages))[0]
            candidates += propose_all(ctx, [solution], origin=f"refine {iteration}")
            ctx.trace.child("refine", iteration=iteration, critique=critique, **candidate_dict(candidates[-1]))
        ctx.trace.child("stop", reason=f"iterations={p.iterations} done")
        return ctx.finish(problem, solution, candidates)

    async def critique(self, ctx: SolveContext, problem: Problem, solution: Solution, iteration: int) -> str:
        """The model's feedback on its whole solution (phase 'verify': it is the self-check)."""
        request = GenerationRequest(
            messages=[{"role": "system", "content": render("critique_system", guidance=ctx.guidance)},
                      {"role": "user", "content": render("refine_critique", question=problem.question,
                                                         solution=solution.text)}],
            temperature=0.0, max_tokens=self.params.critique_tokens, seed=ctx.seed(iteration))
        return (await ctx.generate(request, "verify"))[0].text.strip()


@STRATEGIES.register("refine", RefineParams, "Self-Refine: critique the whole solution, rewrite, repeat")
def build_refine(params: RefineParams, runtime: Runtime) -> SelfRefine:
    return SelfRefine(params)
