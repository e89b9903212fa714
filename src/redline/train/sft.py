"""Supervised fine-tuning of a LoRA adapter on solve-format pairs (TRL SFTTrainer + PEFT).

The rows are TRL conversational prompt-completion pairs rendered with the base's chat template,
so the model learns exactly what `solve` will show it, and only the answer carries loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from redline.errors import RedlineError
from redline.train.adapters import Base, TrainSettings, load_base, lora_config, resume_point, run_record, \
    save_adapter, trainer_kwargs
from redline.train.card import write_card
from redline.train.data import TrainingData
from redline.train.progress import Figures, ProgressCallback, StopOnInterrupt


class Interrupted(RedlineError):
    """Ctrl-C during training: a checkpoint was saved; the same command resumes from it."""

    exit_code = 130


@dataclass(frozen=True)
class TrainResult:
    out: Path
    base: str
    examples: int
    figures: Figures


def fit_lora(trainer_cls: Any, config: Any, dataset: Any, loaded: Base, settings: TrainSettings, out: Path,
             resume: str | None, say: Callable[[str], None]) -> Figures:
    """Fit a fresh LoRA with a TRL trainer (resuming when a checkpoint of this run exists) and save it
    in bf16; Ctrl-C saves a checkpoint and raises Interrupted. Returns the progress figures."""
    from transformers import PrinterCallback

    progress, stop = ProgressCallback(say), StopOnInterrupt()
    trainer = trainer_cls(model=loaded.model, args=config, train_dataset=dataset, processing_class=loaded.tokenizer,
                          peft_config=lora_config(settings.rank), callbacks=[progress, stop])
    trainer.remove_callback(PrinterCallback)  # ProgressCallback prints instead
    if resume:
        say(f"resuming from {resume}")
    with stop.installed():
        trainer.train(resume_from_checkpoint=resume)
    if stop.requested:
        raise Interrupted(f"interrupted after step {trainer.state.global_step}: checkpoint saved in "
                          f"{out}/checkpoints; rerun the same command to resume")
    save_adapter(trainer.model, out, loaded.name)
    return progress.figures


def train_sft(data: TrainingData, base: str | Base, out: Path, settings: TrainSettings, command: str,
              say: Callable[[str], None] = print, kind: str = "sft") -> TrainResult:
    """Fit a fresh LoRA on `data` over `base`; write the bf16 adapter and its model card to `out`."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    out = Path(out).expanduser()
    loaded = load_base(base) if isinstance(base, str) else base
    resume = resume_point(out, run_record(kind, data.sha256, loaded.name, settings, examples=len(data.examples)))
    dataset = Dataset.from_list([e.as_row() for e in data.examples])
    config = SFTConfig(**trainer_kwargs(settings, out, loaded.device), completion_only_loss=True)
    figures = fit_lora(SFTTrainer, config, dataset, loaded, settings, out, resume, say)
    write_card(out, f"{out.name}: SFT LoRA", kind, loaded.name, data.path, data.sha256, len(data.examples),
               settings, figures, command)
    return TrainResult(out, loaded.name, len(data.examples), figures)
