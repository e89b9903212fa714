"""`hf-prm`: published process reward models through transformers.

Two input formats:
- `math-shepherd` (peiyi9979/math-shepherd-mistral-7b-prm and kin): a causal LM reads
  "question step1 ки\\nstep2 ки ..."; a step's score is P('+') / (P('+') + P('-')) of the
  next-token logits at its tag `ки`.
- `qwen-prm` (Qwen/Qwen2.5-Math-PRM-7B and kin): the chat-formatted solution with an
  `<extra_0>` separator after each step; a two-class head gives P(correct) at each separator.

Steps (and the question) are sanitised: the tag text is removed from them, so the model sees
exactly one tag per step. A step is read at the token holding the tag's last character, found
through the tokenizer's character offsets: a tokenizer that merges the tag with a neighbour, or
splits it (SmolLM2's byte-level BPE writes `ки` as 'Ġк' + 'и'), still yields the position whose
next-token logits follow the whole tag. The model loads once per runtime, on GPU when one is
present; `trust_remote_code` is off unless asked.

A PEFT adapter folder (adapter_config.json, as `redline train prm` writes) loads through the
local backend's `load_model`, which merges the LoRA into the base it names; its format is
math-shepherd.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

from pydantic import Field

from redline.compute import run_async, run_sync
from redline.errors import RedlineError
from redline.registry import VERIFIERS, Params
from redline.runtime import Runtime
from redline.verifiers.base import clamp01

MATH_SHEPHERD_TAG, GOOD, BAD = "ки", "+", "-"
QWEN_SEPARATOR = "<extra_0>"
QWEN_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
_HUB_ID = re.compile(r"^[\w.\-]+/[\w.\-]+$")


class HfPrmParams(Params):
    path: str = Field(description="local model directory or hub id")
    format: Literal["auto", "math-shepherd", "qwen-prm"] = Field("auto", description="input/output convention")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda when available")
    trust_remote_code: bool = Field(False, description="allow the model's own code (needed by Qwen2.5-Math-PRM)")
    max_length: int = Field(4096, ge=16, description="longer inputs are cut; steps past the cut score neutral")
    neutral: float = Field(0.5, ge=0, le=1, description="score of a step cut off by max_length")


@dataclass
class LoadedPrm:
    model: Any
    tokenizer: Any
    format: str
    device: str


def _resolve(path: str) -> str:
    local = Path(path).expanduser()
    if local.exists():
        if not (local / "config.json").is_file() and not is_adapter(local):
            raise RedlineError(f"hf-prm: {local} has neither config.json nor adapter_config.json; "
                               "pass a transformers model directory or a PEFT adapter folder")
        return str(local)
    if _HUB_ID.match(path) and not path.startswith((".", "/", "~")):
        return path
    raise RedlineError(f"hf-prm: no model at {path!r}: pass a local model directory or a hub id 'owner/name'")


def detect_format(config: Any, tokenizer: Any) -> str:
    """qwen-prm when the tokenizer has `<extra_0>` and the model has a 2-label head; math-shepherd
    when the tokenizer has the `ки` tag; otherwise ask the user."""
    vocab = tokenizer.get_vocab()
    architectures = " ".join(getattr(config, "architectures", None) or [])
    two_class = getattr(config, "num_labels", 0) == 2 and ("Classification" in architectures
                                                          or "ProcessReward" in architectures)
    if QWEN_SEPARATOR in vocab and (two_class or "ProcessReward" in architectures):
        return "qwen-prm"
    if MATH_SHEPHERD_TAG in vocab or f"▁{MATH_SHEPHERD_TAG}" in vocab or f"Ġ{MATH_SHEPHERD_TAG}" in vocab:
        return "math-shepherd"
    raise RedlineError("hf-prm: cannot tell the model's format; pass format=math-shepherd or format=qwen-prm")


def is_adapter(path: Path) -> bool:
    return (path / "adapter_config.json").is_file()


def _load_adapter(source: str, params: HfPrmParams) -> LoadedPrm:
    """A LoRA PRM from `redline train prm`: merged into its base by the local backend's loader."""
    from redline.backends.local import load_model
    from redline.errors import BackendError

    if params.format == "qwen-prm":
        raise RedlineError("hf-prm: an adapter folder is a math-shepherd PRM (a causal LM), not qwen-prm")
    try:
        lm = load_model(source)
    except BackendError as e:
        raise RedlineError(f"hf-prm: cannot load {params.path!r}: {e}") from None
    return LoadedPrm(lm.model, lm.tokenizer, "math-shepherd", lm.device)


def load_prm(params: HfPrmParams) -> LoadedPrm:
    source = _resolve(params.path)  # before the slow imports, so a bad path fails fast
    if is_adapter(Path(source)):
        return _load_adapter(source, params)
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForTokenClassification, \
        AutoTokenizer

    device = ("cuda" if torch.cuda.is_available() else "cpu") if params.device == "auto" else params.device
    if device == "cuda" and not torch.cuda.is_available():
        raise RedlineError("hf-prm: device=cuda asked for, but no GPU is available")
    remote = params.trust_remote_code
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=remote)
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=remote)
    except (OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise RedlineError(f"hf-prm: cannot load {params.path!r}: {first}") from None
    if not getattr(tokenizer, "is_fast", False):
        raise RedlineError("hf-prm needs a fast tokenizer (tokenizer.json) to locate step tags")
    fmt = detect_format(config, tokenizer) if params.format == "auto" else params.format
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    if fmt == "math-shepherd":
        loader = AutoModelForCausalLM
    elif getattr(config, "auto_map", None) and "AutoModel" in config.auto_map:
        if not remote:
            raise RedlineError(f"hf-prm: {params.path!r} ships its own model code; "
                               "pass trust_remote_code=true if you trust it")
        loader = AutoModel
    else:
        loader = AutoModelForTokenClassification
    try:
        model = loader.from_pretrained(source, dtype=dtype, trust_remote_code=remote).to(device)
    except (OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise RedlineError(f"hf-prm: cannot load {params.path!r} as {fmt}: {first}") from None
    model.eval()
    return LoadedPrm(model, tokenizer, fmt, device)


def _clean(text: str, tag: str) -> str:
    return text.replace(tag, " ").strip() or "."


def build_input(fmt: str, tokenizer: Any, question: str, steps: Sequence[str]) -> tuple[str, list[int]]:
    """The model's input text and the character offset of the last character of each step's tag."""
    tag = MATH_SHEPHERD_TAG if fmt == "math-shepherd" else QWEN_SEPARATOR
    steps = [_clean(s, tag) for s in steps]
    question = _clean(question, tag)
    if fmt == "math-shepherd":
        text, offsets = f"{question} ", []
        for i, step in enumerate(steps):
            text += f"{step} "
            offsets.append(len(text) + len(tag) - 1)
            text += tag + ("\n" if i < len(steps) - 1 else "")
        return text, offsets
    body = "".join(f"{s}{tag}" for s in steps)
    messages = [{"role": "system", "content": QWEN_SYSTEM}, {"role": "user", "content": question},
                {"role": "assistant", "content": body}]
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    else:
        text = f"{QWEN_SYSTEM}\n{question}\n{body}"
    start = text.index(body)
    offsets, pos = [], start
    for step in steps:
        pos += len(step)
        offsets.append(pos + len(tag) - 1)
        pos += len(tag)
    return text, offsets


def token_positions(offset_mapping: Sequence[tuple[int, int]], char_positions: Sequence[int]) -> list[int | None]:
    """Index of the last token covering each character position (None when it was cut off); the
    last, because a byte-level tokenizer may spread one character over several tokens."""
    out: list[int | None] = []
    for char in char_positions:
        covering = [i for i, (a, b) in enumerate(offset_mapping) if a <= char < b]
        out.append(covering[-1] if covering else None)
    return out


def label_ids(tokenizer: Any) -> tuple[int, int]:
    """The token ids of '+' and '-' whose logits give a step's score, as the Math-Shepherd
    reference takes them: the ids of "+ -". `redline train prm` trains these same ids."""
    ids = tokenizer.encode(f"{GOOD} {BAD}", add_special_tokens=False)
    if len(ids) != 2:
        raise RedlineError(f"hf-prm: the tokenizer splits '{GOOD} {BAD}' into {len(ids)} tokens, not 2; "
                           "not a Math-Shepherd model?")
    return ids[0], ids[1]


def encode_input(fmt: str, tokenizer: Any, question: str, steps: Sequence[str],
                 max_length: int) -> tuple[list[int], list[int | None]]:
    """Token ids of the model's input and each step's read position (None past `max_length`);
    shared by scoring and by `redline train prm`, so training and scoring read the same token."""
    text, chars = build_input(fmt, tokenizer, question, steps)
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=fmt == "math-shepherd", truncation=True,
                    max_length=max_length)
    return list(enc["input_ids"]), token_positions(enc["offset_mapping"], chars)


class HfPrmVerifier:
    name = "hf-prm"

    def __init__(self, loaded: LoadedPrm, params: HfPrmParams) -> None:
        self.loaded = loaded
        self.params = params
        self.neutral = params.neutral  # steps past max_length; the sanity rules cap all-neutral solutions
        if loaded.format == "math-shepherd":
            self.good_id, self.bad_id = label_ids(loaded.tokenizer)

    def score_sync(self, question: str, steps: Sequence[str]) -> list[float]:
        import torch

        if not steps:
            return []
        lm = self.loaded
        ids, positions = encode_input(lm.format, lm.tokenizer, question, steps, self.params.max_length)
        kept = sorted({p for p in positions if p is not None})
        only_tags = lm.format == "math-shepherd" and bool(kept)  # a causal LM's vocabulary head, at the tags only
        extra = {"logits_to_keep": torch.tensor(kept, device=lm.device)} if only_tags else {}
        row = {p: i if only_tags else p for i, p in enumerate(kept)}
        with torch.inference_mode():
            out = lm.model(input_ids=torch.tensor([ids], device=lm.device), **extra)
        logits = (out.logits if hasattr(out, "logits") else out[0])[0].float()
        if lm.format == "math-shepherd":
            pair = logits[:, [self.good_id, self.bad_id]]
        else:
            pair = logits[:, [1, 0]]
        probs = torch.softmax(pair, dim=-1)[:, 0].cpu().tolist()
        if any(p is None for p in positions):
            warnings.warn(f"hf-prm: input longer than max_length={self.params.max_length}; "
                          "steps past the cut get the neutral score", stacklevel=2)
        return [self.params.neutral if p is None else clamp01(probs[row[p]]) for p in positions]

    async def score(self, question: str, steps: Sequence[str]) -> list[float]:
        return await run_async(self.score_sync, question, list(steps))


@VERIFIERS.register("hf-prm", HfPrmParams, "a published PRM via transformers: hf-prm:PATH,format=math-shepherd|qwen-prm",
                    positional=("path",))
def build_hf_prm(params: HfPrmParams, runtime: Runtime) -> HfPrmVerifier:
    loaded = runtime.cached(f"hf-prm:{params.path}:{params.format}:{params.device}:{params.trust_remote_code}",
                            lambda: run_sync(load_prm, params))
    return HfPrmVerifier(loaded, params)
