"""`adaptive`: spend more compute only where the samples disagree.

mode=magicore (MAgICoRe, Chen et al., 2024): sample k solutions; if their answer agreement
reaches tau the problem is easy and the majority wins. Otherwise run targeted refinement:
the feedback names every step the verifier scores low and the model rewrites from the first
of them; re-vote (verifier-weighted), and iterate while agreement improves.

mode=sample (adaptive consistency): draw k samples at a time until a Beta posterior says
the majority answer holds more than half the probability mass with `confidence`, or
`max_samples` is reached.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from redline.registry import STRATEGIES, Params
from redline.runtime import Runtime
from redline.strategies.base import SolveContext, candidate_dict
from redline.strategies.generation import sample_solutions
from redline.strategies.revision import flag_steps, revise_from
from redline.strategies.scoring import propose_all, score_all
from redline.strategies.voting import (AnswerGroup, agreement, one_vote, score_vote, tally, votes_dict, winner,
                                      with_group_votes)
from redline.types import Candidate, Problem, Result
from redline.verifiers.base import Aggregation


class AdaptiveParams(Params):
    mode: Literal["magicore", "sample"] = Field("magicore", description="magicore = route hard problems to "
                                                "targeted refinement; sample = sample until the majority is confident")
    k: int = Field(4, ge=1, le=64, description="samples first drawn (magicore), or per batch (sample)")
    tau: float = Field(0.75, ge=0.0, le=1.0, description="magicore: agreement at or above which the majority wins")
    max_rounds: int = Field(2, ge=0, le=10, description="magicore: most refinement rounds")
    step_threshold: float = Field(0.5, ge=0.0, le=1.0, description="magicore: steps scoring below are named for revision")
    verifier: str = Field("arith", min_length=1, description="magicore: verifier spec that scores the steps")
    agg: Aggregation = Field("min", description="magicore: outcome score from step scores (weights the vote)")
    max_samples: int = Field(16, ge=1, le=512, description="sample: most samples in all")
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="sample: stop when P(majority share > 1/2) reaches this")
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="sampling temperature")


class Adaptive:
    def __init__(self, params: AdaptiveParams, verifier: Any | None) -> None:
        self.params = params
        self.verifier = verifier

    async def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        if self.params.mode == "sample":
            return await self.sample_until_confident(problem, ctx)
        return await self.magicore(problem, ctx)

    async def magicore(self, problem: Problem, ctx: SolveContext) -> Result:
        p = self.params
        solutions = await sample_solutions(ctx, problem, n=p.k, temperature=p.temperature, seed=ctx.seed())
        pool = await score_all(ctx, self.verifier, problem, solutions, p.agg)
        everything = list(pool)
        agreed = agreement(pool)
        ctx.trace.child("route", agreement=agreed, tau=p.tau, route="easy" if agreed >= p.tau else "hard",
                        candidates=[candidate_dict(c) for c in pool])
        stop = f"easy: agreement {agreed:.2f} >= tau {p.tau}"
        hard = agreed < p.tau
        if hard:
            stop = f"max_rounds={p.max_rounds} done"
            for round_ in range(1, p.max_rounds + 1):
                refined = await self.refine_round(ctx, problem, pool, round_)
                everything += [new for new, old in zip(refined, pool) if new is not old]
                new_agreement = agreement(refined)
                ctx.trace.child("round", round=round_, agreement_before=agreed, agreement_after=new_agreement)
                if new_agreement <= agreed:
                    stop = f"agreement did not improve ({new_agreement:.2f} <= {agreed:.2f})"
                    break
                pool, agreed = refined, new_agreement
                if agreed >= p.tau:
                    stop = f"agreement {agreed:.2f} >= tau {p.tau} after refinement"
                    break
        groups = tally(pool, weight=score_vote if hard else one_vote)  # hard problems: verifier-weighted vote
        return self.conclude(problem, ctx, groups, everything, stop)

    async def refine_round(self, ctx: SolveContext, problem: Problem, pool: list[Candidate],
                           round_: int) -> list[Candidate]:
        """Rewrite each candidate with a step below `step_threshold` from its first such step."""
        p = self.params
        out = []
        for i, c in enumerate(pool):
            scores = c.solution.scores or []
            if not scores or min(scores) >= p.step_threshold:
                out.append(c)
                continue
            flags = flag_steps(scores, p.step_threshold, first_only=False)
            solution = await revise_from(ctx, problem, c, flags, keep_prefix=True, temperature=p.temperature,
                                         seed=ctx.seed(100 * round_ + i))
            revised = (await score_all(ctx, self.verifier, problem, [solution], p.agg, origin=f"round {round_}"))[0]
            steps = revised.solution.step_texts
            first = flags[0].index
            ctx.trace.child("revise", round=round_, flagged_step=first, flagged_score=flags[0].score,
                            flagged_steps=[f.index for f in flags], flagged_text=c.solution.step_texts[first - 1],
                            replacement=steps[first - 1] if len(steps) >= first else "", **candidate_dict(revised))
            out.append(revised)
        return out

    async def sample_until_confident(self, problem: Problem, ctx: SolveContext) -> Result:
        from scipy.stats import beta

        p = self.params
        pool: list[Candidate] = []
        stop = f"max_samples={p.max_samples} drawn"
        groups: list[AnswerGroup] = []
        while len(pool) < p.max_samples:
            batch = min(p.k, p.max_samples - len(pool))
            solutions = await sample_solutions(ctx, problem, n=batch, temperature=p.temperature,
                                               seed=ctx.seed(len(pool)))
            pool += propose_all(ctx, solutions)
            groups = tally(pool)
            top = len(groups[0].members) if groups else 0
            confident = float(beta.sf(0.5, top + 1, len(pool) - top + 1))
            ctx.trace.child("sample", drawn=len(pool), majority=groups[0].answer if groups else None,
                            majority_count=top, confidence=confident)
            if confident >= p.confidence:
                stop = f"majority confident: P(share > 1/2) = {confident:.3f} >= {p.confidence}"
                break
        return self.conclude(problem, ctx, groups, pool, stop)

    def conclude(self, problem: Problem, ctx: SolveContext, groups: list[AnswerGroup], candidates: list[Candidate],
                 stop: str) -> Result:
        chosen = winner(groups)
        ctx.trace.child("vote", votes=votes_dict(groups), chosen=chosen.solution.answer if chosen else None)
        ctx.trace.child("stop", reason=stop)
        candidates = with_group_votes(candidates, groups)
        if chosen is None:
            return ctx.finish(problem, candidates[0].solution if candidates else None, candidates)
        return ctx.finish(problem, chosen.solution, candidates)


@STRATEGIES.register("adaptive", AdaptiveParams, "MAgICoRe routing (refine only when samples disagree), "
                     "or adaptive sampling (mode=sample)")
def build_adaptive(params: AdaptiveParams, runtime: Runtime) -> Adaptive:
    return Adaptive(params, runtime.verifier(params.verifier) if params.mode == "magicore" else None)
