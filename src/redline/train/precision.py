"""Which number format training computes in: bf16 where the hardware does bf16 matrix products,
float32 elsewhere.

Where bf16 is native is `redline.hardware.bf16_supported`. Only the forward pass runs under bf16
autocast: the weights, the LoRA parameters, their gradients and the optimiser state stay float32,
and the loss is taken in float32, so the loss curve matches a float32 run (see bench/train_speed.py).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from redline.hardware import bf16_supported

PRECISIONS = ("auto", "bf16", "float32")


@dataclass(frozen=True)
class Precision:
    """How the forward pass computes: 'bf16' (autocast over float32 weights) or 'float32'."""

    name: str
    device: str

    def autocast(self) -> AbstractContextManager[Any]:
        import torch

        if self.name == "bf16":
            return torch.autocast(device_type=self.device, dtype=torch.bfloat16)
        return nullcontext()


def pick_precision(device: str, requested: str = "auto") -> Precision:
    """'auto' is bf16 where `bf16_supported`, float32 elsewhere; 'bf16' and 'float32' force it."""
    from redline.errors import RedlineError

    if requested not in PRECISIONS:
        raise RedlineError(f"unknown precision {requested!r}; use one of {', '.join(PRECISIONS)}")
    if requested == "auto":
        requested = "bf16" if bf16_supported(device) else "float32"
    return Precision(requested, device)
