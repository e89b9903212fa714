"""What the hardware computes natively, read once where training and PRM scoring both need it.

On a CPU, bf16 pays only with native instructions (`avx512_bf16` or `amx_bf16`, which PyTorch
reaches through oneDNN); without them oneDNN emulates bf16 and is slower than float32.
"""

from __future__ import annotations

from pathlib import Path

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
