"""Metric functions against hand computations and brute-force enumeration."""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter

import pytest

from redline.bench.metrics import (budget_curves, compare_to_baseline, compare_tokens_to_baseline,
                                   family_and_budget, load_prices, majority_curve, mcnemar_exact, paired_comparison,
                                   pareto_front, pass_at_k, summarize, wilson_interval)
from redline.bench.store import ResultRow
from redline.errors import RedlineError


def test_wilson_interval_matches_the_formula():
    # 3/10, z = 1.959964: centre (p + z²/2n)/(1 + z²/n), half-width z/(1+z²/n)·sqrt(p(1-p)/n + z²/4n²)
    z, n, p = 1.959963984540054, 10, 0.3
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo, hi = wilson_interval(3, 10)
    assert lo == pytest.approx(centre - half, abs=1e-9) and hi == pytest.approx(centre + half, abs=1e-9)
    assert lo == pytest.approx(0.1078, abs=1e-4) and hi == pytest.approx(0.6032, abs=1e-4)
    zero_lo, zero_hi = wilson_interval(0, 12)
    assert zero_lo == pytest.approx(0.0, abs=1e-12) and zero_hi == pytest.approx(0.2425, abs=1e-4)
    assert wilson_interval(0, 0) is None


def test_mcnemar_exact_two_sided():
    assert mcnemar_exact(1, 8) == pytest.approx(2 * (1 + 9) / 2 ** 9)  # 0.0390625
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 2 ** 5)
    assert mcnemar_exact(3, 3) == pytest.approx(1.0)
    assert mcnemar_exact(0, 0) == 1.0


def test_pass_at_k_matches_the_closed_form_and_enumeration():
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - math.comb(3, 2) / math.comb(5, 2))  # 0.7
    assert pass_at_k(5, 0, 3) == 0.0 and pass_at_k(5, 3, 3) == 1.0 and pass_at_k(4, 1, 1) == 0.25
    for n in range(1, 7):
        for c in range(n + 1):
            for k in range(1, n + 1):
                subsets = list(itertools.combinations([i < c for i in range(n)], k))
                assert pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def brute_majority(cands, k):
    """Average over all k-subsets of the majority vote's correctness, ties split evenly."""
    total, subsets = 0.0, list(itertools.combinations(range(len(cands)), k))
    for sub in subsets:
        votes = Counter(cands[i][0] for i in sub if cands[i][0] is not None)
        if votes:
            top = max(votes.values())
            tied = [g for g, v in votes.items() if v == top]
            total += sum(any(c[1] for c in cands if c[0] == g) for g in tied) / len(tied)
    return total / len(subsets)


def test_majority_curve_by_hand_and_by_enumeration():
    # answers A A B, A correct: maj@1 = 2/3; maj@2: {AA} right, {AB}x2 tie -> 1/2 each: (1 + 1/2 + 1/2)/3 = 2/3; maj@3 = 1
    assert majority_curve([(0, True), (0, True), (1, False)]) == pytest.approx([2 / 3, 2 / 3, 1.0])
    # no answer at all never wins
    assert majority_curve([(None, False), (None, False)]) == [0.0, 0.0]
    rng = random.Random(7)
    for trial in range(150):
        n = rng.randint(1, 7)
        cands = [(g, g == 0) for g in (rng.choice([None, 0, 1, 2]) for _ in range(n))]
        curve = majority_curve(cands)
        assert curve == pytest.approx([brute_majority(cands, k) for k in range(1, n + 1)])


def test_paired_comparison_counts_discordant_pairs():
    a = [True, True, False, True, False, True, True, True]
    b = [False, True, False, False, False, True, False, True]
    c = paired_comparison("x", "base", a, b)
    assert c.n == 8 and c.diff == pytest.approx(6 / 8 - 3 / 8)
    assert (c.only_strategy, c.only_baseline) == (3, 0) and c.p_value == pytest.approx(0.25)
    assert c.ci[0] <= c.diff <= c.ci[1] and c.ci[0] >= 0.0  # never worse on any pair, so the CI cannot go below 0
    same = paired_comparison("x", "base", [True, False, True], [True, False, True])
    assert same.diff == 0.0 and same.ci == (0.0, 0.0) and same.p_value == 1.0
    assert paired_comparison("x", "base", [], []) is None


def test_paired_ci_is_a_95_percent_interval_by_hand():
    # 100 pairs: 30 where only the strategy is right, 10 where only the baseline is, 60 ties.
    # Differences d are +1, -1, 0: mean 0.2, sd sqrt(0.4 - 0.04) = 0.6, standard error 0.06, so a
    # 95% interval is 0.2 +- 1.96 * 0.06 = [0.082, 0.318]; a 50% one would be 0.2 +- 0.674 * 0.06 = [0.16, 0.24].
    a = [True] * 30 + [False] * 10 + [True] * 30 + [False] * 30
    b = [False] * 30 + [True] * 10 + [True] * 30 + [False] * 30
    c = paired_comparison("x", "base", a, b)
    assert c.diff == pytest.approx(0.2) and (c.only_strategy, c.only_baseline) == (30, 10)
    assert c.ci == pytest.approx((0.2 - 1.96 * 0.06, 0.2 + 1.96 * 0.06), abs=0.015)
    # exact McNemar: twice P(X >= 30) for X ~ Binomial(40, 1/2)
    assert c.p_value == pytest.approx(2 * sum(math.comb(40, k) for k in range(30, 41)) / 2 ** 40)


def test_f1_is_the_harmonic_mean_of_error_and_correct_accuracy_by_hand():
    import asyncio

    from redline.train.records import LabeledSolution
    from redline.train.verifier_eval import evaluate
    from redline.verifiers.scripted import ScriptedVerifier

    # The verifier flags every step 'bad': it finds the first error where it is step 'bad' (2 of 3
    # erroneous solutions) and passes 1 of 2 correct ones (the one without a 'bad' step).
    records = [LabeledSolution("e1", "q", ("ok", "bad"), 1), LabeledSolution("e2", "q", ("bad", "ok"), 0),
               LabeledSolution("e3", "q", ("ok", "ok", "bad"), 1), LabeledSolution("c1", "q", ("ok", "ok"), -1),
               LabeledSolution("c2", "q", ("ok", "bad"), -1)]
    report = asyncio.run(evaluate(ScriptedVerifier(lambda q, i, step: 0.1 if step == "bad" else 0.9), records))
    assert (report.error_accuracy, report.correct_accuracy) == (pytest.approx(2 / 3), 0.5)
    assert report.f1 == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))  # = 4/7
    assert report.f1 == pytest.approx(4 / 7)


def test_pareto_front():
    points = [(100, 0.5), (200, 0.6), (150, 0.4), (300, 0.6), (50, 0.5)]
    assert pareto_front(points) == [1, 4]


def test_family_and_budget():
    assert family_and_budget("sc:n=8") == ("sc (n)", 8.0)
    assert family_and_budget("bon:n=4,agg=min") == ("bon:agg=min (n)", 4.0)
    assert family_and_budget("stepco:max_iters=3") == ("stepco (max_iters)", 3.0)
    assert family_and_budget("cot") == ("cot", None)


def row(pid, strategy, correct, prompt=10, completion=5, calls=1, latency=1.0, candidates=(), model="m"):
    return ResultRow(pid, strategy, "1", correct, correct is not None, prompt, completion, calls, latency, None, model,
                     list(candidates))


def test_summarize_by_hand():
    rows = [row("a", "s", True, 100, 20, 2, 1.0), row("b", "s", False, 50, 10, 1, 2.0),
            row("c", "s", None, 30, 30, 3, 3.0), row("d", "s", True, 20, 40, 2, 10.0)]
    s = summarize("s", rows, prices={"m": {"prompt": 1.0, "completion": 2.0}})
    assert (s.results, s.graded, s.correct) == (4, 3, 2) and s.accuracy == pytest.approx(2 / 3)
    assert s.ci == pytest.approx(wilson_interval(2, 3))
    assert s.mean_prompt_tokens == 50 and s.mean_completion_tokens == 25 and s.mean_tokens == 75
    assert (s.total_prompt_tokens, s.total_completion_tokens, s.total_tokens) == (200, 100, 300)
    assert s.mean_calls == 2.0
    assert s.latency_p50 == pytest.approx(2.5) and s.latency_p95 == pytest.approx(3 + 0.85 * 7)
    assert s.cost == pytest.approx((200 * 1.0 + 100 * 2.0) / 1e6) and s.cost_per_problem == pytest.approx(1e-4)
    assert summarize("s", rows, prices={"other": {"prompt": 1, "completion": 1}}).cost is None
    fallback = {"other": {"prompt": 9.0, "completion": 9.0}, "*": {"prompt": 3.0, "completion": 0.5}}
    assert summarize("s", rows, prices=fallback).cost == pytest.approx((200 * 3.0 + 100 * 0.5) / 1e6)  # '*' for m
    both = {"m": {"prompt": 1.0, "completion": 2.0}, "*": {"prompt": 3.0, "completion": 0.5}}
    assert summarize("s", rows, prices=both).cost == pytest.approx(s.cost)  # the model's own price wins
    assert s.samples == 0 and s.pass_at == {}


def test_sampling_metrics_use_independent_samples_only():
    def cand(group, correct, origin="sample"):
        return {"answer": str(group), "group": group, "correct": correct, "votes": 0, "score": None, "origin": origin}

    rows = [row("a", "sc", True, candidates=[cand(0, True), cand(0, True), cand(1, False)]),
            row("b", "sc", False, candidates=[cand(0, False), cand(1, False), cand(2, True), cand(9, True, "revision 1")])]
    s = summarize("sc", rows)
    assert s.samples == 3
    assert s.pass_at[1] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert s.pass_at[3] == pytest.approx(1.0)  # coverage: every problem has a right sample
    assert s.maj_at[3] == pytest.approx((1.0 + 1 / 3) / 2)  # b: three-way tie, one of three right


def test_compare_to_baseline_pairs_on_shared_graded_problems():
    rows = {"cot": [row("a", "cot", True), row("b", "cot", False), row("c", "cot", None)],
            "sc": [row("a", "sc", True), row("b", "sc", True), row("c", "sc", True), row("d", "sc", True)]}
    (c,) = compare_to_baseline(rows, "cot")
    assert c.strategy == "sc" and c.n == 2 and c.diff == pytest.approx(0.5) and c.only_strategy == 1
    with pytest.raises(RedlineError, match="baseline 'x' has no results; strategies: cot, sc"):
        compare_to_baseline(rows, "x")


def test_budget_curves_group_families():
    rows = {f"sc:n={n}": [row("a", "sc", n > 2, prompt=10 * n)] for n in (2, 4, 8)}
    summaries = [summarize(k, v) for k, v in rows.items()] + [summarize("cot", [row("a", "cot", True)])]
    assert budget_curves(summaries) == {"sc (n)": [(2.0, 25.0, 25.0, 0.0), (4.0, 45.0, 45.0, 1.0),
                                                   (8.0, 85.0, 85.0, 1.0)]}  # nothing cached: computed = billed


def test_computed_tokens_and_paired_token_deltas_by_hand():
    def cached(pid, strategy, prompt, cached_prompt, completion):
        return ResultRow(pid, strategy, "1", True, True, prompt, completion, 1, 1.0, None, "m", [], cached_prompt)

    rows = {"base": [cached("a", "base", 100, 0, 10), cached("b", "base", 200, 50, 20), cached("c", "base", 60, 0, 6)],
            "x": [cached("a", "x", 300, 240, 30), cached("b", "x", 100, 100, 10)]}  # x never ran problem c
    s = summarize("x", rows["x"])
    assert (s.mean_tokens, s.total_tokens) == (220, 440)  # billed: (330 + 110) / 2
    assert (s.mean_computed_tokens, s.total_computed_tokens) == (50, 100)  # (60 + 30) and (0 + 10)
    deltas = compare_tokens_to_baseline(rows, "base")
    assert list(deltas) == ["x"]
    billed, computed = deltas["x"]["billed"], deltas["x"]["computed"]
    assert (billed.n, billed.mean, billed.baseline_mean, billed.diff) == (2, 220, 165, 55)  # a: 110, b: 220
    assert (computed.mean, computed.baseline_mean, computed.diff) == (50, 140, -90)  # a: 110, b: 170
    assert computed.share == pytest.approx(50 / 140) and billed.share == pytest.approx(220 / 165)
    assert computed.ci == pytest.approx((-160, -20))  # pairs -20 and -160: a resampled mean is -20, -90 or -160
    assert billed.ci[0] <= billed.diff <= billed.ci[1]


def test_load_prices(tmp_path):
    good = tmp_path / "p.json"
    good.write_text('{"gpt": {"prompt": 0.15, "completion": 0.6}, "*": {"prompt": 1, "completion": 2}}')
    assert load_prices(good)["*"] == {"prompt": 1.0, "completion": 2.0}
    bad = tmp_path / "bad.json"
    bad.write_text('{"gpt": {"prompt": 0.15}}')
    with pytest.raises(RedlineError, match="a price table is"):
        load_prices(bad)
    with pytest.raises(RedlineError, match="no such price file"):
        load_prices(tmp_path / "none.json")
