"""The one loop: problem -> context -> strategy (generate, verify, correct, search) -> Result.

`build_solver` turns a spec like `stepco:threshold=0.6+boost` into a Solver; every caller
(CLI, server, eval, learn) goes through it, so budgets, usage and traces behave the same.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from pydantic import Field, ValidationError

from redline.errors import BudgetExceeded, SpecError
from redline.ledger import Budget, CallRecord, Ledger, phase, use_ledger
from redline.registry import PROVIDERS, STRATEGIES, Params
from redline.runtime import Runtime
from redline.spec import Component, parse_pipeline
from redline.strategies.base import ContextProvider, SolveContext, Strategy
from redline.types import Problem, Result

BUDGET_KEYS = ("max_tokens_total", "max_calls", "timeout_s", "budget")
_BUDGET_FIELDS = {"budget": "count"}  # spec key -> Budget field, where they differ


@dataclass
class Solver:
    spec: str
    strategy: Strategy
    runtime: Runtime
    providers: list[ContextProvider] = field(default_factory=list)
    budget: Budget = field(default_factory=Budget)

    async def solve(self, problem: Problem, on_record: Callable[[CallRecord], None] | None = None) -> Result:
        """Solve one problem; a budget or timeout stop returns the best answer found so far."""
        if not problem.question.strip():
            raise SpecError("empty question")
        ledger = Ledger(strategy=self.spec, budget=self.budget, on_record=on_record)
        ctx = SolveContext(runtime=self.runtime, ledger=ledger, strategy=self.spec, providers=self.providers)
        with use_ledger(ledger):
            try:
                return await asyncio.wait_for(self._run(problem, ctx), self.budget.timeout_s)
            except BudgetExceeded as e:
                return _best_so_far(problem, ctx, str(e))
            except asyncio.TimeoutError:
                return _best_so_far(problem, ctx, f"timeout_s={self.budget.timeout_s} reached")

    async def _run(self, problem: Problem, ctx: SolveContext) -> Result:
        if self.providers:
            with phase("retrieve"):
                parts = [await p.guidance(problem, ctx) for p in self.providers]
            ctx.guidance = "\n\n".join(p for p in parts if p)
            ctx.trace.child("context", providers=[p.name for p in self.providers], guidance=ctx.guidance)
        return await self.strategy.solve(problem, ctx)


def _best_so_far(problem: Problem, ctx: SolveContext, reason: str) -> Result:
    ctx.trace.child("budget_stop", reason=reason)
    best = ctx.best
    return ctx.finish(problem, best.solution if best else None, [best] if best else [], stopped=reason)


def split_budget(component: Component) -> tuple[Component, dict[str, Any]]:
    """A strategy component without its budget keys, and those keys (they belong to the loop)."""
    params = dict(component.params)
    budget = {k: params.pop(k) for k in BUDGET_KEYS if k in params}
    return Component(component.name, component.args, params), budget


class BudgetParams(Params):
    """Budget keys any strategy accepts; positive and finite, like every other parameter.
    `budget` says which tokens max_tokens_total counts (see `redline.ledger.Budget`)."""

    max_tokens_total: int | None = Field(None, ge=1)
    max_calls: int | None = Field(None, ge=1)
    timeout_s: float | None = Field(None, gt=0)
    budget: Literal["computed", "billed"] | None = None


def _budget(values: dict[str, Any], base: Budget) -> Budget:
    try:
        given = BudgetParams(**values)
    except ValidationError as e:
        raise SpecError("bad budget value: " + "; ".join(f"{'.'.join(map(str, err['loc'])) or 'budget'}: {err['msg']}"
                                                         for err in e.errors())) from None
    fields = {k: _BUDGET_FIELDS.get(k, k) for k in BUDGET_KEYS}
    return Budget(**{f: getattr(given, k) if k in values else getattr(base, f) for k, f in fields.items()})


def is_component_name(name: str) -> bool:
    return name in STRATEGIES or name in PROVIDERS


def build_solver(spec: str, runtime: Runtime, budget: Budget | None = None) -> Solver:
    """Parse and validate `spec` (strategy plus context providers) and build it on `runtime`.

    Budget keys (max_tokens_total, max_calls, timeout_s, budget=computed|billed) are accepted on any strategy.
    """
    components = parse_pipeline(spec, is_component_name)
    strategies = [c for c in components if c.name in STRATEGIES]
    unknown = [c for c in components if c.name not in STRATEGIES and c.name not in PROVIDERS]
    if unknown:
        raise SpecError(f"unknown strategy or provider {unknown[0].name!r}; strategies: "
                        f"{', '.join(STRATEGIES.names())}; providers: {', '.join(PROVIDERS.names()) or '(none)'}")
    if len(strategies) != 1:
        raise SpecError(f"a spec needs exactly one strategy, got {len(strategies)} in {spec!r}; "
                        f"valid: {', '.join(STRATEGIES.names())}")
    strategy_component, budget_values = split_budget(strategies[0])
    strategy = STRATEGIES.build(strategy_component, runtime)
    providers = [PROVIDERS.build(c, runtime) for c in components if c.name in PROVIDERS]
    canonical = "+".join(str(strategy_component if c is strategies[0] else c) for c in components)
    return Solver(canonical, strategy, runtime, providers, _budget(budget_values, budget or Budget()))
