"""Scoring speed of the `arith` and `learned` verifiers (targets: >= 10,000 and >= 200 steps/s on CPU).

    .venv/bin/python bench/verifier_speed.py [--data ../shared/data/gsm8k/train.jsonl] [--steps 20000]
        [--learned prm.safetensors] [--learned-steps 600] [--threads 1]

Steps are the lines of GSM8K worked solutions (annotations stripped). Two rates per verifier:
wall-clock, and per CPU-second of this process (`time.process_time`), which is what one core
delivers even when other jobs share the machine. `--threads 1` pins torch to one core.
Without --learned, a learned model is trained first on 300 planted-error solutions.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

from redline.verifiers.arith import ArithVerifier  # noqa: E402
from redline.verifiers.learned import load_model_file, LearnedVerifier  # noqa: E402
from redline.train.planted import plant_file, split_gsm8k  # noqa: E402
from redline.train.records import LabeledSolution, iter_jsonl_objects  # noqa: E402
from redline.train.learned_trainer import train  # noqa: E402

ANNOTATION = re.compile(r"<<[^<>]*>>")


def gsm8k_solutions(path: Path) -> list[tuple[str, list[str]]]:
    out = []
    for _, row in iter_jsonl_objects(path):
        if isinstance(row, dict) and (parts := split_gsm8k(str(row.get("answer", "")))):
            out.append((str(row["question"]), [ANNOTATION.sub("", line) for line in parts[0]]))
    return out


def rate(n: int, fn) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return n / (time.perf_counter() - wall), n / (time.process_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/gsm8k/train.jsonl"))
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--learned", type=Path)
    parser.add_argument("--learned-steps", type=int, default=600)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    solutions = gsm8k_solutions(args.data)
    steps = [s for _, ss in solutions for s in ss][: args.steps]
    arith = ArithVerifier()
    wall, cpu = rate(len(steps), lambda: arith.score_sync(steps))
    print(f"arith:   {len(steps)} steps  {wall:,.0f} steps/s wall  {cpu:,.0f} steps/s per CPU-second")

    model_path = args.learned
    if model_path is None:
        model_path = Path(tempfile.mkdtemp()) / "prm.safetensors"
        records = [r for r in plant_file(args.data, 300, start=4000) if isinstance(r, LabeledSolution)]
        train(records, model_path)
    learned = LearnedVerifier(load_model_file(model_path))
    batch: list[tuple[str, list[str]]] = []
    for question, ss in solutions[len(solutions) // 2:]:  # other problems than the ones trained on
        batch.append((question, ss))
        if sum(len(s) for _, s in batch) >= args.learned_steps:
            break
    n = sum(len(s) for _, s in batch)
    learned.score_sync(*batch[0])  # import scikit-learn outside the timing
    wall, cpu = rate(n, lambda: [learned.score_sync(q, ss) for q, ss in batch])
    print(f"learned: {n} steps in {len(batch)} solutions  {wall:,.0f} steps/s wall  {cpu:,.0f} steps/s per CPU-second"
          f"  (torch threads {torch.get_num_threads()})")
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
