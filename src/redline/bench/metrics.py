"""Pure metric functions over stored results: intervals, paired tests, pass@k, maj@k, costs, and
tokens both ways: billed (prompt + completion, as an API charges) and computed (uncached prompt +
completion, what the engine did).

Nothing here touches the store or the disk; every function takes plain numbers or rows,
so each can be checked against a hand computation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from math import comb
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from redline.bench.store import ResultRow
from redline.errors import RedlineError

BUDGET_KNOBS = ("n", "max_iters", "width", "beam", "sims", "max_calls", "max_tokens_total")

Prices = Mapping[str, Mapping[str, float]]  # model (or '*') -> {"prompt": $/1M, "completion": $/1M}


def wilson_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval of a proportion; None when there is nothing to estimate."""
    if n == 0:
        return None
    from scipy.stats import binomtest

    ci = binomtest(correct, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs (a right b wrong, a wrong b right)."""
    if only_a + only_b == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(only_a, only_a + only_b, 0.5).pvalue)


@dataclass(frozen=True)
class PairedComparison:
    strategy: str
    baseline: str
    n: int  # problems both graded
    diff: float  # accuracy(strategy) - accuracy(baseline)
    ci: tuple[float, float]
    only_strategy: int  # strategy right, baseline wrong
    only_baseline: int
    p_value: float


def paired_mean_difference_ci(x: np.ndarray, y: np.ndarray, n_resamples: int = 10000,
                              seed: int = 0) -> tuple[float, float]:
    """Paired percentile-bootstrap 95% CI of mean(x) - mean(y); a point with fewer than two pairs."""
    if len(x) < 2:
        diff = float(x.mean() - y.mean())
        return diff, diff
    from scipy.stats import bootstrap

    res = bootstrap((x, y), lambda u, v, axis=-1: u.mean(axis=axis) - v.mean(axis=axis), paired=True,
                    vectorized=True, method="percentile", n_resamples=n_resamples, random_state=seed)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def paired_comparison(strategy: str, baseline: str, a: Sequence[bool], b: Sequence[bool],
                      n_resamples: int = 10000, seed: int = 0) -> PairedComparison | None:
    """Accuracy difference a - b on the same problems: paired percentile-bootstrap 95% CI and exact McNemar."""
    if len(a) != len(b):
        raise ValueError("paired outcomes must have equal length")
    if not a:
        return None
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(x.mean() - y.mean())
    ci = paired_mean_difference_ci(x, y, n_resamples, seed)
    only_a = int(np.sum((x == 1) & (y == 0)))
    only_b = int(np.sum((x == 0) & (y == 1)))
    return PairedComparison(strategy, baseline, len(a), diff, ci, only_a, only_b, mcnemar_exact(only_a, only_b))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): P(at least one of k samples drawn from n is correct)."""
    if not 0 < k <= n:
        raise ValueError(f"need 0 < k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def majority_curve(candidates: Sequence[tuple[int | None, bool]]) -> list[float]:
    """maj@k for k = 1..n: the expected correctness of a majority vote over a uniformly random
    k-subset of the n candidates (ties broken uniformly at random), computed exactly.

    `candidates` holds (answer group, correct) pairs; group None means no answer (it never wins).
    """
    n = len(candidates)
    sizes: dict[int, int] = {}
    right: dict[int, bool] = {}
    for group, ok in candidates:
        if group is not None:
            sizes[group] = sizes.get(group, 0) + 1
            right[group] = right.get(group, False) or bool(ok)
    no_answer = n - sum(sizes.values())
    wins = [0.0] * n  # wins[k-1]: number of (weighted) k-subsets whose vote is correct
    for g in (g for g in sizes if right[g]):
        others = [m for h, m in sizes.items() if h != g]
        for j in range(1, sizes[g] + 1):
            ways = _ways_below(others, j, n)  # (picked from others, groups tied at j) -> count
            for (s, tied), count in ways.items():
                for free in range(no_answer + 1):
                    k = j + s + free
                    if k <= n:
                        wins[k - 1] += comb(sizes[g], j) * count * comb(no_answer, free) / (tied + 1)
    return [wins[k - 1] / comb(n, k) for k in range(1, n + 1)]


def _ways_below(sizes: Iterable[int], j: int, n: int) -> dict[tuple[int, int], int]:
    """Ways to pick at most j items from each group: keyed by (items picked, groups at exactly j)."""
    ways = {(0, 0): 1}
    for m in sizes:
        nxt: dict[tuple[int, int], int] = {}
        for (s, t), count in ways.items():
            for x in range(min(m, j) + 1):
                if s + x <= n:
                    key = (s + x, t + (x == j))
                    nxt[key] = nxt.get(key, 0) + count * comb(m, x)
        ways = nxt
    return ways


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of (cost, accuracy) points that no other point beats on both (lower cost, higher accuracy)."""
    front = []
    for i, (cost, acc) in enumerate(points):
        dominated = any(c2 <= cost and a2 >= acc and (c2, a2) != (cost, acc) for c2, a2 in points)
        if not dominated:
            front.append(i)
    return front


def load_prices(path: Path) -> dict[str, dict[str, float]]:
    """A price table: {"model or *": {"prompt": USD per 1M tokens, "completion": USD per 1M}}."""
    try:
        data = json.loads(Path(path).read_text())
        table = {str(m): {"prompt": float(p["prompt"]), "completion": float(p["completion"])} for m, p in data.items()}
    except FileNotFoundError:
        raise RedlineError(f"no such price file: {path}") from None
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise RedlineError(f"{path}: a price table is {{\"model\": {{\"prompt\": USD_per_1M, \"completion\": "
                           f"USD_per_1M}}}} ('*' matches any model); {type(e).__name__}: {e}") from None
    return table


def row_cost(row: ResultRow, prices: Prices) -> float | None:
    price = prices.get(row.model) or prices.get("*")
    if price is None:
        return None
    return (row.prompt_tokens * price["prompt"] + row.completion_tokens * price["completion"]) / 1e6


def family_and_budget(strategy: str) -> tuple[str, float | None]:
    """'sc:n=8' -> ('sc', 8): the strategy with its budget knob taken out, and the knob's value."""
    from redline.loop import is_component_name
    from redline.spec import Component, parse_pipeline

    try:
        components = parse_pipeline(strategy, is_component_name)
    except RedlineError:
        return strategy, None
    head = components[0]
    knob = next((k for k in BUDGET_KNOBS if k in head.params), None)
    if knob is None:
        return strategy, None
    try:
        value = float(head.params[knob])
    except ValueError:
        return strategy, None
    rest = Component(head.name, head.args, {k: v for k, v in head.params.items() if k != knob})
    family = "+".join(str(c) for c in [rest, *components[1:]])
    return (f"{family} ({knob})", value)


def token_cap(strategy: str) -> tuple[int, str] | None:
    """'beam:max_tokens_total=500' -> (500, 'computed'): a strategy's token cap and how it counts."""
    from redline.loop import is_component_name, split_budget
    from redline.spec import parse_pipeline

    try:
        _, budget = split_budget(parse_pipeline(strategy, is_component_name)[0])
        cap = int(budget["max_tokens_total"])
    except (RedlineError, KeyError, ValueError):
        return None
    return cap, budget.get("budget", "computed")


@dataclass
class StrategySummary:
    strategy: str
    results: int
    graded: int
    correct: int
    accuracy: float | None
    ci: tuple[float, float] | None
    mean_prompt_tokens: float
    mean_completion_tokens: float
    mean_tokens: float  # billed: prompt + completion, what an OpenAI-compatible API charges
    total_prompt_tokens: int
    total_completion_tokens: int
    total_tokens: int  # billed
    mean_calls: float
    latency_p50: float
    latency_p95: float
    stopped: int
    mean_cached_prompt_tokens: float = 0.0  # of mean_prompt_tokens, served from a prefix cache
    total_cached_prompt_tokens: int = 0
    mean_computed_tokens: float = 0.0  # uncached prompt + completion: what the engine computed
    total_computed_tokens: int = 0
    max_tokens: int = 0  # billed, on the dearest problem: what a token cap counted that way must hold
    max_computed_tokens: int = 0
    cost: float | None = None
    samples: int = 0  # candidates per problem (the smallest count), for pass@k / maj@k
    pass_at: dict[int, float] = field(default_factory=dict)  # = coverage@k
    maj_at: dict[int, float] = field(default_factory=dict)

    @property
    def mean_uncached_prompt_tokens(self) -> float:
        return self.mean_prompt_tokens - self.mean_cached_prompt_tokens

    @property
    def cost_per_problem(self) -> float | None:
        return None if self.cost is None or not self.results else self.cost / self.results


def summarize(strategy: str, rows: Sequence[ResultRow], prices: Prices | None = None) -> StrategySummary:
    """Per-strategy figures; accuracy counts gradable rows only."""
    graded = [r for r in rows if r.correct is not None]
    correct = sum(1 for r in graded if r.correct)
    n = len(rows)
    prompt = np.array([r.prompt_tokens for r in rows], dtype=float)
    completion = np.array([r.completion_tokens for r in rows], dtype=float)
    latency = np.array([r.latency_s for r in rows], dtype=float)
    cached = np.array([r.cached_prompt_tokens for r in rows], dtype=float)
    costs = [row_cost(r, prices) for r in rows] if prices else [None]
    summary = StrategySummary(
        strategy=strategy, results=n, graded=len(graded), correct=correct,
        accuracy=correct / len(graded) if graded else None, ci=wilson_interval(correct, len(graded)),
        mean_prompt_tokens=float(prompt.mean()) if n else 0.0,
        mean_completion_tokens=float(completion.mean()) if n else 0.0,
        mean_tokens=float((prompt + completion).mean()) if n else 0.0,
        total_prompt_tokens=int(prompt.sum()), total_completion_tokens=int(completion.sum()),
        total_tokens=int(prompt.sum() + completion.sum()),
        mean_calls=float(np.mean([r.calls for r in rows])) if n else 0.0,
        latency_p50=float(np.percentile(latency, 50)) if n else 0.0,
        latency_p95=float(np.percentile(latency, 95)) if n else 0.0,
        stopped=sum(1 for r in rows if r.stopped),
        mean_cached_prompt_tokens=float(cached.mean()) if n else 0.0, total_cached_prompt_tokens=int(cached.sum()),
        mean_computed_tokens=float((prompt - cached + completion).mean()) if n else 0.0,
        total_computed_tokens=int((prompt - cached + completion).sum()),
        max_tokens=int((prompt + completion).max()) if n else 0,
        max_computed_tokens=int((prompt - cached + completion).max()) if n else 0,
        cost=None if any(c is None for c in costs) else float(sum(costs)),  # type: ignore[arg-type]
    )
    _add_sampling(summary, graded)
    return summary


def _add_sampling(summary: StrategySummary, graded: Sequence[ResultRow]) -> None:
    """pass@k (coverage) and maj@k for every k up to the independent samples ('sample' origin)
    that every graded problem has; strategies with fewer than two get none."""
    drawn = [[c for c in r.candidates if c.get("origin") == "sample"] for r in graded]
    samples = min((len(d) for d in drawn), default=0)
    if samples < 2:
        return
    summary.samples = samples
    pass_sum = np.zeros(samples)
    maj_sum = np.zeros(samples)
    for cands in drawn:
        cands = cands[:samples]
        c = sum(1 for x in cands if x["correct"])
        pass_sum += [pass_at_k(samples, c, k) for k in range(1, samples + 1)]
        maj_sum += majority_curve([(x["group"], bool(x["correct"])) for x in cands])
    summary.pass_at = {k: float(pass_sum[k - 1] / len(graded)) for k in range(1, samples + 1)}
    summary.maj_at = {k: float(maj_sum[k - 1] / len(graded)) for k in range(1, samples + 1)}


def compare_to_baseline(rows_by_strategy: Mapping[str, Sequence[ResultRow]], baseline: str,
                        seed: int = 0) -> list[PairedComparison]:
    """Each other strategy against `baseline` on the problems both graded."""
    if baseline not in rows_by_strategy:
        raise RedlineError(f"baseline {baseline!r} has no results; strategies: {', '.join(rows_by_strategy)}")
    base = {r.problem_id: r.correct for r in rows_by_strategy[baseline] if r.correct is not None}
    out = []
    for strategy, rows in rows_by_strategy.items():
        if strategy == baseline:
            continue
        pairs = [(bool(r.correct), bool(base[r.problem_id])) for r in rows
                 if r.correct is not None and r.problem_id in base]
        comparison = paired_comparison(strategy, baseline, [p[0] for p in pairs], [p[1] for p in pairs], seed=seed)
        if comparison is not None:
            out.append(comparison)
    return out


TOKEN_MEASURES: dict[str, Callable[[ResultRow], int]] = {
    "billed": lambda r: r.total_tokens,  # what an OpenAI-compatible API reports and charges
    "computed": lambda r: r.computed_tokens,  # uncached prompt plus completion: what the engine computed
}


@dataclass(frozen=True)
class TokenDelta:
    """Tokens per problem of `strategy` against `baseline` on the problems both have results for."""

    strategy: str
    baseline: str
    measure: str  # a key of TOKEN_MEASURES
    n: int
    mean: float
    baseline_mean: float
    diff: float  # mean - baseline_mean
    ci: tuple[float, float]

    @property
    def share(self) -> float | None:
        """The strategy's tokens as a fraction of the baseline's (0.42: 42% of its bill)."""
        return self.mean / self.baseline_mean if self.baseline_mean else None


def compare_tokens_to_baseline(rows_by_strategy: Mapping[str, Sequence[ResultRow]], baseline: str,
                               seed: int = 0) -> dict[str, dict[str, TokenDelta]]:
    """Each other strategy's paired token difference against `baseline`, per measure (billed, computed),
    on the problems both have results for (graded or not: tokens were spent either way)."""
    base = {r.problem_id: r for r in rows_by_strategy[baseline]}
    out: dict[str, dict[str, TokenDelta]] = {}
    for strategy, rows in rows_by_strategy.items():
        pairs = [(r, base[r.problem_id]) for r in rows if r.problem_id in base]
        if strategy == baseline or not pairs:
            continue
        out[strategy] = {}
        for measure, tokens in TOKEN_MEASURES.items():
            x = np.array([tokens(r) for r, _ in pairs], dtype=float)
            y = np.array([tokens(b) for _, b in pairs], dtype=float)
            out[strategy][measure] = TokenDelta(strategy, baseline, measure, len(pairs), float(x.mean()),
                                                float(y.mean()), float(x.mean() - y.mean()),
                                                paired_mean_difference_ci(x, y, seed=seed))
    return out


def budget_curves(summaries: Sequence[StrategySummary]) -> dict[str, list[tuple[float, float, float, float]]]:
    """Families with two or more budgets: family -> [(budget, mean billed tokens, mean computed tokens,
    accuracy)] sorted by budget."""
    families: dict[str, list[tuple[float, float, float, float]]] = {}
    for s in summaries:
        family, budget = family_and_budget(s.strategy)
        if budget is not None and s.accuracy is not None:
            families.setdefault(family, []).append((budget, s.mean_tokens, s.mean_computed_tokens, s.accuracy))
    return {f: sorted(points) for f, points in families.items() if len(points) >= 2}
