"""`stepco`: Stepwise Correction (Wu et al., ACL 2025), by default as the reference code runs it.

The reference loop (github.com/wzy6642/StepCo, `StepCo/solving_pipeline.py`, `config.py`,
`verification.py`): sample a step-by-step path at temperature 0.7 and score the whole path with
one verifier call (the path as a single step: its outcome score). While that score is below
θ = 0.5, and at most K = 5 times: score the path's steps (a second call), find the first step
below θ, ask the model to rewrite the path from that step (showing the whole attempt, the step's
index and its estimated probability; the model writes the path out again, keeping the steps
before it), and score the rewrite as a whole. Stop when the outcome passes, when the same answer
comes back twice in a row, when no step falls below θ although the outcome does (nothing to
revise), or after K revisions. The last path is the answer.

Every way redline's `stepco` used to run differently is a parameter; the defaults are the paper's:

| parameter | paper (default) | redline's option |
|---|---|---|
| `outcome` | `whole`: one call on the whole path; steps scored only when it fails | `steps`: the outcome is `agg` (min) of the step scores, all scored in one call per path |
| `unflagged` | `stop` when no step is below θ | `lowest`: revise from the lowest-scoring step |
| `revise` | `rewrite`: the model writes the path out again | `prefix`: the kept steps go as an assistant prefix, not regenerated |
| `feedback` | `full`: the whole attempt and the flag | `flagged`, `none` (need `revise=prefix`, which they imply) |
| `greedy_first` | `false`: the first path sampled at `temperature` | `true`: the first path greedy (with `n_init=1`) |
| `stop_unchanged` | `false` | `true`: stop when a revision rewrites the flagged step into the same step |
| `n_init` | 1 | more paths, the best-scored one revised |

Where redline departs from the reference, whatever the parameters, and why:
- No answer-extraction call. The reference asks the model a second time, per path, for the
  answer in `\\boxed{}`; redline's prompts ask for "The answer is N" and parse it, which saves
  one generation call per path (and the path's tokens resent as its prompt).
- redline's prompts and step segmentation ("Step k:" lines) instead of the reference's `<Step k>`
  tags, whose fragments under 5 characters it drops before step scoring. The revision prompt
  carries what the reference's does: the attempt, the flagged step's index and probability.
- The sanity rules (`verifiers/sanity.py`) zero what no verifier should pass (empty, repeated or
  looping steps, a truncated path, no or conflicting final answers), also under `outcome=whole`.
  A path whose every step is neutral (nothing in it could be checked) has its outcome capped
  below θ, and is revised from its lowest step even under `unflagged=stop`: else a path such as
  "Step 2 is probably wrong: it answers the question. The answer is 4." would end the loop.
- The verifier is any spec (`arith` by default); the reference uses the Math-Shepherd PRM. A
  whole path scored as one step by `arith` checks every arithmetic claim in it at once: it passes
  when all hold, fails when one does not, and is neutral (capped at 0.49) when it makes none.
- A budget stop (`max_calls`, `max_tokens_total`) returns the best-scored path so far.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

from pydantic import Field, model_validator

from redline.ledger import phase
from redline.registry import STRATEGIES, Params
from redline.runtime import Runtime
from redline.strategies.base import SolveContext, candidate_dict
from redline.strategies.generation import sample_solutions
from redline.strategies.revision import Feedback, Flag, flag_steps, revise_from
from redline.strategies.scoring import score_all
from redline.text import answers_equal
from redline.types import Candidate, Problem, Result, Solution
from redline.verifiers import sanity
from redline.verifiers.base import Aggregation


class StepCoParams(Params):
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="theta: accept at or above, flag steps below")
    max_iters: int = Field(5, ge=0, le=50, description="K: most revisions")
    verifier: str = Field("arith", min_length=1, description="verifier spec that scores paths and steps")
    outcome: Literal["whole", "steps"] = Field("whole", description="whole = one verifier call on the whole path, "
                                               "steps scored only when it fails (the paper); steps = agg of the "
                                               "step scores, every path's steps scored")
    agg: Aggregation = Field("min", description="with outcome=steps: outcome from step scores (last, min, prod, mean)")
    unflagged: Literal["stop", "lowest"] = Field("stop", description="when the outcome fails but no step is below "
                                                 "theta: stop (the paper) or revise from the lowest-scoring step")
    n_init: int = Field(1, ge=1, le=64, description="initial paths; the best-scored one is revised")
    revise: Literal["prefix", "rewrite"] = Field("rewrite", description="rewrite = the model writes the path out "
                                                 "again (the paper); prefix = kept steps sent as assistant prefix, "
                                                 "not regenerated (the default with feedback=flagged or none)")
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="sampling temperature of every path")
    greedy_first: bool = Field(False, description="sample the first path greedily (with n_init=1)")
    feedback: Feedback = Field("full", description="what a revision prompt resends: full = the whole attempt and "
                               "flags (the paper); flagged = only the flagged step; none = the solve prompt")
    stop_unchanged: bool = Field(False, description="stop when a revision leaves the flagged step unchanged")

    @model_validator(mode="before")
    @classmethod
    def _revise_follows_feedback(cls, data: Any) -> Any:
        """Reduced feedback works only with the kept steps as a prefix, so it implies revise=prefix."""
        if isinstance(data, dict) and "revise" not in data and data.get("feedback", "full") != "full":
            return {**data, "revise": "prefix"}
        return data

    @model_validator(mode="after")
    def _feedback_needs_prefix(self) -> "StepCoParams":
        if self.revise == "rewrite" and self.feedback != "full":
            raise ValueError("feedback=flagged or none needs revise=prefix (the kept steps travel as the prefix)")
        return self


async def score_whole(ctx: SolveContext, verifier: Any, problem: Problem, solution: Solution,
                      origin: str) -> Candidate:
    """The reference's outcome score: the verifier judges the whole path as one step (one call,
    phase 'verify'); the sanity rules still zero what it cannot see. Steps stay unscored."""
    raw: list[float] = []
    if solution.steps:
        with phase("verify"):
            raw = list(await verifier.score(problem.question, [solution.text]))
    _, reasons = sanity.apply(solution, [0.0] * len(solution.steps))  # only why the rules fire
    value = sanity.outcome(raw[:1], reasons, raw[0] if raw else 0.0, getattr(verifier, "neutral", None))
    candidate = Candidate(solution, score=value, origin=origin, sanity=tuple(reasons))
    ctx.propose(candidate)
    return candidate


class StepCo:
    def __init__(self, params: StepCoParams, verifier: Any) -> None:
        self.params = params
        self.verifier = verifier

    async def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        p = self.params
        greedy = p.greedy_first and p.n_init == 1
        initial = await sample_solutions(ctx, problem, n=p.n_init, seed=ctx.seed(),
                                         temperature=0.0 if greedy else p.temperature)
        candidates = [await self.assess(ctx, problem, s, "sample") for s in initial]
        for c in candidates:
            ctx.trace.child("generate", **candidate_dict(c))
        current = max(candidates, key=lambda c: c.score or 0.0)
        previous: Candidate | None = None
        iteration, unchanged = 0, False
        while (stop := self.stop_reason(current, previous, iteration, unchanged)) is None:
            current = await self.score_steps(ctx, problem, current, candidates)
            flag = self.flag(current)
            if flag is None:
                stop = f"no step scores below threshold {p.threshold} though the outcome does: nothing to revise"
                break
            iteration += 1
            revised, unchanged = await self.revise(ctx, problem, current, flag, iteration)
            candidates.append(revised)
            previous, current = current, revised
        ctx.trace.child("stop", reason=stop, revisions=iteration, answer=current.solution.answer, score=current.score)
        return ctx.finish(problem, current.solution, candidates)

    async def assess(self, ctx: SolveContext, problem: Problem, solution: Solution, origin: str) -> Candidate:
        """The outcome score of a path: the whole path in one call, or its steps aggregated."""
        if self.params.outcome == "whole":
            return await score_whole(ctx, self.verifier, problem, solution, origin)
        return (await score_all(ctx, self.verifier, problem, [solution], self.params.agg, origin=origin))[0]

    async def score_steps(self, ctx: SolveContext, problem: Problem, current: Candidate,
                          candidates: list[Candidate]) -> Candidate:
        """Give a failed path its step scores (a second verifier call under outcome=whole), in place
        in `candidates`; its outcome score stays."""
        if current.solution.scores is not None:
            return current
        stepped = await ctx.score(self.verifier, problem.question, current.solution)
        scored = replace(current, solution=stepped.solution)
        candidates[candidates.index(current)] = scored
        ctx.trace.child("score_steps", outcome=current.score, scores=stepped.solution.scores)
        return scored

    def flag(self, current: Candidate) -> Flag | None:
        """The first step below the threshold; with none, the lowest step (`unflagged=lowest`, or a
        path whose every step is neutral: nothing in it was verified) or None."""
        scores = current.solution.scores or []
        flags = flag_steps(scores, self.params.threshold, first_only=True)
        if not flags:
            return None
        neutral = getattr(self.verifier, "neutral", None)
        unverified = neutral is not None and all(abs(s - neutral) < 1e-9 for s in scores)
        if flags[0].score >= self.params.threshold and self.params.unflagged == "stop" and not unverified:
            return None
        return flags[0]

    async def revise(self, ctx: SolveContext, problem: Problem, current: Candidate, flag: Flag,
                     iteration: int) -> tuple[Candidate, bool]:
        """Rewrite from the flagged step and score the rewrite; record it as a 'revise' node.
        Returns the revision and whether it left the flagged step as it was."""
        p = self.params
        solution = await revise_from(ctx, problem, current, [flag], keep_prefix=p.revise == "prefix",
                                     temperature=p.temperature, seed=ctx.seed(iteration), feedback=p.feedback)
        revised = await self.assess(ctx, problem, solution, f"revision {iteration}")
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


@STRATEGIES.register("stepco", StepCoParams, "StepCo: score the path, revise from the first step below threshold")
def build_stepco(params: StepCoParams, runtime: Runtime) -> StepCo:
    return StepCo(params, runtime.verifier(params.verifier))
