"""`learned`: a small process reward model the project trains itself (see `redline.train.learned_trainer`).

A scikit-learn logistic regression over `features.step_features` (hashed text and arith
signals) maps each step to P(step correct). One joblib file holds the classifier and the
feature version it expects.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Sequence

from pydantic import Field

from redline.errors import RedlineError
from redline.registry import VERIFIERS, Params
from redline.runtime import Runtime
from redline.verifiers.base import run_in_pool
from redline.verifiers.features import FEATURE_VERSION, step_features

FORMAT = "redline-learned-prm"


def load_model_file(path: str | Path) -> dict[str, Any]:
    """The trained model bundle, or a RedlineError that says how to make one."""
    import joblib

    path = Path(path).expanduser()
    if not path.is_file():
        raise RedlineError(f"no learned verifier at {path}: train one with "
                           f"`redline verifier train LABELS.jsonl -o {path}`")
    try:
        bundle = joblib.load(path)
    except Exception as e:  # joblib/pickle raise many types for a foreign or truncated file
        raise RedlineError(f"{path} is not a learned verifier file ({type(e).__name__}: {e})") from None
    if not isinstance(bundle, dict) or bundle.get("format") != FORMAT:
        raise RedlineError(f"{path} is not a learned verifier file (made by `redline verifier train`)")
    if bundle.get("feature_version") != FEATURE_VERSION:
        raise RedlineError(f"{path} was trained with feature version {bundle.get('feature_version')}, "
                           f"this redline uses {FEATURE_VERSION}: retrain it")
    return bundle


class LearnedParams(Params):
    path: str = Field(description="the .joblib file written by `redline verifier train`")


class LearnedVerifier:
    name = "learned"

    def __init__(self, bundle: dict[str, Any]) -> None:
        self.model = bundle["model"]
        self.info = {k: v for k, v in bundle.items() if k != "model"}
        self._lock = threading.Lock()

    def score_sync(self, question: str, steps: Sequence[str]) -> list[float]:
        if not steps:
            return []
        features = step_features(question, steps)
        with self._lock:
            probabilities = self.model.predict_proba(features)[:, 1]
        return [float(p) for p in probabilities]

    async def score(self, question: str, steps: Sequence[str]) -> list[float]:
        return await run_in_pool(self.score_sync, question, list(steps))


@VERIFIERS.register("learned", LearnedParams, "a small PRM trained here: learned:prm.joblib", positional=("path",))
def build_learned(params: LearnedParams, runtime: Runtime) -> LearnedVerifier:
    resolved = str(Path(params.path).expanduser().resolve())
    return runtime.cached(f"learned:{resolved}", lambda: LearnedVerifier(load_model_file(resolved)))
