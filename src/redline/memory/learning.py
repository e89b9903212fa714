"""Learning runs: solve problems that have gold answers, grade, and remember what happened.

Per problem: solve with the strategy, grade with math-verify, write LEAP principles from
mistakes, then record problem, attempt, principle uses, mistakes and banked steps in ONE
transaction. Model calls all happen before that transaction, so a crash loses at most the
problem in flight, and a rerun skips every problem already recorded.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from redline.embeddings import embed
from redline.ledger import Ledger, phase, use_ledger
from redline.loop import build_solver
from redline.memory import principles as leap
from redline.memory.mistakes import MistakeDraft, mistakes_in
from redline.memory.stepbank import bank_embeddings, gold_steps, verified_flags
from redline.memory.store import RUNTIME_KEY, MemoryStore
from redline.runtime import Runtime
from redline.text import answers_equal, parse_gold
from redline.types import Problem, Result, Usage
from redline.verifiers.base import run_in_pool

LEARN_PHASE = "learn"  # ledger phase of model calls that write principles (not part of any solve)


def problem_key(problem: Problem) -> str:
    """Identity of a problem in the store: its question text (ids differ between copies of a dataset)."""
    return hashlib.sha256(" ".join(problem.question.split()).encode()).hexdigest()


def principles_used(trace: Mapping[str, Any]) -> list[int]:
    """Ids of principles the `principles` provider put into this solve's context."""
    ids: list[int] = []
    stack = [trace]
    while stack:
        node = stack.pop()
        if node.get("kind") == leap.PRINCIPLES_TRACE:
            ids.extend(node.get("ids", []))
        stack.extend(node.get("children", []))
    return ids


@dataclass
class LearnSettings:
    task: str = "default"
    condense_every: int = 8  # low-level principles between condensations into high-level ones
    high_level_limit: int = 3
    merge_threshold: float = 0.9
    retire: leap.RetirePolicy = field(default_factory=leap.RetirePolicy)
    principle_max_tokens: int = 96
    mistakes_per_problem: int = 2


@dataclass(frozen=True)
class Outcome:
    problem: Problem
    status: str  # correct | wrong | ungradable | skipped
    answer: str | None = None
    principles_added: int = 0


@dataclass
class LearnReport:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("correct", "wrong", "ungradable", "skipped", "principles", "merged", "high_level", "retired",
         "mistakes", "steps"), 0))
    solve_usage: Usage = field(default_factory=Usage)
    wall_s: float = 0.0

    @property
    def accuracy(self) -> float | None:
        graded = self.counts["correct"] + self.counts["wrong"]
        return self.counts["correct"] / graded if graded else None


class Learner:
    """Runs `strategy` over problems and records everything in `store`."""

    def __init__(self, runtime: Runtime, store: MemoryStore, strategy: str,
                 settings: LearnSettings | None = None) -> None:
        self.runtime = runtime
        self.store = store
        self.settings = settings or LearnSettings()
        runtime.cached(RUNTIME_KEY, lambda: store)  # providers in the strategy read this same store
        self.solver = build_solver(strategy, runtime)
        self.ledger = Ledger(strategy=f"learn:{self.solver.spec}")
        self.report = LearnReport()
        self._since_condense: list[int] = []

    async def learn(self, problems: Iterable[Problem],
                    on_outcome: Callable[[Outcome, LearnReport], None] | None = None) -> LearnReport:
        started = time.perf_counter()
        for problem in problems:
            outcome = await self.learn_one(problem)
            if on_outcome is not None:
                on_outcome(outcome, self.report)
        self.report.wall_s += time.perf_counter() - started
        return self.report

    async def learn_one(self, problem: Problem) -> Outcome:
        if self.store.has_problem(problem_key(problem)):
            self.report.counts["skipped"] += 1
            return Outcome(problem, "skipped")
        result = await self.solver.solve(problem)
        self.report.solve_usage = self.report.solve_usage + result.total
        return await self.record(problem, result)

    async def record(self, problem: Problem, result: Result) -> Outcome:
        """Grade `result` against the gold answer and write what it teaches (one transaction)."""
        gradable = parse_gold(problem.answer)
        correct = answers_equal(result.answer, problem.answer) if gradable else None
        gold = gold_steps(problem.solution)
        drafts = (mistakes_in(result, problem.answer or "", gold, self.settings.mistakes_per_problem)
                  if gradable else [])
        principle = await self._principle(problem, drafts[0]) if drafts else None
        model_steps = result.solution.step_texts if correct and result.solution else []
        vectors = await run_in_pool(_embed_all, problem.question, gold + model_steps, [principle] if principle else [])
        status = "ungradable" if correct is None else ("correct" if correct else "wrong")
        added = 0
        with self.store.transaction():
            if self.store.has_problem(problem_key(problem)):  # another learn process recorded it meanwhile
                self.report.counts["skipped"] += 1
                return Outcome(problem, "skipped", result.answer)
            pid = self.store.add_problem(problem_key(problem), problem.question, problem.answer, problem.solution,
                                         gradable, self.settings.task, vectors[0], problem.id)
            solution = result.solution
            attempt = self.store.add_attempt(pid, self.solver.spec, result.answer,
                                             solution.step_texts if solution else [],
                                             solution.scores if solution else None, correct, result.total.total_tokens)
            self.store.add_principle_uses(attempt, principles_used(result.trace))
            mistake_ids = [self.store.add_mistake(pid, attempt, d.wrong_steps, d.wrong_answer, d.first_error,
                                                  d.corrected_steps, d.corrected_source, problem.answer or "")
                           for d in drafts]
            if gold:
                self.store.add_steps(pid, gold, "gold", [True] * len(gold), vectors[1:1 + len(gold)])
            if model_steps and solution is not None:
                self.store.add_steps(pid, model_steps, "model", verified_flags(solution),
                                     vectors[1 + len(gold):1 + len(gold) + len(model_steps)])
            if principle:
                principle_id, merged = leap.add_or_merge(self.store, principle, "low", self.settings.task,
                                                         mistake_ids[:1], vectors[-1], self.settings.merge_threshold)
                self.report.counts["merged" if merged else "principles"] += 1
                added = 0 if merged else 1
                if not merged:
                    self._since_condense.append(principle_id)
        self.report.counts[status] += 1
        self.report.counts["mistakes"] += len(drafts)
        self.report.counts["steps"] += len(gold) + len(model_steps)
        if len(self._since_condense) >= self.settings.condense_every:
            await self._condense()
        self.report.counts["retired"] += len(leap.retire_harmful(self.store, self.settings.retire))
        return Outcome(problem, status, result.answer, added)

    async def _principle(self, problem: Problem, mistake: MistakeDraft) -> str | None:
        with use_ledger(self.ledger), phase(LEARN_PHASE):
            return await leap.write_low_level(
                self.runtime.backend, problem.question, mistake.wrong_steps, mistake.first_error,
                problem.answer or "", mistake.corrected_steps, self.settings.principle_max_tokens, self.runtime.seed)

    async def _condense(self) -> None:
        """LEAP high-level principles from the low-level ones written since the last condensation."""
        rows = {r.id: r for r, _ in self.store.principles(task=self.settings.task, level="low")}
        recent = [rows[i] for i in self._since_condense if i in rows]
        self._since_condense = []
        if len(recent) < 2:
            return
        with use_ledger(self.ledger), phase(LEARN_PHASE):
            texts = await leap.condense(self.runtime.backend, [r.text for r in recent], self.settings.task,
                                        self.settings.high_level_limit, seed=self.runtime.seed)
        if not texts:
            return
        vectors = await run_in_pool(embed, texts)
        sources = sorted({m for r in recent for m in r.source_mistakes})
        with self.store.transaction():
            for text, vector in zip(texts, vectors):
                _, merged = leap.add_or_merge(self.store, text, "high", self.settings.task, sources, vector,
                                              self.settings.merge_threshold)
                self.report.counts["merged" if merged else "high_level"] += 1

    @property
    def learn_usage(self) -> Usage:
        """Tokens spent writing and condensing principles (outside any solve)."""
        return self.ledger.total()


def _embed_all(question: str, steps: list[str], others: list[str]) -> np.ndarray:
    """One array: the question, the steps to bank (without 'Step k:' labels), then other texts."""
    return np.concatenate([embed([question]), bank_embeddings(steps), embed(others)])


async def learn_online(runtime: Runtime, store: MemoryStore, strategy: str, problem: Problem, result: Result,
                       settings: LearnSettings | None = None) -> Outcome | None:
    """Record an eval/solve result in memory, only when the runtime asks for it (`learn_online`)
    and the problem has a gold answer; otherwise memory is read-only to solves."""
    if not runtime.learn_online or problem.answer is None or store.has_problem(problem_key(problem)):
        return None
    return await Learner(runtime, store, strategy, settings).record(problem, result)
