"""Rewriting a solution from its first doubtful step, told which steps a verifier doubts.

StepCo revises from the first step below the threshold; adaptive (MAgICoRe) names every
low-scoring step. Both build the same prompt; with `keep_prefix` the steps before the first
flagged one are sent as the assistant prefix, so those tokens are not regenerated.

How much of the attempt the prompt resends is `feedback`: `full` (the reference) shows the
whole attempt and the flags; `flagged` shows only the first flagged step and its score, since
the kept steps already come as the prefix and the steps after the flag are to be replaced;
`none` sends the plain solve prompt, so the revision is a resample from the flagged step, and
a prefix cache (the local backend's, a server's) serves nearly all of its prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

from redline.strategies.base import SolveContext
from redline.strategies.generation import sample_solutions
from redline.text import render, solve_messages
from redline.types import Candidate, Problem, Solution

Feedback = Literal["full", "flagged", "none"]


@dataclass(frozen=True)
class Flag:
    index: int  # 1-based step number
    score: float


def flag_steps(scores: Sequence[float], threshold: float, first_only: bool) -> list[Flag]:
    """Steps scoring below `threshold` (only the first when `first_only`); the lowest one if none does."""
    flags = [Flag(i + 1, s) for i, s in enumerate(scores) if s < threshold]
    if not flags and scores:
        low = min(range(len(scores)), key=lambda i: scores[i])
        flags = [Flag(low + 1, scores[low])]
    return flags[:1] if first_only else flags


def revision_messages(problem: Problem, solution: Solution, flags: Sequence[Flag], guidance: str,
                      feedback: Feedback = "full") -> list[dict[str, str]]:
    if feedback == "none":
        return solve_messages(problem.question, guidance)
    first = flags[0]
    if feedback == "flagged":
        user = render("revise_flagged", question=problem.question, first=first.index, score=first.score,
                      flagged_text=solution.step_texts[first.index - 1])
    else:
        user = render("revise_from_step", question=problem.question, steps=solution.step_texts, flagged=flags,
                      first=first.index)
    return [{"role": "system", "content": render("solve_system", guidance=guidance)},
            {"role": "user", "content": user}]


async def revise_from(ctx: SolveContext, problem: Problem, candidate: Candidate, flags: Sequence[Flag],
                      keep_prefix: bool, temperature: float, seed: int, feedback: Feedback = "full") -> Solution:
    """One rewrite of `candidate` from its first flagged step (phase 'revise')."""
    kept = candidate.solution.step_texts[: flags[0].index - 1] if keep_prefix else []
    messages = revision_messages(problem, candidate.solution, flags, ctx.guidance, feedback)
    return (await sample_solutions(ctx, problem, n=1, temperature=temperature, prefix_steps=kept,
                                   phase_name="revise", seed=seed, messages=messages))[0]
