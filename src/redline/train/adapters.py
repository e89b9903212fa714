"""What every `redline train` command shares: the base model, the LoRA settings, the fitting
loop's plan, checkpoints that a rerun resumes from, and the adapter saved in bf16.

An adapter is a PEFT folder whose `adapter_config.json` names its base: the embedded model's
label, or an HF model directory. The local backend reads that name to load and merge it.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from redline.errors import RedlineError

TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
CHECKPOINTS = "checkpoints"
_RUN_FILE = "run.json"


@dataclass(frozen=True)
class TrainSettings:
    """Knobs shared by sft/dpo/rft; each is recorded in the model card."""

    epochs: float = 1.0
    lr: float = 3e-4
    rank: int = 32
    max_examples: int | None = None
    seed: int = 0
    batch_size: int = 8
    micro_batch: int = 8  # rows per forward pass: bounds memory, leaves the step as it is (loop.batch_loss)
    max_length: int = 512
    max_steps: int = -1  # > 0 caps the optimiser steps (tests, smoke runs)
    save_steps: int = 25
    precision: str = "auto"  # bf16 where the hardware multiplies it natively, else float32 (train.precision)
    group_by_length: bool = True  # batches of similar length: little padding


@dataclass
class Base:
    """A base model ready to train: float32 weights, its tokenizer, and the name adapters record."""

    model: Any
    tokenizer: Any
    name: str  # what adapter_config.json's base_model_name_or_path gets
    device: str


def load_base(base: str) -> Base:
    """The embedded model (an alias), a .gguf file or an HF directory, in float32 for training.

    A missing base is a RedlineError before anything slow happens."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    from redline.backends.local import base_label, resolve_model_path

    directory, gguf = resolve_model_path(base)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    kwargs: dict[str, Any] = {"gguf_file": gguf} if gguf else {}
    tokenizer = AutoTokenizer.from_pretrained(directory, **kwargs)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, **kwargs)
    if gguf:  # GGUF weights are dequantised to float32 at load: plain weights, whatever the flags say
        model.hf_quantizer, model.is_quantized = None, False
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return Base(model, tokenizer, base_label(directory, gguf), device)


def lora_config(rank: int) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=TARGET_MODULES,
                      task_type="CAUSAL_LM")


def lora_model(loaded: Base, rank: int, seed: int, config: Any = None) -> Any:
    """`loaded.model` on its device with a fresh LoRA (seeded init, float32 weights) ready to train."""
    import torch
    from peft import get_peft_model

    torch.manual_seed(seed)
    model = get_peft_model(loaded.model.to(loaded.device), config or lora_config(rank))
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    return model


def plan(settings: TrainSettings) -> Any:
    """The fitting loop's plan for sft/dpo/rft: cosine schedule with 5% warm-up."""
    from redline.train.loop import Plan

    return Plan(epochs=settings.epochs, lr=settings.lr, batch_size=settings.batch_size, seed=settings.seed,
                max_steps=settings.max_steps, save_steps=settings.save_steps,
                group_by_length=settings.group_by_length, micro_batch=settings.micro_batch)


def resume_point(out: Path, run: dict[str, Any]) -> str | None:
    """The last checkpoint of this same run (same data, base and settings), or None to start fresh.

    A folder holding another run's checkpoints is an error: resuming it would mix two runs."""
    folder = out / CHECKPOINTS
    record = folder / _RUN_FILE
    checkpoints = sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[-1]))
    if record.exists() and checkpoints:
        if json.loads(record.read_text()) != run:
            raise RedlineError(f"{out} holds checkpoints of a different run (other data, base or settings); "
                               "pass another --out or delete it")
        return str(checkpoints[-1])
    folder.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(run, indent=1))
    return None


_HOW_NOT_WHAT = ("micro_batch",)  # settings that change memory, not the run: a resume may change them


def run_record(kind: str, data_sha256: str, base: str, settings: TrainSettings, **extra: Any) -> dict[str, Any]:
    """What makes two runs the same run (checkpoints of one resume the other)."""
    fields = {k: v for k, v in asdict(settings).items() if k not in _HOW_NOT_WHAT}
    return {"kind": kind, "data_sha256": data_sha256, "base": base, **fields, **extra}


def save_adapter(model: Any, out: Path, base_name: str) -> Path:
    """Save the trained LoRA in bf16 safetensors with its base's name; drop the checkpoints."""
    import torch
    from safetensors.torch import load_file, save_file

    out.mkdir(parents=True, exist_ok=True)
    for config in model.peft_config.values():
        config.base_model_name_or_path = base_name
    model.save_pretrained(str(out))
    weights = out / "adapter_model.safetensors"
    tensors = {k: v.to(torch.bfloat16).contiguous() for k, v in load_file(str(weights)).items()}
    save_file(tensors, str(weights), metadata={"format": "pt"})
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    return weights
