"""PNG plots of a report (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

from redline.bench.metrics import StrategySummary, pareto_front
from redline.bench.report_data import ReportData


TOKEN_AXES: dict[str, Callable[[StrategySummary], float]] = {
    "billed": lambda s: s.mean_tokens,
    "computed": lambda s: s.mean_computed_tokens,
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


MARKERS = "osD^vPX*"


def legend_labels(data: ReportData) -> dict[str, str]:
    """Each plotted strategy's legend label; a strategy that ran as another one is folded into its label."""
    shared: dict[str, str] = data.settings.get("shared") or {}
    labels = {s.strategy: s.strategy for s in data.summaries if s.strategy not in shared}
    for alias, source in shared.items():
        if source in labels:
            labels[source] += f" = {alias}"
    return labels


def accuracy_vs_tokens(data: ReportData, path: Path) -> Path:
    """Accuracy (Wilson 95% CI bars) against mean tokens per problem, billed (left) and computed (right);
    each panel's Pareto front joined and ringed. Every strategy gets its own colour and marker."""
    plt = _pyplot()
    labels = legend_labels(data)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    colours = plt.get_cmap("tab10").colors
    tops: list[float] = []
    for ax, (measure, tokens_of) in zip(axes, TOKEN_AXES.items()):
        points = [(tokens_of(s), s.accuracy, s) for s in data.summaries
                  if s.accuracy is not None and s.strategy in labels]
        for i, (tokens, acc, s) in enumerate(points):
            lo, hi = s.ci or (acc, acc)
            tops.append(hi)
            ax.errorbar(tokens, acc, yerr=[[acc - lo], [hi - acc]], fmt=MARKERS[i // 10 % len(MARKERS)], capsize=4,
                        color=colours[i % 10], label=labels[s.strategy])
        front = sorted((points[i][0], points[i][1]) for i in pareto_front([(t, a) for t, a, _ in points]))
        if front:
            ax.plot(*zip(*front), "--", color="grey", linewidth=1, label="Pareto front")
            ax.scatter(*zip(*front), s=180, facecolors="none", edgecolors="black", linewidths=1.2)
        ax.set_xlabel(f"mean {measure} tokens per problem")
        ax.grid(alpha=0.3)
    axes[0].set_ylim(-0.02, min(1.0, max(tops, default=1.0) + 0.05) + 0.02)
    axes[0].set_ylabel("accuracy")
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, fontsize=8, loc="lower center", ncol=3, frameon=False)
    fig.suptitle(f"{data.run}: accuracy vs tokens (billed: prompt + completion; computed: uncached prompt + completion)",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.04 + 0.035 * math.ceil(len(names) / 3), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def budget_curves(data: ReportData, path: Path) -> Path | None:
    """Accuracy of each strategy family against its budget knob and against tokens, billed and computed."""
    if not data.curves:
        return None
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for family, points in data.curves.items():
        budgets, billed, computed, accs = zip(*points)
        line, = left.plot(budgets, accs, "o-", label=family)
        right.plot(billed, accs, "o-", color=line.get_color())
        right.plot(computed, accs, "s--", color=line.get_color())
    left.set_xscale("log", base=2)
    left.set_xlabel("budget (n, iterations, ...)")
    right.set_xlabel("mean tokens per problem (billed: solid, computed: dashed)")
    for ax in (left, right):
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
    left.legend(fontsize=8)
    fig.suptitle(f"{data.run}: accuracy vs budget")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def sampling_curves(data: ReportData, path: Path) -> Path | None:
    """pass@k (coverage) and maj@k against k for strategies that sample several candidates."""
    sampled = [s for s in data.summaries if s.samples]
    if not sampled:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for s in sampled:
        ks = list(s.pass_at)
        line, = ax.plot(ks, list(s.pass_at.values()), "o-", label=f"{s.strategy} pass@k (coverage)")
        ax.plot(ks, list(s.maj_at.values()), "s--", color=line.get_color(), label=f"{s.strategy} maj@k")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k (samples)")
    ax.set_ylabel("fraction of problems")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plots(data: ReportData, run_dir: Path) -> list[Path]:
    made = [accuracy_vs_tokens(data, run_dir / "accuracy_vs_tokens.png"),
            budget_curves(data, run_dir / "budget_curves.png"),
            sampling_curves(data, run_dir / "sampling_curves.png")]
    return [p for p in made if p is not None]
