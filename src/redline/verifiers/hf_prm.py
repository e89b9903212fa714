"""`hf-prm`: process reward models through transformers.

Three input formats:
- `math-shepherd` (peiyi9979/math-shepherd-mistral-7b-prm and kin, and what `redline train prm`
  makes): a causal LM reads "question step1 TAG\\nstep2 TAG ..."; a step's score is
  P('+') / (P('+') + P('-')) of the next-token logits at its tag.
- `token-classify` (what `redline train prm --export vllm` writes): the same text, read by a
  two-class token-classification head [wrong, right] at each tag: the form vLLM's pooling
  runner serves (`remote-prm:...,format=token-classify`).
- `qwen-prm` (Qwen/Qwen2.5-Math-PRM-7B and kin): the chat-formatted solution with an
  `<extra_0>` separator after each step; a two-class head gives P(correct) at each separator.

The step tag is one vocabulary token: `ки` where the tokenizer holds it whole (the published
Math-Shepherd models), else the first of `STEP_TAGS` that it does (SmolLM2 splits `ки` in two
but has `<file_sep>`), so vLLM's STEP pooling can find it by id. Steps (and the question) are
sanitised: the tag text is removed from them, so the model sees exactly one tag per step. A
step is read at the token holding the tag's last character, found through the tokenizer's
character offsets.

Speed: the solutions scored at the same moment (a strategy's candidates) share one padded
forward pass, and only the two output rows that matter are computed, at the tags only. On a
CPU with bf16 instructions (avx512_bf16 or AMX) and on GPUs the model runs in bfloat16.
The model loads once per runtime; `trust_remote_code` is off unless asked.

Cut: where a model folder holds a fitted center (`redline train prm` and `redline verifier
calibrate` write one; see `verifiers.calibration`), scores are shifted in log-odds so that it
falls at 0.5; `center=` overrides it (`center=0.5`: the raw scores).

A PEFT adapter folder (adapter_config.json, as `redline train prm` writes) loads through the
local backend's `load_model`, which merges the LoRA into the base it names; its format is
math-shepherd.
"""

from __future__ import annotations

import copy
import functools
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

from pydantic import Field

from redline.compute import run_async, run_sync
from redline.errors import RedlineError
from redline.hardware import bf16_supported
from redline.registry import VERIFIERS, Params
from redline.runtime import Runtime
from redline.verifiers.base import clamp01
from redline.verifiers.batching import MicroBatcher
from redline.verifiers.calibration import CALIBRATION_FILE, read_center, recenter

MATH_SHEPHERD_TAG, GOOD, BAD = "ки", "+", "-"
QWEN_SEPARATOR = "<extra_0>"
STEP_TAGS = (MATH_SHEPHERD_TAG, "<file_sep>", QWEN_SEPARATOR, "<|reserved_special_token_0|>")
TAG_CONFIG_KEY = "redline_step_tag"  # config.json of an exported token-classify PRM names its tag here
QWEN_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
_HUB_ID = re.compile(r"^[\w.\-]+/[\w.\-]+$")


class HfPrmParams(Params):
    path: str = Field(description="local model directory or hub id")
    format: Literal["auto", "math-shepherd", "token-classify", "qwen-prm"] = Field(
        "auto", description="input/output convention")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda when available")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="auto = bfloat16 on a GPU or a CPU with avx512_bf16/AMX, else float32")
    batch_size: int = Field(16, ge=1, description="most solutions in one forward pass")
    trust_remote_code: bool = Field(False, description="allow the model's own code (needed by Qwen2.5-Math-PRM)")
    max_length: int = Field(4096, ge=16, description="longer inputs are cut; steps past the cut score neutral")
    neutral: float = Field(0.5, ge=0, le=1, description="score of a step cut off by max_length")
    center: float | None = Field(None, gt=0, lt=1, description=(
        "the raw score that maps to 0.5 (StepCo's cut); default: the one fitted next to the model "
        f"({CALIBRATION_FILE}), else 0.5"))


@dataclass
class LoadedPrm:
    model: Any
    tokenizer: Any
    format: str
    device: str
    tag: str  # the step tag the input carries
    center: float | None = None  # the fitted cut found next to the model (verifiers.calibration)


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


def single_token_id(alone: Sequence[int], in_context: Sequence[int], decoded: Callable[[int], str],
                    tag: str) -> int | None:
    """The tag's token id when it is one token on its own, still whole after a space (as the input
    carries it) and decodes back to the tag (not an unknown-token id); else None. `alone` and
    `in_context` are the ids of TAG and of "x TAG"; `decoded` turns one id back into text."""
    if len(alone) != 1 or not in_context or in_context[-1] != alone[0]:
        return None
    return alone[0] if decoded(alone[0]).strip() == tag else None


@functools.lru_cache(maxsize=16)
def step_tag(tokenizer: Any) -> str:
    """The first of `STEP_TAGS` that the tokenizer holds as one token."""
    encode = functools.partial(tokenizer.encode, add_special_tokens=False)
    for tag in STEP_TAGS:
        if single_token_id(encode(tag), encode(f"x {tag}"), lambda i: tokenizer.decode([i]), tag) is not None:
            return tag
    raise RedlineError(f"hf-prm: the tokenizer holds none of {', '.join(STEP_TAGS)} as one token; "
                       "a step tag must be one token")


def detect_format(config: Any, tokenizer: Any) -> str:
    """token-classify when the config names a redline step tag; qwen-prm when the tokenizer has
    `<extra_0>` and the model has a 2-label head; math-shepherd when the tokenizer has the `ки`
    tag; otherwise ask the user."""
    vocab = tokenizer.get_vocab()
    architectures = " ".join(getattr(config, "architectures", None) or [])
    two_class = getattr(config, "num_labels", 0) == 2 and ("Classification" in architectures
                                                          or "ProcessReward" in architectures)
    if two_class and getattr(config, TAG_CONFIG_KEY, None):
        return "token-classify"
    if QWEN_SEPARATOR in vocab and (two_class or "ProcessReward" in architectures):
        return "qwen-prm"
    if MATH_SHEPHERD_TAG in vocab or f"▁{MATH_SHEPHERD_TAG}" in vocab or f"Ġ{MATH_SHEPHERD_TAG}" in vocab:
        return "math-shepherd"
    raise RedlineError("hf-prm: cannot tell the model's format; pass format=math-shepherd, token-classify "
                       "or qwen-prm")


def is_adapter(path: Path) -> bool:
    return (path / "adapter_config.json").is_file()


def pick_dtype(choice: str, device: str) -> Any:
    """'auto': bfloat16 where the device multiplies it natively (a bf16 GPU, a CPU with bf16
    instructions), else float32."""
    import torch

    if choice == "auto":
        choice = "bfloat16" if bf16_supported(device) else "float32"
    return getattr(torch, choice)


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _load_adapter(source: str, params: HfPrmParams) -> LoadedPrm:
    """A LoRA PRM from `redline train prm`: merged into its base by the local backend's loader
    (cached there, so a copy is cast when the PRM runs in another dtype)."""
    from redline.backends.local import load_model
    from redline.errors import BackendError

    if params.format not in ("auto", "math-shepherd"):
        raise RedlineError(f"hf-prm: an adapter folder is a math-shepherd PRM (a causal LM), not {params.format}")
    try:
        lm = load_model(source)
    except BackendError as e:
        raise RedlineError(f"hf-prm: cannot load {params.path!r}: {e}") from None
    dtype = pick_dtype(params.dtype, lm.device)
    model = lm.model if lm.model.dtype == dtype else copy.deepcopy(lm.model).to(dtype)
    return LoadedPrm(model, lm.tokenizer, "math-shepherd", lm.device, step_tag(lm.tokenizer),
                     read_center(Path(source)))


def load_prm(params: HfPrmParams) -> LoadedPrm:
    source = _resolve(params.path)  # before the slow imports, so a bad path fails fast
    if is_adapter(Path(source)):
        return _load_adapter(source, params)
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForTokenClassification, \
        AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a bar per load would interleave with the caller's own output
    device = ("cuda" if torch.cuda.is_available() else "cpu") if params.device == "auto" else params.device
    if device == "cuda" and not torch.cuda.is_available():
        raise RedlineError("hf-prm: device=cuda asked for, but no GPU is available")
    remote = params.trust_remote_code
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=remote)
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=remote)
    except Exception as e:  # a missing or corrupt file, whichever library notices it
        raise RedlineError(f"hf-prm: cannot load {params.path!r}: {_first_line(e)}") from None
    if not getattr(tokenizer, "is_fast", False):
        raise RedlineError("hf-prm needs a fast tokenizer (tokenizer.json) to locate step tags")
    fmt = detect_format(config, tokenizer) if params.format == "auto" else params.format
    if fmt == "qwen-prm":
        tag = QWEN_SEPARATOR
    else:
        tag = getattr(config, TAG_CONFIG_KEY, None) or step_tag(tokenizer)
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
        model = loader.from_pretrained(source, dtype=pick_dtype(params.dtype, device),
                                       trust_remote_code=remote).to(device)
    except Exception as e:  # a missing or corrupt weights file is one line, not a traceback
        raise RedlineError(f"hf-prm: cannot load {params.path!r} as {fmt}: {_first_line(e)}") from None
    model.eval()
    local = Path(source)
    return LoadedPrm(model, tokenizer, fmt, device, tag, read_center(local) if local.is_dir() else None)


def _clean(text: str, tag: str) -> str:
    return text.replace(tag, " ").strip() or "."


def build_input(fmt: str, tokenizer: Any, question: str, steps: Sequence[str],
                tag: str | None = None) -> tuple[str, list[int]]:
    """The model's input text and the character offset of the last character of each step's tag
    (`tag`: the step tag of math-shepherd and token-classify, `ки` when not given)."""
    tag = QWEN_SEPARATOR if fmt == "qwen-prm" else tag or MATH_SHEPHERD_TAG
    steps = [_clean(s, tag) for s in steps]
    question = _clean(question, tag)
    if fmt != "qwen-prm":
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


def encode_input(fmt: str, tokenizer: Any, question: str, steps: Sequence[str], max_length: int,
                 tag: str | None = None) -> tuple[list[int], list[int | None]]:
    """Token ids of the model's input and each step's read position (None past `max_length`);
    shared by scoring and by `redline train prm`, so training and scoring read the same token.
    The step tag of math-shepherd and token-classify is the tokenizer's `step_tag` unless given."""
    if fmt != "qwen-prm" and tag is None:
        tag = step_tag(tokenizer)
    text, chars = build_input(fmt, tokenizer, question, steps, tag)
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=fmt != "qwen-prm", truncation=True,
                    max_length=max_length)
    return list(enc["input_ids"]), token_positions(enc["offset_mapping"], chars)


MIN_SHARED = 8  # tokens: a shorter common prefix is not worth a second pass


def shared_prefix(sequences: Sequence[Sequence[int]]) -> int:
    """How many leading tokens every sequence has in common, leaving each at least one of its own."""
    shortest = min(len(s) for s in sequences)
    n = 0
    while n < shortest - 1 and all(s[n] == sequences[0][n] for s in sequences):
        n += 1
    return n


class HfPrmVerifier:
    name = "hf-prm"

    def __init__(self, loaded: LoadedPrm, params: HfPrmParams) -> None:
        self.loaded = loaded
        self.params = params
        self.neutral = params.neutral  # steps past max_length; the sanity rules cap all-neutral solutions
        self.center = params.center if params.center is not None else loaded.center
        if loaded.format == "math-shepherd":
            self.good_id, self.bad_id = label_ids(loaded.tokenizer)
        self.batcher: MicroBatcher[tuple[str, list[str]], list[float]] = MicroBatcher(
            lambda items: run_async(self.score_batch_sync, items), params.batch_size)

    def _hidden(self, rows: Sequence[Sequence[int]], shared: int) -> list[Any]:
        """Last hidden states of each row. The first `shared` tokens, the same in every row (the
        question, or steps the candidates share), run once and their keys and values serve every
        row. On a GPU the rest is one right-padded batch; on a CPU, where a batch is no faster than
        its rows one by one, each row runs alone, so no time goes to padding."""
        import torch

        base = self.loaded.model.base_model
        as_ids = lambda r: torch.tensor([list(r)], device=self.loaded.device)  # noqa: E731
        prefix = base(input_ids=as_ids(rows[0][:shared]), use_cache=True) if shared else None
        if self.loaded.device == "cpu":
            out = []
            for row in rows:
                if prefix is None:
                    out.append(base(input_ids=as_ids(row)).last_hidden_state[0])
                    continue
                rest = base(input_ids=as_ids(row[shared:]), cache=prefix.cache).last_hidden_state
                prefix.cache.crop(-rest.shape[1])  # back to the shared prefix for the next row
                out.append(torch.cat([prefix.last_hidden_state[0], rest[0]]))
            return out
        width = max(len(r) for r in rows)
        ids = torch.zeros((len(rows), width), dtype=torch.long)  # padding: masked out
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for b, row in enumerate(rows):
            ids[b, : len(row)], mask[b, : len(row)] = torch.tensor(row), 1
        ids, mask = ids.to(self.loaded.device), mask.to(self.loaded.device)
        if prefix is None:
            return list(base(input_ids=ids, attention_mask=mask).last_hidden_state)
        prefix.cache.batch_repeat_interleave(len(rows))
        rest = base(input_ids=ids[:, shared:], attention_mask=mask, cache=prefix.cache).last_hidden_state
        return list(torch.cat([prefix.last_hidden_state.expand(len(rows), -1, -1), rest], dim=1))

    def _pair_logits(self, hidden: Any) -> Any:
        """[right, wrong] logits from hidden states at the read positions, in float32: for a causal
        LM only the '+' and '-' rows of the output head (the whole vocabulary would cost more than
        the rest of a small model), else the model's two-class head."""
        import torch

        lm = self.loaded
        head = lm.model.get_output_embeddings() if lm.format == "math-shepherd" else lm.model.score
        if not isinstance(head, torch.nn.Linear):  # a model's own head (Qwen2.5-Math-PRM: two layers)
            return head(hidden).float()[:, [1, 0]]
        pick = [self.good_id, self.bad_id] if lm.format == "math-shepherd" else [1, 0]
        bias = None if head.bias is None else head.bias[pick].float()
        return torch.nn.functional.linear(hidden.float(), head.weight[pick].float(), bias)

    def score_batch_sync(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        """Scores of several solutions scored together (on the compute thread): their shared prefix
        once, then the rest (see `_hidden`); only the tags' hidden states reach the head."""
        import torch

        lm = self.loaded
        encoded = [encode_input(lm.format, lm.tokenizer, q, steps, self.params.max_length, lm.tag)
                   for q, steps in items]
        rows = [tokens for tokens, _ in encoded]
        at = [(b, p) for b, (_, positions) in enumerate(encoded) for p in positions if p is not None]
        shared = shared_prefix(rows) if len(rows) > 1 else 0
        with torch.inference_mode():
            hidden = self._hidden(rows, shared if shared >= MIN_SHARED else 0)
            picked = torch.stack([hidden[b][p] for b, p in at]) if at else hidden[0][:0]
            raw = torch.softmax(self._pair_logits(picked), dim=-1)[:, 0].cpu().tolist()
        center = self.center
        probs = iter(raw if center in (None, 0.5) else [recenter(p, center) for p in raw])
        if any(p is None for _, positions in encoded for p in positions):
            warnings.warn(f"hf-prm: input longer than max_length={self.params.max_length}; "
                          "steps past the cut get the neutral score", stacklevel=2)
        return [[self.params.neutral if p is None else clamp01(next(probs)) for p in positions]
                for _, positions in encoded]

    async def score(self, question: str, steps: Sequence[str]) -> list[float]:
        if not steps:
            return []
        return await self.batcher.submit((question, list(steps)))


@VERIFIERS.register("hf-prm", HfPrmParams,
                    "a PRM via transformers: hf-prm:PATH,format=math-shepherd|token-classify|qwen-prm",
                    positional=("path",))
def build_hf_prm(params: HfPrmParams, runtime: Runtime) -> HfPrmVerifier:
    key = f"hf-prm:{params.path}:{params.format}:{params.device}:{params.dtype}:{params.trust_remote_code}"
    loaded = runtime.cached(key, lambda: run_sync(load_prm, params))
    return HfPrmVerifier(loaded, params)
