"""Terminal rendering of results: steps with scores, revisions, usage by phase."""

from __future__ import annotations

from typing import Any, Iterable

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from redline.types import Result


def score_style(score: float | None) -> str:
    if score is None:
        return "white"
    return "green" if score >= 0.7 else "yellow" if score >= 0.4 else "red"


def print_result(result: Result, console: Console) -> None:
    console.print(f"[bold]strategy[/bold] {result.strategy}")
    if result.solution is not None:
        for i, step in enumerate(result.solution.steps, 1):
            tag = f"[{score_style(step.score)}]{step.score:.2f}[/]" if step.score is not None else "  - "
            console.print(f" {tag} {escape(step.text)}", highlight=False)
    chosen = next((c for c in result.candidates if c.solution == result.solution), None)
    if chosen is not None and chosen.sanity:
        console.print(f"[red]zeroed by the sanity rules:[/red] {escape('; '.join(chosen.sanity))}", highlight=False)
    for event in _revisions(result.trace):
        console.print(f"[magenta]revision[/magenta] {escape(event)}", highlight=False)
    if len(result.candidates) > 1:
        console.print(candidates_table(result))
    reason = _stop_reason(result.trace)
    if reason:
        console.print(f"[bold]stopped because[/bold] {escape(reason)}", highlight=False)
    if result.stopped:
        console.print(f"[yellow]stopped early:[/yellow] {result.stopped}")
    answer = escape(result.answer) if result.answer is not None else 'null (no parsable answer)'
    console.print(f"[bold]answer:[/bold] {answer}")
    console.print(usage_table(result))


def _revisions(trace: dict[str, Any]) -> Iterable[str]:
    for node in trace.get("children", []):
        if node.get("kind") == "revise":
            step = node.get("flagged_step")
            score = node.get("flagged_score")
            score_txt = f" (score {score:.2f})" if isinstance(score, (int, float)) else ""
            yield f"flagged step {step}{score_txt}: {node.get('flagged_text', '')!r} -> {node.get('replacement', '')!r}"
        yield from _revisions(node)


def _stop_reason(trace: dict[str, Any]) -> str | None:
    return next((n.get("reason") for n in trace.get("children", []) if n.get("kind") == "stop"), None)


def candidates_table(result: Result) -> Table:
    """Every candidate the strategy weighed: origin, answer, outcome score, votes, and why the sanity
    rules zeroed it (when they zeroed any); the chosen one marked."""
    table = Table(title="candidates", show_edge=False)
    zeroed = any(c.sanity for c in result.candidates)
    for col in ("", "origin", "answer", "score", "votes", "steps") + (("zeroed because",) if zeroed else ()):
        table.add_column(col, justify="left" if col in ("origin", "answer", "zeroed because") else "right")
    chosen = result.solution.text if result.solution is not None else None
    for c in result.candidates:
        score = f"[{score_style(c.score)}]{c.score:.2f}[/]" if c.score is not None else "-"
        why = (escape("; ".join(c.sanity)),) if zeroed else ()
        table.add_row("*" if c.solution.text == chosen else "", c.origin, escape(str(c.solution.answer)), score,
                      f"{c.votes:g}" if c.votes else "", str(len(c.solution.steps)), *why)
    return table


def usage_table(result: Result) -> Table:
    """Calls and tokens by phase: billed (prompt + completion, as an API charges) beside computed
    (uncached prompt + completion, what the engine did)."""
    table = Table(title="usage by phase", show_edge=False)
    for col in ("phase", "calls", "prompt", "cached", "completion", "billed", "computed", "latency s"):
        table.add_column(col, justify="right" if col != "phase" else "left")
    rows = list(result.usage.items()) + [("all", result.total)]
    for name, u in rows:
        table.add_row(name, str(u.calls), str(u.prompt_tokens), str(u.cached_prompt_tokens), str(u.completion_tokens),
                      str(u.total_tokens), str(u.computed_tokens), f"{u.latency_s:.2f}")
    return table
