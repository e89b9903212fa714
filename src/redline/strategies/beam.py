"""`beam`: step-level beam search guided by the verifier ("Scaling LLM Test-Time Compute
Optimally"; huggingface/search-and-learn).

Keep N/M prefixes. Extend each by sampling M next steps (stopping at the step delimiter),
score the extended prefixes, and keep the top N/M unfinished ones; finished solutions join
the pool. Stop when no prefix is left unfinished or at the depth limit, then pick the
answer from the pool by best score or by weighted vote.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from redline.registry import STRATEGIES, Params
from redline.runtime import Runtime
from redline.strategies.base import SolveContext, candidate_dict
from redline.strategies.generation import is_final, next_steps, refine_step
from redline.strategies.scoring import score_paths
from redline.strategies.voting import score_vote, tally, votes_dict, winner, with_group_votes
from redline.text import join_steps
from redline.types import Candidate, Problem, Result, Solution
from redline.verifiers.base import Aggregation


class BeamParams(Params):
    n: int = Field(4, ge=1, le=256, description="N: sampled steps per depth (the beam budget)")
    width: int = Field(2, ge=1, le=64, description="M: next steps per kept prefix; N/M prefixes survive each depth")
    max_depth: int = Field(8, ge=1, le=40, description="most steps in a solution")
    verifier: str = Field("arith", min_length=1, description="verifier spec that scores every prefix")
    agg: Aggregation = Field("min", description="prefix score from step scores: last, min, prod, mean")
    finish: Literal["best", "weighted"] = Field("best", description="pick the finished solution with the best score, "
                                                "or vote by summed score per equivalent answer")
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="step sampling temperature")
    step_tokens: int = Field(96, ge=8, le=1024, description="token limit for one step")


@dataclass(frozen=True)
class Extension:
    steps: list[str]
    done: bool
    truncated: bool = False  # the last step hit the step token limit


class BeamSearch:
    def __init__(self, params: BeamParams, verifier: Any) -> None:
        self.params = params
        self.verifier = verifier

    @property
    def keep(self) -> int:
        return max(1, self.params.n // self.params.width)

    async def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        p = self.params
        active: list[list[str]] = [[]]
        pool: list[Candidate] = []
        unfinished: list[Candidate] = []
        stop = f"max_depth={p.max_depth} reached"
        for depth in range(p.max_depth):
            extensions = await self.extend(ctx, problem, active, per_prefix=p.n if depth == 0 else p.width, depth=depth)
            scored = await score_paths(ctx, self.verifier, problem,
                                       [Solution.from_text(join_steps(e.steps), "length" if e.truncated else None)
                                        for e in extensions], [e.done for e in extensions], p.agg,
                                       origin=f"beam depth {depth + 1}")
            ranked = sorted(zip(scored, extensions), key=lambda ce: ce[0].score or 0.0, reverse=True)
            finished = [c for c, e in ranked if e.done]
            kept = [(c, e) for c, e in ranked if not e.done][: self.keep]
            unfinished = [c for c, _ in kept]
            pool += finished
            ctx.trace.child("depth", depth=depth + 1, finished=[candidate_dict(c) for c in finished],
                            kept=[candidate_dict(c) for c in unfinished],
                            dropped=len(ranked) - len(finished) - len(unfinished))
            active = [e.steps for _, e in kept]
            if not active:
                stop = "every beam finished"
                break
        pool = pool or unfinished
        chosen = None
        if p.finish == "weighted":
            groups = tally(pool, weight=score_vote)
            ctx.trace.child("vote", weighted=True, votes=votes_dict(groups))
            pool, chosen = with_group_votes(pool, groups), winner(groups)
        chosen = chosen or max(pool, key=lambda c: c.score or 0.0, default=None)
        ctx.trace.child("stop", reason=stop, finished=len(pool))
        return ctx.finish(problem, chosen.solution if chosen else None, pool)

    async def extend(self, ctx: SolveContext, problem: Problem, active: list[list[str]], per_prefix: int,
                     depth: int) -> list[Extension]:
        """Sample `per_prefix` next steps for every kept prefix; step-level providers refine each."""
        out = []
        for j, prefix in enumerate(active):
            drafts = await next_steps(ctx, problem, prefix, n=per_prefix, temperature=self.params.temperature,
                                      seed=ctx.seed(1000 * depth + j), max_tokens=self.params.step_tokens)
            for draft in drafts:
                if draft.text == f"Step {len(prefix) + 1}:":  # the model ended: the prefix is the whole solution
                    if prefix:
                        out.append(Extension(prefix, True))
                    continue
                text = await refine_step(ctx, problem, prefix, draft.text)
                out.append(Extension(prefix + [text], draft.done or is_final(text), draft.truncated))
        return out


@STRATEGIES.register("beam", BeamParams, "step-level beam search: keep the top N/M verifier-scored prefixes")
def build_beam(params: BeamParams, runtime: Runtime) -> BeamSearch:
    return BeamSearch(params, runtime.verifier(params.verifier))
