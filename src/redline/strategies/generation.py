"""Generating solutions: whole solutions in one call, or one step at a time.

Step-at-a-time generation is what beam search extends, and what step-level context
providers (BoostStep) hook into; whole-solution sampling falls back to it whenever such
a provider is active, so `stepco+boost` works without StepCo knowing about BoostStep.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from redline.backends.base import GenerationRequest, Message
from redline.strategies.base import SolveContext
from redline.text import join_steps, solve_messages
from redline.types import Problem, Solution

STEP_STOP = ("\nStep ", "\n\nStep ")
MAX_STEPS = 12
_FINAL = re.compile(r"answer is|\\boxed|####", re.IGNORECASE)


@dataclass(frozen=True)
class StepDraft:
    text: str
    done: bool
    tokens: int = 0  # completion tokens the step cost
    truncated: bool = False  # cut by the token limit, not by the step delimiter or end of sequence


def prefix_text(steps: Sequence[str]) -> str:
    """The assistant prefix that continues after `steps` (kept steps are not regenerated)."""
    return join_steps(list(steps)) + "\n\n" if steps else ""


def is_final(step: str) -> bool:
    return bool(_FINAL.search(step))


async def next_steps(ctx: SolveContext, problem: Problem, steps: Sequence[str], n: int = 1,
                     temperature: float = 0.0, phase_name: str = "solve", seed: int | None = None,
                     messages: Sequence[Message] | None = None, max_tokens: int = 160) -> list[StepDraft]:
    """Sample `n` candidate next steps after `steps`, stopping at the step delimiter."""
    label = f"Step {len(steps) + 1}:"
    request = GenerationRequest(
        messages=list(messages or solve_messages(problem.question, ctx.guidance)),
        prefix=prefix_text(steps) + label, n=n, temperature=temperature,
        max_tokens=max_tokens, stop=STEP_STOP, seed=ctx.seed() if seed is None else seed,
    )
    drafts = []
    for c in await ctx.generate(request, phase_name):
        body = c.text.strip()
        drafts.append(StepDraft(f"{label} {body}".strip(), done=not body or is_final(body),
                                tokens=c.completion_tokens, truncated=c.finish_reason == "length"))
    return drafts


async def refine_step(ctx: SolveContext, problem: Problem, prior_steps: Sequence[str], draft: str) -> str:
    """Let each step-level provider (BoostStep) rewrite a drafted step, in order."""
    for provider in ctx.step_providers:
        draft = await provider.refine_step(problem, prior_steps, draft, ctx)
    return draft


async def _solve_stepwise(ctx: SolveContext, problem: Problem, prefix_steps: Sequence[str], temperature: float,
                          phase_name: str, seed: int, messages: Sequence[Message] | None) -> Solution:
    steps = list(prefix_steps)
    truncated = False
    for depth in range(MAX_STEPS):
        draft = (await next_steps(ctx, problem, steps, 1, temperature, phase_name, seed + depth, messages))[0]
        if not draft.text or draft.text.endswith(":") and draft.done:
            break
        text = await refine_step(ctx, problem, steps, draft.text)
        steps.append(text)
        truncated = truncated or draft.truncated
        if draft.done or is_final(text):
            break
    return Solution.from_text(join_steps(steps), "length" if truncated else None)


async def sample_solutions(ctx: SolveContext, problem: Problem, n: int = 1, temperature: float = 0.0,
                           prefix_steps: Sequence[str] = (), phase_name: str = "solve", seed: int | None = None,
                           messages: Sequence[Message] | None = None,
                           max_tokens: int | None = None) -> list[Solution]:
    """Sample `n` full solutions, continuing after `prefix_steps` when given."""
    seed = ctx.seed() if seed is None else seed
    if ctx.step_providers:
        return [await _solve_stepwise(ctx, problem, prefix_steps, temperature, phase_name, seed + 1000 * i, messages)
                for i in range(n)]
    prefix = prefix_text(prefix_steps)
    request = GenerationRequest(
        messages=list(messages or solve_messages(problem.question, ctx.guidance)), prefix=prefix, n=n,
        temperature=temperature, max_tokens=max_tokens or ctx.runtime.max_tokens, seed=seed,
    )
    completions = await ctx.generate(request, phase_name)
    return [Solution.from_text(prefix + c.text, c.finish_reason) for c in completions]
