"""LoRA SFT throughput on the embedded model: the previous recipe against the new default.

Both train a fresh LoRA (r=32, all projections) for --steps optimiser steps on the same
steps x batch rows of the training set (a seeded sample, one pass) with the same seed and
learning-rate schedule:
- previous: TRL's SFTTrainer exactly as `redline train sft` ran it before (float32, batches of 8
  padded to their longest row in random order, a log line and TRL's metrics every step, a
  checkpoint every 25 steps);
- new: `redline.train.loop.fit` as `redline train sft` runs it now (batches grouped by length,
  loss read only at the answer's positions, bf16 autocast where the CPU multiplies bf16 natively).
Tokens/s counts non-padding input tokens over the training time (model loading excluded). The
loss of each is the mean answer-token loss of its adapter over all the rows it trained on,
computed afterwards the same way for both, in float32. --breakdown adds the new loop in float32
and without length grouping, to show where the gain comes from.

    flock /tmp/heavy.lock .venv/bin/python bench/train_speed.py --steps 10
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")

from redline.train.adapters import TrainSettings, load_base, lora_config, lora_model, plan  # noqa: E402
from redline.train.data import read_training_data  # noqa: E402
from redline.train.loop import fit  # noqa: E402
from redline.train.precision import pick_precision  # noqa: E402
from redline.train.sft import Encoded, answer_logprobs, encode_example, sft_loss  # noqa: E402


def previous_recipe(examples: list, settings: TrainSettings, workdir: Path) -> tuple[Any, float, int]:
    """TRL SFTTrainer with the arguments `redline train sft` passed before this change.
    Returns (trained model, seconds, non-padding tokens)."""
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    loaded = load_base("smollm2-135m")
    config = SFTConfig(
        output_dir=str(workdir / "previous"), num_train_epochs=settings.epochs, max_steps=settings.max_steps,
        learning_rate=settings.lr, lr_scheduler_type="cosine", warmup_steps=0.05,
        per_device_train_batch_size=settings.batch_size, gradient_accumulation_steps=1,
        seed=settings.seed, data_seed=settings.seed, use_cpu=loaded.device == "cpu", bf16=loaded.device != "cpu",
        gradient_checkpointing=False, logging_steps=1, save_strategy="steps", save_steps=settings.save_steps,
        save_total_limit=1, report_to="none", disable_tqdm=True, include_num_input_tokens_seen="non_padding",
        max_length=settings.max_length, completion_only_loss=True)
    trainer = SFTTrainer(model=loaded.model, args=config, train_dataset=Dataset.from_list([e.as_row() for e in examples]),
                         processing_class=loaded.tokenizer, peft_config=lora_config(settings.rank))
    trainer.remove_callback(PrinterCallback)
    t0 = time.perf_counter()
    trainer.train()
    return trainer.model, time.perf_counter() - t0, int(trainer.state.num_input_tokens_seen)


def new_recipe(examples: list, settings: TrainSettings) -> tuple[Any, float, int, str]:
    """`redline train sft`'s fitting path. Returns (trained model, seconds, tokens, precision)."""
    loaded = load_base("smollm2-135m")
    rows = [r for r in (encode_example(loaded.tokenizer, e, settings.max_length) for e in examples) if r]
    precision = pick_precision(loaded.device, settings.precision)
    model = lora_model(loaded, settings.rank, settings.seed)
    figures = fit(model, rows, sft_loss(loaded.tokenizer.pad_token_id, loaded.device), len, plan(settings),
                  precision, None, None, lambda line: None)
    return model, figures.seconds, figures.tokens, precision.name


def answer_loss(model: Any, rows: list[Encoded], pad_id: int, batch: int = 8) -> float:
    """Mean answer-token loss over `rows`, float32, no grad: one yardstick for every recipe."""
    import torch

    total, count = 0.0, 0
    model.eval()
    with torch.inference_mode():
        for i in range(0, len(rows), batch):
            logp, _ = answer_logprobs(model, rows[i: i + batch], pad_id, "cpu")
            total, count = total - float(logp.sum()), count + logp.numel()
    return total / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="Optimiser steps per recipe.")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/gsm8k/train.jsonl"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--breakdown", action="store_true", help="Also the new loop in float32, and ungrouped.")
    args = parser.parse_args()

    import torch

    data = read_training_data(args.data)
    examples = random.Random(args.seed).sample(data.examples, args.steps * args.batch_size)
    settings = TrainSettings(epochs=1.0, batch_size=args.batch_size, seed=args.seed)
    tokenizer = load_base("smollm2-135m").tokenizer
    rows = [r for r in (encode_example(tokenizer, e, settings.max_length) for e in examples) if r]
    print(f"{len(examples)} rows of {args.data} (seed {args.seed}), {sum(map(len, rows))} tokens; batch "
          f"{args.batch_size}, {args.steps} steps; LoRA r={settings.rank}; {torch.get_num_threads()} threads")

    results: list[tuple[str, float, float]] = []

    def report(name: str, model: Any, seconds: float, tokens: int) -> float:
        loss = answer_loss(model, rows, tokenizer.pad_token_id)
        results.append((name, tokens / seconds, loss))
        print(f"{name:<44} {tokens / seconds:7.1f} tok/s  ({tokens} tokens in {seconds:.0f} s)  loss {loss:.4f}",
              flush=True)
        return loss

    with tempfile.TemporaryDirectory() as workdir:
        model, seconds, tokens = previous_recipe(examples, settings, Path(workdir))
        report("previous (TRL, float32, padded)", model, seconds, tokens)
    variants = [("new default", settings)]
    if args.breakdown:
        variants += [("new loop, float32, grouped", replace(settings, precision="float32")),
                     ("new loop, default precision, ungrouped", replace(settings, group_by_length=False))]
    for name, variant in variants:
        model, seconds, tokens, precision = new_recipe(examples, variant)
        report(f"{name} ({precision})", model, seconds, tokens)
    (_, base_speed, base_loss), (_, new_speed, new_loss) = results[0], results[1]
    print(f"loss difference new vs previous: {100 * (new_loss - base_loss) / base_loss:+.2f}%")
    print(f"speedup {new_speed / base_speed:.2f}")


if __name__ == "__main__":
    main()
