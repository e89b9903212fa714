"""Do budgets hold? Each strategy under `max_tokens_total` and `max_calls` on the dev set.

Runs every strategy under every budget on the first `--limit` problems (ASDiv dev by default)
with one model and seed, and prints per strategy and budget: the largest overshoot over all
problems (tokens over `max_tokens_total`, counted as the budget counts them, computed by
default; calls over `max_calls`; it must be 0), the computed tokens spent per problem as a
share of the token cap (for `max_calls`, calls as a share of the cap and computed tokens per
problem), how many solves the budget stopped, and accuracy.

    .venv/bin/python bench/budget_fairness.py --limit 20 --model ../shared/models/smollm2-gsm8k-lora
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

from redline.backends import create_backend  # noqa: E402
from redline.bench.datasets import load_problems  # noqa: E402
from redline.bench.grading import grade  # noqa: E402
from redline.loop import build_solver  # noqa: E402
from redline.runtime import Runtime  # noqa: E402
from redline.spec import split_spec_list  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DATA = SHARED / "data" / "asdiv" / "test.jsonl"
MODEL = SHARED / "models" / "smollm2-gsm8k-lora"
STRATEGIES = "beam,mcts,bon:n=8,verifier=judge,stepco"
BUDGETS = ("max_tokens_total=600", "max_tokens_total=1500", "max_calls=3")


@dataclass
class Row:
    spec: str
    budget: str
    overshoot: int = 0
    computed: list[int] = field(default_factory=list)
    calls: list[int] = field(default_factory=list)
    stopped: int = 0
    correct: int = 0

    @property
    def key(self) -> str:
        return self.budget.split("=")[0]

    @property
    def cap(self) -> int:
        return int(self.budget.split("=")[1])

    def line(self) -> str:
        n = len(self.computed)
        computed = sum(self.computed) / n
        if self.key == "max_calls":
            share = f"calls {sum(self.calls) / n / self.cap:4.0%} of cap"
        else:
            share = f"spent {computed / self.cap:4.0%} of cap"
        return (f"{self.spec:26s} {self.budget:22s} overshoot {self.overshoot:3d}  {share}"
                f"  computed/problem {computed:6.1f}  calls/problem {sum(self.calls) / n:4.1f}"
                f"  stopped {self.stopped}/{n}  correct {self.correct}/{n}")


def with_budget(spec: str, budget: str) -> str:
    return spec + ("," if ":" in spec else ":") + budget


async def run(args: argparse.Namespace) -> None:
    problems = load_problems(args.data, limit=args.limit)
    backend = create_backend("local", args.model)
    backend.load()
    runtime = Runtime(backend=backend, max_tokens=args.max_tokens, seed=args.seed)
    rows = [Row(spec, budget) for spec in split_spec_list(args.strategies) for budget in args.budgets.split(";")]
    solvers = [build_solver(with_budget(r.spec, r.budget), runtime) for r in rows]
    started = time.perf_counter()
    for i, problem in enumerate(problems):
        for row, solver in zip(rows, solvers):
            result = await solver.solve(problem)
            total = result.total
            counted = total.total_tokens if solver.budget.count == "billed" else total.computed_tokens
            row.overshoot = max(row.overshoot, (total.calls if row.key == "max_calls" else counted) - row.cap)
            row.computed.append(total.computed_tokens)
            row.calls.append(total.calls)
            row.stopped += result.stopped is not None
            row.correct += bool(grade(result, problem.answer).correct)
            if args.verbose:
                print(f"   {problem.id} {row.spec} {row.budget}: {total.computed_tokens} computed tokens,"
                      f" {total.calls} calls, {result.wall_s:.0f} s, stopped: {result.stopped}", flush=True)
        print(f"-- {i + 1}/{len(problems)} problems, {time.perf_counter() - started:.0f} s", flush=True)
        report(rows, f"first {i + 1} problems of {args.data}, model {args.model}, seed {args.seed}, "
                     f"max_tokens {args.max_tokens}")


def report(rows: list[Row], title: str) -> None:
    """The table so far (printed after every problem, so a run cut short still reports)."""
    print(title)
    for row in rows:
        print(row.line(), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--model", default=str(MODEL), help="local model (default: the benchmark fixture)")
    ap.add_argument("--strategies", default=STRATEGIES)
    ap.add_argument("--budgets", default=";".join(BUDGETS), help="budget keys to try, ';'-separated")
    ap.add_argument("--max-tokens", type=int, default=192)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--verbose", action="store_true", help="a line per problem and strategy")
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
