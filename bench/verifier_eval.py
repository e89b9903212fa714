"""The `verifier eval` table for arith, learned, judge (embedded model) and ensembles on planted errors.

    .venv/bin/python bench/verifier_eval.py [--data ../shared/data/gsm8k/train.jsonl] [--n 300]
        [--judge-seconds 600] [--out runs/verifier-bench]

Eval set: `n` planted-error solutions from the first GSM8K lines; the learned verifier is
trained on 600 planted solutions from line 4000 on (disjoint problems). The judge runs the
embedded SmolLM2-135M and gets a time budget: it scores solutions in order until the budget
is spent, and its rows (and the judge ensemble's) say exactly how many solutions that was.
Writes report.md and one JSON report per verifier under --out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

from redline.backends import create_backend  # noqa: E402
from redline.ledger import Ledger, use_ledger  # noqa: E402
from redline.runtime import Runtime  # noqa: E402
from redline.train.verifier_eval import EvalReport, evaluate, markdown_table  # noqa: E402
from redline.train.planted import plant_file  # noqa: E402
from redline.train.records import LabeledSolution  # noqa: E402
from redline.types import Usage  # noqa: E402
from redline.train.learned_trainer import train  # noqa: E402


def planted(data: Path, n: int, start: int, path: Path) -> list[LabeledSolution]:
    records = [r for r in plant_file(data, n, seed=0, start=start) if isinstance(r, LabeledSolution)]
    path.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in records))
    return records


async def judge_within(runtime: Runtime, records: list[LabeledSolution],
                       seconds: float) -> tuple[list[LabeledSolution], Usage]:
    """The leading records the judge scores within `seconds` (its per-prefix cache keeps the scores)."""
    judge = runtime.verifier("judge")
    deadline = time.perf_counter() + seconds
    done = []
    with use_ledger(Ledger("judge-bench")) as ledger:
        for record in records:
            if time.perf_counter() > deadline:
                break
            await judge.score(record.question, list(record.steps))
            done.append(record)
    return done, ledger.total()


async def run(args: argparse.Namespace) -> None:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    eval_set = planted(args.data, args.n, 0, out / "planted_eval.jsonl")
    train_set = planted(args.data, 600, 4000, out / "planted_train.jsonl")
    model = out / "prm.joblib"
    t0 = time.perf_counter()
    fit = train(train_set, model)
    print(f"learned: trained on {fit.solutions} solutions / {fit.steps} steps in {time.perf_counter() - t0:.0f}s, "
          f"validation AUROC {fit.val_auroc}")
    runtime = Runtime(backend=create_backend("local"), max_tokens=64)
    reports: list[EvalReport] = []
    for spec in ("arith", f"learned:{model}", f"ensemble:arith+learned:{model}"):
        reports.append(await evaluate(runtime.verifier(spec), eval_set, name=spec.replace(str(model), "prm")))
    t0 = time.perf_counter()
    judged, usage = await judge_within(runtime, eval_set, args.judge_seconds)
    judge_seconds = time.perf_counter() - t0
    print(f"judge: {len(judged)} of {len(eval_set)} solutions in {judge_seconds:.0f}s")
    for spec in ("judge", "ensemble:arith+judge"):
        report = await evaluate(runtime.verifier(spec), judged, name=f"{spec} ({len(judged)} sol.)")
        # the scores came from the timed pass above (cached per prefix), so report its cost
        report.seconds, report.calls, report.tokens = judge_seconds, usage.calls, usage.total_tokens
        reports.append(report)
    for report in reports:
        (out / f"{report.verifier.split(' ')[0].replace(':', '_').replace('+', '_')}.json").write_text(
            json.dumps(report.to_dict(), indent=1))
    speed = "\n".join(f"- {r.verifier}: {r.n} solutions, {r.steps} steps, {r.seconds:.1f}s, {r.calls} model calls, "
                      f"{r.tokens} tokens" for r in reports)
    table = markdown_table(reports)
    (out / "report.md").write_text(f"{table}\n\n{speed}\n")
    print(table)
    print(speed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/gsm8k/train.jsonl"))
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--judge-seconds", type=float, default=600)
    parser.add_argument("--out", type=Path, default=Path("runs/verifier-bench"))
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
