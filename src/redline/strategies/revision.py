"""Rewriting a solution from its first doubtful step, told which steps a verifier doubts.

StepCo revises from the first step below the threshold; adaptive (MAgICoRe) names every
low-scoring step. Both build the same prompt; with `keep_prefix` the steps before the first
flagged one are sent as the assistant prefix, so those tokens are not regenerated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from redline.strategies.base import SolveContext
from redline.strategies.generation import sample_solutions
from redline.text import render
from redline.types import Candidate, Problem, Solution


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


def revision_messages(problem: Problem, solution: Solution, flags: Sequence[Flag], guidance: str) -> list[dict[str, str]]:
    user = render("revise_from_step", question=problem.question, steps=solution.step_texts, flagged=flags,
                  first=flags[0].index)
    return [{"role": "system", "content": render("solve_system", guidance=guidance)},
            {"role": "user", "content": user}]


async def revise_from(ctx: SolveContext, problem: Problem, candidate: Candidate, flags: Sequence[Flag],
                      keep_prefix: bool, temperature: float, seed: int) -> Solution:
    """One rewrite of `candidate` from its first flagged step (phase 'revise')."""
    kept = candidate.solution.step_texts[: flags[0].index - 1] if keep_prefix else []
    messages = revision_messages(problem, candidate.solution, flags, ctx.guidance)
    return (await sample_solutions(ctx, problem, n=1, temperature=temperature, prefix_steps=kept,
                                   phase_name="revise", seed=seed, messages=messages))[0]
