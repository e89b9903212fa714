"""Where a PRM's scores are cut: a fitted center that maps to 0.5.

A small PRM can rank steps well and still put its scores in the wrong place: the 135M PRM trained
on 5,500 planted solutions had a step AUROC of 0.69 on held-out ones, yet at StepCo's theta = 0.5
it flagged 69% of the right solutions. `fit_center` picks the raw score theta* that maximises the
ProcessBench F1 (first error found exactly x right solutions left alone) on labelled solutions the
PRM was not trained on. `recenter` maps theta* to 0.5 by a shift in log-odds, so everything that
cuts at 0.5 (StepCo, `first_error`, `verifier eval`) cuts at theta*, while every ranking (best-of-N,
beam, MCTS) stays as it was. `redline train prm` fits the center on its held-out solutions and
`redline verifier calibrate` on any labelled file; both write it next to the model, where `hf-prm`
finds it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from redline.errors import RedlineError
from redline.verifiers.base import first_error

CALIBRATION_FILE = "redline_calibration.json"
CANDIDATES = 512  # thresholds tried: quantiles of the observed step scores
EDGE = 1e-4  # a center stays this far inside (0, 1), so its log-odds are finite


@dataclass(frozen=True)
class Cut:
    """The fitted center and what cutting there does on the solutions it was fitted on."""

    center: float
    f1: float
    error_accuracy: float  # solutions with an error whose first error is flagged exactly
    correct_accuracy: float  # right solutions with no step flagged
    solutions: int


def _logit(p: float) -> float:
    p = min(max(p, EDGE), 1 - EDGE)
    return math.log(p / (1 - p))


def recenter(score: float, center: float) -> float:
    """`score` shifted in log-odds so that `center` becomes 0.5 (order kept)."""
    return 1 / (1 + math.exp(-(_logit(score) - _logit(center))))


def cut_at(scores: Sequence[Sequence[float]], labels: Sequence[int], threshold: float) -> Cut:
    """The ProcessBench figures of cutting at `threshold`; `labels` are first-error indices, -1 none."""
    predicted = [-1 if (i := first_error(row, threshold)) is None else i for row in scores]
    wrong = [p == y for p, y in zip(predicted, labels) if y >= 0]
    right = [p == -1 for p, y in zip(predicted, labels) if y < 0]
    if not wrong or not right:
        raise RedlineError("calibration needs solutions with an error and solutions without one")
    err, ok = sum(wrong) / len(wrong), sum(right) / len(right)
    f1 = 0.0 if err + ok == 0 else 2 * err * ok / (err + ok)
    return Cut(center=threshold, f1=f1, error_accuracy=err, correct_accuracy=ok, solutions=len(labels))


def fit_center(scores: Sequence[Sequence[float]], labels: Sequence[int]) -> Cut:
    """The threshold, among quantiles of the step scores, with the best ProcessBench F1."""
    flat = sorted(s for row in scores for s in row)
    if not flat:
        raise RedlineError("calibration needs scored steps")
    picks = sorted({flat[round(q * (len(flat) - 1) / (CANDIDATES - 1))] for q in range(CANDIDATES)})
    # cut just above each observed score, so that score itself is flagged
    candidates = [min(max(s + 1e-6, EDGE), 1 - EDGE) for s in picks] + [0.5]
    return max((cut_at(scores, labels, t) for t in candidates), key=lambda c: (c.f1, -abs(c.center - 0.5)))


def write_cut(folder: Path, cut: Cut, fitted_on: str) -> Path:
    path = folder / CALIBRATION_FILE
    path.write_text(json.dumps({**asdict(cut), "fitted_on": fitted_on}, indent=1) + "\n", encoding="utf-8")
    return path


def read_center(folder: Path) -> float | None:
    """The center written next to a model, None when there is none; a broken file is an error,
    not a silent fall-back to an uncalibrated cut."""
    path = folder / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        center = float(json.loads(path.read_text(encoding="utf-8"))["center"])
    except (ValueError, KeyError, TypeError) as e:
        raise RedlineError(f"{path}: not a calibration file ({type(e).__name__}); "
                           "refit it with `redline verifier calibrate`") from None
    if not 0 < center < 1:
        raise RedlineError(f"{path}: center {center} is not in (0, 1)")
    return center
