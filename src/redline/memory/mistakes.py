"""Mistakes: wrong solutions paired with a correction, for LEAP, Step-DPO and in-context pairs.

A learning run records the strategy's final solution when it is graded wrong, and wrong
candidates it considered on the way. The correction is a model solution graded correct
when there is one (it is in the model's own distribution, as Step-DPO prefers), else the
gold worked solution. Showing a wrong and a correct solution side by side lets a model
learn from the mistake in context (Alazraki et al. 2025).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from redline.memory.store import MistakeRow
from redline.text import answers_equal, join_steps
from redline.types import Result, Solution
from redline.verifiers.base import first_error


@dataclass(frozen=True)
class MistakeDraft:
    wrong_steps: list[str]
    wrong_answer: str | None
    first_error: int | None
    corrected_steps: list[str] | None
    corrected_source: str | None  # 'model' | 'gold'


def _solutions(result: Result) -> list[Solution]:
    seen: set[tuple[str, ...]] = set()
    out = []
    for sol in ([result.solution] if result.solution else []) + [c.solution for c in result.candidates]:
        key = tuple(sol.step_texts)
        if sol.steps and key not in seen:
            seen.add(key)
            out.append(sol)
    return out


def mistakes_in(result: Result, gold_answer: str, gold: Sequence[str], limit: int = 2,
                threshold: float = 0.5) -> list[MistakeDraft]:
    """Wrong solutions in `result` (final first), each with its first error and a correction.

    The first-error index comes from verifier step scores when the strategy scored the
    steps; without scores it is unknown (None), not guessed.
    """
    solutions = _solutions(result)
    correct = next((s for s in solutions if answers_equal(s.answer, gold_answer)), None)
    corrected, source = (correct.step_texts, "model") if correct else ((list(gold), "gold") if gold else (None, None))
    drafts = []
    for sol in solutions:
        if answers_equal(sol.answer, gold_answer):
            continue
        scores = sol.scores
        drafts.append(MistakeDraft(sol.step_texts, sol.answer, first_error(scores, threshold) if scores else None,
                                   corrected, source))
        if len(drafts) >= limit:
            break
    return drafts


def pair_view(m: MistakeRow, max_chars: int = 600) -> dict[str, str | None]:
    """A mistake as template values: the wrong and the correct solution, each shortened."""
    return {
        "question": m.question,
        "wrong_answer": m.wrong_answer or "none",
        "wrong_solution": join_steps(m.wrong_steps)[:max_chars],
        "correct_answer": m.correct_answer,
        "correct_solution": join_steps(m.corrected_steps or [])[:max_chars],
    }
