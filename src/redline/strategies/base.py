"""The strategy interface: `async solve(problem, ctx) -> Result`, plus what a solve can use."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, Sequence, runtime_checkable

from redline.backends.base import Completion, GenerationRequest
from redline.ledger import Ledger, phase
from redline.runtime import Runtime
from redline.strategies.trace import Trace
from redline.types import Candidate, Problem, Result, Solution
from redline.verifiers import sanity
from redline.verifiers.base import aggregate


@runtime_checkable
class ContextProvider(Protocol):
    """Adds what memory knows to a solve. `guidance` goes into the system prompt; a provider
    with `step_level = True` also rewrites each drafted step (BoostStep)."""

    name: str
    step_level: bool

    async def guidance(self, problem: Problem, ctx: "SolveContext") -> str: ...

    async def refine_step(self, problem: Problem, prior_steps: Sequence[str], draft: str,
                          ctx: "SolveContext") -> str: ...


@dataclass
class SolveContext:
    """Per-solve state: runtime, ledger, providers' guidance, trace, and the best answer so far."""

    runtime: Runtime
    ledger: Ledger
    strategy: str
    providers: Sequence[ContextProvider] = ()
    guidance: str = ""
    trace: Trace = field(default_factory=lambda: Trace("solve"))
    best: Candidate | None = None
    started: float = field(default_factory=time.perf_counter)

    @property
    def step_providers(self) -> list[ContextProvider]:
        return [p for p in self.providers if p.step_level]

    async def generate(self, request: GenerationRequest, phase_name: str = "solve") -> list[Completion]:
        """A backend call, recorded in this solve's ledger under `phase_name`."""
        with phase(phase_name):
            return await self.runtime.backend.generate(request)

    async def score(self, verifier: Any, question: str, solution: Solution, agg: str = "min",
                    complete: bool = True) -> Candidate:
        """Score a solution's steps (phase 'verify'), apply the sanity rules (`complete` = False for a
        partial prefix, which needs no final answer yet) and return it as a Candidate."""
        with phase("verify"):
            raw = await verifier.score(question, solution.step_texts)
        scores, reasons = sanity.apply(solution, raw, complete)
        scored = solution.with_scores(scores) if solution.steps else solution
        value = sanity.outcome(scores, reasons, aggregate(scores, agg), getattr(verifier, "neutral", None))
        return Candidate(scored, score=value, sanity=tuple(reasons))

    def propose(self, candidate: Candidate) -> None:
        """Offer a candidate as the answer so far; a budget stop returns the best one offered."""
        if candidate.solution.answer is None and self.best is not None:
            return
        if self.best is None or (candidate.score or 0.0) >= (self.best.score or 0.0) or self.best.solution.answer is None:
            self.best = candidate

    def seed(self, offset: int = 0) -> int:
        return self.runtime.seed + offset

    def finish(self, problem: Problem, solution: Solution | None, candidates: Sequence[Candidate] = (),
               answer: str | None = None, stopped: str | None = None) -> Result:
        """Build the Result with usage from the ledger and the trace."""
        return Result(
            problem=problem,
            strategy=self.strategy,
            answer=answer if answer is not None else (solution.answer if solution else None),
            solution=solution,
            candidates=tuple(candidates),
            trace=self.trace.to_dict(),
            usage=self.ledger.by_phase(),
            wall_s=time.perf_counter() - self.started,
            stopped=stopped,
        )


@runtime_checkable
class Strategy(Protocol):
    async def solve(self, problem: Problem, ctx: SolveContext) -> Result: ...


def candidate_dict(c: Candidate) -> dict[str, Any]:
    """Compact trace form of a candidate."""
    d = {"answer": c.solution.answer, "score": c.score, "votes": c.votes, "origin": c.origin,
         "steps": [{"text": s.text, "score": s.score} for s in c.solution.steps]}
    return d | {"sanity": list(c.sanity)} if c.sanity else d


def with_origin(c: Candidate, origin: str) -> Candidate:
    return replace(c, origin=origin)
