"""Turning solutions into candidates: scored by a verifier or not, each offered as the answer so far."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any, Sequence

from redline.strategies.base import SolveContext
from redline.types import Candidate, Problem, Solution


async def score_all(ctx: SolveContext, verifier: Any, problem: Problem, solutions: Sequence[Solution],
                    agg: str, origin: str = "sample", propose: bool = True) -> list[Candidate]:
    """Score every solution (phase 'verify') and return them as Candidates in order; propose each
    unless they are partial (beam prefixes)."""
    scored = await asyncio.gather(*(ctx.score(verifier, problem.question, s, agg) for s in solutions))
    candidates = [replace(c, origin=origin) for c in scored]
    if propose:
        for c in candidates:
            ctx.propose(c)
    return candidates


def propose_all(ctx: SolveContext, solutions: Sequence[Solution], origin: str = "sample") -> list[Candidate]:
    """Unscored candidates (voting strategies without a verifier), each proposed."""
    candidates = [Candidate(s, origin=origin) for s in solutions]
    for c in candidates:
        ctx.propose(c)
    return candidates
