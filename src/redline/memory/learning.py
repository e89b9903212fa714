"""Learning runs: solve problems that have gold answers, grade, and remember what happened.

Per problem: solve with the strategy, grade with math-verify, write LEAP principles from
mistakes, then record problem, attempt, principle uses, mistakes, StepCo revisions and banked
steps in ONE transaction. Model calls all happen before that transaction, so a crash loses at
most the problem in flight, and a rerun skips every problem already recorded.

A slice of the problems (`LearnSettings.holdout`, chosen by a hash of the question, so it is
the same slice on every rerun) is never learned from: after learning, each of them is solved
bare and with each provider, and `effects.update` turns those paired solves into each
provider's measured effect and similarity floor, and each item's record (see `effects`).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from redline.embeddings import embed
from redline.ledger import Ledger, phase, use_ledger
from redline.loop import build_solver
from redline.memory import effects
from redline.memory import principles as leap
from redline.memory.mistakes import MistakeDraft, mistakes_in, revisions_in
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


def in_holdout(key: str, fraction: float) -> bool:
    """Whether the problem with this key belongs to the held-back slice (stable across reruns)."""
    return int(key[:8], 16) / 16 ** 8 < fraction


@dataclass
class LearnSettings:
    task: str = "default"
    condense_every: int = 8  # low-level principles between condensations into high-level ones
    high_level_limit: int = 3  # high-level principles one condensation may write
    high_level_keep: int = 5  # active high-level principles kept (the newest)
    merge_threshold: float = 0.9
    retire: leap.RetirePolicy = field(default_factory=leap.RetirePolicy)
    principle_max_tokens: int = 48
    mistakes_per_problem: int = 2
    holdout: float = 0.2  # share of gradable problems held back to measure the providers
    providers: Sequence[str] = ("principles", "mistakes", "boost")  # measured on the held-back slice


@dataclass(frozen=True)
class Outcome:
    problem: Problem
    status: str  # correct | wrong | ungradable | skipped | held-out
    answer: str | None = None
    principles_added: int = 0


@dataclass
class LearnReport:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("correct", "wrong", "ungradable", "skipped", "principles", "merged", "rejected", "high_level", "retired",
         "mistakes", "steps", "revisions", "fixed", "held_out"), 0))
    solve_usage: Usage = field(default_factory=Usage)
    measure_usage: Usage = field(default_factory=Usage)  # held-out solves, bare and with each provider
    effects: list[Any] = field(default_factory=list)  # ProviderEffect rows measured by this run
    retired_items: dict[str, int] = field(default_factory=dict)  # item kind -> retired for a negative effect
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
        self.base = effects.split_spec(self.solver.spec)[0]  # the strategy alone: the held-out bare solve

    def split(self, problems: Iterable[Problem]) -> tuple[list[Problem], list[Problem]]:
        """(problems to learn from, problems held back); once learned or held, a problem stays so."""
        train, held = [], []
        for problem in problems:
            key = problem_key(problem)
            hold = self.store.is_holdout(key) or (
                bool(self.settings.providers) and parse_gold(problem.answer) and not self.store.has_problem(key)
                and in_holdout(key, self.settings.holdout))
            (held if hold else train).append(problem)
        return train, held

    async def learn(self, problems: Iterable[Problem],
                    on_outcome: Callable[[Outcome, LearnReport], None] | None = None) -> LearnReport:
        started = time.perf_counter()
        train, held = self.split(problems)
        for problem in train:
            outcome = await self.learn_one(problem)
            if on_outcome is not None:
                on_outcome(outcome, self.report)
        if held:
            await self.measure(held, on_outcome)
        self.report.wall_s += time.perf_counter() - started
        return self.report

    async def measure(self, held: Sequence[Problem],
                      on_outcome: Callable[[Outcome, LearnReport], None] | None = None) -> None:
        """Solve each held-back problem bare and with each provider (firing at any similarity, even if
        measured harmful before), then update the measured effects and retire the items that hurt.
        Solves already made against the memory as it is are kept: a rerun (or the next chunk) resumes."""
        name = effects.strategy_name(self.base)
        with self.store.transaction():
            ids = [self.store.add_holdout(problem_key(p), p.question, p.answer or "", self.settings.task) for p in held]
        solvers = {"": build_solver(self.base, self.runtime)} | {
            p: build_solver(f"{self.base}+{p}:floor=-1,force=true", self.runtime) for p in self.settings.providers}
        for problem, holdout_id in zip(held, ids):
            done = self.store.holdout_done(holdout_id, name)
            for provider, solver in solvers.items():
                if provider in done:
                    continue
                result = await solver.solve(problem)
                self.report.measure_usage = self.report.measure_usage + result.total
                with self.store.transaction():
                    self.store.add_holdout_solve(
                        holdout_id, name, provider, answers_equal(result.answer, problem.answer),
                        result.total.total_tokens, effects.similarity_seen(result.trace, provider),
                        effects.items_used(result.trace, provider) if provider else [])
            self.report.counts["held_out"] += 1
            if on_outcome is not None:
                on_outcome(Outcome(problem, "held-out"), self.report)
        update = effects.update(self.store, name)
        self.report.effects = update.effects
        self.report.retired_items = dict(update.retired)

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
        draft = await self._principle(problem, drafts[0]) if drafts else None
        principle = draft.text if draft else None
        revisions = revisions_in(result.trace, problem.answer or "") if gradable else []
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
            self.store.add_principle_uses(attempt, effects.items_used(result.trace, "principles"))
            mistake_ids = [self.store.add_mistake(pid, attempt, d.wrong_steps, d.wrong_answer, d.first_error,
                                                  d.corrected_steps, d.corrected_source, problem.answer or "")
                           for d in drafts]
            for r in revisions:
                self.store.add_revision(pid, attempt, r.position, r.prefix, r.flagged, r.flagged_score, r.revision,
                                        r.before_answer, r.after_answer, r.before_correct, r.after_correct)
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
        self.report.counts["rejected"] += bool(draft and draft.draft and draft.rejected)
        self.report.counts["revisions"] += len(revisions)
        self.report.counts["fixed"] += sum(r.fixed for r in revisions)
        self.report.counts["mistakes"] += len(drafts)
        self.report.counts["steps"] += len(gold) + len(model_steps)
        if len(self._since_condense) >= self.settings.condense_every:
            await self._condense()
        self.report.counts["retired"] += len(leap.retire_harmful(self.store, self.settings.retire))
        return Outcome(problem, status, result.answer, added)

    async def _principle(self, problem: Problem, mistake: MistakeDraft) -> leap.PrincipleDraft:
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
            surplus = leap.retire_surplus_high(self.store, self.settings.task, self.settings.high_level_keep)
            self.report.counts["retired"] += len(surplus)

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
