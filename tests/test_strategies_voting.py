"""Answer grouping and vote counting (no model)."""

from __future__ import annotations

from redline.strategies.voting import agreement, score_vote, tally, winner
from redline.types import Candidate, Solution


def cand(answer: str, score: float | None = None) -> Candidate:
    return Candidate(Solution.from_text(f"Step 1: work. The answer is {answer}."), score=score)


def test_equivalent_answers_form_one_group():
    groups = tally([cand("0.5"), cand("1/2"), cand("\\boxed{\\frac{1}{2}}"), cand("2"), cand("2.0")])
    assert [(g.answer, len(g.members)) for g in groups] == [("0.5", 3), ("2", 2)]
    assert agreement([cand("0.5"), cand("1/2"), cand("3"), cand("4")]) == 0.5


def test_weighted_votes_sum_scores_and_winner_is_the_best_member():
    pool = [cand("7", 0.3), cand("7", 0.35), cand("8", 0.6)]
    groups = tally(pool, weight=score_vote)
    assert groups[0].answer == "7" and abs(groups[0].votes - 0.65) < 1e-9
    chosen = winner(groups)
    assert chosen.score == 0.35 and abs(chosen.votes - 0.65) < 1e-9


def test_answerless_candidates_do_not_vote():
    no_answer = Candidate(Solution("", (), None))
    assert tally([no_answer]) == [] and agreement([no_answer]) == 0.0 and winner([]) is None
