"""Step-DPO (Lai et al. 2024) on `redline export --format step-dpo` pairs with TRL's DPOTrainer.

An exported prompt is the question, a blank line and the correct steps before the first error;
here it becomes exactly what the model continues at solve time: the solve chat prompt with those
steps as the start of the assistant turn. `chosen` and `rejected` are the next step. The
reference model is the base itself (TRL disables the LoRA for it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from redline.errors import RedlineError
from redline.train.adapters import Base, TrainSettings, load_base, resume_point, run_record, trainer_kwargs
from redline.train.card import write_card
from redline.train.data import file_sha256, read_jsonl_rows
from redline.train.sft import TrainResult, fit_lora

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


def _row(pair: StepPair, tokenizer: Any) -> dict[str, str]:
    from redline.text import solve_messages

    prompt = tokenizer.apply_chat_template(solve_messages(pair.question), tokenize=False, add_generation_prompt=True)
    prefix = f"{pair.prefix}\n" if pair.prefix else ""
    return {"prompt": prompt + prefix, "chosen": pair.chosen + "\n", "rejected": pair.rejected + "\n"}


def train_dpo(path: Path, pairs: list[StepPair], base: str | Base, out: Path, settings: TrainSettings,
              command: str, beta: float = 0.1, say: Callable[[str], None] = print) -> TrainResult:
    """Fit a fresh LoRA with the DPO loss on step pairs; write the bf16 adapter and model card to `out`."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    out = Path(out).expanduser()
    sha = file_sha256(path)
    loaded = load_base(base) if isinstance(base, str) else base
    resume = resume_point(out, run_record("dpo", sha, loaded.name, settings, beta=beta, pairs=len(pairs)))
    dataset = Dataset.from_list([_row(p, loaded.tokenizer) for p in pairs])
    config = DPOConfig(**trainer_kwargs(settings, out, loaded.device), beta=beta)
    figures = fit_lora(DPOTrainer, config, dataset, loaded, settings, out, resume, say)
    write_card(out, f"{out.name}: Step-DPO LoRA", "dpo", loaded.name, path, sha, len(pairs), settings,
               figures, command, notes=[f"DPO beta {beta}; reference model: the base (LoRA disabled). "
                                        "TRL ends chosen and rejected with the end-of-turn token."])
    return TrainResult(out, loaded.name, len(pairs), figures)
