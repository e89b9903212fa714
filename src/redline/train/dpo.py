"""Step-DPO (Lai et al. 2024) on `redline export --format step-dpo` pairs (the sigmoid DPO loss).

An exported prompt is the question, a blank line and the correct steps before the first error;
here it becomes exactly what the model continues at solve time: the solve chat prompt with those
steps as the start of the assistant turn. `chosen` and `rejected` are the next step, each ended
with the end-of-turn token. The reference model is the base itself: the same model with its
LoRA disabled, so no second copy is held.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from redline.errors import RedlineError
from redline.train.adapters import Base, TrainSettings, load_base, run_record
from redline.train.card import write_card
from redline.train.data import file_sha256, read_jsonl_rows
from redline.train.sft import Encoded, TrainResult, answer_logprobs, encode_completion, fit_lora

_FIRST_STEP = re.compile(r"\n\s*\n(?=\s*Step 1\s*:)")


@dataclass(frozen=True)
class StepPair:
    question: str
    prefix: str  # the correct steps before the pair, '' when the first step is the one in question
    chosen: str
    rejected: str


def _pair(row: dict[str, Any]) -> StepPair:
    fields = [row.get(k) for k in ("prompt", "chosen", "rejected")]
    if not all(isinstance(v, str) and v.strip() for v in fields):
        raise ValueError("needs non-empty text fields 'prompt', 'chosen' and 'rejected'")
    prompt, chosen, rejected = fields
    if chosen.strip() == rejected.strip():
        raise ValueError("'chosen' and 'rejected' are the same")
    parts = _FIRST_STEP.split(prompt, maxsplit=1)
    prefix = parts[1].strip() if len(parts) > 1 else ""
    return StepPair(parts[0].strip(), prefix, chosen.strip(), rejected.strip())


def read_pairs(path: Path) -> list[StepPair]:
    """Every pair of a step-dpo JSONL; bad lines are one error naming their line numbers."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise RedlineError(f"no such data file: {path}")
    pairs = read_jsonl_rows(path, _pair)
    if not pairs:
        raise RedlineError(f"{path}: the data file is empty")
    return pairs


@dataclass(frozen=True)
class EncodedPair:
    chosen: Encoded
    rejected: Encoded

    def __len__(self) -> int:
        return len(self.chosen) + len(self.rejected)


def encode_pair(pair: StepPair, tokenizer: Any, max_length: int) -> EncodedPair | None:
    """The solve prompt with the correct prefix, then chosen (or rejected) and the end-of-turn
    token; None when either side keeps no token within `max_length`."""
    from redline.text import solve_messages

    prompt = tokenizer.apply_chat_template(solve_messages(pair.question), tokenize=False, add_generation_prompt=True)
    prompt += f"{pair.prefix}\n" if pair.prefix else ""
    chosen, rejected = (encode_completion(tokenizer, prompt, text + "\n" + tokenizer.eos_token, max_length)
                        for text in (pair.chosen, pair.rejected))
    return EncodedPair(chosen, rejected) if chosen and rejected else None


def dpo_loss(beta: float, pad_id: int, device: str) -> Callable[[Any, list[EncodedPair]], Any]:
    """-log sigmoid(beta * (policy margin - reference margin)), averaged over the batch's pairs; the
    margin is log P(chosen) - log P(rejected), summed over their tokens."""
    import torch

    def sequence_logps(model: Any, rows: list[Encoded]) -> Any:
        logp, row_index = answer_logprobs(model, rows, pad_id, device)
        return torch.zeros(len(rows), device=device, dtype=logp.dtype).index_add(0, row_index, logp)

    def loss(model: Any, batch: list[EncodedPair]) -> Any:
        rows = [p.chosen for p in batch] + [p.rejected for p in batch]
        policy = sequence_logps(model, rows)
        with torch.no_grad(), model.disable_adapter():
            reference = sequence_logps(model, rows)
        n = len(batch)
        margin = (policy[:n] - reference[:n]) - (policy[n:] - reference[n:])
        return -torch.nn.functional.logsigmoid(beta * margin).mean()

    return loss


def train_dpo(path: Path, pairs: list[StepPair], base: str | Base, out: Path, settings: TrainSettings,
              command: str, beta: float = 0.1, say: Callable[[str], None] = print) -> TrainResult:
    """Fit a fresh LoRA with the DPO loss on step pairs; write the bf16 adapter and model card to `out`."""
    out = Path(out).expanduser()
    sha = file_sha256(path)
    loaded = load_base(base) if isinstance(base, str) else base
    rows = [r for r in (encode_pair(p, loaded.tokenizer, settings.max_length) for p in pairs) if r]
    if not rows:
        raise RedlineError(f"no pair keeps a chosen and a rejected token within {settings.max_length} tokens")
    run = run_record("dpo", sha, loaded.name, settings, beta=beta, pairs=len(pairs))
    figures = fit_lora(loaded, settings, run, rows, dpo_loss(beta, loaded.tokenizer.pad_token_id, loaded.device),
                       len, out, say)
    write_card(out, f"{out.name}: Step-DPO LoRA", "dpo", loaded.name, path, sha, len(pairs), settings,
               figures, command, notes=[f"DPO beta {beta} (sigmoid loss); reference model: the base (LoRA disabled). "
                                        "Chosen and rejected end with the end-of-turn token."])
    return TrainResult(out, loaded.name, len(pairs), figures)
