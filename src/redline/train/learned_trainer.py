"""Training the `learned` verifier from step-labelled solutions (MC labels or planted errors).

Soft labels (the fraction of rollouts that reached the gold answer) are fitted exactly with
logistic regression by giving each step two weighted rows: label 1 with weight p and label
0 with weight 1 - p, which is the cross-entropy against p. A held-out share of the
solutions (split by solution, not by step) gives an honest validation AUROC. The fitted
scikit-learn pipeline is written as plain coefficients (`verifiers.learned.write_model_file`),
never pickled.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from redline.errors import RedlineError
from redline.verifiers.features import stack, step_features
from redline.verifiers.learned import write_model_file
from redline.train.records import LabeledSolution

if TYPE_CHECKING:
    import scipy.sparse as sp


@dataclass(frozen=True)
class TrainReport:
    solutions: int
    steps: int
    positive_share: float
    train_auroc: float | None
    val_auroc: float | None
    seconds: float


def step_dataset(records: Sequence[LabeledSolution]) -> tuple["sp.csr_matrix", np.ndarray]:
    """One feature row and one target per labelled step."""
    rows, targets = [], []
    for record in records:
        pairs = record.step_targets()
        if pairs:
            features = step_features(record.question, record.steps)
            rows.append(features[[i for i, _ in pairs]])
            targets += [t for _, t in pairs]
    return stack(rows), np.asarray(targets, dtype=np.float64)


def _auroc(model: Any, x: "sp.csr_matrix", y: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    hard = (y >= 0.5).astype(int)
    if x.shape[0] == 0 or len(set(hard)) < 2:
        return None
    return float(roc_auc_score(hard, model.predict_proba(x)[:, 1]))


def fit(x: "sp.csr_matrix", y: np.ndarray, c: float = 1.0, seed: int = 0) -> Any:
    """Logistic regression on soft targets (see module doc), features scaled to [-1, 1] (sparsity kept)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MaxAbsScaler

    xx = stack([x, x])
    yy = np.concatenate([np.ones(len(y)), np.zeros(len(y))])
    weights = np.concatenate([y, 1.0 - y])
    keep = weights > 0
    # balance the classes by total weight, so a mostly-right dataset does not teach 'always right'
    positive = weights[yy == 1].sum()
    negative = weights[yy == 0].sum()
    weights = np.where(yy == 1, weights * (positive + negative) / (2 * positive),
                       weights * (positive + negative) / (2 * negative))
    model = make_pipeline(MaxAbsScaler(), LogisticRegression(C=c, max_iter=3000, random_state=seed))
    model.fit(xx[np.flatnonzero(keep)], yy[keep], logisticregression__sample_weight=weights[keep])
    return model


def coefficients(model: Any) -> tuple[np.ndarray, float]:
    """(coef, intercept) of a `fit` pipeline, the scaler folded in: (x / scale) . w == x . (w / scale)."""
    scaler, regression = model.named_steps["maxabsscaler"], model.named_steps["logisticregression"]
    return regression.coef_[0] / scaler.scale_, float(regression.intercept_[0])


def train(records: Sequence[LabeledSolution], output: str | Path, c: float = 1.0, val_fraction: float = 0.2,
          seed: int = 0) -> TrainReport:
    """Fit the learned verifier on `records` and write it to `output` (one safetensors file)."""
    if not 0 <= val_fraction < 1:
        raise RedlineError(f"validation fraction must be in [0, 1), got {val_fraction}")
    t0 = time.perf_counter()
    shuffled = list(records)
    random.Random(seed).shuffle(shuffled)
    n_val = int(len(shuffled) * val_fraction)
    val, fit_on = shuffled[:n_val], shuffled[n_val:]
    targets = {t for r in fit_on for _, t in r.step_targets()}
    if not targets:
        raise RedlineError("no labelled steps to train on")
    if targets <= {0.0} or targets <= {1.0}:
        raise RedlineError("the labels hold only one class (every step right, or every step wrong); "
                           "label more problems or use data with planted errors")
    x, y = step_dataset(fit_on)
    model = fit(x, y, c, seed)
    xv, yv = step_dataset(val)
    report = TrainReport(solutions=len(fit_on), steps=len(y), positive_share=float((y >= 0.5).mean()),
                         train_auroc=_auroc(model, x, y), val_auroc=_auroc(model, xv, yv),
                         seconds=time.perf_counter() - t0)
    write_model_file(output, *coefficients(model), {
        "trained_on": report.solutions, "steps": report.steps, "val_auroc": report.val_auroc, "c": c, "seed": seed,
        "created": time.strftime("%Y-%m-%d %H:%M:%S")})
    return report
