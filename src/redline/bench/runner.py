"""The eval runner: every problem x strategy, concurrently, each result stored as it finishes.

A fixed pool of workers pulls pending pairs from one generator, so memory stays flat however
many problems there are, and at most `concurrency` solves are in flight. Pairs already in
the store are skipped, which is all that resuming needs. A strategy that runs exactly as another
listed one (every memory provider it adds is off on this memory) is not computed twice: the
other's results are stored under its name too.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from redline.backends.prefix_cache import SCOPE as PREFIX_SCOPE
from redline.bench.grading import grade
from redline.bench.store import ResultStore
from redline.errors import RedlineError, SpecError
from redline.loop import Solver, build_solver
from redline.runtime import Runtime
from redline.spec import split_spec_list
from redline.types import Problem


@dataclass
class Tally:
    """Running figures of one strategy, for the live display."""

    total: int
    done: int = 0
    graded: int = 0
    correct: int = 0
    tokens: int = 0
    errors: int = 0

    def add(self, correct: bool | None, tokens: int) -> None:
        self.done += 1
        self.tokens += tokens
        if correct is not None:
            self.graded += 1
            self.correct += int(correct)

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.graded if self.graded else None


OnUpdate = Callable[[str, Tally], None]


def strategy_keys(specs: str | Sequence[str]) -> list[str]:
    """The run's strategy names: each spec as written, without spaces (budget keys included, so
    'cot' and 'cot:max_calls=1' stay apart); duplicates are an error."""
    items = split_spec_list(specs) if isinstance(specs, str) else list(specs)
    keys = [re.sub(r"\s+", "", s) for s in items]
    twice = [k for k, n in Counter(keys).items() if n > 1]
    if twice:
        raise SpecError(f"strategy {twice[0]!r} listed twice")
    return keys


def shared_runs(keys: Sequence[str], runtime: Runtime) -> dict[str, str]:
    """Strategies that run exactly as an earlier listed one on this runtime: {strategy: the one it runs as}.

    Only memory providers that are off make two specs run alike; with `--learn-online` the memory
    changes during the run, so nothing is shared then."""
    if runtime.memory_path is None or runtime.learn_online:
        return {}
    from redline.memory.providers import runs_as

    first: dict[str, str] = {}
    shared = {}
    for key in keys:
        source = first.setdefault(runs_as(key, runtime), key)
        if source != key:
            shared[key] = source
    return shared


def _check_ids(problems: Sequence[Problem]) -> None:
    missing = sum(1 for p in problems if not p.id)
    if missing:
        raise RedlineError(f"{missing} problems have no id; eval needs stable ids to resume")
    twice = [i for i, n in Counter(p.id for p in problems).items() if n > 1]
    if twice:
        raise RedlineError(f"problem id {twice[0]!r} appears more than once; ids must be unique to resume")


async def run_eval(run_dir: Path, problems: Sequence[Problem], specs: str | Sequence[str], runtime: Runtime,
                   concurrency: int = 8, settings: dict[str, Any] | None = None,
                   on_update: OnUpdate | None = None, shared: dict[str, str] | None = None) -> dict[str, Tally]:
    """Solve every pending problem x strategy into `run_dir`'s store; returns the tallies.

    Failures of single solves are stored as errors (retried on rerun); the run goes on. `shared`
    (default: `shared_runs`) names strategies stored as copies of another's results.
    """
    if concurrency < 1:
        raise RedlineError(f"--concurrency must be >= 1, got {concurrency}")
    keys = strategy_keys(specs)
    solvers = {k: build_solver(k, runtime) for k in keys}  # validates every spec before any work
    _check_ids(problems)
    shared = shared_runs(keys, runtime) if shared is None else shared
    load = getattr(runtime.backend, "load", None)  # a local model loads up front, so no latency includes it
    if load is not None:
        await asyncio.to_thread(load)
    with ResultStore(run_dir) as store:
        store.start_run({"strategies": keys, "backend": runtime.backend.name, "model": runtime.backend.model,
                         "max_tokens": runtime.max_tokens, "seed": runtime.seed, "shared": shared,
                         **(settings or {})})
        store.add_problems(problems)
        _copy_finished(store, problems, shared)
        done = store.done()
        tallies = _resumed_tallies(store, keys, problems, done)
        for key in keys:
            if on_update:
                on_update(key, tallies[key])
        pending = ((p, k) for p in problems for k in keys if k not in shared and (p.id, k) not in done)
        copies = {k: [alias for alias, source in shared.items() if source == k] for k in keys}
        await asyncio.gather(*(_worker(pending, solvers, store, runtime, tallies, on_update, copies)
                               for _ in range(concurrency)))
    return tallies


def _copy_finished(store: ResultStore, problems: Sequence[Problem], shared: dict[str, str]) -> None:
    """On resume: the copies a shared strategy lacks of results its source already has."""
    done = store.done()
    for alias, source in shared.items():
        for p in problems:
            if (p.id, source) in done and (p.id, alias) not in done:
                store.copy_result(p.id or "", source, alias)


def _resumed_tallies(store: ResultStore, keys: list[str], problems: Sequence[Problem],
                     done: set[tuple[str, str]]) -> dict[str, Tally]:
    ids = {p.id for p in problems}
    tallies = {k: Tally(total=len(problems)) for k in keys}
    if done:
        for row in store.rows():
            if row.strategy in tallies and row.problem_id in ids:
                tallies[row.strategy].add(row.correct, row.total_tokens)
    return tallies


async def _learn_from(runtime: Runtime, key: str, problem: Problem, result: Any) -> None:
    """`--learn-online`: the graded result also goes to the memory store the providers read."""
    from redline.memory.learning import learn_online
    from redline.memory.providers import open_memory

    await learn_online(runtime, open_memory(runtime), key, problem, result)


async def _worker(pending: Iterator[tuple[Problem, str]], solvers: dict[str, Solver], store: ResultStore,
                  runtime: Runtime, tallies: dict[str, Tally], on_update: OnUpdate | None,
                  copies: dict[str, list[str]]) -> None:
    for problem, key in pending:  # a shared generator: each pair goes to exactly one worker
        PREFIX_SCOPE.set(key)  # a strategy reuses only prefixes it computed itself
        try:
            result = await solvers[key].solve(problem)
        except Exception as e:  # one failing solve must not sink the run; it is stored and retried on rerun
            for name in (key, *copies[key]):
                store.record_error(problem.id or "", name, f"{type(e).__name__}: {e}")
                tallies[name].errors += 1
        else:
            graded = grade(result, problem.answer)
            store.write(key, result, graded, runtime.backend.model)
            if runtime.learn_online:
                await _learn_from(runtime, key, problem, result)
            for name in (key, *copies[key]):
                if name != key:
                    store.copy_result(problem.id or "", key, name)
                tallies[name].add(graded.correct, result.total.total_tokens)
        if on_update:
            for name in (key, *copies[key]):
                on_update(name, tallies[name])
