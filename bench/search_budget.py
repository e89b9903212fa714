"""Search and correction on the dev set: accuracy, where the tokens go, and what prefix reuse saves.

Runs each strategy on the first `--limit` problems of a dataset (ASDiv dev by default) with
one model and seed, and prints per strategy: accuracy with a 95% Wilson interval, the paired
difference against the first strategy (bootstrap CI, exact McNemar p), tokens per problem
(prompt split into cached and uncached, prompt by phase, completion), calls and wall time.
StepCo rows add revisions per problem, revisions that changed the answer, and revisions that
left the flagged step as it was.

`--cache-check` runs the given strategies twice per problem, without and with the local
backend's prefix cache, at the same seed: it prints whether every answer and solution text
came out identical, and the wall-time ratio.

    .venv/bin/python bench/search_budget.py --limit 30 --model ../shared/models/smollm2-gsm8k-lora \\
        --strategies "bon:n=4,stepco,stepco:feedback=flagged,stop_unchanged=true,beam,mcts"
    .venv/bin/python bench/search_budget.py --limit 10 --strategies "" --cache-check "beam,mcts"
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")

from redline.backends import create_backend  # noqa: E402
from redline.backends.prefix_cache import PrefixCache
from redline.bench.datasets import load_problems
from redline.bench.grading import grade
from redline.bench.metrics import paired_comparison, wilson_interval
from redline.loop import build_solver
from redline.runtime import Runtime
from redline.spec import split_spec_list
from redline.strategies.mcts import tree_from_dict
from redline.train.tree_data import find_tree, label_tree, step_pairs, tree_rows
from redline.text import answers_equal
from redline.types import Problem, Result

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "asdiv" / "test.jsonl"


@dataclass
class Tally:
    spec: str
    correct: list[bool] = field(default_factory=list)
    prompt: int = 0
    cached: int = 0
    completion: int = 0
    calls: int = 0
    wall: float = 0.0
    by_phase: dict[str, int] = field(default_factory=dict)
    revisions: int = 0
    answer_changed: int = 0
    unchanged_step: int = 0

    def add(self, result: Result, gold: str | None) -> None:
        self.correct.append(bool(grade(result, gold).correct))
        total = result.total
        self.prompt += total.prompt_tokens
        self.cached += total.cached_prompt_tokens
        self.completion += total.completion_tokens
        self.calls += total.calls
        self.wall += result.wall_s
        for name, usage in result.usage.items():
            self.by_phase[name] = self.by_phase.get(name, 0) + usage.prompt_tokens
        previous = next((n.get("answer") for n in nodes(result.trace, "generate")), None)
        for rev in nodes(result.trace, "revise"):
            self.revisions += 1
            self.answer_changed += not answers_equal(rev.get("answer"), previous)
            self.unchanged_step += " ".join(rev["replacement"].split()) == " ".join(rev["flagged_text"].split())
            previous = rev.get("answer")


def nodes(trace: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    found = [trace] if trace.get("kind") == kind else []
    for child in trace.get("children", []):
        found += nodes(child, kind)
    return found


def report(tallies: list[Tally]) -> None:
    base = tallies[0]
    for t in tallies:
        n = len(t.correct)
        k = sum(t.correct)
        lo, hi = wilson_interval(k, n) or (0.0, 0.0)
        line = (f"{t.spec:48s} acc {k}/{n} = {k / n:.1%} [{lo:.1%}, {hi:.1%}]"
                f"  tokens/problem {(t.prompt + t.completion) / n:7.1f} (prompt {t.prompt / n:.1f}:"
                f" cached {t.cached / n:.1f}, uncached {(t.prompt - t.cached) / n:.1f};"
                f" completion {t.completion / n:.1f})  calls {t.calls / n:.1f}  wall {t.wall / n:.1f} s")
        phases = ", ".join(f"{p} {v / n:.1f}" for p, v in t.by_phase.items())
        line += f"\n{'':48s} prompt by phase: {phases}"
        if t.revisions:
            line += (f"; revisions/problem {t.revisions / n:.2f}, changed the answer {t.answer_changed}/{t.revisions},"
                     f" flagged step unchanged {t.unchanged_step}/{t.revisions}")
        if t is not base:
            cmp = paired_comparison(t.spec, base.spec, t.correct, base.correct)
            if cmp:
                uncached = (t.prompt - t.cached + t.completion) / max(1, base.prompt - base.cached + base.completion)
                line += (f"\n{'':48s} vs {base.spec}: {cmp.diff:+.1%} [{cmp.ci[0]:+.1%}, {cmp.ci[1]:+.1%}],"
                         f" {cmp.only_strategy} only here / {cmp.only_baseline} only there,"
                         f" McNemar p={cmp.p_value:.3f};"
                         f" uncached tokens {uncached:.0%} of it,"
                         f" all tokens {(t.prompt + t.completion) / max(1, base.prompt + base.completion):.0%}")
        print(line, flush=True)


def tree_summary(results: list[dict[str, Any]], problems: dict[str | None, Problem]) -> None:
    """Labelled steps and Step-DPO pairs per MCTS tree (gold answers known), with one example of each."""
    if not results:
        return
    steps = pairs = 0
    label_example = pair_example = None
    for r in results:
        problem = problems[r["problem"]]
        tree = find_tree(r["trace"])
        if tree is None or problem.answer is None:
            continue
        root = tree_from_dict(tree)
        labels = label_tree(root, problem.answer)
        found = list(step_pairs(root, problem.answer, labels))
        steps += len(labels)
        pairs += len(found)
        if label_example is None and any(m.hard for m in labels.values()):
            label_example = tree_rows("prm", problem.question, problem.answer, tree)[0]
        if pair_example is None and found:
            pair_example = tree_rows("step-dpo", problem.question, problem.answer, tree)[0]
    n = len(results)
    print(f"tree data over {n} MCTS trees: {steps / n:.1f} labelled steps and {pairs / n:.2f} Step-DPO pairs"
          " per problem")
    print(f"  label example: {json.dumps(label_example)}")
    print(f"  pair example: {json.dumps(pair_example)}", flush=True)


async def run(args: argparse.Namespace) -> None:
    problems: list[Problem] = load_problems(args.data, limit=args.limit)
    backend = create_backend("local", args.model)
    backend.load()
    runtime = Runtime(backend=backend, max_tokens=args.max_tokens, seed=args.seed)
    inner = backend.inner
    cache = inner.prefix_cache
    specs = split_spec_list(args.strategies) if args.strategies else []
    tallies = [Tally(s) for s in specs]
    solvers = [build_solver(s, runtime) for s in specs]
    dump = []
    started = time.perf_counter()
    for i, problem in enumerate(problems):
        for tally, solver in zip(tallies, solvers):
            inner.prefix_cache = cache if not args.no_prefix_cache else None
            result = await solver.solve(problem)
            tally.add(result, problem.answer)
            if args.verbose:
                print(f"   {problem.id} {tally.spec}: {'right' if tally.correct[-1] else 'wrong'},"
                      f" {result.total.total_tokens} tokens, {result.wall_s:.0f} s", flush=True)
            dump.append({"problem": problem.id, "strategy": tally.spec, "answer": result.answer,
                         "correct": tally.correct[-1], "trace": result.trace})
        if specs:
            print(f"-- {i + 1}/{len(problems)} problems, {time.perf_counter() - started:.0f} s", flush=True)
            if (i + 1) % args.report_every == 0 and i + 1 < len(problems):
                report(tallies)
    if specs:
        report(tallies)
        tree_summary([d for d in dump if d["strategy"].startswith("mcts")], {p.id: p for p in problems})
    if args.out:
        args.out.write_text(json.dumps(dump, default=str))
    for spec in split_spec_list(args.cache_check) if args.cache_check else []:
        solver = build_solver(spec, runtime)
        walls = {"cold": 0.0, "reuse": 0.0}
        same = True
        cached = prompt = 0
        for problem in problems:
            texts = {}
            for mode in ("cold", "reuse"):
                inner.prefix_cache = None if mode == "cold" else PrefixCache(args.cache_mb << 20)
                t0 = time.perf_counter()
                result = await solver.solve(problem)
                walls[mode] += time.perf_counter() - t0
                texts[mode] = (result.answer, result.solution.text if result.solution else None)
                if mode == "reuse":
                    cached += result.total.cached_prompt_tokens
                    prompt += result.total.prompt_tokens
            same = same and texts["cold"] == texts["reuse"]
            if args.verbose:
                print(f"   {problem.id} {spec}: wall so far {walls['reuse']:.0f} s with reuse,"
                      f" {walls['cold']:.0f} s without; identical so far: {same}", flush=True)
        print(f"{spec:40s} prefix reuse: wall {walls['reuse']:.1f} s vs {walls['cold']:.1f} s without"
              f" ({walls['reuse'] / walls['cold']:.2f}x), cached {cached / max(1, prompt):.0%} of prompt tokens,"
              f" identical outputs: {same}", flush=True)
    inner.prefix_cache = cache


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--limit", type=int, default=30)
    ap.add_argument("--model", default=None, help="local model (default: the embedded one)")
    ap.add_argument("--strategies", default="bon:n=4,stepco,stepco:feedback=flagged,stop_unchanged=true,beam,mcts")
    ap.add_argument("--cache-check", default="", help="strategies to run with and without prefix reuse")
    ap.add_argument("--cache-mb", type=int, default=256)
    ap.add_argument("--no-prefix-cache", action="store_true")
    ap.add_argument("--max-tokens", type=int, default=192)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--report-every", type=int, default=4, help="print the table so far every N problems")
    ap.add_argument("--verbose", action="store_true", help="a line per problem and strategy")
    ap.add_argument("--out", type=Path, help="write every result's trace here (JSON)")
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
