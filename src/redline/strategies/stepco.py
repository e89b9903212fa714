"""`stepco`: Stepwise Correction (Wu et al., ACL 2025), as the reference algorithm does it.

Generate a step-by-step solution and score its steps. While the outcome score is below the
threshold: find the first step scoring below it, ask the model to keep the steps before it
and rewrite from it (telling it the step's index and estimated probability), and re-score.
Stop when the outcome passes, when the same answer comes back twice in a row, or after
`max_iters` revisions. The last revision is the answer, as in the reference.

Two departures from the paper cut its token bill and are off by default: `feedback=flagged`
(or `none`) stops resending the whole attempt in every revision prompt (see `revision`), and
`stop_unchanged` ends the loop when a revision rewrites the flagged step into the same step.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from redline.registry import STRATEGIES, Params
from redline.runtime import Runtime
from redline.strategies.base import SolveContext, candidate_dict
from redline.strategies.generation import sample_solutions
from redline.strategies.revision import Feedback, flag_steps, revise_from
from redline.strategies.scoring import score_all
from redline.text import answers_equal
from redline.types import Candidate, Problem, Result
from redline.verifiers.base import Aggregation


class StepCoParams(Params):
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="theta: accept at or above, flag steps below")
    max_iters: int = Field(5, ge=0, le=50, description="K: most revisions")
    verifier: str = Field("arith", min_length=1, description="verifier spec that scores every step")
    agg: Aggregation = Field("min", description="outcome score from step scores: last, min, prod, mean")
    n_init: int = Field(1, ge=1, le=64, description="initial paths; the best-scored one is revised")
    revise: Literal["prefix", "rewrite"] = Field("prefix", description="prefix = kept steps sent as assistant "
                                                  "prefix (not regenerated); rewrite = model rewrites everything")
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="sampling temperature for revisions and n_init > 1")
    feedback: Feedback = Field("full", description="what a revision prompt resends: full = the whole attempt and "
                               "flags (the paper); flagged = only the flagged step; none = the solve prompt")
    stop_unchanged: bool = Field(False, description="stop when a revision leaves the flagged step unchanged")

    @model_validator(mode="after")
    def _feedback_needs_prefix(self) -> "StepCoParams":
        if self.revise == "rewrite" and self.feedback != "full":
            raise ValueError("feedback=flagged or none needs revise=prefix (the kept steps travel as the prefix)")
        return self


class StepCo:
    def __init__(self, params: StepCoParams, verifier: Any) -> None:
        self.params = params
        self.verifier = verifier

    async def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        p = self.params
        initial = await sample_solutions(ctx, problem, n=p.n_init, seed=ctx.seed(),
                                         temperature=p.temperature if p.n_init > 1 else 0.0)
        candidates = await score_all(ctx, self.verifier, problem, initial, p.agg)
        for c in candidates:
            ctx.trace.child("generate", **candidate_dict(c))
        current = max(candidates, key=lambda c: c.score or 0.0)
        stop = self.stop_reason(current, None, 0)
        iteration = 0
        while stop is None:
            iteration += 1
            revised, unchanged = await self.revise(ctx, problem, current, iteration)
            candidates.append(revised)
            stop = self.stop_reason(revised, current, iteration, unchanged)
            current = revised
        ctx.trace.child("stop", reason=stop, revisions=iteration, answer=current.solution.answer, score=current.score)
        return ctx.finish(problem, current.solution, candidates)

    async def revise(self, ctx: SolveContext, problem: Problem, current: Candidate,
                     iteration: int) -> tuple[Candidate, bool]:
        """Rewrite from the first step below the threshold and re-score; record it as a 'revise' node.
        Returns the revision and whether it left the flagged step as it was."""
        p = self.params
        flag = flag_steps(current.solution.scores or [], p.threshold, first_only=True)[0]
        solution = await revise_from(ctx, problem, current, [flag], keep_prefix=p.revise == "prefix",
                                     temperature=p.temperature, seed=ctx.seed(iteration), feedback=p.feedback)
        revised = (await score_all(ctx, self.verifier, problem, [solution], p.agg, origin=f"revision {iteration}"))[0]
        steps = revised.solution.step_texts
        flagged_text = current.solution.step_texts[flag.index - 1]
        replacement = steps[flag.index - 1] if len(steps) >= flag.index else ""
        ctx.trace.child("revise", iteration=iteration, flagged_step=flag.index, flagged_score=flag.score,
                        flagged_text=flagged_text, replacement=replacement,
                        kept_steps=flag.index - 1 if p.revise == "prefix" else 0,
                        **candidate_dict(revised))
        return revised, " ".join(replacement.split()) == " ".join(flagged_text.split())

    def stop_reason(self, current: Candidate, previous: Candidate | None, iteration: int,
                    unchanged: bool = False) -> str | None:
        p = self.params
        if (current.score or 0.0) >= p.threshold:
            return f"accepted: outcome score {current.score or 0.0:.2f} >= threshold {p.threshold}"
        if unchanged and p.stop_unchanged:
            return "the revision left the flagged step unchanged"
        if previous is not None and answers_equal(current.solution.answer, previous.solution.answer):
            return f"same answer {current.solution.answer!r} twice in a row"
        if iteration >= p.max_iters:
            return f"max_iters={p.max_iters} revisions done"
        if not current.solution.steps:
            return "no steps to revise"
        return None


@STRATEGIES.register("stepco", StepCoParams, "StepCo: verify steps, revise from the first step below threshold")
def build_stepco(params: StepCoParams, runtime: Runtime) -> StepCo:
    return StepCo(params, runtime.verifier(params.verifier))
