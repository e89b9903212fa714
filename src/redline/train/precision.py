"""Which number format training computes in: bf16 where the hardware does bf16 matrix products,
float32 elsewhere.

On a CPU, bf16 pays only with native instructions (`avx512_bf16` or `amx_bf16`, which PyTorch
reaches through oneDNN); without them oneDNN emulates bf16 and is slower than float32. On a GPU,
bf16 when the card supports it. Only the forward pass runs under bf16 autocast: the weights, the
LoRA parameters, their gradients and the optimiser state stay float32, and the loss is taken in
float32, so the loss curve matches a float32 run (see bench/train_speed.py).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PRECISIONS = ("auto", "bf16", "float32")
_CPU_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo does not exist, as on macOS or Windows)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    line = next((line for line in text.splitlines() if line.startswith(("flags", "Features"))), "")
    return set(line.partition(":")[2].split())


def bf16_supported(device: str) -> bool:
    """Whether `device` multiplies bf16 matrices natively (so bf16 is faster, not just smaller)."""
    import torch

    if device == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return bool(_CPU_BF16_FLAGS & cpu_flags()) and torch.backends.mkldnn.is_available()


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
