"""`redline verifier label|train|eval|calibrate|plant`: make step labels, train the learned PRM, measure and
calibrate verifiers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from redline.cli.common import BackendOpt, BaseUrlOpt, MaxTokensOpt, ModelOpt, SeedOpt, console, make_runtime, out, \
    run_async

verifier_app = typer.Typer(help="Step verifiers: label data, train the learned PRM, measure any verifier.",
                           no_args_is_help=True)


def _report_bad_lines(path: Path, bad: list[tuple[int, str]]) -> None:
    for number, reason in bad[:20]:
        console.print(f"[yellow]skipped[/yellow] {path}:{number}: {reason}", highlight=False)
    if len(bad) > 20:
        console.print(f"[yellow]... and {len(bad) - 20} more bad lines[/yellow]")


@verifier_app.command("label")
def label(
    data: Annotated[str, typer.Option("--data", "-d", help="Problems with gold answers: JSONL/JSON/CSV (GSM8K layout and others).")],
    output: Annotated[Path, typer.Option("--out", "-o", help="Labels JSONL; rerunning appends and skips problems already labelled.")] = Path("labels.jsonl"),
    k: Annotated[int, typer.Option("-k", min=1, help="Rollouts per step prefix.")] = 4,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Label only the first N problems.")] = None,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, help="Sampling temperature of solutions and rollouts.")] = 0.7,
    max_steps: Annotated[int, typer.Option("--max-steps", min=1, help="Label at most this many steps per solution.")] = 8,
    backend: BackendOpt = "local",
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    max_tokens: MaxTokensOpt = 256,
    seed: SeedOpt = 0,
) -> None:
    """Math-Shepherd step labels: from each step prefix, k rollouts; label = share reaching the gold answer."""
    from redline.bench.datasets import read_dataset
    from redline.train.mc_labels import LabelSettings, label_problems

    loaded = read_dataset(data, limit=limit)
    for row in loaded.skipped:
        console.print(f"[yellow]skipped[/yellow] {row}", highlight=False)
    runtime = make_runtime(backend, model, base_url, max_tokens, seed)
    settings = LabelSettings(k=k, temperature=temperature, max_tokens=max_tokens, max_steps=max_steps)

    def done(record: dict) -> None:
        labels = " ".join(f"{x:.2f}" for x in record["step_labels"])
        console.print(f"{record['id']}: {len(record['steps'])} steps [{labels}] ({record['tokens']} tokens)",
                      highlight=False)

    new, skipped = run_async(label_problems(runtime, loaded.problems, output, settings, done))
    console.print(f"labelled {new} problems ({skipped} already in {output}) -> {output}")


@verifier_app.command("train")
def train(
    labels: Annotated[Path, typer.Argument(help="Step-labelled JSONL (from `verifier label` or `verifier plant`).")],
    output: Annotated[Path, typer.Option("--out", "-o", help="Where to write the model (one safetensors file: numbers only, no code).")] = Path("prm.safetensors"),
    c: Annotated[float, typer.Option("--c", min=1e-6, help="Inverse regularisation strength of the logistic regression.")] = 1.0,
    val_fraction: Annotated[float, typer.Option("--val-fraction", min=0.0, max=0.9, help="Share of solutions held out for validation AUROC.")] = 0.2,
    seed: SeedOpt = 0,
) -> None:
    """Train the learned verifier (hashed step text + arith signals -> logistic regression)."""
    from redline.train.records import read_labeled
    from redline.train.learned_trainer import train as train_prm

    data = read_labeled(labels)
    _report_bad_lines(labels, data.bad_lines)
    with console.status(f"fitting {len(data.records)} solutions ..."):
        report = train_prm(data.records, output, c=c, val_fraction=val_fraction, seed=seed)
    auc = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
    console.print(f"trained on {report.solutions} solutions / {report.steps} steps "
                  f"({100 * report.positive_share:.0f}% right) in {report.seconds:.1f}s; "
                  f"AUROC train {auc(report.train_auroc)}, validation {auc(report.val_auroc)} -> {output}")
    console.print(f"use it with --verifier learned:{output}")


@verifier_app.command("eval")
def eval_command(
    verifier: Annotated[str, typer.Option("--verifier", "-v", help="Verifier spec, e.g. arith, judge, learned:prm.safetensors, ensemble:arith+judge.")],
    data: Annotated[Path, typer.Option("--data", "-d", help="Step-labelled JSONL (label = first wrong step, -1 if none; or step_labels).")],
    threshold: Annotated[float, typer.Option("--threshold", min=0.0, max=1.0, help="A step scoring below this is flagged as the first error.")] = 0.5,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Use only the first N solutions.")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1, help="Solutions scored at once.")] = 4,
    as_json: Annotated[Optional[Path], typer.Option("--json", help="Also write the report with every prediction to this JSON file.")] = None,
    backend: BackendOpt = "local",
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    max_tokens: MaxTokensOpt = 384,
    seed: SeedOpt = 0,
) -> None:
    """ProcessBench figures for a verifier: first-error accuracy, correct accuracy, F1, step AUROC, by error kind."""
    from rich.table import Table

    from redline.train.verifier_eval import TABLE_HEADER, evaluate, table_rows
    from redline.train.records import read_labeled

    loaded = read_labeled(data)
    _report_bad_lines(data, loaded.bad_lines)
    records = loaded.records[:limit] if limit else loaded.records
    runtime = make_runtime(backend, model, base_url, max_tokens, seed)
    instance = runtime.verifier(verifier)
    with console.status(f"scoring {len(records)} solutions with {verifier} ..."):
        report = run_async(evaluate(instance, records, threshold, concurrency, name=verifier,
                                    skipped=loaded.bad_lines))
    table = Table(show_edge=False)
    for column in TABLE_HEADER:
        table.add_column(column)
    for row in table_rows(report):
        table.add_row(*row)
    out.print(table)
    out.print(f"{report.steps} steps in {report.seconds:.1f}s ({report.steps / max(report.seconds, 1e-9):.0f} steps/s), "
              f"{report.calls} model calls, {report.tokens} tokens; threshold {threshold}")
    if as_json is not None:
        as_json.write_text(json.dumps(report.to_dict(), indent=1))


@verifier_app.command("calibrate")
def calibrate(
    prm: Annotated[Path, typer.Argument(metavar="PRM", help="A PRM folder that hf-prm loads (`redline train prm` output, an exported or downloaded model).")],
    data: Annotated[Path, typer.Option("--data", "-d", help="Step-labelled JSONL the PRM was not trained on (`verifier plant --start` past its training lines, or `verifier label`).")],
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Use only the first N solutions.")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1, help="Solutions scored at once.")] = 8,
) -> None:
    """Fit where the PRM's scores are cut (the best ProcessBench F1 on DATA) and write it next to the model."""
    from redline.errors import RedlineError
    from redline.train.records import read_labeled
    from redline.train.verifier_eval import evaluate
    from redline.verifiers.calibration import cut_at, fit_center, write_cut
    from redline.verifiers.hf_prm import HfPrmParams, HfPrmVerifier, load_prm

    if not prm.is_dir():
        raise RedlineError(f"no PRM folder at {prm}")
    loaded = read_labeled(data)
    _report_bad_lines(data, loaded.bad_lines)
    records = [r for r in (loaded.records[:limit] if limit else loaded.records) if r.label is not None]
    params = HfPrmParams(path=str(prm), center=0.5)  # the raw scores, whatever cut the folder holds now
    with console.status(f"loading {prm} ..."):
        instance = HfPrmVerifier(load_prm(params), params)
    with console.status(f"scoring {len(records)} solutions with {prm} ..."):
        report = run_async(evaluate(instance, records, 0.5, concurrency))
    scores = [list(j.scores) for j in report.judged]
    labels = [j.record.label for j in report.judged]
    raw, cut = cut_at(scores, labels, 0.5), fit_center(scores, labels)
    path = write_cut(prm, cut, f"{len(records)} solutions of {data}")
    for name, c in (("raw 0.5", raw), (f"fitted {cut.center:.3f}", cut)):
        out.print(f"cut at {name}: ProcessBench F1 {100 * c.f1:.1f}% (first error exact {100 * c.error_accuracy:.1f}%, "
                  f"right solutions kept {100 * c.correct_accuracy:.1f}%)", highlight=False, soft_wrap=True)
    console.print(f"wrote {path}; hf-prm:{prm} now cuts at the fitted center (center=0.5 restores raw scores)",
                  highlight=False, soft_wrap=True)


@verifier_app.command("plant")
def plant(
    data: Annotated[Path, typer.Option("--data", "-d", help="GSM8K-format JSONL (question, answer with <<calc>> annotations and '#### N').")],
    n: Annotated[int, typer.Option("-n", min=1, help="How many labelled solutions to write.")] = 300,
    output: Annotated[Path, typer.Option("--out", "-o", help="Labelled JSONL to write (overwritten).")] = Path("planted.jsonl"),
    correct_fraction: Annotated[float, typer.Option("--correct-fraction", min=0.0, max=1.0, help="Share of solutions left correct (label -1).")] = 1 / 3,
    start: Annotated[int, typer.Option("--start", min=0, help="Skip the first N lines (keep train and eval sets apart).")] = 0,
    operator_share: Annotated[float, typer.Option("--operator-share", min=0.0, max=1.0, help="Share of the planted errors that swap an operation (the rest are calculation slips).")] = 0.5,
    seed: SeedOpt = 0,
) -> None:
    """Plant one error (a calculation slip or a swapped operation, carried forward) in GSM8K solutions."""
    from collections import Counter

    from redline.train.planted import plant_file
    from redline.train.records import LabeledSolution

    kinds: Counter[str] = Counter()
    bad: list[tuple[int, str]] = []
    tmp = output.with_name(output.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for item in plant_file(data, n, seed, correct_fraction, start, operator_share):
            if isinstance(item, LabeledSolution):
                kinds[item.kind] += 1
                f.write(json.dumps(item.to_dict(), ensure_ascii=False) + "\n")
            else:
                bad.append(item)
    tmp.replace(output)
    _report_bad_lines(data, bad)
    summary = ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
    console.print(f"wrote {sum(kinds.values())} solutions ({summary}) -> {output}")


def register(app: typer.Typer) -> None:
    app.add_typer(verifier_app, name="verifier")
