"""`redline learn`, `redline export`, `redline memory stats`: thin commands over redline.memory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from redline.cli.common import (BackendOpt, BaseUrlOpt, MaxTokensOpt, MemoryOpt, ModelOpt, SeedOpt, StrategyOpt,
                                console, make_runtime, out, run_async)

FORMAT_HELP = "Dataset layout: auto, gsm8k, qwen, math500, generic, or a file type (jsonl, json, csv)."


def learn(
    data: Annotated[str, typer.Option("--data", "-d", help="Problems with gold answers: a .jsonl/.json/.csv file.")],
    format: Annotated[str, typer.Option("--format", "-f", help=FORMAT_HELP)] = "auto",
    strategy: StrategyOpt = "cot",
    backend: BackendOpt = "local",
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    memory: MemoryOpt = None,
    limit: Annotated[Optional[int], typer.Option("--limit", "-n", min=1, help="Learn from the first N problems.")] = None,
    split: Annotated[Optional[str], typer.Option("--split", help="Only rows of this split.")] = None,
    task: Annotated[Optional[str], typer.Option("--task", help="Tag for the principles learned (default: the dataset layout).")] = None,
    condense_every: Annotated[int, typer.Option("--condense-every", min=2, help="Condense into high-level principles after this many new ones.")] = 8,
    holdout: Annotated[float, typer.Option("--holdout", min=0.0, max=0.9, help="Share of the problems held back (the same ones on every rerun) and solved bare and with each provider, to measure what each provider and item does; 0 learns from all.")] = 0.2,
    providers: Annotated[str, typer.Option("--providers", help="Providers to measure on the held-back slice, comma-separated ('' for none).")] = "principles,mistakes,boost",
    max_tokens: MaxTokensOpt = 384,
    seed: SeedOpt = 0,
) -> None:
    """Solve problems with gold answers, grade them, and remember mistakes, principles and verified steps;
    then measure each provider on the held-back problems. Resumable: problems already done are skipped."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from redline.bench.datasets import read_dataset
    from redline.memory.effects import effect_line, parse_providers
    from redline.memory.learning import Learner, LearnReport, LearnSettings, Outcome
    from redline.memory.store import MemoryStore

    measured = parse_providers(providers)
    loaded = read_dataset(data, format, limit=limit, split=split)
    for row in loaded.skipped:
        console.print(f"[yellow]warning:[/yellow] {row}", highlight=False)
    runtime = make_runtime(backend, model, base_url, max_tokens, seed, memory)
    store = MemoryStore.open(runtime.memory_path)
    settings = LearnSettings(task=task or loaded.preset, condense_every=condense_every, holdout=holdout,
                             providers=measured)
    learner = Learner(runtime, store, strategy, settings)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("learning", total=len(loaded.problems))

        def on_outcome(outcome: Outcome, report: LearnReport) -> None:
            acc = report.accuracy
            shown = f"accuracy {acc:.1%}" if acc is not None else "accuracy -"
            progress.update(bar, advance=1, description=f"learning ({shown}, {report.counts['skipped']} skipped)")

        report = run_async(learner.learn(loaded.problems, on_outcome))
    c = report.counts
    acc = f"{report.accuracy:.1%}" if report.accuracy is not None else "n/a"
    out.print(f"{c['correct']} correct, {c['wrong']} wrong, {c['ungradable']} ungradable (gold not parseable), "
              f"{c['skipped']} already learned; accuracy {acc}")
    out.print(f"memory {store.path}: +{c['principles']} principles ({c['merged']} merged, {c['rejected']} rejected "
              f"as restating their problem, {c['high_level']} high-level, {c['retired']} retired), +{c['mistakes']} "
              f"mistakes, +{c['revisions']} step revisions ({c['fixed']} fixed the answer), +{c['steps']} banked "
              f"steps; "
              f"{report.solve_usage.total_tokens} solve tokens, {learner.learn_usage.total_tokens} learning tokens, "
              f"{report.measure_usage.total_tokens} measuring tokens, {report.wall_s:.0f} s")
    for effect in report.effects:
        out.print(effect_line(effect), highlight=False, markup=False)
    if report.retired_items:
        shown = ", ".join(f"{n} {kind}" for kind, n in sorted(report.retired_items.items()))
        out.print(f"retired for a negative measured effect: {shown}")


def export(
    format: Annotated[str, typer.Option("--format", "-f", help="sft (chat JSONL for TRL SFTTrainer), step-dpo "
                                        "(prompt/chosen/rejected for DPOTrainer) or prm (step labels); with "
                                        "--from-runs: prm, step-dpo or step-labels (the learned verifier's).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="JSONL file to write.")],
    memory: MemoryOpt = None,
    from_runs: Annotated[Optional[Path], typer.Option("--from-runs", help="Read the MCTS search trees of this "
                                                      "`redline eval` run directory instead of the memory.")] = None,
) -> None:
    """Export what memory holds, or the search trees of an eval run, as training data."""
    from redline.memory.export import export as write_export
    from redline.memory.store import MemoryStore

    if from_runs is not None:
        from redline.train.tree_data import export_from_runs

        trees = export_from_runs(from_runs, format, output)
        out.print(f"wrote {trees.rows} {format} rows from {trees.trees} trees to {trees.path}")
        return

    report = write_export(MemoryStore.open(memory, create=False), format, output)
    note = f" ({report.skipped} skipped: no located first error or no corrected step)" if report.skipped else ""
    out.print(f"wrote {report.rows} {format} rows to {report.path}{note}")


def stats(
    memory: MemoryOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print counts, measured effects and item records as JSON.")] = False,
    items: Annotated[int, typer.Option("--items", min=0, help="How many measured items to list (worst first).")] = 10,
) -> None:
    """Counts, each provider's measured effect (held-out slice of `learn`), and item records."""
    from rich.table import Table

    from redline.memory.effects import effect_line, effect_view, item_views
    from redline.memory.store import MemoryStore

    store = MemoryStore.open(memory, create=False)
    counts = store.counts()
    measured = store.provider_effects()
    records = item_views(store)
    if as_json:
        out.print_json(json.dumps({"path": str(store.path), "migrations": store.migrations(), **counts,
                                   "effects": [effect_view(e) for e in measured], "items": records}))
        return
    table = Table(title=str(store.path), show_edge=False)
    table.add_column("what")
    table.add_column("count", justify="right")
    for key, value in counts.items():
        table.add_row(key.replace("_", " "), str(value))
    out.print(table)
    if measured:
        out.print("measured on the held-out slice of `learn` (paired, 95% bootstrap CI):")
    for effect in measured:
        out.print(effect_line(effect), highlight=False, markup=False)
    if records:
        out.print(f"items measured: {len(records)} (worst {min(items, len(records))} shown)")
    for view in records[:items]:
        retired = " (retired)" if view["retired"] else ""
        out.print(f"{view['kind']} {view['id']}: net {view['net']:+d} ({view['wins']} won, {view['losses']} lost, "
                  f"{view['uses']} uses){retired}: {view['text'][:90]}", highlight=False, markup=False)
    for row, _ in store.principles()[:10]:
        used = f"{row.accuracy_used:.0%} of {row.used}" if row.used else "unused"
        out.print(f"[{row.level}] {row.text}  ({used})", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.command()(learn)
    app.command()(export)
    memory_app = typer.Typer(help="Inspect the memory store.", no_args_is_help=True)
    memory_app.command()(stats)
    app.add_typer(memory_app, name="memory")
