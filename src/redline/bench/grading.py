"""Grading a Result against gold: the final answer, and every candidate for pass@k / maj@k.

Candidates are grouped by answer equivalence here, once, so the metrics never call math-verify.
A gold answer that does not parse makes the row ungradable (correct = None), never wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redline.text import answers_equal, parse_gold
from redline.types import Result


@dataclass(frozen=True)
class GradedCandidate:
    answer: str | None
    correct: bool | None
    group: int | None  # equivalence class among this result's candidates; None = no answer
    votes: float
    score: float | None
    origin: str  # 'sample' marks independent draws, the only ones pass@k and maj@k may use

    def to_dict(self) -> dict[str, Any]:
        return {"answer": self.answer, "correct": self.correct, "group": self.group, "votes": self.votes,
                "score": self.score, "origin": self.origin}


@dataclass(frozen=True)
class Grade:
    gradable: bool
    correct: bool | None
    candidates: tuple[GradedCandidate, ...]


def answer_groups(answers: list[str | None]) -> list[int | None]:
    """Each answer's cluster index (answers equal by math equivalence share one); None for no answer."""
    representatives: list[str] = []
    out: list[int | None] = []
    for a in answers:
        if a is None:
            out.append(None)
            continue
        for i, rep in enumerate(representatives):
            if answers_equal(rep, a):
                out.append(i)
                break
        else:
            representatives.append(a)
            out.append(len(representatives) - 1)
    return out


def grade(result: Result, gold: str | None) -> Grade:
    """Correctness of the answer and of each candidate against `gold`."""
    gradable = parse_gold(gold)

    def correct(answer: str | None) -> bool | None:
        return answers_equal(answer, gold) if gradable else None

    answers = [c.solution.answer for c in result.candidates]
    candidates = tuple(
        GradedCandidate(a, correct(a), g, c.votes, c.score, c.origin)
        for a, g, c in zip(answers, answer_groups(answers), result.candidates)
    )
    return Grade(gradable, correct(result.answer), candidates)
