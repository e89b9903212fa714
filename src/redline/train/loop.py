"""The one fitting path of `redline train` (sft, rft, dpo and prm): a plain PyTorch loop over a LoRA.

Each trainer gives only a loss function over a batch of encoded rows; the loop owns the rest:
batches of rows of similar length (little padding; attention never crosses rows), bf16 autocast
where it pays (`precision`), AdamW with transformers' warm-up and cosine (or linear) schedule,
gradient clipping, micro-batches whose gradients add up to the batch's (memory follows the
micro-batch, the step stays the batch's), one progress line per step, a checkpoint every
`save_steps` and on Ctrl-C, and resuming from the last checkpoint with the same data order.
`hidden_states` runs a prompt prefix that all rows of a batch share once, and no loss computes
logits it does not read.
Why not TRL's Trainer: see bench/train_speed.py, which measures both on the same rows.
"""

from __future__ import annotations

import inspect
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from redline.errors import RedlineError
from redline.train.checkpoint import load_checkpoint, save_checkpoint, trainable
from redline.train.precision import Precision
from redline.train.progress import Figures, Progress, StopOnInterrupt

T = TypeVar("T")
LossFn = Callable[[Any, list[T]], Any]  # (model, batch) -> scalar loss tensor


class Interrupted(RedlineError):
    """Ctrl-C during training: a checkpoint was saved; the same command resumes from it."""

    exit_code = 130


@dataclass(frozen=True)
class Plan:
    """How long and how fast to fit: every knob the loop reads."""

    epochs: float
    lr: float
    batch_size: int
    seed: int = 0
    max_steps: int = -1  # > 0 caps the optimiser steps
    save_steps: int = 25
    warmup: float = 0.05  # share of the steps with a linearly rising learning rate
    decay: str = "cosine"  # or "linear"
    group_by_length: bool = True
    max_seconds: float | None = None  # stop (and save nothing extra) once this much wall time is spent
    micro_batch: int = 0  # rows per forward pass (0: the whole batch); the step is the batch's either way

    def total_steps(self, rows: int) -> int:
        per_epoch = math.ceil(rows / self.batch_size)
        return self.max_steps if self.max_steps > 0 else max(1, math.ceil(per_epoch * self.epochs))

    def lr_at(self, step: int, total: int) -> float:
        """The learning rate of optimiser step `step` (0-based): transformers' warm-up then cosine
        (or linear) decay schedules, step for step, so runs compare with the Trainer's."""
        warmup = math.ceil(self.warmup * total)
        if step < warmup:
            return self.lr * step / warmup
        progress = (step - warmup) / max(1, total - warmup)
        if self.decay == "linear":
            return self.lr * max(0.0, 1.0 - progress)
        return self.lr * max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def length_batches(items: Sequence[T], size: int, rng: random.Random, length: Callable[[T], int],
                   group: bool = True) -> list[list[T]]:
    """One epoch's batches: shuffled, then (when `group`) sorted by length within windows of 16
    batches so that a batch's rows are of similar length and padding wastes little; the batches
    themselves are shuffled again so that lengths do not rise through the epoch."""
    order = list(items)
    rng.shuffle(order)
    if group:
        window = size * 16
        order = [e for i in range(0, len(order), window) for e in sorted(order[i: i + window], key=length)]
    batches = [order[i: i + size] for i in range(0, len(order), size)]
    if group:
        rng.shuffle(batches)
    return batches


def shared_prefix(rows: Sequence[Sequence[int]]) -> int:
    """How many leading tokens every row has in common, leaving each row at least one of its own."""
    first, limit = rows[0], min(len(r) for r in rows) - 1
    n = 0
    while n < limit and all(r[n] == first[n] for r in rows):
        n += 1
    return n


WIDTH_MULTIPLE = 32  # batch widths are rounded up to this: few distinct shapes, bounded memory


def hidden_states(model: Any, rows: Sequence[Sequence[int]], pad_id: int, device: str) -> Any:
    """The decoder's last hidden states for right-padded `rows` (batch x padded width x hidden).

    No LM head: each loss projects only the positions it reads (the full-vocabulary head over
    every token would cost a fifth of the model's compute for logits nobody reads). A prefix that
    all rows share (the solve prompt's system message: about a third of a GSM8K row) runs once,
    and the rows continue from its keys and values; the result, and its gradient, are those of
    the full batch. Without padding the mask is left out, so attention takes its plain causal path.

    The width is the longest row rounded up to `WIDTH_MULTIPLE`: oneDNN keeps kernels (and their
    buffers) per matrix shape, and a width per batch made an epoch's memory grow without bound
    (11 GB after 348 GSM8K steps); rounding costs about 6% more tokens and held a whole epoch
    near 8-10 GB. The shared prefix is rounded down to a multiple for the same reason."""
    import torch

    width = -(-max(len(r) for r in rows) // WIDTH_MULTIPLE) * WIDTH_MULTIPLE
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    ids = ids.to(device)
    mask = None
    if any(len(r) < width for r in rows):
        mask = (torch.arange(width)[None, :] < torch.tensor([len(r) for r in rows])[:, None]).long().to(device)
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = lm.get_decoder()
    shared = (shared_prefix(rows) if len(rows) > 1 else 0) // WIDTH_MULTIPLE * WIDTH_MULTIPLE  # shapes again
    if shared == 0:  # too short to pay for a second call
        return decoder(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    # transformers 5.24 renamed `past_key_values` (argument and output) to `cache`
    name = "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"
    head = decoder(input_ids=ids[:1, :shared], use_cache=True)
    cache = getattr(head, name)
    cache.batch_repeat_interleave(len(rows))
    tail = decoder(input_ids=ids[:, shared:], attention_mask=mask, use_cache=True, **{name: cache})
    return torch.cat([head.last_hidden_state.expand(len(rows), -1, -1), tail.last_hidden_state], dim=1)


def output_head(model: Any) -> Any:
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    return lm.get_output_embeddings()


def batch_loss(model: Any, batch: list[T], loss_fn: LossFn, weight: Callable[[T], float], micro_batch: int,
               precision: Precision) -> float:
    """Back-propagate `loss_fn` over `batch`, `micro_batch` rows per forward pass, and return the loss.

    `loss_fn` is a mean over the units its rows carry (answer tokens, labelled steps, pairs) and
    `weight(row)` counts a row's units, so each micro-batch's mean is scaled by its share of the
    batch's units: the summed gradients are the whole batch's, while memory follows the micro-batch
    (a batch of 32 GSM8K rows in one pass needed more than this machine's 24 GB)."""
    size = micro_batch if micro_batch > 0 else len(batch)
    chunks = [batch[i: i + size] for i in range(0, len(batch), size)]
    total = sum(weight(x) for x in batch)
    value = 0.0
    for chunk in chunks:
        with precision.autocast():
            loss = loss_fn(model, chunk) * (sum(weight(x) for x in chunk) / total)
        loss.backward()
        value += float(loss.item())
    return value


def fit(model: Any, items: Sequence[T], loss_fn: LossFn, length: Callable[[T], int], plan: Plan,
        precision: Precision, checkpoints: Path | None, resume: str | None,
        say: Callable[[str], None], weight: Callable[[T], float] = lambda _: 1.0) -> Figures:
    """Fit the trainable parameters of `model` on `items` with `loss_fn`; returns this session's figures.

    `length(item)` is the item's non-padding token count (batching and tokens/s); `weight(item)`
    how many of the units `loss_fn` averages over it carries (see `batch_loss`). With
    `checkpoints`, a checkpoint is written there every `plan.save_steps` steps and at Ctrl-C
    (then Interrupted is raised); `resume` is a checkpoint to continue from."""
    import torch

    if not items:
        raise RedlineError("nothing to train on")
    params = list(trainable(model).values())
    optimiser = torch.optim.AdamW(params, lr=plan.lr, weight_decay=0.0)
    total = plan.total_steps(len(items))
    per_epoch = math.ceil(len(items) / plan.batch_size)
    step = load_checkpoint(Path(resume), model, optimiser)["step"] if resume else 0
    if resume:
        say(f"resuming from {resume} (step {step}/{total})")
    progress, stop = Progress(say, precision.name), StopOnInterrupt()
    progress.figures.resumed_at = step
    deadline = time.perf_counter() + plan.max_seconds if plan.max_seconds else math.inf
    model.train()
    with stop.installed():
        while step < total and time.perf_counter() < deadline:
            epoch, offset = divmod(step, per_epoch)
            batches = length_batches(items, plan.batch_size, random.Random(plan.seed + epoch), length,
                                     plan.group_by_length)
            for batch in batches[offset:]:
                for group in optimiser.param_groups:
                    group["lr"] = plan.lr_at(step, total)
                loss = batch_loss(model, batch, loss_fn, weight, plan.micro_batch, precision)
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimiser.step()
                optimiser.zero_grad(set_to_none=True)
                step += 1
                progress.step(step, total, loss, len(batch), sum(length(x) for x in batch))
                if checkpoints is not None and (stop.requested or (step % plan.save_steps == 0 and step < total)):
                    save_checkpoint(checkpoints, step, model, optimiser, {"total": total})
                if stop.requested:
                    saved = (f"checkpoint saved in {checkpoints}; rerun the same command to resume" if checkpoints
                             else "this trainer keeps no checkpoints")
                    raise Interrupted(f"interrupted after step {step}/{total}: {saved}")
                if step >= total or time.perf_counter() >= deadline:
                    break
    return progress.figures
