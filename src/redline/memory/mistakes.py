"""Mistakes: wrong solutions paired with a correction, for LEAP, Step-DPO and in-context pairs.

Step-level mistakes come from StepCo's revisions (`revisions_in`): the step the verifier
flagged, the step the model wrote in its place, and whether that changed a wrong answer into
the right one: the (rejected, chosen) step pairs that Step-DPO trains on.

A learning run records the strategy's final solution when it is graded wrong, and wrong
candidates it considered on the way. The correction is a model solution graded correct
when there is one (it is in the model's own distribution, as Step-DPO prefers), else the
gold worked solution. Showing a wrong and a correct solution side by side lets a model
learn from the mistake in context (Alazraki et al. 2025).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

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


@dataclass(frozen=True)
class RevisionDraft:
    position: int  # 0-based index of the flagged step
    prefix: list[str]  # the steps before it, kept by the revision
    flagged: str
    flagged_score: float | None
    revision: str  # the step the revision wrote in its place
    before_answer: str | None
    after_answer: str | None
    before_correct: bool
    after_correct: bool

    @property
    def fixed(self) -> bool:
        return self.after_correct and not self.before_correct


def revisions_in(trace: Mapping[str, Any], gold_answer: str) -> list[RevisionDraft]:
    """StepCo's revisions, read from its trace: each 'revise' node rewrote the flagged step of the
    candidate before it (the best-scored first path, then the previous revision)."""
    children = trace.get("children", [])
    generated = [c for c in children if c.get("kind") == "generate"]
    if not generated:
        return []
    previous = max(generated, key=lambda c: c.get("score") or 0.0)
    out = []
    for node in children:
        if node.get("kind") != "revise":
            continue
        steps = [s["text"] for s in previous.get("steps", [])]
        k = int(node.get("flagged_step", 0)) - 1
        if 0 <= k < len(steps) and node.get("replacement"):
            before, after = previous.get("answer"), node.get("answer")
            out.append(RevisionDraft(k, steps[:k], node.get("flagged_text") or steps[k], node.get("flagged_score"),
                                     node["replacement"], before, after, answers_equal(before, gold_answer),
                                     answers_equal(after, gold_answer)))
        previous = node
    return out
