"""Math-Shepherd step labels from Monte Carlo rollouts, written as a resumable JSONL file.

For each problem one solution is sampled; from each of its step prefixes, k completions are
sampled, and the step's soft label is the fraction of them that reach the gold answer. The
last step is labelled by the solution's own answer. Each finished problem is appended and
flushed at once, and a rerun skips the problem ids already in the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from redline.jsonl import iter_jsonl_objects
from redline.ledger import Ledger, use_ledger
from redline.runtime import Runtime
from redline.strategies.base import SolveContext
from redline.strategies.generation import sample_solutions
from redline.text import answers_equal
from redline.types import Problem
from redline.train.records import append_jsonl


@dataclass(frozen=True)
class LabelSettings:
    k: int = 4
    temperature: float = 0.7
    max_tokens: int = 256
    max_steps: int = 8


async def label_problem(runtime: Runtime, problem: Problem, settings: LabelSettings) -> dict[str, Any]:
    """One labelled record: the sampled solution's steps and one soft label per step."""
    ctx = SolveContext(runtime=runtime, ledger=Ledger(strategy="mc-label"), strategy="mc-label")
    with use_ledger(ctx.ledger):
        solution = (await sample_solutions(ctx, problem, n=1, temperature=settings.temperature,
                                           max_tokens=settings.max_tokens))[0]
        steps = solution.step_texts[: settings.max_steps]
        labels = []
        for i in range(len(steps) - 1):
            rollouts = await sample_solutions(ctx, problem, n=settings.k, temperature=settings.temperature,
                                              prefix_steps=steps[: i + 1], max_tokens=settings.max_tokens,
                                              seed=ctx.seed(1 + i))
            labels.append(sum(answers_equal(r.answer, problem.answer) for r in rollouts) / settings.k)
        if steps:
            final_ok = len(steps) == len(solution.steps) and answers_equal(solution.answer, problem.answer)
            labels.append(1.0 if final_ok else 0.0)
    usage = ctx.ledger.total()
    return {"id": problem.id, "question": problem.question, "answer": problem.answer, "steps": steps,
            "step_labels": labels, "k": settings.k, "solution_answer": solution.answer,
            "tokens": usage.total_tokens, "calls": usage.calls}


def done_ids(path: Path) -> set[str]:
    """Ids already labelled in `path` (unreadable lines are ignored: they get relabelled)."""
    if not path.exists():
        return set()
    return {str(row["id"]) for _, row in iter_jsonl_objects(path) if isinstance(row, dict) and "id" in row}


async def label_problems(runtime: Runtime, problems: Sequence[Problem], output: Path, settings: LabelSettings,
                         on_done: Callable[[dict[str, Any]], None] | None = None) -> tuple[int, int]:
    """Label every problem not yet in `output`; returns (labelled now, skipped as done)."""
    done = done_ids(output)
    todo = [p for p in problems if str(p.id) not in done]
    for problem in todo:
        record = await label_problem(runtime, problem, settings)
        if record["steps"]:
            append_jsonl(output, record)
        if on_done is not None:
            on_done(record)
    return len(todo), len(problems) - len(todo)
