"""`learned`: a small process reward model the project trains itself (see `training.py`).

Features per step: the step's MiniLM sentence embedding, its cosine similarity to the
question, the `arith` verdict (claims true / false / none), its relative position, and its
length. A scikit-learn classifier maps them to P(step correct). One joblib file holds the
classifier and the feature version it expects.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from pydantic import Field

from redline.errors import RedlineError
from redline.registry import VERIFIERS, Params
from redline.runtime import Runtime
from redline.verifiers.arith import check_step
from redline.verifiers.base import run_in_pool
from redline.verifiers.judge import plain_step

FORMAT = "redline-learned-prm"
FEATURE_VERSION = 1
_MAX_CHARS = 2000  # MiniLM reads 256 word pieces; longer text only costs time


def step_features(question: str, steps: Sequence[str]) -> np.ndarray:
    """Feature matrix, one row per step (shape: len(steps) x (384 + 7))."""
    return batch_features([(question, steps)])[0]


class _VectorCache:
    """Recently embedded texts: strategies re-score the same question and prefix steps many times."""

    def __init__(self, size: int = 20_000) -> None:
        self.size = size
        self.vectors: dict[str, np.ndarray] = {}
        self.lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> list[np.ndarray]:
        from redline.embeddings import embed

        with self.lock:
            found = {t: self.vectors[t] for t in texts if t in self.vectors}
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            fresh = dict(zip(missing, embed(missing)))
            found.update(fresh)
            with self.lock:
                if len(self.vectors) + len(fresh) > self.size:
                    self.vectors.clear()
                self.vectors.update(fresh)
        return [found[t] for t in texts]


_CACHE = _VectorCache()


def batch_features(solutions: Sequence[tuple[str, Sequence[str]]]) -> list[np.ndarray]:
    """`step_features` for many solutions with one embedding call (batching is most of the speed)."""
    texts: list[str] = []
    for question, steps in solutions:
        texts.append(question[:_MAX_CHARS])
        texts.extend(plain_step(s, _MAX_CHARS) for s in steps)
    vectors = _CACHE.embed(texts)
    out, row = [], 0
    for question, steps in solutions:
        q, step_vecs = vectors[row], np.asarray(vectors[row + 1: row + 1 + len(steps)]).reshape(len(steps), -1)
        row += 1 + len(steps)
        n = len(steps)
        extra = []
        for i, text in enumerate(steps):
            verdict = check_step(text[:20_000]).verdict
            extra.append([float(step_vecs[i] @ q), verdict == "true", verdict == "false", verdict == "none",
                          i / max(n - 1, 1), i == n - 1, math.log1p(len(text)) / 8])
        out.append(np.hstack([step_vecs, np.asarray(extra, dtype=np.float32).reshape(n, 7)]))
    return out


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
