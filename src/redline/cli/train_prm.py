"""`redline train prm`: a Math-Shepherd process reward model (LoRA) that `--verifier hf-prm:DIR` loads;
`--export vllm DIR` (or `redline train prm-export`) also writes it as vLLM's token-classification model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from redline.cli.common import MicroBatchOpt, console


def prm(
    data: Annotated[list[Path], typer.Argument(help="JSONL files: TRL stepwise supervision (prompt, completions, labels) or redline labelled records (`verifier plant`, `verifier label`).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Adapter folder to write (PEFT adapter + README.md model card).")] = Path("adapters/prm"),
    base: Annotated[str, typer.Option("--base", help="Base causal LM: 'smollm2-135m' (embedded, default), a .gguf file or an HF model directory.")] = "smollm2-135m",
    dev: Annotated[Optional[Path], typer.Option("--dev", help="Held-out evaluation set: training refuses solutions to its questions.")] = None,
    epochs: Annotated[float, typer.Option("--epochs", min=0.01, help="Passes over the data.")] = 1.0,
    lr: Annotated[float, typer.Option("--lr", min=0.0, help="Peak learning rate (linear decay to 0).")] = 2e-4,
    rank: Annotated[int, typer.Option("--rank", min=1, help="LoRA rank (alpha = 2 x rank).")] = 16,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Solutions per optimiser step.")] = 8,
    micro_batch: MicroBatchOpt = 8,
    max_length: Annotated[int, typer.Option("--max-length", min=16, help="Longer inputs are cut; their later steps are left out.")] = 512,
    val_fraction: Annotated[float, typer.Option("--val-fraction", min=0.0, max=0.9, help="Share of solutions held out for the before/after step AUROC.")] = 0.1,
    max_steps: Annotated[int, typer.Option("--max-steps", help="Stop after this many optimiser steps (> 0; for smoke runs).")] = 0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the split, the data order and the LoRA init.")] = 0,
    top_layers: Annotated[int, typer.Option("--top-layers", min=0, help="LoRA on the last N decoder layers only (0 = all); fewer is faster on CPU.")] = 8,
    max_minutes: Annotated[Optional[float], typer.Option("--max-minutes", min=0.1, help="Stop training after this much wall time, then evaluate and save.")] = None,
    export: Annotated[Optional[tuple[str, Path]], typer.Option("--export", metavar="vllm DIR", help="Also write the trained PRM to DIR as a token-classification model that `vllm serve DIR --runner pooling` serves.")] = None,
) -> None:
    """Train a process reward model: a LoRA that puts '+' or '-' after each step tag (Math-Shepherd format)."""
    from redline.backends.local import resolve_model_path
    from redline.errors import RedlineError
    from redline.train.card import invocation
    from redline.train.data import check_no_overlap, file_sha256
    from redline.train.prm import PrmSettings, read_stepwise, train_prm, write_card

    resolve_model_path(base)  # a bad base fails before the slow imports
    _check_target(export)
    examples, sources = [], []
    for path in data:
        rows, bad = read_stepwise(path)
        for number, reason in bad[:20]:
            console.print(f"[yellow]skipped[/yellow] {path}:{number}: {reason}", highlight=False)
        if len(bad) > 20:
            console.print(f"[yellow]... and {len(bad) - 20} more bad lines[/yellow]")
        examples += rows
        sources.append((path, len(rows), file_sha256(path)))
    if not examples:
        raise RedlineError("no usable training rows in " + ", ".join(str(p) for p in data))
    check_no_overlap([e.prompt for e in examples], dev)
    settings = PrmSettings(epochs=epochs, lr=lr, rank=rank, batch_size=batch_size, micro_batch=micro_batch,
                           max_length=max_length, val_fraction=val_fraction, seed=seed,
                           max_steps=max_steps if max_steps > 0 else -1, top_layers=top_layers, max_minutes=max_minutes)
    report = train_prm(examples, base, out, settings, lambda line: console.print(line, highlight=False))
    write_card(out, base, sources, settings, report, invocation())
    auc = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
    console.print(f"trained on {report.examples} solutions / {report.steps} steps ({report.optimiser_steps} "
                  f"optimiser steps, {report.seen} solutions seen) in {report.seconds:.0f}s; "
                  f"held-out step AUROC {auc(report.val_auroc_before)} -> {auc(report.val_auroc_after)} -> {out}",
                  highlight=False)
    if report.cut is not None:
        console.print(f"cut fitted on the held-out solutions: raw {report.cut.center:.3f} -> 0.5 "
                      f"(ProcessBench F1 {100 * report.cut.f1:.1f}%)", highlight=False)
    console.print(f"use it with --verifier hf-prm:{out}", highlight=False)
    if export is not None:
        _export(str(out), export[1], "bfloat16")


def _check_target(export: tuple[str, Path] | None) -> None:
    from redline.errors import RedlineError

    if export is not None and export[0] != "vllm":
        raise RedlineError(f"unknown export target {export[0]!r}; the one target is 'vllm'")


def _export(prm_path: str, out: Path, dtype: str) -> None:
    from redline.train.prm_export import export_for_vllm

    report = export_for_vllm(prm_path, out, dtype)
    console.print(f"exported {report.architecture} ({report.parameters / 1e6:.0f}M parameters, {report.dtype}, "
                  f"step tag {report.tag!r} = token {report.tag_id}) -> {out}", highlight=False)
    cut = "" if report.center is None else f",center={report.center:g}"
    console.print(f"serve it with: vllm serve {out} --runner pooling; score with --verifier "
                  f"\"remote-prm:{out},base_url=URL,format=token-classify{cut}\"", highlight=False)


def prm_export(
    prm_path: Annotated[str, typer.Argument(metavar="PRM", help="A PRM from `redline train prm` (adapter folder) or a Math-Shepherd causal LM directory.")],
    out: Annotated[Path, typer.Argument(metavar="DIR", help="Folder to write (replaced): config, safetensors, tokenizer, README.md.")],
    to: Annotated[str, typer.Option("--to", help="Target engine: vllm.")] = "vllm",
    dtype: Annotated[str, typer.Option("--dtype", help="Weights: bfloat16 (half the size; what vLLM runs on CPU) or float32.")] = "bfloat16",
) -> None:
    """Write a Math-Shepherd PRM as the token-classification model vLLM's pooling runner serves (same step scores)."""
    _check_target((to, out))
    _export(prm_path, out, dtype)


def register(train_app: typer.Typer) -> None:
    train_app.command("prm")(prm)
    train_app.command("prm-export")(prm_export)
