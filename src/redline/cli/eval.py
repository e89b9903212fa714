"""`redline eval` (run strategies side by side, resumably) and `redline report` (tables, plots, HTML)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from redline.cli.common import (BackendOpt, BaseUrlOpt, MaxTokensOpt, MemoryOpt, ModelOpt, SeedOpt, console,
                                make_runtime, out, run_async)
from redline.cli.solve import AllowHarmfulOpt

BaselineOpt = Annotated[Optional[str], typer.Option("--baseline", help="Strategy the others are compared with, paired (default: the first).")]
PricesOpt = Annotated[Optional[Path], typer.Option("--prices", help='JSON price table: {"model or *": {"prompt": USD per 1M tokens, "completion": USD per 1M}}.')]
HtmlProblemsOpt = Annotated[int, typer.Option("--html-problems", min=0, help="How many problems the HTML browser holds (tables cover all).")]


def eval_command(
    data: Annotated[str, typer.Option("--data", "-d", help="JSONL/JSON/CSV file, or 'hf:owner/name[:config]' from the Hugging Face hub.")],
    strategies: Annotated[str, typer.Option("--strategies", "-S", help="Comma-separated strategy specs, e.g. 'cot,sc:n=8,bon:n=8,stepco'.")] = "cot",
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run directory (default runs/<data name>). Rerunning into it resumes.")] = None,
    backend: BackendOpt = "local",
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    max_tokens: MaxTokensOpt = 384,
    seed: SeedOpt = 0,
    memory: MemoryOpt = None,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1, help="Solves in flight at once.")] = 8,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Use only the first N problems (after --shuffle).")] = None,
    shuffle: Annotated[bool, typer.Option("--shuffle", help="Shuffle problems with --seed before --limit.")] = False,
    split: Annotated[Optional[str], typer.Option("--split", help="Split: a hub split, a key of a JSON object, or rows' 'split' field.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="auto, a preset (gsm8k, qwen, math500, generic) or a file type (jsonl, json, csv).")] = "auto",
    question_field: Annotated[Optional[str], typer.Option("--question-field", help="Field holding the question.")] = None,
    answer_field: Annotated[Optional[str], typer.Option("--answer-field", help="Field holding the gold answer.")] = None,
    baseline: BaselineOpt = None,
    prices: PricesOpt = None,
    html_problems: HtmlProblemsOpt = 200,
    learn_online: Annotated[bool, typer.Option("--learn-online", help="Also record each graded result in the memory store (--memory). Off by default: an eval never writes to the memory it reads.")] = False,
    allow_harmful: AllowHarmfulOpt = False,
) -> None:
    """Run strategies side by side on a dataset; results go to a SQLite store as they finish, then reports."""
    from redline.bench.datasets import read_dataset
    from redline.bench.metrics import load_prices
    from redline.bench.progress import LiveProgress
    from redline.bench.runner import run_eval, shared_runs, strategy_keys
    from redline.errors import SpecError
    from redline.memory.providers import memory_notes

    keys = strategy_keys(strategies)
    if baseline is not None and baseline.replace(" ", "") not in keys:
        raise SpecError(f"--baseline {baseline!r} is not one of --strategies: {', '.join(keys)}")
    price_table = load_prices(prices) if prices else None
    loaded = read_dataset(data, fmt, question_field, answer_field, limit, shuffle, seed, split)
    _print_skipped(loaded.skipped)
    run_dir = out_dir or Path("runs") / Path(data.removeprefix("hf:")).stem.replace(":", "-")
    runtime = make_runtime(backend, model, base_url, max_tokens, seed, memory)
    runtime.learn_online = learn_online
    for note in [n for key in keys for n in memory_notes(key, runtime, allow_harmful)]:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    shared = shared_runs(keys, runtime)
    for alias, source in shared.items():
        console.print(f"[yellow]note:[/yellow] {alias!r} runs as {source!r} on this memory (the providers it adds "
                      f"are off); its results are those of {source!r}, computed once", highlight=False)
    pool = getattr(runtime.backend, "endpoints", None)
    over = f" over {len(pool.urls)} endpoints" if pool is not None and len(pool.urls) > 1 else ""
    console.print(f"eval of {len(loaded.problems)} problems ({loaded.preset}) x {len(keys)} strategies "
                  f"on {runtime.backend.name}:{runtime.backend.model}{over} -> {run_dir}")
    settings = {"data": data, "baseline": (baseline or keys[0]).replace(" ", ""), "prices": price_table}
    try:
        with LiveProgress(console) as progress:
            run_async(run_eval(run_dir, loaded.problems, keys, runtime, concurrency, settings, progress.update,
                                       shared))
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted[/yellow]; finished results are saved in {run_dir}. "
                      "Rerun the same command to resume.")
        raise typer.Exit(130) from None
    _report(run_dir, baseline, price_table, html_problems)


def report_command(
    run_dir: Annotated[Path, typer.Argument(help="An eval run directory (holds results.db).")],
    baseline: BaselineOpt = None,
    prices: PricesOpt = None,
    html_problems: HtmlProblemsOpt = 200,
) -> None:
    """Print the summary table and write report.md, results.csv, PNG plots and report.html for a run."""
    from redline.bench.metrics import load_prices

    _report(run_dir, baseline, load_prices(prices) if prices else None, html_problems)


def _report(run_dir: Path, baseline: str | None, prices: dict | None, html_problems: int) -> None:
    from redline.bench.formats import rich_table
    from redline.bench.report import write_reports

    data, files = write_reports(run_dir, baseline, prices, html_problems)
    out.print(rich_table(data))
    if data.errors:
        console.print(f"[red]{len(data.errors)} solves failed[/red] (first: {data.errors[0][2]}); rerun the eval to retry")
    console.print("wrote " + ", ".join(str(f) for f in files))


def _print_skipped(skipped: list) -> None:
    for row in skipped[:20]:
        console.print(f"[yellow]warning:[/yellow] {row}", highlight=False)
    if len(skipped) > 20:
        console.print(f"[yellow]warning:[/yellow] ... and {len(skipped) - 20} more bad rows skipped")


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
    app.command("report")(report_command)
