"""Rejection-sampling fine-tuning rounds (STaR, Zelikman et al. 2022; RFT, Yuan et al. 2023).

Each round the current model samples k solutions per training problem; those whose answer
matches the gold and that the verifier passes are kept, one per distinct set of equations.
A fresh LoRA is then fitted on the base with all kept solutions so far plus the gold ones
(STaR restarts from the base each round), and graded greedily on a held-apart dev set. A round
that does not beat the best so far is reported as such; the best round's adapter is the result.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from redline.train.adapters import TrainSettings
from redline.errors import RedlineError
from redline.train.data import Example, TrainingData, file_sha256, solve_example
from redline.train.evaluate import complete, grade
from redline.train.sft import train_sft
from redline.types import Problem

_EQUATION = re.compile(r"((?:\d[\d,.]*|[()])(?:\s*[-+*/×x÷^()]\s*\(?\s*\d[\d,.]*\)?)+)\s*=\s*(-?\d[\d,.]*)")


@dataclass(frozen=True)
class RftSettings:
    rounds: int = 2
    k: int = 4
    temperature: float = 0.7
    max_tokens: int = 192
    verifier: str = "arith"
    threshold: float = 0.5  # every step must score at least this


@dataclass
class Round:
    number: int
    sampled: int
    kept_new: int
    train_examples: int
    dev_accuracy: float
    improved: bool
    adapter: str
    tokens_per_s: float


@dataclass
class RftReport:
    base_accuracy: float
    rounds: list[Round] = field(default_factory=list)

    @property
    def best(self) -> Round | None:
        improved = [r for r in self.rounds if r.improved]
        return improved[-1] if improved else None


def equations(text: str) -> tuple[str, ...]:
    """The solution's arithmetic as 'lhs=rhs' strings (spaces dropped): two solutions with the same
    equations are one solution for training, however they are worded."""
    found = tuple(re.sub(r"\s+", "", f"{lhs}={rhs.rstrip('.,')}") for lhs, rhs in _EQUATION.findall(text))
    return found or (re.sub(r"\s+", " ", text.strip().lower()),)


async def _scores(verifier: Any, candidates: Sequence[tuple[Example, str, tuple[str, ...]]]) -> list[list[float]]:
    import asyncio

    from redline.text import segment_steps

    return list(await asyncio.gather(*(verifier.score(p.question, segment_steps(t)) for p, t, _ in candidates)))


def sample_round(model: str, problems: Sequence[Example], settings: RftSettings, verifier: Any, seed: int,
                 seen: dict[str, set[tuple[str, ...]]]) -> tuple[int, list[Example]]:
    """k samples per training problem (gold examples) from `model`; (samples drawn, newly kept examples)."""
    import asyncio

    from redline.text import answers_equal, extract_answer

    texts = complete(model, [p.question for p in problems], settings.max_tokens, settings.k,
                     settings.temperature, batch=16, seed=seed)
    candidates: list[tuple[Example, str, tuple[str, ...]]] = []
    for problem, samples in zip(problems, texts):
        fresh = {key: text for text in samples if answers_equal(extract_answer(text), problem.answer)
                 and (key := equations(text)) not in seen.setdefault(problem.question, set())}
        candidates += [(problem, text, key) for key, text in fresh.items()]
    kept: list[Example] = []
    for (problem, text, key), scores in zip(candidates, asyncio.run(_scores(verifier, candidates))):
        if scores and min(scores) >= settings.threshold:
            seen[problem.question].add(key)
            kept.append(solve_example(problem.question, text, problem.answer))
    return sum(len(s) for s in texts), kept


def _write_round_data(path: Path, examples: Sequence[Example]) -> TrainingData:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for e in examples:
            row = {"messages": [*e.prompt, {"role": "assistant", "content": e.completion}]}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return TrainingData(list(examples), file_sha256(path), path)


def run_rft(gold: Sequence[Example], dev: Sequence[Problem], base: str, out: Path, settings: RftSettings,
            train: TrainSettings, verifier: Any, command: str, say: Callable[[str], None] = print) -> RftReport:
    """N rounds of sample -> filter -> fit -> grade; writes out/round-k/ and out/rounds.json.

    `gold` holds the training problems with their gold solutions (answers required)."""
    if any(g.answer is None for g in gold):
        raise RedlineError("rft needs problems with gold answers (a dataset `redline eval` reads), not chat rows")
    report = RftReport(base_accuracy=grade(base, dev, settings.max_tokens).accuracy)
    say(f"round 0 (base): dev accuracy {report.base_accuracy:.1%} on {len(dev)} problems")
    seen: dict[str, set[tuple[str, ...]]] = {g.question: {equations(g.completion)} for g in gold}
    kept: list[Example] = []
    model, best = base, report.base_accuracy
    for number in range(1, settings.rounds + 1):
        sampled, new = sample_round(model, gold, settings, verifier, train.seed + number, seen)
        kept += new
        folder = out / f"round-{number}"
        data = _write_round_data(folder / "data.jsonl", gold + kept)
        result = train_sft(data, base, folder, replace(train, seed=train.seed + number), command, say, kind="rft")
        accuracy = grade(str(folder), dev, settings.max_tokens).accuracy
        improved = accuracy > best
        report.rounds.append(Round(number, sampled, len(new), len(data.examples), accuracy, improved, str(folder),
                                   result.figures.tokens_per_s))
        verdict = "improved" if improved else f"did NOT improve on the best so far ({best:.1%})"
        say(f"round {number}: kept {len(new)} new of {sampled} samples; trained on {len(data.examples)}; "
            f"dev accuracy {accuracy:.1%} - {verdict}")
        best = max(best, accuracy)
        model = str(folder)
        (out / "rounds.json").write_text(json.dumps({"base_accuracy": report.base_accuracy,
                                                     "rounds": [asdict(r) for r in report.rounds]}, indent=1))
    return report
