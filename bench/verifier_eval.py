"""The `verifier eval` tables: planted errors (a), Monte-Carlo labels (b), and the judge before/after calibration.

    .venv/bin/python bench/verifier_eval.py [--data ../shared/data/gsm8k/train.jsonl] [--n 600]
        [--prm adapters/prm] [--mc dev_mc.jsonl] [--judge-n 20] [--concurrency 8] [--out runs/verifier-bench]

(a) `n` planted-error solutions from the first GSM8K lines. The learned verifier is trained on
600 planted solutions from line 4000 on (disjoint problems; train a PRM from there too:
`redline verifier plant -n 1200 --start 4000` then `redline train prm`).
(b) with --mc: step-labelled solutions from `redline verifier label` (e.g. the fixture model's
own solutions to the first dev problems); step AUROC against labels >= 0.5, and steps/s.
Verifiers: arith, learned, and with --prm the trained PRM and ensemble:arith+PRM.
The judge (embedded SmolLM2-135M) scores the first `judge-n` planted solutions raw and with
`calibrate=reference`: the step AUROC before and after calibration (--judge-n 0 skips it).
`concurrency` solutions are scored at once, so a PRM scores them in one batch, as a strategy's
candidates; the steps/s figures include that.
Writes report.md and one JSON report per verifier and set under --out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

from redline.backends import create_backend  # noqa: E402
from redline.runtime import Runtime  # noqa: E402
from redline.verifiers.ensemble import EnsembleVerifier  # noqa: E402
from redline.train.learned_trainer import train  # noqa: E402
from redline.train.planted import plant_file  # noqa: E402
from redline.train.records import LabeledSolution, read_labeled  # noqa: E402
from redline.train.verifier_eval import EvalReport, evaluate, markdown_table  # noqa: E402


class Memo:
    """A verifier whose scores are remembered per solution, so the ensemble re-uses the PRM's."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.name = inner, inner.name
        self.cache: dict[tuple[str, tuple[str, ...]], list[float]] = {}

    async def score(self, question: str, steps: Sequence[str]) -> list[float]:
        key = (question, tuple(steps))
        if key not in self.cache:
            self.cache[key] = await self.inner.score(question, steps)
        return self.cache[key]


def planted(data: Path, n: int, start: int, path: Path) -> list[LabeledSolution]:
    records = [r for r in plant_file(data, n, seed=0, start=start) if isinstance(r, LabeledSolution)]
    path.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in records))
    return records


async def table(verifiers: dict[str, Any], records: list[LabeledSolution], label: str,
                out: Path, concurrency: int = 1) -> list[EvalReport]:
    """One report per verifier (name -> verifier) on `records`, each also written as JSON. An ensemble
    over a memoised PRM reports the PRM's time: its own pass only reads the PRM's remembered scores."""
    reports: list[EvalReport] = []
    for name, verifier in verifiers.items():
        report = await evaluate(verifier, records, concurrency=concurrency, name=f"{name} [{label}]")
        if name.startswith("ensemble") and reports:
            report.seconds += reports[-1].seconds
        (out / f"{label.replace(' ', '-')}_{name.replace(':', '_').replace('+', '_')}.json").write_text(
            json.dumps(report.to_dict(), indent=1))
        print(f"{report.verifier}: {report.steps} steps in {report.seconds:.1f}s", flush=True)
        reports.append(report)
    return reports


def speed(reports: list[EvalReport]) -> str:
    return "\n".join(f"- {r.verifier}: {r.n} solutions, {r.steps} steps, {r.seconds:.1f}s "
                     f"({r.steps / max(r.seconds, 1e-9):.1f} steps/s), {r.calls} model calls, {r.tokens} tokens"
                     for r in reports)


async def run(args: argparse.Namespace) -> None:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    eval_set = planted(args.data, args.n, 0, out / "planted_eval.jsonl")
    model = out / "learned.safetensors"
    fit = train(planted(args.data, 600, 4000, out / "planted_train.jsonl"), model)
    print(f"learned: trained on {fit.solutions} solutions / {fit.steps} steps, validation AUROC {fit.val_auroc}")
    runtime = Runtime(backend=create_backend("local"), max_tokens=64)

    def verifiers() -> dict[str, Any]:
        found = {"arith": runtime.verifier("arith"), "learned": runtime.verifier(f"learned:{model}")}
        if args.prm:
            prm = Memo(runtime.verifier(f"hf-prm:{args.prm}"))
            found |= {"prm": prm, "ensemble:arith+prm": EnsembleVerifier([found["arith"], prm])}
        return found

    reports = await table(verifiers(), eval_set, "planted", out, args.concurrency)
    if args.mc:
        reports += await table(verifiers(), read_labeled(args.mc).records, "mc", out, args.concurrency)
    if args.judge_n > 0:
        judged = eval_set[: args.judge_n]
        judges = {spec: runtime.verifier(spec) for spec in ("judge", "judge:calibrate=reference")}
        reports += await table(judges, judged, f"planted first {len(judged)}", out)
    text = f"{markdown_table(reports)}\n\n{speed(reports)}\n"
    (out / "report.md").write_text(text)
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/gsm8k/train.jsonl"))
    parser.add_argument("--n", type=int, default=600)
    parser.add_argument("--prm", type=Path, default=None, help="a PRM folder from `redline train prm`")
    parser.add_argument("--mc", type=Path, default=None, help="step-labelled JSONL from `redline verifier label`")
    parser.add_argument("--judge-n", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=8, help="solutions scored at once (a PRM batches them)")
    parser.add_argument("--out", type=Path, default=Path("runs/verifier-bench"))
    started = time.perf_counter()
    asyncio.run(run(parser.parse_args()))
    print(f"total {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
