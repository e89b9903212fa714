"""The model card (README.md) written next to every adapter: enough to reproduce and judge it."""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from redline.train.adapters import TrainSettings
from redline.train.progress import Figures


def invocation() -> str:
    """The exact command line that is running, as a user would retype it."""
    argv = [Path(sys.argv[0]).name if sys.argv[0].endswith("redline") else sys.argv[0], *sys.argv[1:]]
    return shlex.join(argv)


def write_card(out: Path, title: str, kind: str, base: str, data: Path, data_sha256: str, examples: int,
               settings: TrainSettings, figures: Figures, command: str, notes: list[str] | None = None,
               results: dict[str, Any] | None = None) -> Path:
    """README.md in `out`: what was trained, on what (file + sha256), how (command, settings), figures."""
    knobs = ", ".join(f"{k}={v}" for k, v in asdict(settings).items())
    lines = [
        f"# {title}", "",
        f"A PEFT LoRA adapter made by `redline train {kind}`. Use it with `--model PATH_TO_THIS_FOLDER` "
        "(e.g. `redline solve \"...\" --model " + str(out) + "`); the local backend merges it into the base at load.", "",
        f"- base: {base}",
        f"- data: `{data}` (sha256 `{data_sha256}`), {examples} training examples",
        f"- command: `{command}`",
        f"- settings: {knobs}; LoRA alpha = 2 x rank, dropout 0, q/k/v/o/gate/up/down projections; "
        "AdamW, cosine schedule, 5% warm-up; batches grouped by length; loss on the completion only; saved in bf16",
        f"- training: {figures.steps} optimiser steps this session"
        + (f" (resumed from a checkpoint at step {figures.resumed_at})" if figures.resumed_at else "")
        + f", {figures.tokens} tokens in "
        f"{figures.seconds:.0f} s ({figures.tokens_per_s:.0f} tokens/s, {figures.precision} forward pass)"
        + (f", final logged loss {figures.loss:.3f}" if figures.loss is not None else ""),
    ]
    for name, value in (results or {}).items():
        lines.append(f"- {name}: {value}")
    if notes:
        lines += ["", *notes]
    path = out / "README.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    figures_json = {"steps": figures.steps, "tokens": figures.tokens, "seconds": round(figures.seconds, 1),
                    "tokens_per_s": round(figures.tokens_per_s, 1), "final_loss": figures.loss,
                    "precision": figures.precision, "resumed_at": figures.resumed_at}
    (out / "training.json").write_text(json.dumps(figures_json, indent=1) + "\n", encoding="utf-8")
    return path
