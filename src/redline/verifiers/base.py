"""The process-reward interface: `await verifier.score(question, steps) -> list[float]` in [0, 1]."""

from __future__ import annotations

import asyncio
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Literal, Protocol, Sequence, TypeVar, runtime_checkable

Aggregation = Literal["last", "min", "prod", "mean"]
AGGREGATIONS: tuple[str, ...] = ("last", "min", "prod", "mean")
T = TypeVar("T")

_POOL: ThreadPoolExecutor | None = None


@runtime_checkable
class StepVerifier(Protocol):
    name: str

    async def score(self, question: str, steps: Sequence[str]) -> list[float]:
        """One P(step is correct) per step, in order, each in [0, 1]."""
        ...


async def run_in_pool(fn: Callable[..., T], *args: Any) -> T:
    """Run CPU-bound scoring in the shared worker pool so the event loop stays responsive."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="redline-verify")
    return await asyncio.get_running_loop().run_in_executor(_POOL, fn, *args)


def first_error(scores: Sequence[float], threshold: float = 0.5) -> int | None:
    """Index of the first step scoring below `threshold`, or None when every step passes."""
    return next((i for i, s in enumerate(scores) if s < threshold), None)


def aggregate(scores: Sequence[float], how: str = "min") -> float:
    """Outcome score from step scores: last, min, prod or mean. No steps scores 0."""
    if not scores:
        return 0.0
    if how == "last":
        return float(scores[-1])
    if how == "min":
        return float(min(scores))
    if how == "prod":
        return float(math.prod(scores))
    if how == "mean":
        return float(sum(scores) / len(scores))
    raise ValueError(f"unknown aggregation {how!r}; valid: {', '.join(AGGREGATIONS)}")


def clamp01(x: float) -> float:
    if math.isnan(x):
        return 0.5
    return min(1.0, max(0.0, float(x)))
