"""A deterministic verifier for control-flow tests only."""

from __future__ import annotations

from typing import Callable, Sequence


class ScriptedVerifier:
    """Scores each step with `fn(question, step_index, step_text)`; records every call."""

    name = "scripted"

    def __init__(self, fn: Callable[[str, int, str], float]) -> None:
        self.fn = fn
        self.calls: list[tuple[str, tuple[str, ...]]] = []

    async def score(self, question: str, steps: Sequence[str]) -> list[float]:
        self.calls.append((question, tuple(steps)))
        return [float(self.fn(question, i, s)) for i, s in enumerate(steps)]
