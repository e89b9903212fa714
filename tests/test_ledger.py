"""The token ledger: every call recorded with strategy and phase, budgets stop gracefully, no mixing."""

from __future__ import annotations

import asyncio
import math

import pytest

from redline.backends.base import (Completion, GenerationRequest, LedgeredBackend, TokenLogprob,
                                   estimate_prompt_tokens)
from redline.backends.openai_compat import OpenAIBackend
from redline.backends.scripted import ScriptedBackend
from redline.errors import BudgetExceeded, SpecError
from redline.ledger import PROCESS_LEDGER, Budget, Hold, Ledger, current_ledger, phase, use_ledger
from redline.loop import Solver, build_solver
from redline.strategies.base import SolveContext
from redline.types import Candidate, Problem, Result, Solution, Usage
from redline.text import solve_messages
from tests.conftest import scripted_runtime
from tests.openai_app import AppControl, serve

PHASE_PLAN = ("solve", "verify", "revise", "verify", "revise", "verify")


class ThreePhases:
    """A test strategy: solve, then alternate verify and revise calls, proposing each revision."""

    def __init__(self, max_tokens: int = 16) -> None:
        self.max_tokens = max_tokens

    async def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        solution = None
        for phase_name in PHASE_PLAN:
            request = GenerationRequest(messages=[{"role": "user", "content": problem.question}],
                                        max_tokens=self.max_tokens)
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


async def test_max_tokens_total_books_each_call_before_it_starts_and_never_overruns():
    # A call books its prompt (5 words) plus max_tokens (16) and spends 5 + 4: it starts only
    # while 21 more tokens fit, so three calls (27 tokens) run under 40 and the fourth never starts.
    result = await solver(["The answer is 9."], Budget(max_tokens_total=40)).solve(Problem("What is 2 + 3?"))
    assert result.stopped.startswith("max_tokens_total=40 reached")
    assert result.total.calls == 3 and result.total.total_tokens == 27
    assert result.answer == "9"


async def test_a_call_that_cannot_fit_its_worst_case_is_not_made():
    # 20 tokens cannot hold one call's 5-word prompt plus 16 new tokens: nothing is spent.
    built = solver(["The answer is 9."], Budget(max_tokens_total=20))
    result = await built.solve(Problem("What is 2 + 3?"))
    assert result.stopped == "max_tokens_total=20 reached: 20 tokens left, a 5-token prompt needs 21"
    assert result.total.calls == 0 and built.runtime.backend.inner.requests == []
    assert result.answer is None


async def test_the_last_calls_get_a_smaller_max_tokens_that_fits():
    # max_tokens=64 does not fit 60 - 5; what is left (55, then 46, then 37) is still at least
    # MIN_USEFUL_TOKENS, so the calls run with that limit; 28 is not, so the fourth call is refused.
    built = solver(["The answer is 9."], Budget(max_tokens_total=60))
    built.strategy = ThreePhases(max_tokens=64)
    result = await built.solve(Problem("What is 2 + 3?"))
    assert [r.max_tokens for r in built.runtime.backend.inner.requests] == [55, 46, 37]
    assert result.total.total_tokens == 27 <= 60 and result.stopped.startswith("max_tokens_total=60 reached")


async def test_computed_tokens_count_by_default_and_billed_on_request():
    cached = Completion("The answer is 9.", "stop", prompt_tokens=5, completion_tokens=4, latency_s=0.0,
                        cached_tokens=5)  # the whole prompt served from a cache
    computed = await solver([cached], Budget(max_tokens_total=45)).solve(Problem("What is 2 + 3?"))
    billed = await solver([cached], Budget(max_tokens_total=45, count="billed")).solve(Problem("What is 2 + 3?"))
    # Booked worst case is 5 + 16 either way (the scripted backend knows of no cache ahead); spent
    # is 4 computed or 9 billed per call, so computed lets all six calls run and billed only three.
    assert computed.stopped is None and computed.total.calls == 6 and computed.total.computed_tokens == 24
    assert billed.total.calls == 3 and billed.total.total_tokens == 27


def test_reserve_counts_the_prompt_once_and_cached_tokens_only_when_billed():
    ledger = Ledger(budget=Budget(max_tokens_total=100))
    hold = ledger.reserve(prompt_tokens=30, cached_tokens=20, max_tokens=10, n=8)
    assert hold == Hold(tokens=10 + 10 * 8, max_tokens=10)
    with pytest.raises(BudgetExceeded):  # 10 left: below min(10, MIN_USEFUL_TOKENS) per sample after the prompt
        ledger.reserve(prompt_tokens=5, cached_tokens=0, max_tokens=10)
    ledger.release(hold)
    billed = Ledger(budget=Budget(max_tokens_total=100, count="billed"))
    with pytest.raises(BudgetExceeded):  # the cached 20 count when billed: 8 samples of 10 do not fit 100 - 30
        billed.reserve(30, 20, 10, n=8)
    assert billed.reserve(30, 20, 100, n=2) == Hold(tokens=30 + 2 * 35, max_tokens=35)  # shrunk to fit
    assert Ledger().reserve(10**9, 0, None).max_tokens is None  # no budget: nothing is shrunk


async def test_timeout_s_stops_a_call_that_hangs_with_the_best_answer_so_far():
    def script(request, i):
        backend.delay_s = 600  # every call after the first hangs
        return "The answer is 5."
    built = solver(script, Budget(timeout_s=0.5))
    backend = built.runtime.backend.inner
    ledgers = []
    result = await built.solve(Problem("What is 2 + 3?"), on_record=lambda rec: ledgers.append(current_ledger()))
    assert result.stopped == "timeout_s=0.5 reached"
    assert result.answer == "5" and result.total.calls == 1 and ledgers[0].started == 2  # the second call hung
    assert result.wall_s < 60  # the hanging call was cancelled, not awaited


async def test_budget_keys_on_a_spec():
    runtime = scripted_runtime(["The answer is 4."])
    built = build_solver("cot:max_calls=1,max_tokens_total=500", runtime)
    assert built.budget == Budget(max_tokens_total=500, max_calls=1)
    result = await built.solve(Problem("What is 2 + 2?"))
    assert result.answer == "4" and result.stopped is None and result.total.calls == 1
    assert build_solver("cot:budget=billed,max_tokens_total=50", runtime).budget == Budget(50, count="billed")
    with pytest.raises(SpecError, match="budget"):
        build_solver("cot:budget=cheap", runtime)


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


# --- concurrent calls: the judge scores every step of every path at once -----------------------

SOLUTION = "Step 1: 2 + 3 = 5 apples (draft {i}).\n\nStep 2: So there are 5 apples. The answer is 5."
SPECS = ["bon:n=8,verifier=judge", "beam:n=4,width=2,verifier=judge,step_tokens=24"]


def judged_runtime():
    """Whole samples are SOLUTION, step drafts its steps, each draft its own (so the judge's cache
    does not merge them); judge calls get a 'Yes' verdict with logprobs that bills its prompt
    exactly as the scripted backend counts it. Every call takes 10 ms, so calls started together
    are in flight together."""
    def script(request, i):
        if request.logprobs:
            yes = TokenLogprob("Yes", math.log(0.8), {"Yes": math.log(0.8), "No": math.log(0.2)})
            return Completion("Yes", "stop", backend.prompt_cost(request)[0], 1, 0.0, (yes,))
        if request.prefix.endswith("Step 1:"):
            return f" 2 + 3 = 5 apples (draft {i})."
        if request.prefix.endswith("Step 2:"):
            return f" So there are 5 apples (draft {i}). The answer is 5."
        return SOLUTION.format(i=i)
    runtime = scripted_runtime(script, max_tokens=24)
    backend = runtime.backend.inner
    backend.delay_s = 0.01
    return runtime


@pytest.mark.parametrize("spec", SPECS)
async def test_max_calls_holds_when_the_judge_starts_its_calls_together(spec):
    # bon: one sampling call, then 8 x 2 step verdicts started together; beam: 4 steps, then 4 verdicts.
    result = await build_solver(f"{spec},max_calls=3", judged_runtime()).solve(Problem("What is 2 + 3?"))
    assert result.stopped == "max_calls=3 reached"
    assert result.total.calls == 3 and result.usage["verify"].calls == 2
    if spec.startswith("bon"):  # the two verdicts admitted scored the first sample: it is the answer so far
        assert result.answer == "5" and result.candidates[0].solution.step_texts[0].endswith("(draft 0).")


@pytest.mark.parametrize("spec", SPECS)
async def test_max_tokens_total_holds_when_the_judge_starts_its_calls_together(spec):
    free_runtime = judged_runtime()
    free = await build_solver(spec, free_runtime).solve(Problem("What is 2 + 3?"))
    first = free_runtime.backend.inner.requests[0]
    first_booking = free_runtime.backend.prompt_cost(first)[0] + first.max_tokens * first.n
    verdicts = []
    # Caps from just enough for the first call up to just short of the unbudgeted run's spend.
    for cap in range(first_booking, free.total.computed_tokens, 40):
        result = await build_solver(f"{spec},max_tokens_total={cap}", judged_runtime()).solve(Problem("What is 2 + 3?"))
        assert result.total.computed_tokens <= cap, (cap, result.total)
        assert result.stopped.startswith(f"max_tokens_total={cap} reached")
        verdicts.append(result.usage.get("verify", Usage()).calls)
    assert 0 < max(verdicts) < free.usage["verify"].calls  # some caps stopped a wave of verdicts partway


# --- what a call books: prompt estimates ------------------------------------------------------------

async def test_openai_books_every_sample_s_prompt_until_the_server_honours_n():
    control = AppControl()
    request = GenerationRequest(messages=[{"role": "user", "content": "What is 2 + 3?"}], n=4, max_tokens=8)
    per_prompt = estimate_prompt_tokens(request)
    with serve(ScriptedBackend(["The answer is 5."]), control) as url:
        native, splitting = OpenAIBackend(base_url=url), OpenAIBackend(base_url=url)
        assert native.prompt_cost(request) == (4 * per_prompt, 0)  # nothing known of the server yet
        ledger = Ledger(budget=Budget(max_tokens_total=10_000))
        with use_ledger(ledger):
            await LedgeredBackend(native).generate(request)
        assert native.prompt_cost(request) == (per_prompt, 0)  # it answered n=4 with 4 choices: one prompt
        assert ledger.total().prompt_tokens <= per_prompt
        control.reset(ignore_n=True)  # like llama.cpp and Ollama: each sample becomes its own call
        ledger = Ledger(budget=Budget(max_tokens_total=10_000))
        with use_ledger(ledger):
            await LedgeredBackend(splitting).generate(request)
        assert ledger.total().prompt_tokens == 4 * 5 <= splitting.prompt_cost(request)[0]
        await native.aclose()
        await splitting.aclose()


@pytest.mark.model
def test_the_byte_estimate_never_counts_fewer_tokens_than_the_real_tokenizer(local_backend):
    requests = [GenerationRequest(messages=solve_messages("Sam has 3 bags with 4 apples each. How many?", ""),
                                  prefix="Step 1: 3 * 4 = 12.\n\nStep 2:"),
                GenerationRequest(messages=[{"role": "user", "content": "Ünïcödé: 3 € × 4 = 12 €, ½ ≈ 0.5 🍎"}]),
                GenerationRequest(messages=[{"role": "user", "content": "x"}]),
                GenerationRequest(prompt="Question: 2 + 2 =", prefix=" 4")]
    for request in requests:
        exact, _ = local_backend.inner.prompt_cost(request)
        assert exact <= estimate_prompt_tokens(request), request
