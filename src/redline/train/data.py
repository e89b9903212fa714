"""Training data for `redline train`: chat prompt/completion pairs in the `solve` prompt's format.

Two inputs are accepted: a JSONL from `redline export --format sft` ({"messages": [...]}) or any
dataset `redline eval` reads, whose gold worked solutions become 'Step k:' lines ending in
'The answer is N.'. Training data must be exact (its hash goes into the model card), so a bad
line is an error naming its line number, never a silent skip; and no question of the dev set
may appear in it.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

from redline.bench.datasets import DatasetError, read_dataset
from redline.errors import RedlineError
from redline.jsonl import iter_jsonl_objects
from redline.memory.stepbank import gold_steps, step_body
from redline.text import solve_messages

T = TypeVar("T")

_CALCULATOR = re.compile(r"<<[^<>]*>>")
_SPACE = re.compile(r"\s+")
_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Example:
    """One training pair: the solve prompt's messages and the assistant's answer."""

    question: str
    prompt: list[dict[str, str]]
    completion: str
    answer: str | None = None

    def as_row(self) -> dict[str, Any]:
        """TRL's conversational prompt-completion row (loss on the completion only)."""
        return {"prompt": self.prompt, "completion": [{"role": "assistant", "content": self.completion}]}


@dataclass(frozen=True)
class TrainingData:
    examples: list[Example]
    sha256: str
    path: Path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def gold_completion(solution: str, answer: str) -> str:
    """A gold worked solution as redline's own output: 'Step k:' lines, calculator marks removed,
    then 'The answer is N.' (the format the solve prompt asks for)."""
    steps = [step_body(_CALCULATOR.sub("", s)) for s in gold_steps(solution)]
    lines = [f"Step {i + 1}: {s}" for i, s in enumerate(s for s in steps if s)]
    return "\n".join([*lines, f"The answer is {answer}."])


def solve_example(question: str, completion: str, answer: str | None = None) -> Example:
    return Example(question, solve_messages(question), completion, answer)


def _bad_lines(path: Path, bad: list[tuple[str, str]]) -> RedlineError:
    shown = "; ".join(f"{where}: {reason}" for where, reason in bad[:5])
    more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
    return RedlineError(f"{path}: {len(bad)} bad data line(s): {shown}{more}; fix or remove them")


def _chat_example(row: dict[str, Any]) -> Example:
    """An `export --format sft` row: system/user messages, then one assistant message last."""
    messages = row.get("messages")
    if not isinstance(messages, list) or len(messages) < 2:
        raise ValueError("'messages' must be a list of at least a user and an assistant message")
    if not all(isinstance(m, dict) and m.get("role") in _ROLES and isinstance(m.get("content"), str)
               for m in messages):
        raise ValueError("each message needs a role (system/user/assistant) and text content")
    *prompt, last = messages
    if last["role"] != "assistant" or not last["content"].strip():
        raise ValueError("the last message must be a non-empty assistant message")
    users = [m["content"] for m in prompt if m["role"] == "user"]
    if not users:
        raise ValueError("no user message")
    return Example(users[-1].strip(), [{"role": m["role"], "content": m["content"]} for m in prompt],
                   last["content"].strip())


def _is_chat_file(path: Path) -> bool:
    if path.suffix.lower() not in (".jsonl", ".ndjson"):
        return False
    first = next((row for _, row in iter_jsonl_objects(path) if isinstance(row, dict)), None)
    return first is not None and "messages" in first


def read_jsonl_rows(path: Path, parse: Callable[[dict[str, Any]], T]) -> list[T]:
    """`parse` applied to every object line of a JSONL file; any bad line (unreadable, or `parse`
    raised ValueError) makes one error that names the line numbers, so training data is exact."""
    rows, bad = [], []
    for number, row in iter_jsonl_objects(path):
        try:
            if isinstance(row, str):
                raise ValueError(row)
            rows.append(parse(row))
        except ValueError as e:
            bad.append((f"line {number}", str(e)))
    if bad:
        raise _bad_lines(path, bad)
    return rows


def _read_chat(path: Path) -> list[Example]:
    return read_jsonl_rows(path, _chat_example)


def _read_problems(path: Path) -> list[Example]:
    try:
        data = read_dataset(path)
    except DatasetError as e:
        raise RedlineError(str(e)) from None
    bad = [(f"line {row.where.rsplit(':', 1)[-1]}", row.reason) for row in data.skipped]
    bad += [(f"problem {p.id}", "no worked solution to train on")
            for p in data.problems if not (p.solution or "").strip()]
    if bad:
        raise _bad_lines(path, bad)
    return [solve_example(p.question, gold_completion(p.solution or "", p.answer), p.answer) for p in data.problems]


def read_training_data(path: Path, max_examples: int | None = None, seed: int = 0) -> TrainingData:
    """Every example of `path` (a seeded random `max_examples` of them when given); errors name bad lines."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise RedlineError(f"no such data file: {path}")
    if path.stat().st_size == 0 or not path.read_text(encoding="utf-8", errors="replace").strip():
        raise RedlineError(f"{path}: the data file is empty")
    examples = _read_chat(path) if _is_chat_file(path) else _read_problems(path)
    if not examples:
        raise RedlineError(f"{path}: no training examples")
    if max_examples is not None and max_examples < len(examples):
        examples = random.Random(seed).sample(examples, max_examples)
    return TrainingData(examples, file_sha256(path), path)


def normalise_question(text: str) -> str:
    return _SPACE.sub(" ", text).strip().lower()


def check_no_overlap(questions: Iterable[str], dev: Path | None) -> None:
    """Refuse training data that holds a question of the dev set: evaluation must stay held out."""
    if dev is None:
        return
    try:
        dev_questions = {normalise_question(p.question) for p in read_dataset(dev).problems}
    except DatasetError as e:
        raise RedlineError(f"--dev: {e}") from None
    overlap = [q for q in questions if normalise_question(q) in dev_questions]
    if overlap:
        raise RedlineError(f"{len(overlap)} training question(s) are in the dev set {dev} "
                           f"(first: {overlap[0][:60]!r}); never train on evaluation problems")
