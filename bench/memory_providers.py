"""Memory providers, measured: does what `learn` remembers help the model on new problems?

1. learn: `redline learn`'s Learner over the first --train GSM8K-train problems into --out/memory.db.
   --holdout of them (20%, picked by a hash of the question) are held back and solved bare and with
   each provider: the measured effects, fitted similarity floors and retired items.
2. dev: the first --limit dev problems (ASDiv; never learned from), for each strategy in --strategies:
   bare, each provider as it runs by default (off when measured harmful, silent below its fitted
   floor) and, with --raw, each provider forced on at every similarity (what it did before #25).
3. the table: accuracy, paired delta vs the bare strategy with its bootstrap 95% CI and exact
   McNemar p, tokens and calls per problem, and on how many problems the provider fired.

Per-problem results go to --out/dev.jsonl as they finish and the store keeps the learning, so a
run stopped by --max-minutes (or a crash) resumes when rerun with the same arguments; a shared
2-core machine wants short locked runs:

    flock /tmp/heavy.lock .venv/bin/python bench/memory_providers.py \\
        --model ../shared/models/smollm2-gsm8k-lora --train 80 --limit 60 --out /work/runs/memory/bench --max-minutes 12
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")  # model-load progress bars would bury the figures

from redline.backends import create_backend
from redline.bench.datasets import load_problems
from redline.bench.metrics import paired_comparison, wilson_interval
from redline.loop import build_solver
from redline.memory import effects
from redline.memory.learning import Learner, LearnSettings, problem_key
from redline.memory.store import RUNTIME_KEY, MemoryStore
from redline.runtime import Runtime
from redline.text import answers_equal
from redline.types import Problem

ROOT = Path(__file__).resolve().parents[1]


class OutOfTime(Exception):
    pass


class Clock:
    def __init__(self, minutes: float) -> None:
        self.deadline = time.monotonic() + 60 * minutes

    def check(self) -> None:
        if time.monotonic() > self.deadline:
            raise OutOfTime


def specs(strategy: str, providers: list[str], raw: bool) -> list[str]:
    out = [strategy] + [f"{strategy}+{p}" for p in providers]
    return out + ([f"{strategy}+{p}:floor=-1,force=true" for p in providers] if raw else [])


async def learn(args: argparse.Namespace, runtime: Runtime, store: MemoryStore, clock: Clock) -> None:
    problems = load_problems(args.train_data, "gsm8k", limit=args.train)
    learner = Learner(runtime, store, args.learn_strategy,
                      LearnSettings(task="gsm8k", holdout=args.holdout, providers=tuple(args.providers),
                                    condense_every=args.condense_every))
    train, held = learner.split(problems)
    started = time.perf_counter()
    for problem in train:
        clock.check()
        await learner.learn_one(problem)
    c = learner.report.counts
    print(f"learned {len(train)} train problems ({c['skipped']} already in memory) in {time.perf_counter() - started:.0f}"
          f" s: {c['correct']} correct, {c['wrong']} wrong, principles +{c['principles']} ({c['merged']} merged, "
          f"{c['rejected']} rejected, {c['high_level']} high-level), mistakes +{c['mistakes']}, "
          f"revisions +{c['revisions']} ({c['fixed']} fixed), banked steps +{c['steps']}", flush=True)
    started = time.perf_counter()
    for problem in held:  # one at a time, so the clock can stop it; solves already made are kept
        clock.check()
        await learner.measure([problem])
    print(f"measured {len(held)} held-out problems x {1 + len(args.providers)} specs in "
          f"{time.perf_counter() - started:.0f} s, {learner.report.measure_usage.total_tokens} tokens", flush=True)


def load_done(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {(r["spec"], r["key"]): r for r in rows}


def fired(trace: Any, provider: str | None) -> bool:
    return bool(provider) and any(n.get("kind") == effects.MEMORY_TRACE and n.get("used")
                                  for n in trace.get("children", []) if n.get("provider") == provider)


async def dev(args: argparse.Namespace, runtime: Runtime, problems: list[Problem], clock: Clock) -> None:
    path = args.out / "dev.jsonl"
    done = load_done(path)
    solvers = {spec: build_solver(spec, runtime) for strategy in args.strategies
               for spec in specs(strategy, args.providers, args.raw)}
    with path.open("a") as f:
        for problem in problems:  # every spec on one problem before the next: a stopped run stays paired
            key = problem_key(problem)
            for spec, solver in solvers.items():
                if (spec, key) in done:
                    continue
                clock.check()
                result = await solver.solve(problem)
                provider = effects.split_spec(spec)[1][0].name if "+" in spec else None
                row = {"spec": spec, "key": key, "id": problem.id, "answer": result.answer,
                       "correct": answers_equal(result.answer, problem.answer),
                       "tokens": result.total.total_tokens, "calls": result.total.calls,
                       "fired": fired(result.trace, provider)}
                f.write(json.dumps(row) + "\n")
                f.flush()
                done[(spec, key)] = row


def report(args: argparse.Namespace, store: MemoryStore, problems: list[Problem]) -> None:
    print(f"\nmemory {store.path}: {json.dumps(store.counts())}")
    for level in ("low", "high"):
        rows = store.principles(level=level, active_only=False)
        print(f"{level}-level principles: {len(rows)} ({sum(r.retired is not None for r, _ in rows)} retired); first 10:")
        for row, _ in rows[:10]:
            print(f"  [{row.id}] {row.text}" + (f"  (retired: {row.retired})" if row.retired else ""))
    for e in store.provider_effects():
        print("held-out:", effects.effect_line(e))
    done = load_done(args.out / "dev.jsonl")
    keys = [problem_key(p) for p in problems]
    print(f"\nfirst {len(problems)} dev problems ({args.dev_data.name}); delta is paired against the bare strategy")
    print(f"{'spec':<44} {'n':>4} {'acc':>6} {'95% CI':>13} {'delta [95% CI]':>22} {'p':>5} {'tok/pb':>7} "
          f"{'calls':>5} {'fired':>5}")
    for strategy in args.strategies:
        bare = {k: done[(strategy, k)] for k in keys if (strategy, k) in done}
        for spec in specs(strategy, args.providers, args.raw):
            rows = {k: done[(spec, k)] for k in keys if (spec, k) in done}
            both = [k for k in keys if k in rows and k in bare]
            if not rows:
                print(f"{spec:<44} (not run yet)")
                continue
            n = len(rows)
            correct = sum(r["correct"] for r in rows.values())
            low, high = wilson_interval(correct, n) or (0.0, 0.0)
            cmp = paired_comparison(spec, strategy, [rows[k]["correct"] for k in both],
                                    [bare[k]["correct"] for k in both]) if spec != strategy else None
            delta = (f"{100 * cmp.diff:+5.1f} [{100 * cmp.ci[0]:+5.1f},{100 * cmp.ci[1]:+5.1f}]"
                     if cmp else "baseline")
            p = f"{cmp.p_value:.2f}" if cmp else ""
            print(f"{spec:<44} {n:>4} {correct / n:>6.1%} [{low:5.1%},{high:5.1%}] {delta:>22} {p:>5} "
                  f"{sum(r['tokens'] for r in rows.values()) / n:>7.0f} {sum(r['calls'] for r in rows.values()) / n:>5.1f} "
                  f"{sum(r['fired'] for r in rows.values()):>5}")


async def run(args: argparse.Namespace) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    clock = Clock(args.max_minutes)
    backend = create_backend("local", args.model)
    backend.load()
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; model {backend.model}", flush=True)
    store = MemoryStore.open(args.out / "memory.db")
    runtime = Runtime(backend=backend, max_tokens=args.max_tokens, memory_path=store.path)
    runtime.cached(RUNTIME_KEY, lambda: store)
    problems = load_problems(args.dev_data, limit=args.limit)
    try:
        if "learn" in args.phases:
            await learn(args, runtime, store, clock)
        if "dev" in args.phases:
            await dev(args, runtime, problems, clock)
    except OutOfTime:
        print(f"stopped after --max-minutes {args.max_minutes}; rerun the same command to resume", flush=True)
    report(args, store, problems)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="local model (default: the embedded SmolLM2)")
    parser.add_argument("--train-data", type=Path, default=ROOT.parent / "shared/data/gsm8k/train.jsonl")
    parser.add_argument("--dev-data", type=Path, default=ROOT.parent / "shared/data/asdiv/test.jsonl")
    parser.add_argument("--train", type=int, default=80, help="GSM8K-train problems to learn from (and hold back)")
    parser.add_argument("--holdout", type=float, default=0.2)
    parser.add_argument("--condense-every", type=int, default=4, help="new low-level principles per condensation")
    parser.add_argument("--limit", type=int, default=60, help="first dev problems to compare on")
    parser.add_argument("--learn-strategy", default="cot")
    parser.add_argument("--strategies", nargs="+", default=["cot"])
    parser.add_argument("--providers", nargs="+", default=["principles", "mistakes", "boost"])
    parser.add_argument("--raw", action="store_true", help="also run each provider forced on at every similarity")
    parser.add_argument("--phases", nargs="+", default=["learn", "dev"], choices=["learn", "dev"])
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--max-minutes", type=float, default=12.0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/memory_providers"))
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
