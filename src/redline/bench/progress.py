"""Live eval progress: one rich bar per strategy with accuracy so far, tokens and ETA."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from redline.bench.runner import Tally


class LiveProgress:
    """Use as a context manager; pass `update` to `run_eval(on_update=...)`."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("acc {task.fields[acc]}"), TextColumn("{task.fields[tokens]} tok"),
            TextColumn("{task.fields[errors]}"), TimeRemainingColumn(), console=console, transient=False)
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> "LiveProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, strategy: str, tally: Tally) -> None:
        acc = "-" if tally.accuracy is None else f"{100 * tally.accuracy:.1f}% ({tally.correct}/{tally.graded})"
        fields = {"acc": acc, "tokens": f"{tally.tokens:,}",
                  "errors": f"[red]{tally.errors} failed[/red]" if tally.errors else ""}
        if strategy not in self.tasks:
            # resumed work counts as done but not as speed, so the ETA reflects this session only
            self.tasks[strategy] = self.progress.add_task(strategy, total=tally.total, completed=tally.done, **fields)
        else:
            self.progress.update(self.tasks[strategy], completed=tally.done + tally.errors, **fields)
