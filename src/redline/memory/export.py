"""Exports for training, in the formats TRL reads.

- `sft`: verified-correct solutions as chat JSONL ({"messages": [...]}) for SFTTrainer;
  model solutions graded correct, plus gold worked solutions rewritten in the 'Step k:' format.
- `step-dpo` (Lai et al. 2024): {"prompt", "chosen", "rejected"} for DPOTrainer. The prompt
  is the question plus the correct prefix (steps before the first error), `rejected` is the
  erroneous step, `chosen` the step at the same position of the correction. First come the
  StepCo revisions that fixed the answer (learned with `-s stepco`): the flagged step is
  rejected, the step the revision wrote in its place is chosen, after the prefix the revision
  kept. Then the mistakes: exact when the correction is a model solution that shares the
  prefix, aligned by position when it is the gold solution; a pair already written from a
  revision is not written twice. Mistakes without a located first error (strategies that do
  not score steps) cannot give a step pair and are counted as skipped.
- `prm`: TRL's stepwise-supervision format {"prompt", "completions", "labels"}: steps of
  correct solutions labelled True; a wrong solution's steps up to its first error, that
  step labelled False.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from redline.errors import RedlineError
from redline.memory.stepbank import gold_steps, step_body
from redline.memory.store import MemoryStore
from redline.strategies.generation import prefix_text
from redline.text import join_steps, render, solve_messages

EXPORT_FORMATS = ("sft", "step-dpo", "prm")


@dataclass(frozen=True)
class ExportReport:
    rows: int
    skipped: int
    path: Path


def labelled(steps: list[str]) -> str:
    """Steps in redline's own 'Step k:' format (gold lines carry no labels)."""
    return join_steps([f"Step {i + 1}: {step_body(s)}" for i, s in enumerate(steps)])


def _correct_solutions(store: MemoryStore, include_gold: bool) -> Iterator[tuple[str, list[str]]]:
    """(question, steps) of every verified-correct solution, each distinct solution once."""
    seen: set[tuple[str, str]] = set()
    for question, steps in store.iter_rows(
            "SELECT q.question, a.steps FROM attempts a JOIN problems q ON q.id = a.problem_id"
            " WHERE a.correct = 1 ORDER BY a.id"):
        if (question, steps) not in seen:
            seen.add((question, steps))
            yield question, json.loads(steps)
    if include_gold:
        for question, solution, answer in store.iter_rows(
                "SELECT question, gold_solution, gold_answer FROM problems"
                " WHERE gradable = 1 AND gold_solution IS NOT NULL ORDER BY id"):
            steps = gold_steps(solution)
            if steps:
                last = steps[-1] if "answer is" in steps[-1].lower() else f"{steps[-1]} The answer is {answer}."
                yield question, steps[:-1] + [last]


def _sft(store: MemoryStore) -> Iterator[dict[str, Any] | None]:
    for question, steps in _correct_solutions(store, include_gold=True):
        yield {"messages": [*solve_messages(question), {"role": "assistant", "content": labelled(steps)}]}


def _mistakes(store: MemoryStore) -> Iterator[tuple[str, list[str], int | None, list[str] | None]]:
    for question, wrong, first_error, corrected in store.iter_rows(
            "SELECT q.question, m.wrong_steps, m.first_error, m.corrected_steps FROM mistakes m"
            " JOIN problems q ON q.id = m.problem_id ORDER BY m.id"):
        yield question, json.loads(wrong), first_error, json.loads(corrected) if corrected else None


def _step_pair(question: str, prefix: list[str], rejected: str, chosen: str) -> dict[str, Any] | None:
    if step_body(chosen) == step_body(rejected):
        return None
    return {"prompt": f"{render('solve_user', question=question)}\n\n{prefix_text(prefix)}",
            "chosen": f"Step {len(prefix) + 1}: {step_body(chosen)}", "rejected": rejected}


def _step_dpo(store: MemoryStore) -> Iterator[dict[str, Any] | None]:
    written: set[tuple[str, str]] = set()
    for question, prefix, flagged, revision in store.iter_rows(
            "SELECT q.question, r.prefix, r.flagged, r.revision FROM revisions r JOIN problems q ON q.id = r.problem_id"
            " WHERE r.before_correct = 0 AND r.after_correct = 1 ORDER BY r.id"):
        row = _step_pair(question, json.loads(prefix), flagged, revision)
        if row is not None:
            written.add((row["prompt"], row["rejected"]))
        yield row
    for question, wrong, k, corrected in _mistakes(store):
        if k is None or k >= len(wrong) or not corrected or k >= len(corrected):
            yield None
            continue
        row = _step_pair(question, wrong[:k], wrong[k], corrected[k])
        if row is not None and (row["prompt"], row["rejected"]) in written:
            continue
        yield row


def _prm(store: MemoryStore) -> Iterator[dict[str, Any] | None]:
    for question, steps in _correct_solutions(store, include_gold=True):
        yield {"prompt": question, "completions": steps, "labels": [True] * len(steps)}
    for question, wrong, k, _ in _mistakes(store):
        if k is None or k >= len(wrong):
            yield None
            continue
        yield {"prompt": question, "completions": wrong[:k + 1], "labels": [True] * k + [False]}


_WRITERS: dict[str, Callable[[MemoryStore], Iterator[dict[str, Any] | None]]] = {
    "sft": _sft, "step-dpo": _step_dpo, "prm": _prm}


def export(store: MemoryStore, format: str, path: Path) -> ExportReport:
    """Write `format` rows as JSONL to `path` atomically (a failed export never leaves half a file)."""
    if format not in _WRITERS:
        raise RedlineError(f"unknown export format {format!r}; valid: {', '.join(EXPORT_FORMATS)}")
    return write_rows(_WRITERS[format](store), path)


def write_rows(items: Iterable[dict[str, Any] | None], path: Path) -> ExportReport:
    """Write rows as JSONL to `path` atomically, counting the `None`s as skipped."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise RedlineError(f"{path} is a directory; pass a file path with -o")
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = skipped = 0
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for row in items:
                if row is None:
                    skipped += 1
                    continue
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                rows += 1
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return ExportReport(rows, skipped, path)
