"""Turning solutions into candidates: scored by a verifier or not, each offered as the answer so far."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any, Sequence

from redline.strategies.base import SolveContext
from redline.types import Candidate, Problem, Solution


async def score_all(ctx: SolveContext, verifier: Any, problem: Problem, solutions: Sequence[Solution],
                    agg: str, origin: str = "sample", propose: bool = True) -> list[Candidate]:
    """Score every solution (phase 'verify', sanity rules applied) and return them as Candidates in
    order; propose each unless they are partial (`propose=False`: beam and MCTS prefixes, which
    are not held to the final-answer rule)."""
    outcomes = await asyncio.gather(*(ctx.score(verifier, problem.question, s, agg, complete=propose)
                                      for s in solutions), return_exceptions=True)
    candidates = [replace(c, origin=origin) for c in outcomes if isinstance(c, Candidate)]
    if propose:  # also when a budget stopped some of the scoring: those scored are answers so far
        for c in candidates:
            ctx.propose(c)
    for error in outcomes:  # raised once every call has ended (see `redline.ledger.gather_calls`)
        if isinstance(error, BaseException):
            raise error
    return candidates


async def score_paths(ctx: SolveContext, verifier: Any, problem: Problem, solutions: Sequence[Solution],
                      finished: Sequence[bool], agg: str, origin: str) -> list[Candidate]:
    """Score search paths in order (beam, MCTS): finished ones as complete solutions (sanity's
    final-answer rule applies, and each is proposed as the answer so far), the others as partial
    prefixes."""
    out: dict[int, Candidate] = {}
    for complete in (True, False):
        idx = [i for i, f in enumerate(finished) if f == complete]
        if idx:
            cands = await score_all(ctx, verifier, problem, [solutions[i] for i in idx], agg, origin=origin,
                                    propose=complete)
            out.update(zip(idx, cands))
    return [out[i] for i in range(len(solutions))]


def propose_all(ctx: SolveContext, solutions: Sequence[Solution], origin: str = "sample") -> list[Candidate]:
    """Unscored candidates (voting strategies without a verifier), each proposed."""
    candidates = [Candidate(s, origin=origin) for s in solutions]
    for c in candidates:
        ctx.propose(c)
    return candidates
