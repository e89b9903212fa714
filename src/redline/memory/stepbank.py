"""The step bank (BoostStep, Zhang et al. 2025): verified steps, retrieved by similarity to a draft step.

Steps come from gold worked solutions (one step per line in GSM8K) and from model solutions
graded correct. A model step counts as verified when its solution's answer matched the gold
answer and, when a verifier scored it, its score passed the threshold.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from redline.embeddings import embed
from redline.memory.store import BankedStep, MemoryStore
from redline.text import segment_steps
from redline.types import Solution

VERIFIED_THRESHOLD = 0.5
_STEP_LABEL = re.compile(r"^\s*(?:\*\*)?\s*step\s*\d+\s*[:.)]\s*", re.IGNORECASE)


def gold_steps(solution: str | None) -> list[str]:
    """Steps of a gold worked solution: 'Step k:' markers when present, else one step per line."""
    if not solution or not solution.strip():
        return []
    if _STEP_LABEL.search(solution):
        return segment_steps(solution)
    return [line.strip() for line in solution.splitlines() if line.strip()]


def verified_flags(solution: Solution, threshold: float = VERIFIED_THRESHOLD) -> list[bool]:
    """Per-step verified flags for a solution whose final answer was graded correct."""
    scores = solution.scores
    if scores is None:
        return [True] * len(solution.steps)
    return [s >= threshold for s in scores]


def step_body(step: str) -> str:
    """A step without its 'Step k:' label: labels are positional noise for similarity."""
    return _STEP_LABEL.sub("", step).strip()


def retrieve_steps(store: MemoryStore, draft: str, k: int, min_similarity: float) -> list[BankedStep]:
    """BoostStep 'first-try' retrieval: the drafted step is the query."""
    query = embed([step_body(draft) or draft])[0]
    return [s for s in store.similar_steps(query, k) if s.similarity >= min_similarity]


def bank_embeddings(steps: Sequence[str]) -> np.ndarray:
    """Embeddings of steps as stored in the bank (labels stripped)."""
    return embed([step_body(s) or s for s in steps])
