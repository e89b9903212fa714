"""Principles (LEAP, Zhang et al. 2024): lessons written from mistakes, condensed, merged, retired.

- low-level: from one mistake (with the gold worked solution when the data has one), the
  model writes a short, general principle;
- high-level: every so often the model condenses recent principles into a few general ones;
- a new principle whose embedding is within `merge_threshold` cosine of an active one of the
  same task is merged into it (its source mistakes are credited to the existing one);
- a principle whose accuracy when used falls below its accuracy when not used (by more than
  a margin, after enough uses) is retired.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from redline.backends.base import Backend, GenerationRequest
from redline.memory.store import MemoryStore, PrincipleRow
from redline.text import join_steps, render

_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s*")
_LEAD = re.compile(r"^\s*(?:principle|lesson)\s*\d*\s*:\s*", re.IGNORECASE)
PRINCIPLES_TRACE = "principles"  # trace node the provider leaves: ids it injected, read by learn runs
MIN_CHARS = 12
MAX_CHARS = 300


def clean_principle(text: str) -> str | None:
    """First meaningful line, without bullets or a 'Principle:' lead; None if too short to be one."""
    for line in text.strip().splitlines():
        line = _LEAD.sub("", _BULLET.sub("", line)).strip().strip('"').strip()
        if len(line) >= MIN_CHARS:
            return line[:MAX_CHARS]
    return None


async def write_low_level(backend: Backend, question: str, wrong_steps: Sequence[str], first_error: int | None,
                          correct_answer: str, correct_steps: Sequence[str] | None, max_tokens: int = 96,
                          seed: int = 0) -> str | None:
    """One model call: the principle behind one mistake, or None if the model wrote none."""
    prompt = render("principle_low", question=question, wrong_solution=join_steps(list(wrong_steps)),
                    wrong_step=wrong_steps[first_error] if first_error is not None and first_error < len(wrong_steps)
                    else None,
                    correct_solution=join_steps(list(correct_steps)) if correct_steps else None,
                    correct_answer=correct_answer)
    request = GenerationRequest(messages=[{"role": "user", "content": prompt}], prefix="Principle:",
                                max_tokens=max_tokens, temperature=0.0, seed=seed, stop=("\n\n",))
    return clean_principle((await backend.generate(request))[0].text)


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
        if cleaned and cleaned not in out:
            out.append(cleaned)
    return out[:limit]


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
                store.retire_principle(row.id, reason)
                retired.append(row.id)
    return retired


def smoothed(correct: int, total: int) -> float:
    """Accuracy with a uniform Beta(1, 1) prior, so a principle with no record scores 0.5."""
    return (correct + 1) / (total + 2)


def select(store: MemoryStore, query: np.ndarray, k: int, task: str | None = None,
           record_weight: float = 0.5) -> list[PrincipleRow]:
    """Top-`k` active principles by similarity to the problem plus their track record
    (smoothed accuracy when used minus when not used)."""
    rows = store.principles(task=task)
    if not rows or k < 1:
        return []
    sims = np.stack([v for _, v in rows]) @ query
    records = np.array([smoothed(r.used_correct, r.used) - smoothed(r.unused_correct, r.unused) for r, _ in rows])
    order = np.argsort(-(sims + record_weight * records), kind="stable")[:k]
    return [rows[i][0] for i in order]
