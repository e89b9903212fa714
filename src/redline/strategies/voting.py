"""Voting over candidates whose answers are grouped by mathematical equivalence, not by string.

Self-consistency, weighted (PRM) voting, beam's final vote and adaptive's agreement test all
use these, so `0.5`, `1/2` and `\\frac{1}{2}` count as one answer everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Sequence

from redline.text import answers_equal
from redline.types import Candidate

Weight = Callable[[Candidate], float]


@dataclass(frozen=True)
class AnswerGroup:
    """Candidates sharing one answer (up to equivalence), with their summed vote weight."""

    answer: str
    members: tuple[Candidate, ...]
    votes: float

    @property
    def best(self) -> Candidate:
        """The highest-scoring member (first on ties), which represents the group."""
        return max(self.members, key=lambda c: c.score if c.score is not None else float("-inf"))

    @property
    def best_score(self) -> float:
        score = self.best.score
        return float(score) if score is not None else float("-inf")


def one_vote(_: Candidate) -> float:
    return 1.0


def score_vote(c: Candidate) -> float:
    """PRM-weighted voting: a candidate votes with its outcome score."""
    return float(c.score or 0.0)


def tally(candidates: Sequence[Candidate], weight: Weight = one_vote, tie_break_by_score: bool = False) -> list[AnswerGroup]:
    """Group candidates with an answer by equivalence; groups ordered by votes, winner first.

    Ties keep the order answers first appeared, unless `tie_break_by_score`, when the group
    whose best member scores higher wins.
    """
    groups: list[list[Candidate]] = []
    for c in candidates:
        if c.solution.answer is None:
            continue
        home = next((g for g in groups if answers_equal(g[0].solution.answer, c.solution.answer)), None)
        if home is None:
            groups.append([c])
        else:
            home.append(c)
    tallied = [AnswerGroup(str(g[0].solution.answer), tuple(g), sum(weight(c) for c in g)) for g in groups]

    def key(g: AnswerGroup) -> tuple[float, float]:
        return (round(g.votes, 9), g.best_score if tie_break_by_score else 0.0)

    return sorted(tallied, key=key, reverse=True)


def agreement(candidates: Sequence[Candidate]) -> float:
    """Share of all candidates that give the most common answer (0 when none has an answer)."""
    groups = tally(candidates)
    return len(groups[0].members) / len(candidates) if groups and candidates else 0.0


def winner(groups: Sequence[AnswerGroup]) -> Candidate | None:
    """The winning group's best member, carrying the group's votes."""
    if not groups:
        return None
    return replace(groups[0].best, votes=groups[0].votes)


def votes_dict(groups: Sequence[AnswerGroup]) -> list[dict[str, object]]:
    """Trace form of a tally."""
    return [{"answer": g.answer, "votes": g.votes, "count": len(g.members),
             "best_score": g.best.score} for g in groups]


def with_group_votes(candidates: Sequence[Candidate], groups: Sequence[AnswerGroup]) -> list[Candidate]:
    """The candidates, in order, each carrying the votes its answer group got (for display and traces)."""
    votes = {id(m): g.votes for g in groups for m in g.members}
    return [replace(c, votes=votes.get(id(c), 0.0)) for c in candidates]
