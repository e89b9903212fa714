"""How good is a verifier? ProcessBench figures on step-labelled solutions.

- error accuracy: on solutions with an error, the predicted first error (first step scoring
  below the threshold) equals the labelled one;
- correct accuracy: on fully correct solutions, no step is flagged;
- F1: their harmonic mean (ProcessBench's headline figure);
- step AUROC: how well scores rank right steps above wrong ones, over the steps whose
  correctness is known (before and at the first error; every step of a correct solution).
Everything is also broken down by error kind, which shows where a verifier is strong and weak.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

from redline.ledger import Ledger, use_ledger
from redline.verifiers.base import first_error
from redline.train.records import LabeledSolution


@dataclass(frozen=True)
class Judged:
    record: LabeledSolution
    scores: tuple[float, ...]
    predicted: int  # first flagged step, -1 when none

    @property
    def outcome(self) -> str:
        """exact / early (flagged a right step first) / late (flagged only after the error) / missed."""
        label = self.record.label
        if label is None:
            return "unlabelled"
        if self.predicted == label:
            return "exact"
        if self.predicted == -1:
            return "missed"
        return "early" if label == -1 or self.predicted < label else "late"


@dataclass
class Figures:
    n: int = 0
    accuracy: float | None = None  # exact first-error (or exact 'no error') rate
    early: float | None = None
    late: float | None = None
    missed: float | None = None
    auroc: float | None = None


@dataclass
class EvalReport:
    verifier: str
    threshold: float
    n: int
    error_accuracy: float | None
    correct_accuracy: float | None
    f1: float | None
    auroc: float | None
    by_kind: dict[str, Figures]
    steps: int
    seconds: float
    calls: int
    tokens: int
    skipped_lines: list[tuple[int, str]] = field(default_factory=list)
    judged: list[Judged] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k not in ("judged", "by_kind")}
        d["by_kind"] = {k: asdict(v) for k, v in self.by_kind.items()}
        d["steps_per_s"] = self.steps / self.seconds if self.seconds else None
        d["predictions"] = [{"id": j.record.id, "kind": j.record.kind, "label": j.record.label,
                             "predicted": j.predicted, "scores": list(j.scores)} for j in self.judged]
        return d


def _rate(items: Sequence[Judged], outcome: str) -> float | None:
    return sum(j.outcome == outcome for j in items) / len(items) if items else None


def step_auroc(judged: Sequence[Judged]) -> float | None:
    """AUROC of step scores against known step correctness; None when only one class occurs."""
    from sklearn.metrics import roc_auc_score

    y, s = [], []
    for j in judged:
        for i, target in j.record.step_targets():
            y.append(int(target >= 0.5))
            s.append(j.scores[i])
    if len(set(y)) < 2:
        return None
    return float(roc_auc_score(y, s))


def figures(judged: Sequence[Judged]) -> Figures:
    return Figures(n=len(judged), accuracy=_rate(judged, "exact"), early=_rate(judged, "early"),
                   late=_rate(judged, "late"), missed=_rate(judged, "missed"), auroc=step_auroc(judged))


def harmonic_mean(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def summarise(name: str, judged: Sequence[Judged], threshold: float, seconds: float, ledger: Ledger,
              skipped: Sequence[tuple[int, str]] = ()) -> EvalReport:
    erroneous = [j for j in judged if j.record.label is not None and j.record.label >= 0]
    correct = [j for j in judged if j.record.label == -1]
    err_acc, ok_acc = _rate(erroneous, "exact"), _rate(correct, "exact")
    kinds = sorted({j.record.kind for j in judged})
    usage = ledger.total()
    return EvalReport(
        verifier=name, threshold=threshold, n=len(judged), error_accuracy=err_acc, correct_accuracy=ok_acc,
        f1=harmonic_mean(err_acc, ok_acc), auroc=step_auroc(judged),
        by_kind={k: figures([j for j in judged if j.record.kind == k]) for k in kinds},
        steps=sum(len(j.scores) for j in judged), seconds=seconds, calls=usage.calls, tokens=usage.total_tokens,
        skipped_lines=list(skipped), judged=list(judged))


async def evaluate(verifier: Any, records: Sequence[LabeledSolution], threshold: float = 0.5,
                   concurrency: int = 4, name: str | None = None,
                   on_done: Callable[[Judged], None] | None = None,
                   skipped: Sequence[tuple[int, str]] = ()) -> EvalReport:
    """Score every record's steps and compute the ProcessBench figures."""
    ledger = Ledger(strategy=f"verifier-eval:{name or verifier.name}")
    gate = asyncio.Semaphore(max(1, concurrency))

    async def judge(record: LabeledSolution) -> Judged:
        async with gate:
            scores = await verifier.score(record.question, list(record.steps))
        if len(scores) != len(record.steps):
            raise RuntimeError(f"verifier {verifier.name!r} gave {len(scores)} scores for {len(record.steps)} steps")
        predicted = first_error(scores, threshold)
        result = Judged(record, tuple(float(s) for s in scores), -1 if predicted is None else predicted)
        if on_done is not None:
            on_done(result)
        return result

    t0 = time.perf_counter()
    with use_ledger(ledger):
        judged = await asyncio.gather(*(judge(r) for r in records))
    return summarise(name or verifier.name, judged, threshold, time.perf_counter() - t0, ledger, skipped)


TABLE_HEADER = ("verifier", "slice", "n", "exact", "early", "late", "missed", "step AUROC")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def table_rows(report: EvalReport) -> list[list[str]]:
    """Rows under TABLE_HEADER: the ProcessBench summary, then one row per error kind."""
    erroneous = sum(f.n for k, f in report.by_kind.items() if k != "correct")
    rows = [[report.verifier, "F1 (errors x correct)", str(report.n), _pct(report.f1), "", "", "",
             "-" if report.auroc is None else f"{report.auroc:.3f}"],
            [report.verifier, "erroneous: first error", str(erroneous), _pct(report.error_accuracy), "", "", "", ""]]
    for kind, f in report.by_kind.items():
        rows.append([report.verifier, f"kind={kind}", str(f.n), _pct(f.accuracy), _pct(f.early), _pct(f.late),
                     _pct(f.missed), "-" if f.auroc is None else f"{f.auroc:.3f}"])
    return rows


def markdown_table(reports: Sequence[EvalReport]) -> str:
    lines = ["| " + " | ".join(TABLE_HEADER) + " |", "|" + "---|" * len(TABLE_HEADER)]
    for report in reports:
        lines += ["| " + " | ".join(row) + " |" for row in table_rows(report)]
    return "\n".join(lines)
