"""Principles (LEAP, Zhang et al. 2024): lessons written from mistakes, condensed, merged, retired.

- low-level: the model sees the wrong and the correct solution side by side with every number
  hidden behind a placeholder ([A], [B], ...), so what it can write is the lesson, not the
  arithmetic; a draft that still restates the problem (its numbers, names, placeholders, the
  answer, or a run of its words) is rejected (`check_principle`);
- high-level: every so often the model condenses recent principles into a few general ones;
  only the newest `keep` stay active (`retire_surplus_high`);
- a new principle whose embedding is within `merge_threshold` cosine of an active one of the
  same task is merged into it (its source mistakes are credited to the existing one);
- a principle is retired when its measured effect on held-out problems is negative
  (`redline.memory.effects`), or when its accuracy when used in learn runs falls below its
  accuracy when not used (`RetirePolicy`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from redline.backends.base import Backend, GenerationRequest
from redline.memory.stepbank import step_body
from redline.memory.store import MemoryStore, PrincipleRow
from redline.text import render

_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s*")
_LEAD = re.compile(r"^\s*(?:principle|lesson)\s*\d*\s*:\s*", re.IGNORECASE)
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_CALCULATOR = re.compile(r"<<[^>]*>>")  # GSM8K's calculator annotations repeat the arithmetic
_PLACEHOLDER = re.compile(r"\[[A-Z]{1,2}\]")
_WORD = re.compile(r"[A-Za-z']+")
_CAPITALISED = re.compile(r"\b[A-Z][a-z]+\b")
# words that open a sentence of a word problem without naming anything in it
_COMMON = frozenset("""a an the how what which who whom whose why when where if then there this that these those
    he she it they we you his her its their our your each every all some any no one two three four five six seven
    eight nine ten half after before during at in on of for from to by with without as and but or so since while
    until unless find calculate compute suppose assume given let she's he's there's it's""".split())
_ANSWER = re.compile(r"\banswer is\b", re.IGNORECASE)
_SOLUTION = re.compile(r"\b(?:correct|wrong|right|incorrect|student'?s?|this)\s+(?:solution|answer|step)\b",
                       re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[a-z)])[.!]\s")
PRINCIPLE_LEAD = "When"  # the principle starts as a rule: "When <situation>, <what to do>"
COPIED_WORDS = 5  # this many consecutive words of the question make a draft a restatement
MIN_CHARS = 12
MAX_CHARS = 300


class NumberMask:
    """Hides numbers behind placeholders, the same number behind the same one in every text."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    def _name(self, number: str) -> str:
        key = number.replace(",", "")
        if key not in self.names:
            i, name = len(self.names), ""
            while True:
                name = chr(ord("A") + i % 26) + name
                i = i // 26 - 1
                if i < 0:
                    break
            self.names[key] = f"[{name}]"
        return self.names[key]

    def __call__(self, text: str) -> str:
        return _NUMBER.sub(lambda m: self._name(m.group()), _CALCULATOR.sub("", text))

    def steps(self, steps: Sequence[str]) -> str:
        """Steps relabelled 'Step k:' after masking (a label's own number is not a quantity)."""
        return "\n".join(f"Step {i + 1}: {self(step_body(s))}" for i, s in enumerate(steps))


def numbers_in(texts: Sequence[str]) -> set[str]:
    return {n.replace(",", "").rstrip(".") for text in texts for n in _NUMBER.findall(_CALCULATOR.sub("", text))}


def _names(question: str) -> set[str]:
    """Capitalised words of the question that are not common sentence openers: names of people,
    places, months."""
    return {m.group() for m in _CAPITALISED.finditer(question) if m.group().lower() not in _COMMON}


def _copies(text: str, source: str) -> bool:
    """Whether `text` holds a run of COPIED_WORDS consecutive words of `source`."""
    words = [w.lower() for w in _WORD.findall(source)]
    runs = {tuple(words[i:i + COPIED_WORDS]) for i in range(len(words) - COPIED_WORDS + 1)}
    drafted = [w.lower() for w in _WORD.findall(text)]
    return any(tuple(drafted[i:i + COPIED_WORDS]) in runs for i in range(len(drafted) - COPIED_WORDS + 1))


def check_principle(text: str, question: str, sources: Sequence[str], prompt: str = "") -> str | None:
    """Why `text` restates its problem instead of teaching a lesson, or None when it is a lesson.
    `sources` are the texts it was written from (solutions, answers): their numbers are the problem's;
    `prompt` is what the model was shown: a draft that echoes it is no lesson either."""
    if text.rstrip().endswith(":"):
        return "unfinished"
    if _PLACEHOLDER.search(text):
        return "uses the hidden numbers"
    restated = sorted(numbers_in([text]) & numbers_in([question, *sources]))
    if restated:
        return f"restates the problem's numbers ({', '.join(restated[:3])})"
    if _ANSWER.search(text):
        return "states an answer"
    if _SOLUTION.search(text):
        return "describes this solution, not a rule"
    names = sorted(n for n in _names(question) if re.search(rf"\b{re.escape(n)}\b", text))
    if names:
        return f"names the problem's {', '.join(names[:3])}"
    if _copies(text, question):
        return "copies the question"
    if _copies(text, prompt):
        return "echoes the prompt"
    return None


@dataclass(frozen=True)
class PrincipleDraft:
    text: str | None  # the principle, None when rejected or when the model wrote none
    rejected: str | None = None  # why the draft was rejected
    draft: str | None = None  # what the model wrote


def clean_principle(text: str) -> str | None:
    """First sentence of the first meaningful line, without bullets or a 'Principle:' lead; None if
    too short to be one."""
    for line in text.strip().splitlines():
        line = _LEAD.sub("", _BULLET.sub("", line)).strip().strip('"').strip()
        line = _SENTENCE_END.split(line, maxsplit=1)[0]
        if len(line) >= MIN_CHARS:
            return line[:MAX_CHARS]
    return None


async def write_low_level(backend: Backend, question: str, wrong_steps: Sequence[str], first_error: int | None,
                          correct_answer: str, correct_steps: Sequence[str] | None, max_tokens: int = 48,
                          seed: int = 0) -> PrincipleDraft:
    """One model call: the principle behind one mistake, shown with its numbers hidden; a draft
    that restates the problem is rejected."""
    mask = NumberMask()
    wrong_step = wrong_steps[first_error] if first_error is not None and first_error < len(wrong_steps) else None
    prompt = render("principle_low", question=mask(question), wrong_solution=mask.steps(wrong_steps),
                    wrong_step=mask(step_body(wrong_step)) if wrong_step else None,
                    correct_solution=mask.steps(correct_steps) if correct_steps else None)
    request = GenerationRequest(messages=[{"role": "user", "content": prompt}], prefix=f"Principle: {PRINCIPLE_LEAD}",
                                max_tokens=max_tokens, temperature=0.0, seed=seed, stop=("\n",))
    raw = (await backend.generate(request))[0].text
    text = clean_principle(PRINCIPLE_LEAD + raw)
    if text is None:
        return PrincipleDraft(None, "no principle written", raw)
    reason = check_principle(text, question, [*wrong_steps, *(correct_steps or []), correct_answer], prompt)
    return PrincipleDraft(None if reason else text, reason, text)


async def condense(backend: Backend, principles: Sequence[str], task: str, limit: int = 3,
                   max_tokens: int = 160, seed: int = 0) -> list[str]:
    """One model call: a few high-level principles from many low-level ones."""
    prompt = render("principle_high", principles=list(principles), task=task, limit=limit)
    request = GenerationRequest(messages=[{"role": "user", "content": prompt}], prefix="- ",
                                max_tokens=max_tokens, temperature=0.0, seed=seed)
    text = "- " + (await backend.generate(request))[0].text
    out: list[str] = []
    for line in text.splitlines():
        cleaned = clean_principle(line)
        if cleaned and cleaned not in out and check_principle(cleaned, "", principles) is None:
            out.append(cleaned)
    return out[:limit]


def retire_surplus_high(store: MemoryStore, task: str, keep: int) -> list[int]:
    """LEAP keeps a few high-level principles: retire all but the newest `keep`. Call in a transaction."""
    rows = sorted((r for r, _ in store.principles(task=task, level="high")), key=lambda r: -r.id)
    for row in rows[keep:]:
        store.retire_item("principles", row.id, f"superseded: only the newest {keep} high-level principles stay")
    return [r.id for r in rows[keep:]]


def nearest_active(store: MemoryStore, task: str, vector: np.ndarray) -> tuple[int, float] | None:
    """The active principle of `task` most similar to `vector`, with its cosine similarity."""
    rows = store.principles(task=task)
    if not rows:
        return None
    sims = np.stack([v for _, v in rows]) @ vector
    best = int(np.argmax(sims))
    return rows[best][0].id, float(sims[best])


def add_or_merge(store: MemoryStore, text: str, level: str, task: str, sources: Sequence[int],
                 vector: np.ndarray, merge_threshold: float) -> tuple[int, bool]:
    """Add a principle, or merge it into a near-duplicate; (principle id, merged?). Call in a transaction."""
    near = nearest_active(store, task, vector)
    if near is not None and near[1] >= merge_threshold:
        store.merge_into_principle(near[0], sources)
        return near[0], True
    return store.add_principle(text, level, task, sources, vector), False


@dataclass(frozen=True)
class RetirePolicy:
    min_uses: int = 5
    margin: float = 0.1

    def verdict(self, p: PrincipleRow) -> str | None:
        """Why `p` should be retired, or None to keep it."""
        if p.used < self.min_uses or p.unused < self.min_uses:
            return None
        used, unused = p.accuracy_used or 0.0, p.accuracy_unused or 0.0
        if used < unused - self.margin:
            return f"accuracy {used:.2f} when used ({p.used} attempts) vs {unused:.2f} without ({p.unused})"
        return None


def retire_harmful(store: MemoryStore, policy: RetirePolicy) -> list[int]:
    """Retire every active principle the policy condemns; returns their ids."""
    retired = []
    with store.transaction():
        for row, _ in store.principles():
            reason = policy.verdict(row)
            if reason:
                store.retire_item("principles", row.id, reason)
                retired.append(row.id)
    return retired


def smoothed(correct: int, total: int) -> float:
    """Accuracy with a uniform Beta(1, 1) prior, so a principle with no record scores 0.5."""
    return (correct + 1) / (total + 2)


def select(store: MemoryStore, query: np.ndarray, k: int, task: str | None = None,
           record_weight: float = 0.5) -> tuple[list[PrincipleRow], float | None]:
    """Top-`k` active principles by similarity to the problem plus their track record
    (smoothed accuracy when used minus when not used), and the best similarity (None: no principles)."""
    rows = store.principles(task=task)
    if not rows or k < 1:
        return [], None
    sims = np.stack([v for _, v in rows]) @ query
    records = np.array([smoothed(r.used_correct, r.used) - smoothed(r.unused_correct, r.unused) for r, _ in rows])
    order = np.argsort(-(sims + record_weight * records), kind="stable")[:k]
    return [rows[i][0] for i in order], float(sims.max())
