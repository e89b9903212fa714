"""Sanity rules every strategy applies before trusting a verifier's scores.

A verifier judges what a step claims; it cannot tell that a step claims nothing. These rules
catch the garbage that used to pass, and score it 0:

- `empty`: a step with no content beyond step labels ('Step 1: Step 2: ... Step 78: Step 7');
- `repeat`: a step that repeats an earlier step word for word;
- `loop`: a step that loops on an n-gram (some 4-gram three times, covering half its words);
- `truncated`: the solution was cut off by the token limit (finish_reason 'length');
- `no answer`: a complete solution with no parseable final answer (partial prefixes, as
  beam and MCTS score them, are exempt);
- `conflicting answers`: the solution states two different final answers ('... The answer is 2.'
  then 'Step 2 is probably wrong: it answers the question. The answer is 4.', a revision that
  `make demo` once accepted because its only checkable claim, in the first step, was true).

A zeroed step scores 0; a solution-level failure zeroes its last step (so StepCo rewrites from
there); any failure makes the outcome 0.

Unverified solutions: a verifier may say which score means "nothing here I could check"
(its `neutral` attribute: arith's 0.6 for a step without an arithmetic claim). Neutral step
scores stay, so a later checked error is still the first flagged step. But a solution whose
every step is neutral has been verified by nothing, and its outcome is capped at
`UNVERIFIED` = 0.49: just below the default threshold (StepCo's theta = 0.5), so StepCo
revises it rather than accepting it, while best-of-N still ranks it above a refuted solution.
This is what rejects 'Step 2 is probably wrong: it answers the question. The answer is 4.'.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Sequence

from redline.text import answers_equal, extract_answer
from redline.types import Solution

UNVERIFIED = 0.49
LOOP_N, LOOP_REPEATS, LOOP_COVERAGE = 4, 3, 0.5
_LABEL = re.compile(r"(?:\*\*)?\s*\bstep\s*\d+\s*[:.)]?\s*(?:\*\*)?", re.IGNORECASE)
_WORD = re.compile(r"\w+|[^\w\s]")
_STATES_ANSWER = re.compile(r"answer\s*(?:is|:)|\\boxed|####", re.IGNORECASE)


def step_body(text: str) -> str:
    """The step without any step labels, lower-cased, whitespace collapsed."""
    return " ".join(_LABEL.sub(" ", text).lower().split())


def has_content(text: str) -> bool:
    """Something beyond step labels and punctuation: a letter or a digit."""
    return any(c.isalnum() for c in step_body(text))


def loops(text: str, n: int = LOOP_N) -> bool:
    """Some n-gram occurs LOOP_REPEATS times without overlap, its repeats covering LOOP_COVERAGE of the words."""
    words = _WORD.findall(text.lower())
    if len(words) < n * LOOP_REPEATS:
        return False
    counts: Counter[tuple[str, ...]] = Counter()
    last: dict[tuple[str, ...], int] = {}
    for i in range(len(words) - n + 1):
        gram = tuple(words[i: i + n])
        if i >= last.get(gram, -n):
            counts[gram] += 1
            last[gram] = i + n
    gram, count = counts.most_common(1)[0]
    return count >= LOOP_REPEATS and count * n >= LOOP_COVERAGE * len(words)


def step_problems(steps: Sequence[str]) -> list[str | None]:
    """Per step: why the rules zero it ('empty', 'repeats step k', 'loops'), or None."""
    out: list[str | None] = []
    seen: dict[str, int] = {}
    for i, text in enumerate(steps):
        body = step_body(text)
        if not has_content(text):
            out.append("empty: no content beyond a step label")
        elif body in seen:
            out.append(f"repeats step {seen[body] + 1}")
        elif loops(body):
            out.append("loops on an n-gram")
        else:
            out.append(None)
        seen.setdefault(body, i)
    return out


def stated_answers(text: str) -> list[str]:
    """Every final answer the text states, one per line that states one, in order."""
    found = (extract_answer(line) for line in text.splitlines() if _STATES_ANSWER.search(line))
    return [a for a in found if a is not None]


def conflicting_answers(text: str) -> tuple[str, str] | None:
    """The first two stated answers that are not equivalent, if any."""
    answers = stated_answers(text)
    return next(((answers[0], a) for a in answers[1:] if not answers_equal(answers[0], a)), None)


def solution_problems(solution: Solution, complete: bool = True) -> list[str]:
    """Whole-solution failures: cut off by the token limit; no final answer (complete solutions only);
    two different final answers."""
    out = []
    if solution.finish_reason == "length":
        out.append("truncated: cut off by the token limit")
    if complete and solution.answer is None:
        out.append("no answer: no parseable final answer")
    conflict = conflicting_answers(solution.text)
    if conflict is not None:
        out.append(f"conflicting answers: {conflict[0]!r} then {conflict[1]!r}")
    return out


def apply(solution: Solution, scores: Sequence[float], complete: bool = True) -> tuple[list[float], list[str]]:
    """The verifier's step scores with the sanity rules applied, and why anything was zeroed."""
    scores = [float(s) for s in scores]
    reasons = []
    for i, problem in enumerate(step_problems(solution.step_texts)):
        if problem is not None:
            scores[i] = 0.0
            reasons.append(f"step {i + 1} {problem}")
    whole = solution_problems(solution, complete)
    if whole and scores:
        scores[-1] = 0.0
    return scores, reasons + whole


def outcome(scores: Sequence[float], reasons: Sequence[str], aggregated: float, neutral: float | None) -> float:
    """The outcome score: 0 when a rule fired; capped at UNVERIFIED when every step is neutral."""
    if reasons or not scores:
        return 0.0
    if neutral is not None and all(abs(s - neutral) < 1e-9 for s in scores):
        return min(aggregated, UNVERIFIED)
    return aggregated
