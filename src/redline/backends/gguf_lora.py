"""PEFT LoRA adapters as GGUF LoRA adapters, so llama.cpp runs them over the GGUF base they were trained on.

A PEFT adapter (e.g. from `redline train`) holds, per adapted projection, `lora_A` (rank x in) and
`lora_B` (out x rank) in Hugging Face's layout. llama.cpp reads the same pair as `<tensor>.lora_a` /
`.lora_b` next to the base's tensor names (`blk.N.attn_q.weight`, ...) and scales B·A by
`adapter.lora.alpha / rank`, as PEFT does. One difference is real: GGUF stores Llama's q and k
projections with their rows permuted for its rotary-embedding layout (llama.cpp's converter permutes
them on the way in, transformers un-permutes them when it loads a GGUF), so B's rows of q and k are
permuted the same way here; A acts on the input side and stays as it is.

A conversion takes a second or two; its result is cached in the user's cache folder
(`$XDG_CACHE_HOME/redline/lora`, else `~/.cache/redline/lora`), keyed by the adapter's content hash.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path

import numpy as np

from redline.errors import BackendError

_FORMAT = "redline-gguf-lora-1"  # part of the cache key: bump it when the conversion changes
_MODULES = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
            "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}
_NAME = re.compile(r"^base_model\.model\.model\.layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$")


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "redline" / "lora"


def gguf_adapter(adapter: Path, base: Path) -> Path:
    """The GGUF LoRA file for the PEFT adapter folder `adapter` over the GGUF model `base`,
    converted on first use and cached by content hash."""
    digest = hashlib.sha256(_FORMAT.encode())
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        digest.update((adapter / name).read_bytes())
    digest.update(f"{base.name}:{base.stat().st_size}".encode())
    out = cache_dir() / f"{adapter.name}-{digest.hexdigest()[:16]}.gguf"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_suffix(f".{os.getpid()}.part")
        try:
            convert(adapter, base, partial)
            os.replace(partial, out)
        finally:
            partial.unlink(missing_ok=True)
    return out


def _scale_alpha(config: dict) -> float:
    """The alpha llama.cpp needs to scale B·A as PEFT does (alpha/r, or alpha/sqrt(r) with rsLoRA)."""
    unsupported = [k for k in ("use_dora", "rank_pattern", "alpha_pattern", "modules_to_save") if config.get(k)]
    if config.get("peft_type", "LORA") != "LORA" or unsupported:
        raise BackendError(f"this LoRA uses {', '.join(unsupported) or config.get('peft_type')}, which the llama.cpp "
                           "engine does not run; use REDLINE_ENGINE=transformers")
    rank, alpha = int(config["r"]), float(config["lora_alpha"])
    return alpha * math.sqrt(rank) if config.get("use_rslora") else alpha


def _permute_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's q/k row order: within each head, the two rotary halves interleaved."""
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2) \
        .reshape(weight.shape)


def convert(adapter: Path, base: Path, out: Path) -> None:
    """Write the GGUF LoRA of the PEFT adapter folder `adapter` (over the GGUF `base`) to `out`."""
    import gguf
    from safetensors import SafetensorError, safe_open

    try:
        config = json.loads((adapter / "adapter_config.json").read_text())
        alpha = _scale_alpha(config)
    except (ValueError, KeyError, TypeError) as exc:
        raise BackendError(f"adapter {adapter}: unreadable adapter_config.json ({exc})") from None
    reader = gguf.GGUFReader(base)
    arch = reader.fields["general.architecture"].contents()
    heads = {"attn_q": int(reader.fields[f"{arch}.attention.head_count"].contents())}
    heads["attn_k"] = int(reader.fields[f"{arch}.attention.head_count_kv"].contents()) \
        if f"{arch}.attention.head_count_kv" in reader.fields else heads["attn_q"]
    writer = gguf.GGUFWriter(out, arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    try:
        weights = safe_open(str(adapter / "adapter_model.safetensors"), framework="pt")
    except (SafetensorError, OSError) as exc:
        raise BackendError(f"adapter {adapter}: unreadable adapter_model.safetensors ({exc})") from None
    with weights:
        for key in sorted(weights.keys()):
            match = _NAME.match(key)
            if match is None or match.group(2) not in _MODULES:
                raise BackendError(f"adapter {adapter}: the llama.cpp engine cannot place {key!r}; "
                                   "use REDLINE_ENGINE=transformers")
            layer, module, side = match.groups()
            target = _MODULES[module]
            array = weights.get_tensor(key).float().numpy()
            if side == "B" and target in heads:
                array = _permute_rows(array, heads[target])
            writer.add_tensor(f"blk.{layer}.{target}.weight.lora_{side.lower()}", np.ascontiguousarray(array))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
