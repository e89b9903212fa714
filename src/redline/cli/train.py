"""`redline train ...`: making weights (SFT, rejection-sampling rounds, DPO, PRM) with PEFT LoRA."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from redline.cli import train_prm
from redline.cli.common import MicroBatchOpt, console

train_app = typer.Typer(help="Train adapters and process reward models on redline's own data (PEFT LoRA).",
                        no_args_is_help=True)

DataArg = Annotated[Path, typer.Argument(help="JSONL from `redline export --format sft`, or any dataset `redline eval` reads (gold solutions become 'Step k:' lines).")]
BaseOpt = Annotated[str, typer.Option("--base", help="Base model: 'smollm2-135m' (embedded, default), a .gguf file or an HF model directory.")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Adapter folder (adapter + README.md model card); a rerun resumes its last checkpoint.")]
DevOpt = Annotated[Optional[Path], typer.Option("--dev", help="Held-out dev set: training refuses data whose questions appear in it.")]
EpochsOpt = Annotated[float, typer.Option("--epochs", min=0.01, help="Passes over the data.")]
LrOpt = Annotated[float, typer.Option("--lr", min=0.0, help="Peak learning rate (cosine schedule, 5% warm-up).")]
RankOpt = Annotated[int, typer.Option("--rank", min=1, help="LoRA rank (alpha = 2 x rank).")]
MaxExamplesOpt = Annotated[Optional[int], typer.Option("--max-examples", min=1, help="Train on a seeded random subset of this size.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the subset, the data order and the LoRA init.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Examples per optimiser step.")]
MaxStepsOpt = Annotated[int, typer.Option("--max-steps", help="Stop after this many optimiser steps (> 0; for smoke runs).")]
PrecisionOpt = Annotated[str, typer.Option("--precision", help="Forward pass: 'auto' (bf16 where the CPU has avx512_bf16/amx_bf16 or the GPU supports it, else float32), 'bf16' or 'float32'.")]


def _say(line: str) -> None:
    console.print(line, highlight=False)


def _settings(epochs: float, lr: float, rank: int, max_examples: int | None, seed: int, batch_size: int,
              micro_batch: int, max_steps: int, precision: str) -> "TrainSettings":
    from redline.errors import RedlineError
    from redline.train.adapters import TrainSettings
    from redline.train.precision import PRECISIONS

    if precision not in PRECISIONS:
        raise RedlineError(f"--precision: unknown {precision!r}; use one of {', '.join(PRECISIONS)}")
    return TrainSettings(epochs=epochs, lr=lr, rank=rank, max_examples=max_examples, seed=seed,
                         batch_size=batch_size, micro_batch=micro_batch, max_steps=max_steps if max_steps > 0 else -1,
                         precision=precision)


@train_app.command("sft")
def sft(
    data: DataArg,
    out: OutOpt = Path("adapters/sft"),
    base: BaseOpt = "smollm2-135m",
    dev: DevOpt = None,
    epochs: EpochsOpt = 1.0,
    lr: LrOpt = 3e-4,
    rank: RankOpt = 32,
    max_examples: MaxExamplesOpt = None,
    seed: SeedOpt = 0,
    batch_size: BatchOpt = 8,
    micro_batch: MicroBatchOpt = 8,
    max_steps: MaxStepsOpt = 0,
    precision: PrecisionOpt = "auto",
) -> None:
    """Supervised fine-tuning of a LoRA adapter on solve-format pairs (loss on the answer only)."""
    from redline.backends.local import resolve_model_path
    from redline.train.card import invocation
    from redline.train.data import check_no_overlap, read_training_data

    resolve_model_path(base)
    settings = _settings(epochs, lr, rank, max_examples, seed, batch_size, micro_batch, max_steps, precision)
    training = read_training_data(data, max_examples, seed)
    check_no_overlap([e.question for e in training.examples], dev)
    _quiet()
    from redline.train.sft import train_sft

    _done(train_sft(training, base, out, settings, invocation(), _say))


@train_app.command("dpo")
def dpo(
    data: Annotated[Path, typer.Argument(help="JSONL from `redline export --format step-dpo` ({prompt, chosen, rejected}).")],
    out: OutOpt = Path("adapters/dpo"),
    base: BaseOpt = "smollm2-135m",
    dev: DevOpt = None,
    beta: Annotated[float, typer.Option("--beta", min=0.0, help="DPO temperature: how far the adapter may move from the base.")] = 0.1,
    epochs: EpochsOpt = 1.0,
    lr: LrOpt = 5e-5,
    rank: RankOpt = 32,
    max_examples: MaxExamplesOpt = None,
    seed: SeedOpt = 0,
    batch_size: BatchOpt = 8,
    micro_batch: MicroBatchOpt = 8,
    max_steps: MaxStepsOpt = 0,
    precision: PrecisionOpt = "auto",
) -> None:
    """Step-DPO: prefer the corrected step over the first wrong one, after the same correct prefix."""
    import random

    from redline.backends.local import resolve_model_path
    from redline.train.card import invocation
    from redline.train.data import check_no_overlap
    from redline.train.dpo import read_pairs

    resolve_model_path(base)
    settings = _settings(epochs, lr, rank, max_examples, seed, batch_size, micro_batch, max_steps, precision)
    pairs = read_pairs(data)
    if max_examples is not None and max_examples < len(pairs):
        pairs = random.Random(seed).sample(pairs, max_examples)
    check_no_overlap([p.question for p in pairs], dev)
    _quiet()
    from redline.train.dpo import train_dpo

    _done(train_dpo(data, pairs, base, out, settings, invocation(), beta, _say))


@train_app.command("rft")
def rft(
    data: Annotated[Path, typer.Argument(help="Training problems with gold worked solutions, any format `redline eval` reads (GSM8K layout and others).")],
    dev: Annotated[Path, typer.Option("--dev", help="Held-apart dev set: each round is graded on it (and training refuses its questions).")],
    out: OutOpt = Path("adapters/rft"),
    base: BaseOpt = "smollm2-135m",
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="Sample -> filter -> fine-tune rounds.")] = 2,
    k: Annotated[int, typer.Option("-k", min=1, help="Samples per training problem per round.")] = 4,
    temperature: Annotated[float, typer.Option("--temperature", min=0.01, help="Sampling temperature.")] = 0.7,
    verifier: Annotated[str, typer.Option("--verifier", help="Verifier spec a kept solution must pass on every step.")] = "arith",
    dev_limit: Annotated[Optional[int], typer.Option("--dev-limit", min=1, help="Grade on the first N dev problems only.")] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="Most new tokens per sampled solution.")] = 192,
    epochs: EpochsOpt = 1.0,
    lr: LrOpt = 3e-4,
    rank: RankOpt = 32,
    max_examples: MaxExamplesOpt = None,
    seed: SeedOpt = 0,
    batch_size: BatchOpt = 8,
    micro_batch: MicroBatchOpt = 8,
    max_steps: MaxStepsOpt = 0,
    precision: PrecisionOpt = "auto",
) -> None:
    """STaR / rejection-sampling rounds: keep correct, verified, distinct samples; fine-tune; grade on --dev."""
    from redline.backends.local import resolve_model_path
    from redline.bench.datasets import read_dataset
    from redline.cli.common import make_runtime
    from redline.train.card import invocation
    from redline.train.data import check_no_overlap, read_training_data
    from redline.train.rft import RftSettings, run_rft

    resolve_model_path(base)
    settings = _settings(epochs, lr, rank, max_examples, seed, batch_size, micro_batch, max_steps, precision)
    training = read_training_data(data, max_examples, seed)  # refuses bad lines and problems without solutions
    check_no_overlap([e.question for e in training.examples], dev)
    dev_problems = read_dataset(dev, limit=dev_limit).problems
    scorer = make_runtime("local", base).verifier(verifier)
    _quiet()
    report = run_rft(training.examples, dev_problems, base, out, RftSettings(rounds, k, temperature, max_tokens, verifier),
                     settings, scorer, invocation(), _say)
    best = report.best
    console.print(f"base {report.base_accuracy:.1%}; " + "; ".join(
        f"round {r.number} {r.dev_accuracy:.1%}{'' if r.improved else ' (no improvement)'}" for r in report.rounds)
        + (f" -> best adapter {best.adapter}" if best else " -> no round beat the base"), highlight=False)


def _quiet() -> None:
    """No per-map progress bars from `datasets` (the training progress line says enough), and none of
    the warnings that say nothing to act on: PEFT looks for a config.json beside the base, which a
    GGUF base has not, at every checkpoint; transformers renames `gradient_checkpointing`."""
    import warnings

    import datasets

    datasets.disable_progress_bars()
    warnings.filterwarnings("ignore", message="Could not find a config file in")
    warnings.filterwarnings("ignore", message=".*gradient_checkpointing.* is deprecated", category=FutureWarning)


def _done(result: "TrainResult") -> None:
    f = result.figures
    console.print(f"trained on {result.examples} examples: {f.steps} steps, {f.tokens} tokens in {f.seconds:.0f} s "
                  f"({f.tokens_per_s:.0f} tokens/s, {f.precision}) -> {result.out}", highlight=False)


def register(app: typer.Typer) -> None:
    train_prm.register(train_app)
    app.add_typer(train_app, name="train")
