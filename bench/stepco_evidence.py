"""StepCo against Best-of-N on the paper's terms, from one `redline eval` store.

Prints, for every strategy against the baseline (Best-of-10 in the headline run): accuracy with its
paired Δ, then tokens per problem on four measures, each with its paired Δ [bootstrap 95% CI] and its
share of the baseline's:

- billed: prompt + completion as an OpenAI-compatible API bills a request (its prompt once, whatever n);
- separate: billed as if each sample of a request with `n` were its own call (the prompt n times), as
  the StepCo paper's code calls the API; only single-request sampling (`bon`, `sc`) can be counted so
  from the stored rows, the rest print n/a;
- computed: uncached prompt + completion, what the engine computed;
- completion: generated tokens only.

Then the token caps (spent as a share of each cap, the dearest problem, overshoot) and what MCTS and
beam search built under them (answered candidates, the distinct first steps they start from, depth
and coverage, what they picked against other rules over the same candidates), which is what explains
their accuracy, and MCTS against beam, paired, under each cap both ran with.

    .venv/bin/python bench/stepco_evidence.py /work/runs/ev26/run --baseline "bon:n=10"
"""

from __future__ import annotations

import argparse
import statistics
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np

from redline.bench.formats import cap_rows
from redline.bench.metrics import paired_comparison, paired_mean_difference_ci, token_cap
from redline.bench.report import collect
from redline.bench.store import ResultRow, ResultStore
from redline.loop import is_component_name, split_budget
from redline.registry import STRATEGIES
from redline.spec import parse_pipeline

Measure = Callable[[ResultRow], "float | None"]


def separate_calls(strategy: str) -> Measure:
    """Billed as separate calls of one sample each: `bon`/`sc` (one request with n) bill the prompt n
    times; strategies that draw one sample per call (`cot`, `stepco` with `n_init=1`) bill as billed;
    the rest cannot be counted so from stored rows (None)."""
    head, _ = split_budget(parse_pipeline(strategy, is_component_name)[0])
    params = STRATEGIES.validate(head)  # the strategy's own defaults fill what the spec leaves out
    if head.name in ("bon", "sc"):
        n = params.n
        return lambda r: r.total_tokens + (n - 1) * r.prompt_tokens if r.calls == 1 else None
    if head.name == "cot" or (head.name == "stepco" and params.n_init == 1):
        return lambda r: r.total_tokens
    return lambda r: None


def measures(strategy: str) -> dict[str, Measure]:
    return {"billed": lambda r: r.total_tokens, "separate": separate_calls(strategy),
            "computed": lambda r: r.computed_tokens,
            "completion": lambda r: r.completion_tokens}


def token_line(name: str, rows: list[ResultRow], base: list[ResultRow], measure: Measure,
               base_measure: Measure) -> str:
    pairs = [(measure(a), base_measure(b)) for a, b in zip(rows, base)]
    if any(x is None or y is None for x, y in pairs):
        return f"{name:>10}: n/a"
    x = np.array([p[0] for p in pairs], dtype=float)
    y = np.array([p[1] for p in pairs], dtype=float)
    low, high = paired_mean_difference_ci(x, y)
    return (f"{name:>10}: {x.mean():7.0f} vs {y.mean():6.0f}  Δ {x.mean() - y.mean():+7.0f} [{low:+.0f}, {high:+.0f}]"
            f"  share {x.mean() / y.mean():5.0%}")


def reselections(graded: list[dict]) -> dict[str, bool]:
    """Whether other rules, over the same answered candidates, would have picked a right answer: a
    majority vote over every candidate (ties to the higher summed score), the best-scored candidate (ties
    to the search's first), and any of the candidates tied at the best score (how much ties decide)."""
    answered = [g for g in graded if g["group"] is not None]
    if not answered:
        return {"vote over all": False, "best-scored": False, "any best-scored tie": False}
    tally: dict[int, tuple[int, float]] = {}
    for g in answered:
        count, total = tally.get(g["group"], (0, 0.0))
        tally[g["group"]] = (count + 1, total + (g["score"] or 0.0))
    voted = max(tally, key=lambda group: tally[group])
    best = max(g["score"] or 0.0 for g in answered)
    tied = [g for g in answered if (g["score"] or 0.0) == best]
    return {"vote over all": any(g["correct"] for g in answered if g["group"] == voted),
            "best-scored": bool(tied[0]["correct"]), "any best-scored tie": any(g["correct"] for g in tied)}


def steps_bucket(solution: dict | None) -> str:
    """A solution's number of steps, with three and more as one bucket (few paths go deeper)."""
    steps = len(solution["steps"]) if solution else 0
    return "3+" if steps >= 3 else str(steps)


def by_steps_line(counts: Counter[tuple[str, str, bool]]) -> str:
    """'candidates 1: right/all, 2: ..., 3+: ...; picked ...' from (what, bucket, right) counts."""
    def share(what: str, bucket: str) -> str:
        right, wrong = counts[(what, bucket, True)], counts[(what, bucket, False)]
        return f"{bucket}: {right}/{right + wrong}"
    return "; ".join(f"{what} " + ", ".join(share(what, b) for b in ("1", "2", "3+")) for what in ("candidates", "picked"))


def tree_stats(store: ResultStore, strategies: list[str]) -> list[str]:
    """Per strategy and problem, from the stored results (read once): answered candidates, how many
    distinct first steps they start from (how much of the search's breadth its answers cover), the
    deepest step, coverage, and how many right answers the search picked against other selection rules
    over the same candidates (coverage the search has but does not pick is a selection problem); then
    right/all candidates and picks by their number of steps (where along a path right answers lie)."""
    answered: dict[str, list[int]] = {s: [] for s in strategies}
    first_steps: dict[str, list[int]] = {s: [] for s in strategies}
    depth: dict[str, list[int]] = {s: [] for s in strategies}
    covered = dict.fromkeys(strategies, 0)
    picked = dict.fromkeys(strategies, 0)
    other_rules: dict[str, Counter[str]] = {s: Counter() for s in strategies}
    by_steps: dict[str, Counter[tuple[str, str, bool]]] = {s: Counter() for s in strategies}
    for p in store.problems():
        stored = store.full_results(p["id"])
        for strategy in strategies:
            if strategy not in stored:
                continue
            correct, graded, result = stored[strategy]
            with_answer = [c for c in result["candidates"] if c["solution"].get("answer") is not None]
            answered[strategy].append(len(with_answer))
            first_steps[strategy].append(len({" ".join(c["solution"]["steps"][0]["text"].split())
                                              for c in with_answer}))
            depth[strategy].append(max((len(c["solution"]["steps"]) for c in with_answer), default=0))
            covered[strategy] += any(g.get("correct") for g in graded)
            picked[strategy] += bool(correct)
            other_rules[strategy].update(rule for rule, right in reselections(graded).items() if right)
            by_steps[strategy].update(("candidates", steps_bucket(c["solution"]), bool(g["correct"]))
                                      for c, g in zip(result["candidates"], graded) if g["group"] is not None)
            by_steps[strategy][("picked", steps_bucket(result["solution"]), bool(correct))] += 1
    return [f"{s}: per problem {statistics.mean(answered[s]):.1f} answered candidates from "
            f"{statistics.mean(first_steps[s]):.1f} distinct first steps, deepest {statistics.mean(depth[s]):.1f} "
            f"steps; a right answer among them on {covered[s]} of {len(answered[s])} (coverage), picked on "
            f"{picked[s]}; on the same candidates " + ", ".join(
                f"{rule} {other_rules[s][rule]}" for rule in ("vote over all", "best-scored", "any best-scored tie"))
            + f"; right/all by steps: {by_steps_line(by_steps[s])}"
            if answered[s] else f"{s}: no results" for s in strategies]


def equal_cap_comparisons(by_strategy: dict[str, dict[str, ResultRow]], searches: list[str]) -> list[str]:
    """MCTS minus beam on the problems both graded, for each token cap that both ran under."""
    by_cap: dict[tuple[int, str], dict[str, str]] = {}
    for strategy in searches:
        if (cap := token_cap(strategy)) is not None:
            by_cap.setdefault(cap, {})[parse_pipeline(strategy, is_component_name)[0].name] = strategy
    lines = []
    for (limit, count), pair in sorted(by_cap.items()):
        if {"mcts", "beam"} <= pair.keys():
            mcts, beam = by_strategy[pair["mcts"]], by_strategy[pair["beam"]]
            ids = [i for i in mcts if i in beam and mcts[i].gradable and beam[i].gradable]
            c = paired_comparison(pair["mcts"], pair["beam"], [bool(mcts[i].correct) for i in ids],
                                  [bool(beam[i].correct) for i in ids])
            if c is not None:
                lines.append(f"cap {limit} {count}: {100 * c.diff:+.1f} points [{100 * c.ci[0]:+.1f}, {100 * c.ci[1]:+.1f}], "
                             f"McNemar p {c.p_value:.3f}; MCTS alone right on {c.only_strategy}, beam alone on "
                             f"{c.only_baseline}, of {c.n}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--baseline", default=None, help="default: the run's baseline")
    args = parser.parse_args()
    with ResultStore(args.run_dir, create=False) as store:
        data = collect(store, args.baseline)
        by_strategy = {s.strategy: {r.problem_id: r for r in store.rows(s.strategy)} for s in data.summaries}
        base_rows = by_strategy[data.baseline]
        base_measures = measures(data.baseline)
        for s in data.summaries:
            ids = [pid for pid in by_strategy[s.strategy] if pid in base_rows]
            rows, base = [by_strategy[s.strategy][i] for i in ids], [base_rows[i] for i in ids]
            c = data.comparisons.get(s.strategy)
            versus = (f"Δ {100 * c.diff:+.1f} [{100 * c.ci[0]:+.1f}, {100 * c.ci[1]:+.1f}], McNemar p {c.p_value:.3f}"
                      if c else "baseline")
            print(f"\n{s.strategy}: {s.accuracy:.1%} ({s.correct}/{s.graded}), {versus}; {len(ids)} paired problems, "
                  f"{s.mean_calls:.2f} calls")
            for name, measure in measures(s.strategy).items():
                print(token_line(name, rows, base, measure, base_measures[name]))
        print("\ntoken caps:")
        for row in cap_rows(data):
            print("  " + ", ".join(f"{k} {v}" for k, v in row.items()))
        print("\nwhat the searches built:")
        searches = [s.strategy for s in data.summaries
                    if parse_pipeline(s.strategy, is_component_name)[0].name in ("beam", "mcts")]
        for line in tree_stats(store, searches):
            print("  " + line)
        print("\nMCTS against beam under the same cap, paired:")
        for line in equal_cap_comparisons(by_strategy, searches):
            print("  " + line)


if __name__ == "__main__":
    main()
