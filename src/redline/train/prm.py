"""`redline train prm`: a process reward model in the Math-Shepherd format, which `hf-prm` loads.

A causal LM (the embedded model by default) plus a LoRA learns to put '+' or '-' after each
step tag: the input is exactly what `hf-prm` builds ("question step1 ки\\nstep2 ки"), and the
loss, at each tag's read position, is the cross-entropy of the two-way softmax over the '+'
and '-' logits against the step's label (1 right, 0 wrong, or a Monte-Carlo share in between).
That is the very number `hf-prm` reads, so nothing is lost between training and scoring.

Why a plain loss rather than TRL's PRM trainer: TRL 1.16 ships none (`trl.experimental` has no
`prm`), and the older `PRMTrainer` trained a token-classification head, which a causal-LM
Math-Shepherd PRM does not have. The loss runs in the shared fitting loop (`train.loop`: batches
of similar length, bf16 where it pays), with linear decay and LoRA on the top layers only (on CPU
the backward pass dominates).

Data, one JSONL row each, in either format:
- TRL stepwise supervision: `prompt`, `completions` (the steps), `labels` (one bool or number per step);
- redline's labelled records (`verifier plant`, `verifier label`): `question`, `steps`, and
  `step_labels` (Monte-Carlo shares) or `label` (first wrong step, -1 when none). With `label`,
  the steps from the first error on are labelled wrong, as Math-Shepherd labels them: a prefix
  that holds a wrong step no longer reaches the gold answer.
A share of the solutions (`val_fraction`) is held out and scored before and after training:
the step AUROC on it goes into the model card, and the cut with the best ProcessBench F1 on it
is written next to the adapter (`verifiers.calibration`), where `hf-prm` finds it.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from redline.errors import RedlineError
from redline.jsonl import iter_jsonl_objects
from redline.train.adapters import lora_config
from redline.train.loop import Plan, fit, hidden_states, output_head
from redline.train.precision import pick_precision
from redline.train.records import LabeledSolution, parse_record
from redline.verifiers.calibration import CALIBRATION_FILE, Cut, fit_center, write_cut
from redline.verifiers.hf_prm import encode_input, label_ids, step_tag


@dataclass(frozen=True)
class StepwiseExample:
    """One solution: its steps and P(step is right) for each."""

    prompt: str
    completions: tuple[str, ...]
    labels: tuple[float, ...]


@dataclass(frozen=True)
class PrmSettings:
    epochs: float = 1.0
    lr: float = 2e-4
    rank: int = 16
    batch_size: int = 8
    micro_batch: int = 8  # solutions per forward pass (loop.batch_loss): bounds memory, not the step
    max_length: int = 512
    val_fraction: float = 0.1
    seed: int = 0
    max_steps: int = -1  # > 0 caps the optimiser steps (tests, smoke runs)
    top_layers: int = 8  # LoRA on the last N layers only (0 = all): backward stops there, twice as fast on CPU
    max_minutes: float | None = None  # stop training when this much wall time is spent (then evaluate and save)
    precision: str = "auto"  # bf16 forward pass where the hardware multiplies it natively (train.precision)


@dataclass
class PrmReport:
    examples: int
    steps: int
    positive_share: float
    optimiser_steps: int
    planned_steps: int
    seen: int  # solutions the optimiser saw (with repeats over epochs)
    seconds: float
    first_loss: float | None
    last_loss: float | None
    val_steps: int
    val_auroc_before: float | None
    val_auroc_after: float | None
    tag: str  # the step tag the inputs carry (one vocabulary token of the base)
    cut: Cut | None  # the center fitted on the held-out solutions (None: too few to fit)


def from_record(record: LabeledSolution) -> StepwiseExample | None:
    """Step labels of a redline record (see the module doc), or None when it has none."""
    if record.step_labels is not None:
        labels = record.step_labels
    elif record.label is None:
        return None
    elif record.label < 0:
        labels = (1.0,) * len(record.steps)
    else:
        labels = (1.0,) * record.label + (0.0,) * (len(record.steps) - record.label)
    return StepwiseExample(record.question, record.steps, tuple(labels))


def _trl_row(row: dict[str, Any]) -> StepwiseExample:
    prompt, completions, labels = row.get("prompt"), row.get("completions"), row.get("labels")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("'prompt' must be a non-empty string")
    if not isinstance(completions, list) or not completions or not all(isinstance(c, str) for c in completions):
        raise ValueError("'completions' must be a non-empty list of strings")
    if (not isinstance(labels, list) or len(labels) != len(completions)
            or not all(isinstance(x, (bool, int, float)) and 0 <= x <= 1 for x in labels)):
        raise ValueError("'labels' must hold one bool (or number in [0, 1]) per completion")
    return StepwiseExample(prompt, tuple(completions), tuple(float(x) for x in labels))


def read_stepwise(path: str | Path) -> tuple[list[StepwiseExample], list[tuple[int, str]]]:
    """Every usable row of a TRL-stepwise or redline-labelled JSONL file, and the bad lines with why."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise RedlineError(f"no such training file: {path}")
    examples, bad = [], []
    for number, row in iter_jsonl_objects(path):
        if isinstance(row, str):
            bad.append((number, row))
            continue
        try:
            example = _trl_row(row) if "completions" in row else from_record(parse_record(row, number))
        except ValueError as e:
            bad.append((number, str(e)))
            continue
        if example is None:
            bad.append((number, "no step labels"))
        else:
            examples.append(example)
    return examples, bad


@dataclass(frozen=True)
class _Encoded:
    ids: list[int]
    positions: list[int]
    targets: list[float]


def _encode(tokenizer: Any, example: StepwiseExample, max_length: int) -> _Encoded | None:
    """Token ids and the labelled read positions that fit in `max_length` (None when none fits)."""
    ids, positions = encode_input("math-shepherd", tokenizer, example.prompt, example.completions, max_length)
    kept = [(p, t) for p, t in zip(positions, example.labels) if p is not None]
    if not kept:
        return None
    return _Encoded(ids, [p for p, _ in kept], [t for _, t in kept])


def _tag_logprobs(model: Any, batch: Sequence[_Encoded], pad_id: int, good: int, bad: int, device: str) -> Any:
    """log P('+') and log P('-') (two-way softmax) at every labelled position of the batch, flattened.

    Only the two output rows, and only at the tags."""
    import torch

    hidden = hidden_states(model, [e.ids for e in batch], pad_id, device)
    rows = torch.tensor([i for i, e in enumerate(batch) for _ in e.positions], device=device)
    cols = torch.tensor([p for e in batch for p in e.positions], device=device)
    head = output_head(model)
    pair = hidden[rows, cols] @ head.weight[[good, bad]].T
    if getattr(head, "bias", None) is not None:
        pair = pair + head.bias[[good, bad]]
    return torch.log_softmax(pair.float(), dim=-1)


def _val_scores(model: Any, items: list[_Encoded], pad_id: int, good: int, bad: int, device: str,
                size: int) -> list[list[float]]:
    """P('+') at every labelled step of each held-out solution."""
    import torch

    flat: list[float] = []
    model.eval()
    with torch.inference_mode():
        for i in range(0, len(items), size):
            flat += _tag_logprobs(model, items[i: i + size], pad_id, good, bad, device)[:, 0].exp().tolist()
    it = iter(flat)
    return [[next(it) for _ in e.positions] for e in items]


def _auroc(items: list[_Encoded], scores: list[list[float]]) -> float | None:
    from sklearn.metrics import roc_auc_score

    y = [int(t >= 0.5) for e in items for t in e.targets]
    if len(set(y)) < 2:
        return None
    return float(roc_auc_score(y, [s for row in scores for s in row]))


def _fit_cut(items: list[_Encoded], scores: list[list[float]]) -> Cut | None:
    """The center with the best ProcessBench F1 on the held-out solutions (first step labelled
    below 0.5 is the error); None when they lack right or wrong solutions."""
    labels = [next((i for i, t in enumerate(e.targets) if t < 0.5), -1) for e in items]
    if not any(y >= 0 for y in labels) or not any(y < 0 for y in labels):
        return None
    return fit_center(scores, labels)


def _lora(model: Any, settings: PrmSettings) -> Any:
    """The shared LoRA settings, on the top `top_layers` decoder layers when that is set."""
    config = lora_config(settings.rank)
    layers = model.config.num_hidden_layers
    if 0 < settings.top_layers < layers:
        config.layers_to_transform = list(range(layers - settings.top_layers, layers))
    return config


def train_prm(examples: Sequence[StepwiseExample], base: str, out: Path, settings: PrmSettings,
              say: Callable[[str], None] = print) -> PrmReport:
    """Train a LoRA PRM on `examples` over `base` and save it as a PEFT folder in `out`."""
    import torch

    from redline.train.adapters import load_base, lora_model, save_adapter

    if not 0 <= settings.val_fraction < 1:
        raise RedlineError(f"validation fraction must be in [0, 1), got {settings.val_fraction}")
    t0 = time.perf_counter()
    loaded = load_base(base)
    tokenizer, device = loaded.tokenizer, loaded.device
    good, bad = label_ids(tokenizer)
    encoded = [e for e in (_encode(tokenizer, x, settings.max_length) for x in examples) if e is not None]
    rng = random.Random(settings.seed)
    rng.shuffle(encoded)
    n_val = int(len(encoded) * settings.val_fraction)
    val, fit_on = encoded[:n_val], encoded[n_val:]
    targets = [t for e in fit_on for t in e.targets]
    if not targets:
        raise RedlineError("no labelled steps to train on")
    if all(t >= 0.5 for t in targets) or all(t < 0.5 for t in targets):
        raise RedlineError("the labels hold only one class (every step right, or every step wrong); "
                           "add planted errors or more labelled problems")
    model = lora_model(loaded, settings.rank, settings.seed, _lora(loaded.model, settings))
    pad_id = tokenizer.pad_token_id
    before = _auroc(val, _val_scores(model, val, pad_id, good, bad, device, settings.batch_size))

    def loss(model: Any, batch: list[_Encoded]) -> Any:
        logp = _tag_logprobs(model, batch, pad_id, good, bad, device)
        target = torch.tensor([t for e in batch for t in e.targets], device=device)
        return -(target * logp[:, 0] + (1 - target) * logp[:, 1]).mean()

    budget = 60 * settings.max_minutes - (time.perf_counter() - t0) if settings.max_minutes else None
    plan = Plan(epochs=settings.epochs, lr=settings.lr, batch_size=settings.batch_size, seed=settings.seed,
                max_steps=settings.max_steps, warmup=0.0, decay="linear", max_seconds=budget,
                micro_batch=settings.micro_batch)
    figures = fit(model, fit_on, loss, lambda e: len(e.ids), plan, pick_precision(device, settings.precision),
                  None, None, say, weight=lambda e: len(e.targets))
    losses = figures.losses
    val_scores = _val_scores(model, val, pad_id, good, bad, device, settings.batch_size)
    cut = _fit_cut(val, val_scores)
    save_adapter(model, out, loaded.name)
    (out / CALIBRATION_FILE).unlink(missing_ok=True)  # a cut fitted for an earlier model in `out`
    if cut is not None:
        write_cut(out, cut, f"{len(val)} solutions held out of training")
    return PrmReport(
        examples=len(fit_on), steps=len(targets), positive_share=sum(t >= 0.5 for t in targets) / len(targets),
        optimiser_steps=figures.steps, planned_steps=plan.total_steps(len(fit_on)), seen=figures.rows,
        seconds=time.perf_counter() - t0,
        first_loss=losses[0] if losses else None,
        last_loss=sum(losses[-10:]) / len(losses[-10:]) if losses else None,
        val_steps=sum(len(e.targets) for e in val), val_auroc_before=before,
        val_auroc_after=_auroc(val, val_scores), tag=step_tag(tokenizer), cut=cut)


def _cut_line(cut: Cut | None) -> str:
    if cut is None:
        return "- cut: none fitted (the held-out solutions lack right or wrong ones); scores cut at 0.5 raw"
    return (f"- cut: raw {cut.center:.3f} maps to 0.5 (`redline_calibration.json`), fitted on the "
            f"{cut.solutions} held-out solutions: ProcessBench F1 {100 * cut.f1:.1f}% (first error exact "
            f"{100 * cut.error_accuracy:.1f}%, right solutions kept {100 * cut.correct_accuracy:.1f}%)")


def write_card(out: Path, base: str, sources: Sequence[tuple[Path, int, str]], settings: PrmSettings,
               report: PrmReport, command: str) -> Path:
    """README.md next to the adapter: the data (file, rows, sha256), the settings and the figures."""
    auc = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
    lines = [
        "# A Math-Shepherd process reward model made by `redline train prm`", "",
        f"Score steps with it: `--verifier hf-prm:{out}` (a LoRA on `{base}`, merged at load). "
        f"A step's score is P('+') / (P('+') + P('-')) of the next-token logits after its tag `{report.tag}`.", "",
        f"- command: `{command}`",
        *[f"- data: `{path}` ({rows} rows, sha256 `{sha}`)" for path, rows, sha in sources],
        f"- training set: {report.examples} solutions / {report.steps} labelled steps "
        f"({100 * report.positive_share:.0f}% right); {report.val_steps} steps held out",
        f"- settings: " + ", ".join(f"{k}={v}" for k, v in asdict(settings).items())
        + "; LoRA alpha = 2 x rank on q/k/v/o/gate/up/down; loss: two-way cross-entropy at each tag",
        f"- training: {report.optimiser_steps} of {report.planned_steps} planned optimiser steps "
        f"({report.seen} solutions seen) in {report.seconds:.0f} s; loss "
        f"{report.first_loss if report.first_loss is None else round(report.first_loss, 3)} (first batch) -> "
        f"{report.last_loss if report.last_loss is None else round(report.last_loss, 3)} (last 10)",
        f"- held-out step AUROC: {auc(report.val_auroc_before)} before training, {auc(report.val_auroc_after)} after",
        _cut_line(report.cut),
    ]
    path = out / "README.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
