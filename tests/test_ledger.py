"""The token ledger: every call recorded with strategy and phase, budgets stop gracefully, no mixing."""

from __future__ import annotations

import asyncio

from redline.backends.base import GenerationRequest
from redline.ledger import PROCESS_LEDGER, Budget, Ledger, phase, use_ledger
from redline.loop import Solver, build_solver
from redline.strategies.base import SolveContext
from redline.types import Candidate, Problem, Result, Solution, Usage
from tests.conftest import scripted_runtime

PHASE_PLAN = ("solve", "verify", "revise", "verify", "revise", "verify")


class ThreePhases:
    """A test strategy: solve, then alternate verify and revise calls, proposing each revision."""

    async def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        solution = None
        for phase_name in PHASE_PLAN:
            request = GenerationRequest(messages=[{"role": "user", "content": problem.question}], max_tokens=16)
            [completion] = await ctx.generate(request, phase_name)
            if phase_name != "verify":
                solution = Solution.from_text(completion.text)
                ctx.propose(Candidate(solution, score=len(ctx.ledger.records) / 10))
        return ctx.finish(problem, solution, [])


def tokens(u: Usage) -> tuple[int, int, int]:
    return u.calls, u.prompt_tokens, u.completion_tokens


def solver(script, budget: Budget | None = None, spec: str = "three-phases") -> Solver:
    return Solver(spec, ThreePhases(), scripted_runtime(script), budget=budget or Budget())


async def test_every_call_is_recorded_with_strategy_and_phase():
    script = ["Step 1: 2 + 3 = 5. The answer is 5.", "fine", "The answer is 7.", "fine", "The answer is 6.", "fine"]
    records = []
    result = await solver(script).solve(Problem("What is 2 + 3?"), on_record=records.append)
    assert [r.phase for r in records] == list(PHASE_PLAN)
    assert {r.strategy for r in records} == {"three-phases"} and {r.model for r in records} == {"scripted"}
    assert result.answer == "6"  # the last revision
    assert list(result.usage) == ["solve", "verify", "revise"]  # in PHASES order


async def test_usage_by_phase_adds_up():
    # Words are tokens for the scripted backend: the question has 5 words, each answer 3.
    result = await solver(["one two three"]).solve(Problem("What is 2 + 3?"))
    assert tokens(result.usage["solve"]) == (1, 5, 3)
    assert tokens(result.usage["verify"]) == (3, 15, 9)
    assert result.usage["revise"].calls == 2 and result.usage["revise"].completion_tokens == 6
    assert result.total.calls == len(PHASE_PLAN)
    assert result.total.total_tokens == 8 * len(PHASE_PLAN)
    data = result.to_dict()
    assert data["usage_total"]["total_tokens"] == sum(u["total_tokens"] for u in data["usage"].values())


async def test_max_calls_stops_with_the_best_answer_so_far():
    script = ["The answer is 5.", "fine", "The answer is 6.", "fine", "The answer is 7."]
    result = await solver(script, Budget(max_calls=3)).solve(Problem("What is 2 + 3?"))
    assert result.stopped == "max_calls=3 reached"
    assert result.total.calls == 3
    assert result.answer == "6"  # proposed by the third call, the best-scored so far


async def test_max_tokens_total_stops_before_the_call_that_would_overrun():
    result = await solver(["The answer is 9."], Budget(max_tokens_total=20)).solve(Problem("What is 2 + 3?"))
    # Each call costs 5 prompt + 4 completion words: calls run while the total is under 20.
    assert result.stopped == "max_tokens_total=20 reached"
    assert result.total.calls == 3 and result.total.total_tokens == 27
    assert result.answer == "9"


async def test_budget_keys_on_a_spec():
    runtime = scripted_runtime(["The answer is 4."])
    built = build_solver("cot:max_calls=1,max_tokens_total=500", runtime)
    assert built.budget == Budget(max_tokens_total=500, max_calls=1)
    result = await built.solve(Problem("What is 2 + 2?"))
    assert result.answer == "4" and result.stopped is None and result.total.calls == 1


async def test_concurrent_solves_keep_their_own_ledgers():
    runtime = scripted_runtime(lambda request, i: f"The answer is {request.messages[-1]['content'].split()[-1]}")
    runtime.backend.inner.delay_s = 0.01  # interleave the solves' calls
    solvers = [Solver(f"s{i}", ThreePhases(), runtime) for i in range(4)]
    before = len(PROCESS_LEDGER.records)
    results = await asyncio.gather(*(s.solve(Problem(f"Echo {i}")) for i, s in enumerate(solvers)))
    for i, result in enumerate(results):
        assert result.answer == str(i)
        assert result.total.calls == len(PHASE_PLAN)
        assert result.strategy == f"s{i}"
    assert len(PROCESS_LEDGER.records) == before  # nothing leaked to the process ledger


async def test_calls_outside_a_solve_go_to_the_process_ledger_and_phases_nest():
    runtime = scripted_runtime(["ok"])
    request = GenerationRequest(prompt="hello there", max_tokens=4)
    before = len(PROCESS_LEDGER.records)
    await runtime.backend.generate(request)
    assert len(PROCESS_LEDGER.records) == before + 1
    ledger = Ledger(strategy="manual")
    with use_ledger(ledger):
        with phase("verify"):
            await runtime.backend.generate(request)
            with phase("retrieve"):
                await runtime.backend.generate(request)
        await runtime.backend.generate(request)
    assert [r.phase for r in ledger.records] == ["verify", "retrieve", "solve"]
    assert tokens(ledger.total()) == (3, 6, 3)


async def test_cot_records_one_solve_call():
    runtime = scripted_runtime(["Step 1: 2 + 2 = 4.\nThe answer is 4."], max_tokens=32)
    ctx_result = await build_solver("cot", runtime).solve(Problem("What is 2 + 2?"))
    [request] = runtime.backend.inner.requests
    assert request.max_tokens == 32 and request.temperature == 0.0
    assert ctx_result.usage["solve"].calls == 1
    assert [s.text for s in ctx_result.solution.steps] == ["Step 1: 2 + 2 = 4.\nThe answer is 4."]
