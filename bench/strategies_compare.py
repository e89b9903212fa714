"""Every strategy on the same easy GSM8K problems, embedded model, same seeds.

Easy = the worked solution has at most `--max-steps` lines (GSM8K writes one calculation per
line), i.e. one- and two-step problems, taken in file order. Prints per strategy: accuracy with a
95% Wilson interval, mean tokens and calls per problem, mean wall time, and redline's own
overhead: wall time spent outside backend and verifier calls, as a share of wall time.
The default set puts StepCo, best-of-N and self-consistency at the same sample budget
(4 generations each: StepCo's first path plus up to 3 revisions). Each strategy is then compared
with the first one, paired on the same problems; --out keeps every problem's outcome.

    .venv/bin/python bench/strategies_compare.py --limit 100
    .venv/bin/python bench/strategies_compare.py --limit 10 --strategies "cot,stepco:max_iters=3"
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

os.environ.setdefault("TQDM_DISABLE", "1")  # the GGUF dequantiser's progress bar

from rich.console import Console  # noqa: E402
from rich.table import Table

from redline.backends import create_backend
from redline.bench.datasets import easy_problems, load_problems
from redline.bench.metrics import paired_comparison, wilson_interval
from redline.loop import build_solver
from redline.runtime import Runtime
from redline.spec import split_spec_list
from redline.text import answers_equal
from redline.types import Problem

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "train.jsonl"
DEFAULT_STRATEGIES = ("cot,sc:n=4,bon:n=4,bon:n=4,mode=weighted,stepco:max_iters=3,beam:n=4,width=2,"
                      "refine:iterations=1,adaptive:k=4,max_rounds=1,adaptive:mode=sample,k=2,max_samples=8")


class BusyClock:
    """Time during which at least one backend or verifier call is running (nested or concurrent)."""

    def __init__(self) -> None:
        self.depth = 0
        self.busy_s = 0.0
        self._since = 0.0

    @contextmanager
    def busy(self) -> Iterator[None]:
        if self.depth == 0:
            self._since = time.perf_counter()
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            if self.depth == 0:
                self.busy_s += time.perf_counter() - self._since


class TimedBackend:
    def __init__(self, inner: Any, clock: BusyClock) -> None:
        self.inner, self.clock = inner, clock
        self.name, self.model = inner.name, inner.model

    async def generate(self, request: Any) -> Any:
        with self.clock.busy():
            return await self.inner.generate(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class TimedVerifier:
    def __init__(self, inner: Any, clock: BusyClock) -> None:
        self.inner, self.clock, self.name = inner, clock, inner.name

    async def score(self, question: str, steps: Sequence[str]) -> list[float]:
        with self.clock.busy():
            return await self.inner.score(question, steps)


@dataclass
class TimedRuntime(Runtime):
    """A Runtime whose backend and verifiers report their busy time to one clock."""

    clock: BusyClock = field(default_factory=BusyClock)

    def verifier(self, spec: str) -> Any:
        inner = super().verifier(spec)
        return inner if isinstance(inner, TimedVerifier) else TimedVerifier(inner, self.clock)


@dataclass
class Row:
    strategy: str
    correct: list[bool] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    calls: list[int] = field(default_factory=list)
    wall_s: float = 0.0
    busy_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        n, k = len(self.correct), sum(self.correct)
        low, high = wilson_interval(k, n) or (0.0, 0.0)
        return {"strategy": self.strategy, "problems": n, "correct": k, "accuracy": k / n if n else 0.0,
                "ci95": [low, high], "mean_tokens": sum(self.tokens) / n if n else 0.0,
                "mean_calls": sum(self.calls) / n if n else 0.0, "mean_wall_s": self.wall_s / n if n else 0.0,
                "overhead_pct": 100 * (self.wall_s - self.busy_s) / self.wall_s if self.wall_s else 0.0,
                "correct_by_problem": self.correct}


async def run(problems: list[Problem], specs: list[str], runtime: TimedRuntime, console: Console) -> list[Row]:
    rows = []
    for spec in specs:
        solver = build_solver(spec, runtime)
        row = Row(solver.spec)
        for done, problem in enumerate(problems, 1):
            busy_before, t0 = runtime.clock.busy_s, time.perf_counter()
            result = await solver.solve(problem)
            row.wall_s += time.perf_counter() - t0
            row.busy_s += runtime.clock.busy_s - busy_before
            row.correct.append(answers_equal(result.answer, problem.answer))
            row.tokens.append(result.total.total_tokens)
            row.calls.append(result.total.calls)
            if done % 10 == 0 and done < len(problems):
                console.print(f"  {solver.spec}: {done}/{len(problems)}, {sum(row.correct)} correct, "
                              f"{sum(row.tokens) / done:.0f} tokens and {row.wall_s / done:.1f} s per problem",
                              style="dim", highlight=False)
        console.print(json.dumps(row.summary()), highlight=False)  # survives a later interruption
        rows.append(row)
    return rows


def report(rows: list[Row], console: Console) -> None:
    table = Table(title="strategies on easy GSM8K (embedded model)", show_edge=False)
    for col in ("strategy", "n", "acc", "95% CI", "tokens/problem", "calls/problem", "wall s/problem", "overhead %"):
        table.add_column(col, justify="left" if col == "strategy" else "right")
    for s in (r.summary() for r in rows):
        table.add_row(s["strategy"], str(s["problems"]), f"{s['accuracy']:.1%}",
                      f"{s['ci95'][0]:.1%}-{s['ci95'][1]:.1%}", f"{s['mean_tokens']:.0f}", f"{s['mean_calls']:.1f}",
                      f"{s['mean_wall_s']:.1f}", f"{s['overhead_pct']:.2f}")
    console.print(table)
    wall = sum(r.wall_s for r in rows) or float("nan")
    console.print(f"redline overhead over all runs: {100 * (wall - sum(r.busy_s for r in rows)) / wall:.2f}% of "
                  f"{wall:.0f}s wall time (target < 5%)")
    baseline = rows[0]
    for row in rows[1:]:  # same problems, same seeds: a paired comparison
        c = paired_comparison(row.strategy, baseline.strategy, row.correct, baseline.correct)
        if c is not None:
            console.print(f"{row.strategy} - {baseline.strategy}: {c.diff:+.1%} (paired bootstrap 95% CI "
                          f"{c.ci[0]:+.1%} to {c.ci[1]:+.1%}; only one right: {c.only_strategy} vs "
                          f"{c.only_baseline}, McNemar p={c.p_value:.2f})", highlight=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA, help="GSM8K-style JSONL (question, answer with ####)")
    ap.add_argument("--limit", type=int, default=100, help="number of easy problems")
    ap.add_argument("--max-steps", type=int, default=2, help="most lines in an easy worked solution")
    ap.add_argument("--strategies", default=DEFAULT_STRATEGIES, help="comma-separated strategy specs")
    ap.add_argument("--max-tokens", type=int, default=192, help="generation limit per call")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="also write the summaries as JSON here")
    args = ap.parse_args()

    console = Console()
    problems = easy_problems(load_problems(args.data), args.max_steps)[:args.limit]
    clock = BusyClock()
    runtime = TimedRuntime(backend=TimedBackend(create_backend("local"), clock), max_tokens=args.max_tokens,
                           seed=args.seed, clock=clock)
    specs = split_spec_list(args.strategies)
    console.print(f"{len(problems)} problems (<= {args.max_steps} steps) from {args.data}; "
                  f"max_tokens={args.max_tokens}, seed={args.seed}; strategies: {', '.join(specs)}")
    rows = asyncio.run(run(problems, specs, runtime, console))
    report(rows, console)
    if args.out:
        args.out.write_text(json.dumps([r.summary() for r in rows], indent=2))


if __name__ == "__main__":
    main()
