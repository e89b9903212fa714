"""Scoring speed of `hf-prm` on a 135M PRM (target: >= 50 steps/s on CPU), by dtype and batching.

    flock /tmp/heavy.lock .venv/bin/python bench/prm_speed.py [--prm DIR] [--problems 25]
        [--start 0] [--threads 1]

Without --prm, the PRM is an untrained LoRA over the embedded SmolLM2-135M (made here): the
same shape and cost as one `redline train prm` writes. Each GSM8K problem (from line --start on)
gets 4 candidates, scored as a strategy scores them (`asyncio.gather`), so they share a forward
pass unless batch_size=1:
- `same question`: its worked solution and three planted variants (arith, operator, arith slips),
  as best-of-N's candidates for one problem: the question, and the steps before a planted error,
  are computed once for all four;
- `distinct`: four different problems' solutions in a batch (nothing in common: padding only).
Rows: float32 and bfloat16 (bfloat16 only where the CPU has bf16 instructions, or with --bf16),
batched and one at a time: steps/s wall-clock and per CPU-second of this process (what one core
delivers when other jobs share the machine), and how far bfloat16 scores are from float32.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

from redline.backends.base import LedgeredBackend  # noqa: E402
from redline.backends.scripted import ScriptedBackend  # noqa: E402
from redline.runtime import Runtime  # noqa: E402
from redline.jsonl import iter_jsonl_objects  # noqa: E402
from redline.train.planted import plant_error, split_gsm8k, visible_steps  # noqa: E402
from redline.hardware import bf16_supported  # noqa: E402


def untrained_prm(out: Path) -> Path:
    """A LoRA PRM over the embedded model with B = 0: scores like the base, costs like a trained one."""
    from peft import get_peft_model

    from redline.train.adapters import load_base, lora_config, save_adapter

    base = load_base("smollm2-135m")
    save_adapter(get_peft_model(base.model, lora_config(16)), out, base.name)
    return out


Solution = tuple[str, list[str]]


def same_question_groups(path: Path, problems: int, start: int) -> list[list[Solution]]:
    """Per problem: the worked solution and three planted variants (problems where all three plant)."""
    rng, groups = random.Random(0), []
    for number, row in iter_jsonl_objects(path):
        if len(groups) >= problems:
            break
        parts = split_gsm8k(str(row.get("answer", ""))) if number > start and isinstance(row, dict) else None
        if parts is None:
            continue
        variants = [plant_error(*parts, kind, rng) for kind in ("arith", "operator", "arith")]
        if all(variants):
            groups.append([(row["question"], visible_steps(*parts))]
                          + [(row["question"], visible_steps(lines, final)) for lines, final, _ in variants])
    return groups


async def run(verifier: Any, groups: list[list[Solution]]) -> tuple[list[list[float]], float, float, int]:
    await verifier.score(*groups[0][0])  # warm-up, outside the timing
    cpu, wall = time.process_time(), time.perf_counter()
    scores: list[list[float]] = []
    for group in groups:
        scores += await asyncio.gather(*(verifier.score(q, steps) for q, steps in group))
    steps = sum(len(s) for s in scores)
    return scores, time.perf_counter() - wall, time.process_time() - cpu, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prm", type=Path, help="a PRM folder (adapter or HF model); default: an untrained LoRA")
    parser.add_argument("--gsm8k", type=Path, default=Path("../shared/data/gsm8k/train.jsonl"))
    parser.add_argument("--problems", type=int, default=25)
    parser.add_argument("--start", type=int, default=0, help="skip the first N GSM8K lines")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: no spin-waiting on a shared machine)")
    parser.add_argument("--bf16", action="store_true", help="time bfloat16 even without CPU bf16 instructions")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    prm = args.prm or untrained_prm(Path(tempfile.mkdtemp()) / "prm")
    same = same_question_groups(args.gsm8k, args.problems, args.start)
    flat = [c for g in same for c in g]
    layouts = {"same question": same, "distinct": [flat[i::len(same)] for i in range(len(same))]}
    runtime = Runtime(backend=LedgeredBackend(ScriptedBackend(["unused"])))
    dtypes = ["float32"] + (["bfloat16"] if bf16_supported("cpu") or args.bf16 else [])
    print(f"PRM {prm}; {len(flat)} solutions, {len(same)} groups of 4; torch threads {torch.get_num_threads()}; "
          f"CPU bf16 instructions: {bf16_supported('cpu')}")
    reference: dict[str, list[list[float]]] = {}
    for dtype in dtypes:
        for layout, groups in layouts.items():
            for batch in (4, 1):
                if batch == 1 and layout == "distinct":
                    continue  # one at a time is the same work whatever the grouping
                verifier = runtime.verifier(f"hf-prm:{prm},dtype={dtype},batch_size={batch}")
                scores, wall, cpu, steps = asyncio.run(run(verifier, groups))
                ref = reference.setdefault(layout, scores)
                drift = max(abs(a - b) for x, y in zip(scores, ref) for a, b in zip(x, y))
                print(f"{dtype:9} {layout:13} batch {batch}: {steps} steps in {wall:5.1f}s  "
                      f"{steps / wall:5.1f} steps/s wall  {steps / cpu:5.1f} steps/s per CPU-second  "
                      f"max |score - first row| {drift:.4f}", flush=True)
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
