"""Context providers backed by the memory store; they register themselves in PROVIDERS.

Providers only read memory: nothing a solve sees is written back (learning goes through
`redline learn`, or `learning.learn_online` when the runtime sets `learn_online`).
Their model calls (BoostStep's regenerated step) are booked under the 'retrieve' phase, so
a run's usage shows exactly what a provider cost on top of the strategy.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from pydantic import Field

from redline.embeddings import embed
from redline.memory import principles as leap
from redline.memory.mistakes import pair_view
from redline.memory.stepbank import retrieve_steps
from redline.memory.store import RUNTIME_KEY, MemoryStore
from redline.registry import PROVIDERS, Params
from redline.runtime import Runtime
from redline.strategies.base import SolveContext
from redline.strategies.generation import next_steps
from redline.text import render, solve_messages
from redline.types import Problem
from redline.verifiers.base import run_in_pool

RETRIEVE_PHASE = "retrieve"


def open_memory(runtime: Runtime) -> MemoryStore:
    """The runtime's store, opened once; reading needs an existing store (a typo'd path is an error)."""
    return runtime.cached(RUNTIME_KEY, lambda: MemoryStore.open(runtime.memory_path, create=runtime.learn_online))


async def _embed_one(text: str) -> np.ndarray:
    return (await run_in_pool(embed, [text]))[0]


class _ReadOnly:
    """Shared by the providers: a store, and no per-step hook unless a subclass has one."""

    name = ""
    step_level = False

    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    async def refine_step(self, problem: Problem, prior_steps: Sequence[str], draft: str, ctx: SolveContext) -> str:
        return draft


class PrinciplesParams(Params):
    k: int = Field(3, ge=1, le=20, description="How many principles to inject.")
    task: str | None = Field(None, description="Only principles learned on this task tag (default: any).")
    record_weight: float = Field(0.5, ge=0, description="Weight of the track record against similarity.")


class PrinciplesProvider(_ReadOnly):
    name = "principles"

    def __init__(self, store: MemoryStore, params: PrinciplesParams) -> None:
        super().__init__(store)
        self.params = params

    async def guidance(self, problem: Problem, ctx: SolveContext) -> str:
        chosen = leap.select(self.store, await _embed_one(problem.question), self.params.k, self.params.task,
                             self.params.record_weight)
        # learn runs read these ids from the trace to track accuracy when used vs not used
        ctx.trace.child(leap.PRINCIPLES_TRACE, ids=[p.id for p in chosen], texts=[p.text for p in chosen])
        return render("principles", principles=[p.text for p in chosen]) if chosen else ""


class BoostParams(Params):
    k: int = Field(2, ge=1, le=10, description="Verified steps retrieved per drafted step.")
    min_similarity: float = Field(0.5, ge=-1, le=1,
                                  description="Below this cosine similarity the draft is kept as it is.")


class BoostProvider(_ReadOnly):
    """BoostStep first-try retrieval: draft a step, retrieve similar verified steps with their
    problems, regenerate the step with them as examples."""

    name = "boost"
    step_level = True

    def __init__(self, store: MemoryStore, params: BoostParams) -> None:
        super().__init__(store)
        self.params = params

    async def guidance(self, problem: Problem, ctx: SolveContext) -> str:
        return ""

    async def refine_step(self, problem: Problem, prior_steps: Sequence[str], draft: str, ctx: SolveContext) -> str:
        examples = await run_in_pool(retrieve_steps, self.store, draft, self.params.k, self.params.min_similarity)
        node = ctx.trace.child("boost", step=len(prior_steps), draft=draft, examples=[e.id for e in examples])
        if not examples:
            return draft
        shown = render("boost_step", examples=examples)
        guidance = f"{ctx.guidance}\n\n{shown}" if ctx.guidance else shown
        refined = (await next_steps(ctx, problem, prior_steps, n=1, temperature=0.0, phase_name=RETRIEVE_PHASE,
                                    seed=ctx.seed(len(prior_steps)),
                                    messages=solve_messages(problem.question, guidance)))[0]
        text = refined.text if refined.text.split(":", 1)[-1].strip() else draft
        node.data["refined"] = text
        return text


class MistakesParams(Params):
    k: int = Field(2, ge=1, le=8, description="How many similar past mistakes to show.")
    min_similarity: float = Field(0.3, ge=-1, le=1, description="Skip past problems less similar than this.")


class MistakesProvider(_ReadOnly):
    name = "mistakes"

    def __init__(self, store: MemoryStore, params: MistakesParams) -> None:
        super().__init__(store)
        self.params = params

    async def guidance(self, problem: Problem, ctx: SolveContext) -> str:
        found = self.store.similar_mistakes(await _embed_one(problem.question), self.params.k)
        found = [m for m in found if m.similarity >= self.params.min_similarity]
        ctx.trace.child("mistakes", ids=[m.id for m in found])
        return render("mistakes", mistakes=[pair_view(m) for m in found]) if found else ""


@PROVIDERS.register("principles", PrinciplesParams, "LEAP: top-k learned principles for the problem, by "
                    "similarity and track record")
def build_principles(params: PrinciplesParams, runtime: Runtime) -> PrinciplesProvider:
    return PrinciplesProvider(open_memory(runtime), params)


@PROVIDERS.register("boost", BoostParams, "BoostStep: regenerate each drafted step with similar verified steps "
                    "from the step bank as examples")
def build_boost(params: BoostParams, runtime: Runtime) -> BoostProvider:
    return BoostProvider(open_memory(runtime), params)


@PROVIDERS.register("mistakes", MistakesParams, "show k similar past problems with a wrong and a correct "
                    "solution side by side")
def build_mistakes(params: MistakesParams, runtime: Runtime) -> MistakesProvider:
    return MistakesProvider(open_memory(runtime), params)
