"""Tables of a report as text: one set of formatted rows feeds Markdown and HTML; the terminal gets a
compact table that fits 80 columns (the rest is in report.md and report.html); summary.json holds
the same figures for programs.

Tokens come two ways everywhere: billed (prompt + completion, as an OpenAI-compatible API reports
and charges them: a request bills its prompt once, whatever its `n`) and computed (uncached prompt +
completion: what the engine computed), each with its paired difference against the baseline."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from redline.bench.metrics import token_cap
from redline.bench.report_data import ReportData
from redline.bench.store import ResultStore

SUMMARY_COLUMNS = ("strategy", "accuracy", "95% CI", "Δ vs baseline [95% CI]", "McNemar p", "billed/problem",
                   "Δ billed [95% CI] (share)", "computed/problem", "Δ computed [95% CI] (share)", "uncached prompt",
                   "cached prompt", "completion", "calls", "latency p50/p95 s", "cost", "stopped")
COMPACT_COLUMNS = ("strategy", "accuracy [95% CI]", "Δ [95% CI]", "billed", "computed")
RESULT_FIELDS = ("problem_id", "strategy", "gold", "answer", "correct", "gradable", "prompt_tokens",
                 "cached_prompt_tokens", "uncached_prompt_tokens", "completion_tokens", "billed_tokens",
                 "computed_tokens", "calls", "latency_s", "stopped", "model")
SETTINGS_SHOWN = ("backend", "model", "max_tokens", "seed", "data")
TOKENS_NOTE = ("billed = prompt + completion tokens as an OpenAI-compatible API bills them (a request bills its "
               "prompt once, whatever its n); computed = uncached prompt + completion, what the engine computed. "
               "Δ billed and Δ computed: paired mean difference in tokens per problem [bootstrap 95% CI] "
               "(the strategy's mean as a share of the baseline's).")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _delta(data: ReportData, strategy: str, sep: str = ", ") -> str:
    """Paired accuracy difference against the baseline, in points, with its CI."""
    if strategy == data.baseline:
        return "baseline"
    c = data.comparisons.get(strategy)
    return "-" if c is None else f"{100 * c.diff:+.1f} [{100 * c.ci[0]:+.1f}{sep}{100 * c.ci[1]:+.1f}]"


def _token_delta(data: ReportData, strategy: str, measure: str) -> str:
    """Paired difference in tokens per problem against the baseline, its CI and the share of the baseline's."""
    if strategy == data.baseline:
        return "baseline"
    d = data.token_deltas.get(strategy, {}).get(measure)
    if d is None:
        return "-"
    share = "" if d.share is None else f" ({100 * d.share:.0f}%)"
    return f"{d.diff:+.0f} [{d.ci[0]:+.0f}, {d.ci[1]:+.0f}]{share}"


def _tokens_vs_baseline(data: ReportData, strategy: str, measure: str, mean: float) -> str:
    """Mean tokens per problem, with the paired change against the baseline in percent (terminal)."""
    d = data.token_deltas.get(strategy, {}).get(measure)
    change = "" if d is None or d.share is None else f" {100 * (d.share - 1):+.0f}%"
    return f"{mean:.0f}{change}"


def summary_rows(data: ReportData) -> list[dict[str, str]]:
    rows = []
    for s in data.summaries:
        c = data.comparisons.get(s.strategy)
        delta = _delta(data, s.strategy)
        rows.append({
            "strategy": s.strategy,
            "accuracy": f"{_pct(s.accuracy)} ({s.correct}/{s.graded})",
            "95% CI": "-" if s.ci is None else f"{_pct(s.ci[0])}–{_pct(s.ci[1])}",
            "Δ vs baseline [95% CI]": delta,
            "McNemar p": "-" if c is None else f"{c.p_value:.3g}",
            "billed/problem": f"{s.mean_tokens:.0f}",
            "Δ billed [95% CI] (share)": _token_delta(data, s.strategy, "billed"),
            "computed/problem": f"{s.mean_computed_tokens:.0f}",
            "Δ computed [95% CI] (share)": _token_delta(data, s.strategy, "computed"),
            "uncached prompt": f"{s.mean_uncached_prompt_tokens:.0f}",
            "cached prompt": f"{s.mean_cached_prompt_tokens:.0f}",
            "completion": f"{s.mean_completion_tokens:.0f}",
            "calls": f"{s.mean_calls:.2f}",
            "latency p50/p95 s": f"{s.latency_p50:.2f}/{s.latency_p95:.2f}",
            "cost": "-" if s.cost is None else f"${s.cost:.4f}",
            "stopped": str(s.stopped),
        })
    return rows


def sampling_rows(data: ReportData) -> list[dict[str, str]]:
    """pass@k (= coverage@k) and maj@k at k = 1, 2, 4, ... and n, per sampled strategy."""
    rows = []
    for s in data.summaries:
        ks = sorted({k for k in s.pass_at if k & (k - 1) == 0} | {s.samples}) if s.samples else []
        for k in ks:
            rows.append({"strategy": s.strategy, "k": str(k), "pass@k (coverage)": _pct(s.pass_at[k]),
                         "maj@k": _pct(s.maj_at[k])})
    return rows


def budget_rows(data: ReportData) -> list[dict[str, str]]:
    return [{"family": family, "budget": f"{b:g}", "billed/problem": f"{billed:.0f}",
             "computed/problem": f"{computed:.0f}", "accuracy": _pct(a)}
            for family, points in data.curves.items() for b, billed, computed, a in points]


def cap_rows(data: ReportData) -> list[dict[str, str]]:
    """Strategies under a token cap: what they spent as a share of it, and the dearest problem's
    spend against it (the overshoot must be 0)."""
    rows = []
    for s in data.summaries:
        if (cap := token_cap(s.strategy)) is None:
            continue
        limit, count = cap
        mean, most = (s.mean_tokens, s.max_tokens) if count == "billed" else (s.mean_computed_tokens, s.max_computed_tokens)
        rows.append({"strategy": s.strategy, "cap": f"{limit} {count}", "spent/problem": f"{mean:.0f}",
                     "share of cap": f"{mean / limit:.0%}", "dearest problem": str(most),
                     "overshoot": str(max(0, most - limit)), "stopped by a limit": f"{s.stopped} of {s.results}"})
    return rows


def compact_rows(data: ReportData) -> list[dict[str, str]]:
    """The terminal's summary: accuracy with its CI, paired Δ, and billed and computed tokens per
    problem, each with its paired change against the baseline (calls and the rest: report.md)."""
    rows = []
    for s in data.summaries:
        ci = "" if s.ci is None else f" [{100 * s.ci[0]:.0f}–{100 * s.ci[1]:.0f}]"
        rows.append({"strategy": s.strategy, "accuracy [95% CI]": f"{_pct(s.accuracy)}{ci}",
                     "Δ [95% CI]": _delta(data, s.strategy, sep=","),
                     "billed": _tokens_vs_baseline(data, s.strategy, "billed", s.mean_tokens),
                     "computed": _tokens_vs_baseline(data, s.strategy, "computed", s.mean_computed_tokens)})
    return rows


class SpecName:
    """A strategy spec in a narrow column: it wraps after a ',', ':' or '+', never inside a
    `key=value`, so a folded `beam:max_tokens_total=1500` cannot read as a budget of 150."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.parts = re.findall(r"[^,:+]+[,:+]?|[,:+]", spec) or [spec]

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(max(map(len, self.parts)), len(self.spec))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        line = ""
        for part in self.parts:
            if line and len(line) + len(part) > options.max_width:
                yield Text(line, overflow="fold")
                line = ""
            line += part
        yield Text(line, overflow="fold")  # a part wider than the column still folds


def rich_table(data: ReportData) -> Table:
    """The compact summary for an 80-column terminal: numbers never wrap, long strategy names wrap
    between their parameters."""
    table = Table(title=f"{data.run}: {data.problems} problems, Δ vs {data.baseline} (points)", box=box.SIMPLE_HEAD,
                  show_edge=False, pad_edge=False, collapse_padding=True, caption="billed, computed: tokens per problem, paired change vs the baseline; calls, "
                  "latency, cost: report.md, report.html",
                  caption_justify="left")
    rows = compact_rows(data)
    for col in COMPACT_COLUMNS:
        if col == "strategy":
            table.add_column(col)
        else:  # exactly as wide as its widest cell, so only the strategy column gives way
            width = max(len(col), *(len(r[col]) for r in rows))
            table.add_column(col, justify="right", no_wrap=True, min_width=width, max_width=width)
    for row in rows:
        table.add_row(SpecName(row["strategy"]), *(row[col] for col in COMPACT_COLUMNS[1:]))
    return table


def _markdown_table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "(none)\n"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(r[c].replace("|", "\\|") for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_markdown(data: ReportData, path: Path) -> Path:
    settings = ", ".join(f"{k}={data.settings[k]}" for k in SETTINGS_SHOWN if k in data.settings)
    parts = [f"# redline eval: {data.run}\n\n", f"{data.problems} problems; {settings}. Accuracy counts gradable "
             f"problems only; Δ is paired against the baseline (bootstrap 95% CI, exact McNemar p). {TOKENS_NOTE}\n",
             *_shared_note(data.settings.get("shared") or {}), "\n## Summary\n\n", _markdown_table(summary_rows(data))]
    if sampling := sampling_rows(data):
        parts += ["\n## Sampling: pass@k (coverage) and maj@k\n\n", _markdown_table(sampling)]
    if budget := budget_rows(data):
        parts += ["\n## Budget curves\n\n", _markdown_table(budget)]
    if caps := cap_rows(data):
        parts += ["\n## Token caps (`max_tokens_total`)\n\n", _markdown_table(caps)]
    if data.errors:
        parts += [f"\n## Failed solves ({len(data.errors)}; a rerun retries them)\n\n",
                  _markdown_table([{"problem": p, "strategy": s, "error": e} for p, s, e in data.errors[:50]])]
    parts.append("\n![accuracy vs tokens](accuracy_vs_tokens.png)\n")
    path.write_text("".join(parts), encoding="utf-8")
    return path


def _shared_note(shared: dict[str, str]) -> list[str]:
    if not shared:
        return []
    pairs = "; ".join(f"`{alias}` as `{source}`" for alias, source in shared.items())
    return [f"\nRan as another strategy (every memory provider it adds is off on this memory, so its results are "
            f"the other's, computed once): {pairs}.\n"]


def write_csv(store: ResultStore, path: Path) -> Path:
    """One line per problem x strategy, streamed from the store."""
    gold = {p["id"]: p["gold"] for p in store.problems()}
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(RESULT_FIELDS)
        for r in store.rows():
            writer.writerow([r.problem_id, r.strategy, gold.get(r.problem_id), r.answer,
                             "" if r.correct is None else int(r.correct), int(r.gradable), r.prompt_tokens,
                             r.cached_prompt_tokens, r.uncached_prompt_tokens, r.completion_tokens, r.total_tokens,
                             r.computed_tokens, r.calls, f"{r.latency_s:.3f}", r.stopped or "", r.model])
    return path


def summary_json(data: ReportData) -> dict[str, Any]:
    """The report's figures for programs: each strategy's summary, its paired accuracy Δ and its paired
    token Δs (billed and computed, with the share of the baseline's) against the baseline; `shared`
    names the strategies stored as copies of another's results."""
    strategies = []
    for s in data.summaries:
        c = data.comparisons.get(s.strategy)
        deltas = data.token_deltas.get(s.strategy, {})
        strategies.append({**asdict(s), "accuracy_delta": None if c is None else asdict(c),
                           "token_deltas": {m: asdict(d) | {"share": d.share} for m, d in deltas.items()}})
    settings = {k: data.settings[k] for k in SETTINGS_SHOWN if k in data.settings}
    return {"run": data.run, "problems": data.problems, "baseline": data.baseline, "settings": settings,
            "tokens": TOKENS_NOTE, "shared": data.settings.get("shared") or {}, "strategies": strategies}


def write_json(data: ReportData, path: Path) -> Path:
    path.write_text(json.dumps(summary_json(data), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
