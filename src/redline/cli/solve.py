"""`redline solve`, `redline backends`, `redline strategies`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from redline.backends import BACKEND_HELP
from redline.cli.common import (BackendOpt, BaseUrlOpt, MaxTokensOpt, MemoryOpt, ModelOpt, SeedOpt, StrategyOpt,
                                console, load_backend, make_runtime, out, read_question, run_async)
from redline.cli.render import print_result
from redline.registry import PROVIDERS, STRATEGIES, VERIFIERS, Registry, describe_params
from redline.types import Problem

AllowHarmfulOpt = Annotated[bool, typer.Option("--allow-harmful", help="Run memory providers that `redline learn` measured harmful with this strategy (off by default).")]


def solve(
    question: Annotated[str, typer.Argument(help="The problem to solve, or '-' to read it from stdin.")],
    strategy: StrategyOpt = "cot",
    backend: BackendOpt = "local",
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    max_tokens: MaxTokensOpt = 384,
    seed: SeedOpt = 0,
    memory: MemoryOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result (steps, answer, usage, trace) as JSON.")] = False,
    trace: Annotated[Optional[Path], typer.Option("--trace", help="Also write the trace JSON to this file.")] = None,
    allow_harmful: AllowHarmfulOpt = False,
) -> None:
    """Solve one problem step by step and show the steps, scores, answer and token usage."""
    from redline.loop import build_solver
    from redline.memory.providers import memory_notes

    text = read_question(question)
    runtime = make_runtime(backend, model, base_url, max_tokens, seed, memory)
    solver = build_solver(strategy, runtime)
    for note in memory_notes(solver.spec, runtime, allow_harmful):
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    load_backend(runtime)
    with console.status(f"solving with {solver.spec} on {runtime.backend.name}:{runtime.backend.model} ..."):
        result = run_async(solver.solve(Problem(text)))
    if trace is not None:
        trace.write_text(json.dumps(result.trace, indent=2))
    if as_json:
        out.print_json(json.dumps(result.to_dict()))
    else:
        print_result(result, out)


def backends() -> None:
    """List the backends redline can generate with."""
    table = Table(show_edge=False)
    table.add_column("backend")
    table.add_column("what")
    for name, text in BACKEND_HELP.items():
        table.add_row(name, text)
    out.print(table)


def _registry_table(registry: Registry[object]) -> Table:
    table = Table(title=f"{registry.kind}s", show_edge=False, show_lines=False)
    table.add_column("name", style="bold")
    table.add_column("what")
    table.add_column("parameters (type, default)")
    for entry in registry.entries():
        table.add_row(entry.name, entry.summary, describe_params(entry).split(": ", 1)[-1])
    return table


def strategies() -> None:
    """List every strategy, verifier and context provider with its parameters and defaults."""
    for registry in (STRATEGIES, VERIFIERS, PROVIDERS):
        out.print(_registry_table(registry))
    out.print("Compose as 'strategy:key=value,...+provider'. Budgets on any strategy: "
              "max_tokens_total, max_calls, timeout_s, budget=computed|billed (which tokens max_tokens_total counts).")


def register(app: typer.Typer) -> None:
    app.command()(solve)
    app.command()(backends)
    app.command()(strategies)
