"""Training checkpoints that a rerun resumes from: the trainable (LoRA) weights and the AdamW
moments in one safetensors file, the step and figures in JSON. Nothing here unpickles, so a
checkpoint folder cannot run code when it is loaded.

The data order and the learning rate are functions of (seed, step), so they need no saved state.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

_TENSORS = "trainable.safetensors"
_STATE = "state.json"
_MOMENTS = ("exp_avg", "exp_avg_sq")


def trainable(model: Any) -> dict[str, Any]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(folder: Path, step: int, model: Any, optimiser: Any, state: dict[str, Any]) -> Path:
    """Write checkpoint-`step` in `folder` (atomically: a half-written one is never resumed) and
    drop the older ones."""
    from safetensors.torch import save_file

    tensors: dict[str, Any] = {}
    for name, p in trainable(model).items():
        tensors[name] = p.detach().contiguous()
        moments = optimiser.state.get(p, {})
        for key in _MOMENTS:
            if key in moments:
                tensors[f"{name}::{key}"] = moments[key].contiguous()
    final = folder / f"checkpoint-{step}"
    partial = folder / f".partial-{step}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    save_file(tensors, str(partial / _TENSORS))
    (partial / _STATE).write_text(json.dumps({"step": step, **state}), encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    for old in folder.glob("checkpoint-*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, model: Any, optimiser: Any) -> dict[str, Any]:
    """Restore the trainable weights and the AdamW moments; returns the saved state (with 'step')."""
    import torch
    from safetensors.torch import load_file

    tensors = load_file(str(Path(path) / _TENSORS))
    state = json.loads((Path(path) / _STATE).read_text(encoding="utf-8"))
    with torch.no_grad():
        for name, p in trainable(model).items():
            p.copy_(tensors[name])
            if f"{name}::exp_avg" in tensors:
                optimiser.state[p] = {
                    "step": torch.tensor(float(state["step"]), dtype=torch.float32),
                    **{key: tensors[f"{name}::{key}"].to(p.device) for key in _MOMENTS},
                }
    return state
