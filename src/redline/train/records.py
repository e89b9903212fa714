"""Step-labelled solutions on disk (JSONL): planted errors, ProcessBench files, MC labels.

One record per line: `question` (or ProcessBench's `problem`), `steps` (list of strings), and
`label` (index of the first wrong step, -1 when all are right) and/or `step_labels` (one
P(correct) per step, from Monte Carlo rollouts). A line that does not fit is reported with its
line number and skipped; it never stops the run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redline.errors import RedlineError
from redline.jsonl import iter_jsonl_objects


@dataclass(frozen=True)
class LabeledSolution:
    id: str
    question: str
    steps: tuple[str, ...]
    label: int | None = None  # first wrong step, -1 when every step is right, None when unknown
    step_labels: tuple[float, ...] | None = None
    kind: str = "unknown"  # how the error was made (planted kind), or 'correct'
    meta: dict[str, Any] = field(default_factory=dict)

    def step_targets(self) -> list[tuple[int, float]]:
        """(step index, P(correct)) pairs a verifier can be trained or scored against.

        Explicit step labels win; otherwise ProcessBench semantics: steps before the first
        error are right, the first error is wrong, later steps are unknown and left out.
        """
        if self.step_labels is not None:
            return list(enumerate(self.step_labels))
        if self.label is None:
            return []
        if self.label < 0:
            return [(i, 1.0) for i in range(len(self.steps))]
        return [(i, 1.0) for i in range(self.label)] + [(self.label, 0.0)]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "question": self.question, "steps": list(self.steps), "kind": self.kind}
        if self.label is not None:
            d["label"] = self.label
        if self.step_labels is not None:
            d["step_labels"] = list(self.step_labels)
        return d | self.meta


@dataclass
class ReadResult:
    records: list[LabeledSolution]
    bad_lines: list[tuple[int, str]]  # (line number, reason)


def parse_record(row: dict[str, Any], number: int) -> LabeledSolution:
    """One labelled record from a parsed JSONL row; ValueError says what does not fit."""
    question = row.get("question", row.get("problem"))
    steps = row.get("steps")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("missing 'question' (or 'problem')")
    if not isinstance(steps, list) or not steps or not all(isinstance(s, str) for s in steps):
        raise ValueError("'steps' must be a non-empty list of strings")
    label = row.get("label")
    if label is not None and (not isinstance(label, int) or isinstance(label, bool) or not -1 <= label < len(steps)):
        raise ValueError(f"'label' must be -1 or a step index below {len(steps)}, got {label!r}")
    step_labels = row.get("step_labels")
    if step_labels is not None:
        if (not isinstance(step_labels, list) or len(step_labels) != len(steps)
                or not all(isinstance(x, (int, float)) and 0 <= x <= 1 for x in step_labels)):
            raise ValueError("'step_labels' must hold one number in [0, 1] per step")
        step_labels = tuple(float(x) for x in step_labels)
    if label is None and step_labels is None:
        raise ValueError("needs 'label' or 'step_labels'")
    kind = row.get("kind") or ("correct" if label == -1 else "unknown")
    known = {"id", "question", "problem", "steps", "label", "step_labels", "kind"}
    meta = {k: v for k, v in row.items() if k not in known}
    return LabeledSolution(str(row.get("id", number)), question, tuple(steps), label, step_labels, str(kind), meta)


def read_labeled(path: str | Path) -> ReadResult:
    """All usable records of a labelled JSONL file, and the lines skipped with why."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise RedlineError(f"no such labelled file: {path}")
    records, bad = [], []
    for number, row in iter_jsonl_objects(path):
        if isinstance(row, str):
            bad.append((number, row))
            continue
        try:
            records.append(parse_record(row, number))
        except ValueError as e:
            bad.append((number, str(e)))
    if not records:
        detail = f"; line {bad[0][0]}: {bad[0][1]}" if bad else ""
        raise RedlineError(f"{path}: no usable labelled solutions{detail}")
    return ReadResult(records, bad)


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    """Append one record and flush, so an interrupted run keeps every finished record.

    A torn last line (a run killed mid-write) is closed first, so it stays one bad line
    instead of swallowing the new record.
    """
    torn = False
    if path.exists() and path.stat().st_size:
        with path.open("rb") as f:
            f.seek(-1, 2)
            torn = f.read(1) != b"\n"
    with path.open("a", encoding="utf-8") as f:
        f.write(("\n" if torn else "") + json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
