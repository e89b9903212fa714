"""`learned`: a small process reward model the project trains itself (see `redline.train.learned_trainer`).

A logistic regression over `features.step_features` (hashed text and arith signals) maps each
step to P(step correct). The model is one safetensors file, which holds numbers only, so loading
it cannot run code (the joblib/pickle files of earlier versions could, and are refused):

- tensor `coef` (float64, one per feature): the regression's coefficients divided by the
  MaxAbsScaler's per-feature scale, so `x @ coef` equals the scaled pipeline's `(x / scale) @ coef_`;
- tensor `intercept` (float64, one value);
- header metadata: `format` = FORMAT (checked before anything else is read), `format_version`,
  and `info`, a JSON object (feature version, hashing settings, training figures).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from pydantic import Field

from redline.errors import RedlineError
from redline.registry import VERIFIERS, Params
from redline.runtime import Runtime
from redline.verifiers.base import run_in_pool
from redline.verifiers.features import DENSE_FEATURES, FEATURE_VERSION, HASHED_FEATURES, step_features

FORMAT = "redline-learned-prm"
FORMAT_VERSION = "2"
SUFFIX = ".safetensors"
_MAX_HEADER_BYTES = 1 << 20
_PICKLE_OR_JOBLIB = (b"\x80", b"ZF", b"\x78", b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"\x04\x22\x4d\x18")


def _retrain(path: Path) -> str:
    return f"retrain it with `redline verifier train LABELS.jsonl -o {path.with_suffix(SUFFIX).name}`"


def _header(path: Path) -> dict[str, Any]:
    """The metadata of `path`'s safetensors header, read and checked before any tensor is."""
    with path.open("rb") as f:
        head = f.read(8)
        size = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
        header = None
        if 2 <= size <= _MAX_HEADER_BYTES:
            try:
                header = json.loads(f.read(size))
            except (UnicodeDecodeError, json.JSONDecodeError):
                pass
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        if head.startswith(_PICKLE_OR_JOBLIB):
            raise RedlineError(f"{path} is an old joblib/pickle learned verifier: not loaded, since loading a pickle "
                               f"can run code; {_retrain(path)}")
        raise RedlineError(f"{path} is not a learned verifier file (made by `redline verifier train`)")
    if meta.get("format_version") != FORMAT_VERSION:
        raise RedlineError(f"{path} has learned-verifier format {meta.get('format_version')!r}, this redline reads "
                           f"{FORMAT_VERSION!r}; {_retrain(path)}")
    return meta


def load_model_file(path: str | Path) -> tuple[np.ndarray, float, dict[str, Any]]:
    """(coef, intercept, info) of a trained model, or a RedlineError that says how to make one."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path).expanduser()
    if not path.is_file():
        raise RedlineError(f"no learned verifier at {path}: train one with "
                           f"`redline verifier train LABELS.jsonl -o {path.name}`")
    meta = _header(path)
    try:
        info = json.loads(meta.get("info", "{}"))
        tensors = load_file(path)
    except (SafetensorError, json.JSONDecodeError, ValueError):
        raise RedlineError(f"{path} is a damaged learned verifier file; {_retrain(path)}") from None
    if info.get("feature_version") != FEATURE_VERSION:
        raise RedlineError(f"{path} was trained with feature version {info.get('feature_version')}, "
                           f"this redline uses {FEATURE_VERSION}: {_retrain(path)}")
    coef, intercept = tensors.get("coef"), tensors.get("intercept")
    width = HASHED_FEATURES + DENSE_FEATURES
    if (coef is None or intercept is None or coef.shape != (width,) or intercept.shape != (1,)
            or not (np.isfinite(coef).all() and np.isfinite(intercept).all())):
        raise RedlineError(f"{path} is a damaged learned verifier file; {_retrain(path)}")
    return coef.astype(np.float64), float(intercept[0]), info


def write_model_file(path: str | Path, coef: np.ndarray, intercept: float, info: dict[str, Any]) -> Path:
    """Write the model in the format `load_model_file` reads (see the module doc)."""
    from safetensors.numpy import save_file

    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"coef": np.ascontiguousarray(coef, dtype=np.float64),
               "intercept": np.asarray([intercept], dtype=np.float64)}
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION,
            "info": json.dumps({"feature_version": FEATURE_VERSION, "hashed_features": HASHED_FEATURES,
                                "dense_features": DENSE_FEATURES, **info})}
    save_file(tensors, str(path), metadata=meta)
    return path


class LearnedParams(Params):
    path: str = Field(description="the .safetensors file written by `redline verifier train`")


class LearnedVerifier:
    name = "learned"

    def __init__(self, coef: np.ndarray, intercept: float, info: dict[str, Any] | None = None) -> None:
        self.coef = coef
        self.intercept = intercept
        self.info = info or {}

    def probabilities(self, features: Any) -> np.ndarray:
        """P(correct) per feature row: the logistic function of `features @ coef + intercept`."""
        from scipy.special import expit

        return np.asarray(expit(features @ self.coef + self.intercept), dtype=np.float64)

    def score_sync(self, question: str, steps: Sequence[str]) -> list[float]:
        if not steps:
            return []
        return [float(p) for p in self.probabilities(step_features(question, steps))]

    async def score(self, question: str, steps: Sequence[str]) -> list[float]:
        return await run_in_pool(self.score_sync, question, list(steps))


@VERIFIERS.register("learned", LearnedParams, "a small PRM trained here: learned:prm.safetensors",
                    positional=("path",), operator_only=True)
def build_learned(params: LearnedParams, runtime: Runtime) -> LearnedVerifier:
    resolved = str(Path(params.path).expanduser().resolve())
    return runtime.cached(f"learned:{resolved}", lambda: LearnedVerifier(*load_model_file(resolved)))
