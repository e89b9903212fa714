"""`ensemble`: several verifiers combined per step by min, weighted mean or weighted product.

`ensemble:arith+judge` scores with both and keeps the lower score per step; members may
carry their own parameters in parentheses: `ensemble:(judge:mode=text)+arith,mode=mean,weights=(1,2)`.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal, Sequence

from pydantic import Field, field_validator

from redline.errors import SpecError
from redline.ledger import gather_calls
from redline.registry import VERIFIERS, Params
from redline.runtime import Runtime
from redline.spec import split_top
from redline.verifiers.base import clamp01


class EnsembleParams(Params):
    members: str = Field(description="member verifier specs joined by '+', e.g. arith+judge")
    mode: Literal["min", "mean", "prod"] = Field("min", description="how member scores combine per step")
    weights: tuple[float, ...] = Field((), description="one weight per member for mean/prod, e.g. (1,2)")

    @field_validator("weights", mode="before")
    @classmethod
    def _split_weights(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(float(w) for w in re.split(r"[,;/\s]+", value.strip()) if w)
        return value


def member_specs(members: str) -> list[str]:
    """'(judge:mode=text)+arith' -> ['judge:mode=text', 'arith']."""
    specs = []
    for part in split_top(members, "+"):
        part = part.strip()
        if part.startswith("(") and part.endswith(")"):
            part = part[1:-1].strip()
        if not part:
            raise SpecError(f"empty member in ensemble {members!r}")
        specs.append(part)
    return specs


class EnsembleVerifier:
    def __init__(self, members: Sequence[Any], mode: str = "min", weights: Sequence[float] = ()) -> None:
        if weights and len(weights) != len(members):
            raise SpecError(f"ensemble has {len(members)} members but {len(weights)} weights")
        if any(w < 0 for w in weights) or (weights and sum(weights) <= 0):
            raise SpecError("ensemble weights must be >= 0 and not all 0")
        self.members = list(members)
        self.mode = mode
        self.weights = list(weights) or [1.0] * len(members)
        self.name = "ensemble:" + "+".join(getattr(m, "name", "?") for m in members)

    def combine(self, per_member: Sequence[Sequence[float]]) -> list[float]:
        """One score per step from each member's scores for that step."""
        total = sum(self.weights)
        out = []
        for column in zip(*per_member):
            if self.mode == "min":
                value = min(column)
            elif self.mode == "mean":
                value = sum(w * s for w, s in zip(self.weights, column)) / total
            else:  # weighted geometric combination: prod of s ** (w / mean weight)
                value = math.prod(max(s, 1e-9) ** (w * len(column) / total) for w, s in zip(self.weights, column))
            out.append(clamp01(value))
        return out

    async def score(self, question: str, steps: Sequence[str]) -> list[float]:
        results = await gather_calls(*(m.score(question, steps) for m in self.members))
        for member, scores in zip(self.members, results):  # a short list would cut every column (zip)
            if len(scores) != len(steps):
                raise ValueError(f"ensemble member {getattr(member, 'name', '?')!r} gave {len(scores)} scores "
                                 f"for {len(steps)} steps")
        return self.combine(results)


@VERIFIERS.register("ensemble", EnsembleParams, "combine verifiers per step: ensemble:arith+judge,mode=min|mean|prod",
                    positional=("members",))
def build_ensemble(params: EnsembleParams, runtime: Runtime) -> EnsembleVerifier:
    specs = member_specs(params.members)
    if len(specs) < 2:
        raise SpecError(f"an ensemble needs at least two members joined by '+', got {params.members!r}")
    return EnsembleVerifier([runtime.verifier(s) for s in specs], params.mode, params.weights)
