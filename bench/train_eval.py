"""Trained adapters against the base on the dev set: greedy accuracy, maj@8 and coverage@8.

The first model given is the baseline. Greedy runs on the first --n dev problems; maj@8 and
coverage@8 (8 samples at --temperature) on the first --n-sampled. Every figure carries a 95%
Wilson interval; each model's greedy outcomes are paired with the baseline's (bootstrap CI of
the difference, exact McNemar). Training tokens/s is read from each adapter's training.json.
Per-model outcomes are cached in --cache, so a model is graded once and the report reruns free.

    .venv/bin/python bench/train_eval.py --models smollm2 ../shared/models/smollm2-gsm8k-lora \\
        src/redline/models/redline-smollm2-gsm8k --n 300 --n-sampled 50
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # the GGUF dequantiser's progress bar

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from redline.bench.datasets import read_dataset  # noqa: E402
from redline.bench.grading import answer_groups  # noqa: E402
from redline.bench.metrics import majority_curve, paired_comparison, wilson_interval  # noqa: E402
from redline.text import extract_answer  # noqa: E402
from redline.train.evaluate import grade  # noqa: E402

console = Console(width=150)


def _ci(correct: float, n: int) -> str:
    ci = wilson_interval(round(correct), n)
    return f"{correct / n:.1%} [{ci[0]:.1%}, {ci[1]:.1%}]" if ci else "-"


def _cached(cache: Path, model: str, kind: str, problems: list, chunk: int = 16, **settings) -> dict:
    """Outcomes of `model` on `problems`; each problem is graded once per model and settings, so a
    larger --n grades only the new problems."""
    name = str(Path(model).resolve()) if Path(model).exists() else model
    key = hashlib.sha256(json.dumps([name, kind, settings]).encode()).hexdigest()[:16]
    path = cache / f"{Path(model).name}-{kind}-{key}.json"
    done = json.loads(path.read_text()) if path.exists() else {"seconds": 0.0, "problems": {}}
    todo = [p for p in problems if p.id not in done["problems"]]
    cache.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(todo), chunk):  # saved after each chunk: an interrupted run loses little
        t0 = time.perf_counter()
        part = todo[start:start + chunk]
        graded = grade(model, part, **settings)
        done["seconds"] += time.perf_counter() - t0
        for p, texts, correct in zip(part, graded.texts, graded.correct):
            done["problems"][p.id] = {"texts": texts, "correct": correct}
        path.write_text(json.dumps(done))
        console.print(f"graded {model} ({kind}): {start + len(part)}/{len(todo)} new problems, "
                      f"{time.perf_counter() - t0:.0f} s for the last {len(part)}", highlight=False)
    rows = [done["problems"][p.id] for p in problems]
    return {"texts": [r["texts"] for r in rows], "correct": [r["correct"] for r in rows],
            "seconds": done["seconds"] * len(problems) / len(done["problems"])}


def _sampled_figures(record: dict) -> tuple[float, float]:
    """(maj@k correct count, coverage@k correct count) over the problems."""
    maj = cov = 0.0
    for texts, correct in zip(record["texts"], record["correct"]):
        groups = answer_groups([extract_answer(t) for t in texts])
        maj += majority_curve(list(zip(groups, correct)))[-1]
        cov += any(correct)
    return maj, cov


def _training_speed(model: str) -> str:
    path = Path(model) / "training.json"
    if not path.is_file():
        return "-"
    figures = json.loads(path.read_text())
    return f"{figures['tokens_per_s']:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True, help="Baseline first: aliases, HF dirs or adapters.")
    parser.add_argument("--dev", default="../shared/data/asdiv/test.jsonl")
    parser.add_argument("--n", type=int, default=300, help="Dev problems for greedy accuracy.")
    parser.add_argument("--n-sampled", type=int, default=50, help="Dev problems for maj@8 / coverage@8 (0: skip).")
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--cache", type=Path, default=Path("bench/.train_eval"))
    args = parser.parse_args()

    problems = read_dataset(args.dev, limit=args.n).problems
    sampled_set = problems[:args.n_sampled]
    greedy = {m: _cached(args.cache, m, "greedy", problems, max_tokens=args.max_tokens) for m in args.models}
    sampled = {m: _cached(args.cache, m, f"sampled{args.k}", sampled_set, max_tokens=args.max_tokens, n=args.k,
                          temperature=args.temperature, batch=16, seed=0) for m in args.models} if sampled_set else {}

    table = Table(title=f"dev {args.dev}: greedy on {len(problems)}, maj@{args.k}/coverage@{args.k} on "
                        f"{len(sampled_set)} (T={args.temperature}); 95% Wilson CIs")
    for column in ("model", "greedy", f"maj@{args.k}", f"coverage@{args.k}", "greedy s (est.)", "train tok/s"):
        table.add_column(column)
    for m in args.models:
        correct = sum(c[0] for c in greedy[m]["correct"])
        maj, cov = _sampled_figures(sampled[m]) if m in sampled else (0.0, 0.0)
        table.add_row(Path(m).name, _ci(correct, len(problems)),
                      _ci(maj, len(sampled_set)) if m in sampled else "-",
                      _ci(cov, len(sampled_set)) if m in sampled else "-",
                      f"{greedy[m]['seconds']:.0f}", _training_speed(m))
    console.print(table)
    base = args.models[0]
    for m in args.models[1:]:
        a = [c[0] for c in greedy[m]["correct"]]
        b = [c[0] for c in greedy[base]["correct"]]
        cmp = paired_comparison(m, base, a, b)
        verdict = "CI excludes zero" if cmp.ci[0] > 0 or cmp.ci[1] < 0 else "CI includes zero"
        console.print(f"{Path(m).name} - {Path(base).name} (greedy, paired, n={cmp.n}): {cmp.diff:+.1%} "
                      f"[{cmp.ci[0]:+.1%}, {cmp.ci[1]:+.1%}] "
                      f"{verdict}; only this right {cmp.only_strategy}, only base right {cmp.only_baseline}, "
                      f"McNemar p={cmp.p_value:.3g}", highlight=False)


if __name__ == "__main__":
    main()
