"""Supervised fine-tuning of a LoRA adapter on solve-format pairs.

Each row is the solve prompt rendered with the base's chat template (generation prompt added)
followed by the answer and the template's end of turn, so the model learns exactly what `solve`
will show it; only the answer carries loss (the mean over the batch's answer tokens).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from redline.errors import RedlineError
from redline.train.adapters import CHECKPOINTS, Base, TrainSettings, load_base, lora_model, plan, resume_point, \
    run_record, save_adapter
from redline.train.card import write_card
from redline.train.data import Example, TrainingData
from redline.train.loop import LossFn, fit, hidden_states, output_head
from redline.train.precision import pick_precision
from redline.train.progress import Figures


@dataclass(frozen=True)
class TrainResult:
    out: Path
    base: str
    examples: int
    figures: Figures


@dataclass(frozen=True)
class Encoded:
    """A row's token ids; the tokens from `start` on are the answer (the ones that carry loss)."""

    ids: tuple[int, ...]
    start: int

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def answer_tokens(self) -> int:
        """The tokens that carry loss: what `sft_loss` averages over."""
        return len(self.ids) - self.start


def encode_completion(tokenizer: Any, prompt_text: str, completion_text: str, max_length: int) -> Encoded | None:
    """Prompt then completion, cut at `max_length`; None when no completion token is left."""
    prompt = tokenizer(prompt_text, add_special_tokens=False).input_ids
    completion = tokenizer(completion_text, add_special_tokens=False).input_ids
    ids = (prompt + completion)[:max_length]
    return Encoded(tuple(ids), len(prompt)) if len(ids) > len(prompt) else None


def encode_example(tokenizer: Any, example: Example, max_length: int) -> Encoded | None:
    """The chat-template rendering of `example`; loss on the assistant turn and its end-of-turn mark."""
    prompt = tokenizer.apply_chat_template(example.prompt, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template([*example.prompt, {"role": "assistant", "content": example.completion}],
                                         tokenize=False)
    if not full.startswith(prompt):
        raise RedlineError("the base's chat template renders the prompt differently inside a full conversation; "
                           "cannot tell the answer's tokens apart")
    return encode_completion(tokenizer, prompt, full[len(prompt):], max_length)


def answer_logprobs(model: Any, rows: Sequence[Encoded], pad_id: int, device: str) -> tuple[Any, Any]:
    """log P(token) of every answer token of `rows`, flattened, and the row each belongs to."""
    import torch

    hidden = hidden_states(model, [r.ids for r in rows], pad_id, device)
    which = [(i, p) for i, r in enumerate(rows) for p in range(r.start - 1, len(r) - 1)]
    row_index = torch.tensor([i for i, _ in which], device=device)
    positions = torch.tensor([p for _, p in which], device=device)
    targets = torch.tensor([rows[i].ids[p + 1] for i, p in which], device=device)
    logits = output_head(model)(hidden[row_index, positions]).float()
    logp = torch.log_softmax(logits, dim=-1).gather(1, targets[:, None])[:, 0]
    return logp, row_index


def sft_loss(pad_id: int, device: str) -> Callable[[Any, list[Encoded]], Any]:
    """Mean negative log-likelihood of the batch's answer tokens."""
    return lambda model, batch: -answer_logprobs(model, batch, pad_id, device)[0].mean()


def fit_lora(loaded: Base, settings: TrainSettings, run: dict[str, Any], rows: Sequence[Any], loss: LossFn,
             length: Callable[[Any], int], out: Path, say: Callable[[str], None],
             weight: Callable[[Any], float] = lambda _: 1.0) -> Figures:
    """Fit a fresh LoRA on `rows` with `loss` (resuming when `out` holds a checkpoint of this same
    `run`) and save it in bf16 to `out`. Ctrl-C saves a checkpoint and raises Interrupted.
    `weight(row)`: the units of `loss`'s mean in a row (see `loop.batch_loss`)."""
    precision = pick_precision(loaded.device, settings.precision)
    resume = resume_point(out, run)
    model = lora_model(loaded, settings.rank, settings.seed)
    figures = fit(model, rows, loss, length, plan(settings), precision, out / CHECKPOINTS, resume, say, weight)
    save_adapter(model, out, loaded.name)
    return figures


def train_sft(data: TrainingData, base: str | Base, out: Path, settings: TrainSettings, command: str,
              say: Callable[[str], None] = print, kind: str = "sft") -> TrainResult:
    """Fit a fresh LoRA on `data` over `base`; write the bf16 adapter and its model card to `out`."""
    out = Path(out).expanduser()
    loaded = load_base(base) if isinstance(base, str) else base
    rows = [r for r in (encode_example(loaded.tokenizer, e, settings.max_length) for e in data.examples) if r]
    if not rows:
        raise RedlineError(f"no example keeps an answer token within {settings.max_length} tokens")
    run = run_record(kind, data.sha256, loaded.name, settings, examples=len(data.examples))
    figures = fit_lora(loaded, settings, run, rows, sft_loss(loaded.tokenizer.pad_token_id, loaded.device), len,
                       out, say, lambda r: r.answer_tokens)
    write_card(out, f"{out.name}: SFT LoRA", kind, loaded.name, data.path, data.sha256, len(data.examples),
               settings, figures, command)
    return TrainResult(out, loaded.name, len(data.examples), figures)
