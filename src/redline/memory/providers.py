"""Context providers backed by the memory store; they register themselves in PROVIDERS.

Providers only read memory: nothing a solve sees is written back (learning goes through
`redline learn`, or `learning.learn_online` when the runtime sets `learn_online`).
Each one abstains below its similarity floor and is off when `learn` measured it harmful with
the strategy at hand, or with another when that strategy was not measured (`redline.memory.effects`).
Their model calls (BoostStep's regenerated step) are booked under the 'retrieve' phase, so
a run's usage shows exactly what a provider cost on top of the strategy.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from pydantic import Field

from redline.embeddings import embed
from redline.memory import effects
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


def memory_notes(spec: str, runtime: Runtime, allow_harmful: bool) -> list[str]:
    """Set whether providers measured harmful run on `runtime`, and say which of `spec`'s are off (or
    run anyway): what `solve` and `eval` print before they start."""
    effects.policy(runtime).allow_harmful = allow_harmful
    if not effects.split_spec(spec)[1]:
        return []
    return effects.provider_notes(spec, open_memory(runtime), allow_harmful)


def runs_as(spec: str, runtime: Runtime) -> str:
    """`spec` in one canonical text, as it runs on `runtime`'s memory: the providers that are off dropped,
    so that `eval` computes 'stepco+principles' once with 'stepco' when principles are off."""
    if not effects.split_spec(spec)[1] or runtime.memory_path is None:
        return effects.canonical(spec)
    return effects.without_off_providers(spec, open_memory(runtime), effects.policy(runtime).allow_harmful)


async def _embed_one(text: str) -> np.ndarray:
    return (await run_in_pool(embed, [text]))[0]


class GateParams(Params):
    floor: float | None = Field(None, ge=-1, le=effects.FLOOR_NEVER,
                                description="Similarity floor below which the provider adds nothing (default: "
                                "the one `learn` fitted on its held-out slice, else no floor).")
    force: bool = Field(False, description="Run even if `learn` measured this provider harmful (--allow-harmful).")


class _Gated:
    """Shared by the providers: off when measured harmful, silent below the similarity floor,
    and one `memory` trace node per solve saying which, and what it used."""

    name = ""
    step_level = False

    def __init__(self, store: MemoryStore, params: GateParams, policy: effects.MemoryPolicy) -> None:
        self.store = store
        self.params = params
        self.policy = policy

    def off(self, ctx: SolveContext) -> bool:
        """Measured harmful with this strategy and not forced: record why, and add nothing."""
        effect = self.store.provider_effect(self.name, effects.strategy_name(ctx.strategy))
        if effect is None or not effect.harmful or self.params.force or self.policy.allow_harmful:
            return False
        ctx.trace.child(effects.MEMORY_TRACE, provider=self.name, used=False, reason=effects.off_reason(effect))
        return True

    def admit(self, ctx: SolveContext, similarity: float | None, **used: Any) -> bool:
        """Whether the best match clears the floor; records the decision (and `used` items when it does)."""
        floor = self.params.floor
        if floor is None:
            effect = self.store.provider_effect(self.name, effects.strategy_name(ctx.strategy))
            floor = effect.floor if effect is not None else -1.0
        if similarity is None:
            reason: str | None = "memory holds nothing for this provider"
        elif similarity < floor:
            reason = f"abstained: best similarity {similarity:.2f} below the floor {floor:.2f}"
        else:
            reason = None
        ctx.trace.child(effects.MEMORY_TRACE, provider=self.name, similarity=similarity, floor=floor,
                        used=reason is None, reason=reason, **(used if reason is None else {}))
        return reason is None

    async def refine_step(self, problem: Problem, prior_steps: Sequence[str], draft: str, ctx: SolveContext) -> str:
        return draft


class PrinciplesParams(GateParams):
    k: int = Field(3, ge=1, le=20, description="How many principles to inject.")
    task: str | None = Field(None, description="Only principles learned on this task tag (default: any).")
    record_weight: float = Field(0.5, ge=0, description="Weight of the track record against similarity.")


class PrinciplesProvider(_Gated):
    name = "principles"
    params: PrinciplesParams

    async def guidance(self, problem: Problem, ctx: SolveContext) -> str:
        if self.off(ctx):
            return ""
        chosen, best = leap.select(self.store, await _embed_one(problem.question), self.params.k, self.params.task,
                                   self.params.record_weight)
        # learn runs read these ids from the trace to track each principle's use and outcome
        if not self.admit(ctx, best, ids=[p.id for p in chosen], texts=[p.text for p in chosen]):
            return ""
        return render("principles", principles=[p.text for p in chosen])


class BoostParams(GateParams):
    k: int = Field(2, ge=1, le=10, description="Verified steps retrieved per drafted step.")
    min_similarity: float = Field(0.5, ge=-1, le=1,
                                  description="Below this cosine similarity the draft is kept as it is.")


class BoostProvider(_Gated):
    """BoostStep first-try retrieval: draft a step, retrieve similar verified steps with their
    problems, regenerate the step with them as examples. When no banked problem clears the
    floor, it steps aside for the whole solve: the strategy generates as it would without it
    (no step-by-step drafting, so no extra calls)."""

    name = "boost"
    step_level = True
    params: BoostParams

    async def guidance(self, problem: Problem, ctx: SolveContext) -> str:
        if self.off(ctx) or not self.admit(ctx, await run_in_pool(self._nearest, problem.question)):
            ctx.providers = [p for p in ctx.providers if p is not self]
        return ""

    def _nearest(self, question: str) -> float | None:
        return self.store.nearest_bank_problem(embed([question])[0])

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


class MistakesParams(GateParams):
    k: int = Field(2, ge=1, le=8, description="How many similar past mistakes to show.")
    min_similarity: float = Field(0.3, ge=-1, le=1, description="Skip past problems less similar than this.")


class MistakesProvider(_Gated):
    name = "mistakes"
    params: MistakesParams

    async def guidance(self, problem: Problem, ctx: SolveContext) -> str:
        if self.off(ctx):
            return ""
        found = self.store.similar_mistakes(await _embed_one(problem.question), self.params.k)
        shown = [m for m in found if m.similarity >= self.params.min_similarity]
        if not self.admit(ctx, found[0].similarity if found else None, ids=[m.id for m in shown]) or not shown:
            return ""
        return render("mistakes", mistakes=[pair_view(m) for m in shown])


@PROVIDERS.register("principles", PrinciplesParams, "LEAP: top-k learned principles for the problem, by "
                    "similarity and track record")
def build_principles(params: PrinciplesParams, runtime: Runtime) -> PrinciplesProvider:
    return PrinciplesProvider(open_memory(runtime), params, effects.policy(runtime))


@PROVIDERS.register("boost", BoostParams, "BoostStep: regenerate each drafted step with similar verified steps "
                    "from the step bank as examples")
def build_boost(params: BoostParams, runtime: Runtime) -> BoostProvider:
    return BoostProvider(open_memory(runtime), params, effects.policy(runtime))


@PROVIDERS.register("mistakes", MistakesParams, "show k similar past problems with a wrong and a correct "
                    "solution side by side")
def build_mistakes(params: MistakesParams, runtime: Runtime) -> MistakesProvider:
    return MistakesProvider(open_memory(runtime), params, effects.policy(runtime))
