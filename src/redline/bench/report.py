"""Turn a run's store into figures, then into every report file (md, csv, json, png, html)."""

from __future__ import annotations

from pathlib import Path

from redline.bench.formats import write_csv, write_json, write_markdown
from redline.bench.html import write_html
from redline.bench.metrics import Prices, budget_curves, compare_to_baseline, compare_tokens_to_baseline, summarize
from redline.bench.plots import write_plots
from redline.bench.report_data import ReportData
from redline.bench.store import ResultStore
from redline.errors import RedlineError


def collect(store: ResultStore, baseline: str | None = None, prices: Prices | None = None) -> ReportData:
    """All report figures of a run. The baseline defaults to the run's first strategy."""
    strategies = store.strategies()
    if not strategies:
        raise RedlineError(f"{store.run_dir}: no finished results yet")
    meta = store.meta()
    prices = prices if prices is not None else meta.get("prices")
    rows = {s: list(store.rows(s)) for s in strategies}
    baseline = baseline or meta.get("baseline") or strategies[0]
    if baseline not in rows:
        raise RedlineError(f"baseline {baseline!r} has no results; strategies: {', '.join(strategies)}")
    summaries = [summarize(s, rows[s], prices) for s in strategies]
    seed = int(meta.get("seed", 0))
    comparisons = {c.strategy: c for c in compare_to_baseline(rows, baseline, seed=seed)}
    problems = sum(1 for _ in store.problems())
    return ReportData(store.run, meta, summaries, baseline, comparisons, budget_curves(summaries), store.errors(),
                      problems, compare_tokens_to_baseline(rows, baseline, seed=seed))


def write_reports(run_dir: Path, baseline: str | None = None, prices: Prices | None = None,
                  html_problems: int = 200) -> tuple[ReportData, list[Path]]:
    """Write report.md, results.csv, summary.json, the PNG plots and report.html into the run directory."""
    with ResultStore(run_dir, create=False) as store:
        data = collect(store, baseline, prices)
        files = [write_markdown(data, run_dir / "report.md"), write_csv(store, run_dir / "results.csv"),
                 write_json(data, run_dir / "summary.json")]
        plots = write_plots(data, run_dir)
        files += plots
        files.append(write_html(data, store, plots, run_dir / "report.html", html_problems))
    return data, files
