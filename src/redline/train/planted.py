"""Labelled data for measuring verifiers: GSM8K worked solutions with one planted error.

Each worked-solution line is a step. Its calculator annotations (`<<48/2=24>>`) are the
computation graph: they say which numbers each result is computed from. An error is planted
in one annotated step and carried forward through every later step that uses the changed
value, as a student who slipped would, so later steps are arithmetically consistent with
the wrong value and only the planted step is wrong on its own. Kinds:

- `arith`: a computed result is changed (48/2 = 23): a calculation slip;
- `operator`: one operation is swapped (+ for -, * for /) and its result recomputed
  (48*2 = 96): a wrong choice of operation, arithmetically true.
- `correct`: the solution unchanged (label -1).

The label is the index of the planted step. Annotations are stripped from the step text
verifiers see: model-written solutions never contain them, and leaving them in would hand
the verifier the result twice. The visible calculation (`48/2 = 24`) stays. The final
'#### N' line becomes 'The answer is N.' at the end of the last step.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

from redline.errors import RedlineError
from redline.jsonl import iter_jsonl_objects
from redline.verifiers.arith import evaluate
from redline.train.records import LabeledSolution

_ANNOTATION = re.compile(r"<<([^<>=]*)=([^<>]*)>>(\$?)(-?\d[\d,]*(?:\.\d+)?)?")
_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?|\.\d+")
_OPERATOR = re.compile(r"(?<=[\d)\s])\s*([-+*/x×÷])\s*(?=[\d($.])")
_VISIBLE = re.compile(r"((?:\$?\d[\d,]*(?:\.\d+)?|[-+*/x×÷()$.\s])+)=\s*\$?\s*$")
_SWAP = {"+": "-", "-": "+", "*": "/", "/": "*", "x": "/", "×": "/", "÷": "*"}


def format_number(value: Fraction) -> str:
    """24, 0.5, 0.125, 3.33: exact when four decimals suffice, else rounded to two (small values: 3 digits)."""
    if value.denominator == 1:
        return str(value.numerator)
    if 10_000 % value.denominator == 0:
        return f"{float(value):.4f}".rstrip("0").rstrip(".")
    return f"{float(value):.2f}" if abs(value) >= 1 else f"{float(value):.3g}"


def shown_value(value: Fraction) -> Fraction:
    """The value as a student would carry it forward: what `format_number` writes."""
    return Fraction(format_number(value))


@dataclass(frozen=True)
class Plant:
    """Where and what to plant: at annotation `index` (counted over the whole solution)."""

    kind: str
    index: int
    new_result: Fraction | None = None  # arith
    operator_at: int = 0  # operator: which operator of the annotation to swap


def _substitute_numbers(text: str, changes: dict[Fraction, Fraction]) -> str:
    def repl(m: re.Match[str]) -> str:
        value = Fraction(m.group(0).replace(",", ""))
        return format_number(changes[value]) if value in changes else m.group(0)
    return _NUMBER.sub(repl, text) if changes else text


def _swap_operator(text: str, which: int) -> str | None:
    ops = list(_OPERATOR.finditer(text))
    if which >= len(ops):
        return None
    m = ops[which]
    return text[: m.start(1)] + _SWAP[m.group(1)] + text[m.end(1):]


class _Rewriter:
    """Walks the annotations of a solution in order, applying a plant and carrying its changes forward."""

    def __init__(self, plant: Plant) -> None:
        self.plant = plant
        self.changes: dict[Fraction, Fraction] = {}
        self.count = 0
        self.planted_line: int | None = None

    def line(self, text: str, line_no: int) -> str | None:
        out, pos = [], 0
        for m in _ANNOTATION.finditer(text):
            before = text[pos: m.start()]
            expr, result_text, dollar, shown = m.group(1), m.group(2), m.group(3), m.group(4)
            old = evaluate(result_text)
            if old is None:
                return None
            snapshot = dict(self.changes)
            new_expr = _substitute_numbers(expr, snapshot)
            visible = _VISIBLE.search(before)
            visible_text = _substitute_numbers(visible.group(1), snapshot) if visible else None
            if self.count == self.plant.index:
                self.planted_line = line_no
                if self.plant.kind == "operator":
                    swapped = _swap_operator(new_expr, self.plant.operator_at)
                    if swapped is None or (visible_text is not None and
                                           len(_OPERATOR.findall(visible_text)) != len(_OPERATOR.findall(new_expr))):
                        return None
                    new_expr = swapped
                    if visible_text is not None:
                        visible_text = _swap_operator(visible_text, self.plant.operator_at)
            new = self.plant.new_result if (self.count == self.plant.index and self.plant.kind == "arith") \
                else evaluate(new_expr)
            if new is None:
                return None
            new = shown_value(new) if new != old else new
            if new != old:
                self.changes[old] = new
            if visible is not None and visible_text is not None:
                before = before[: visible.start(1)] + visible_text + before[visible.end(1):]
            result = format_number(new) if new != old else result_text
            out.append(f"{before}<<{new_expr}={result}>>{dollar}")
            if shown is not None:
                out.append(format_number(new) if new != old else shown)
            pos = m.end()
            self.count += 1
        out.append(text[pos:])
        return "".join(out)


def _slip(value: Fraction, rng: random.Random) -> Fraction:
    """A plausible miscalculation of `value`."""
    deltas = [-2, -1, 1, 2, 10, -10] if value.denominator == 1 else [Fraction(1, 2), Fraction(-1, 2), 1, -1]
    for delta in rng.sample(deltas, len(deltas)):
        new = value + delta
        if new != value and (new >= 0 or value < 0):
            return Fraction(new)
    return value + 1


def split_gsm8k(answer: str) -> tuple[list[str], str] | None:
    """(annotated step lines, final answer) of a GSM8K answer field, or None without '####'."""
    worked, sep, final = answer.rpartition("####")
    if not sep or not final.strip():
        return None
    lines = [line.strip() for line in worked.strip().splitlines() if line.strip()]
    return (lines, final.strip().replace(",", "")) if lines else None


def visible_steps(lines: list[str], final: str) -> list[str]:
    steps = [_ANNOTATION.sub(lambda m: m.group(3) + (m.group(4) or ""), line).strip() for line in lines]
    steps[-1] = f"{steps[-1]} The answer is {final}."
    return steps


def plant_error(lines: list[str], final: str, kind: str, rng: random.Random) -> tuple[list[str], str, int] | None:
    """(new annotated lines, new final answer, planted line index) or None when `kind` cannot be planted."""
    annotations = [(m.group(1), m.group(2)) for line in lines for m in _ANNOTATION.finditer(line)]
    order = list(range(len(annotations)))
    rng.shuffle(order)
    gold = Fraction(final) if re.fullmatch(r"-?\d+(?:\.\d+)?", final) else None
    for index in order:
        expr, result_text = annotations[index]
        old = evaluate(result_text)
        if old is None or gold is None:
            continue
        if kind == "arith":
            plant = Plant("arith", index, new_result=_slip(old, rng))
        else:
            n_ops = len(_OPERATOR.findall(expr))
            if not n_ops:
                continue
            plant = Plant("operator", index, operator_at=rng.randrange(n_ops))
        rewriter = _Rewriter(plant)
        new_lines = []
        for no, line in enumerate(lines):
            rewritten = rewriter.line(line, no)
            if rewritten is None:
                break
            new_lines.append(rewritten)
        else:
            new_final = rewriter.changes.get(gold)
            if rewriter.planted_line is not None and new_final is not None and new_final >= 0 and new_final != gold:
                return new_lines, format_number(new_final), rewriter.planted_line
    return None


def error_kind(errors: int, operator_share: float) -> str:
    """The kind of the next planted error after `errors` of them: operator swaps make up
    `operator_share` of the errors, spread evenly (0.5 alternates arith, operator, arith, ...)."""
    return "operator" if math.floor((errors + 1) * operator_share) > math.floor(errors * operator_share) else "arith"


def plant_file(path: str | Path, n: int, seed: int = 0, correct_fraction: float = 1 / 3,
               start: int = 0, operator_share: float = 0.5) -> Iterator[LabeledSolution | tuple[int, str]]:
    """Up to `n` labelled solutions from a GSM8K-format JSONL file, from its `start`-th row on.

    Yields records, and (line number, reason) for every line that could not be used.
    About `correct_fraction` of the records are left correct; of the others, `operator_share`
    are operator swaps (the error a calculator cannot see) and the rest calculation slips.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise RedlineError(f"no such data file: {path}")
    if not 0 <= correct_fraction <= 1:
        raise RedlineError(f"correct fraction must be in [0, 1], got {correct_fraction}")
    if not 0 <= operator_share <= 1:
        raise RedlineError(f"operator share must be in [0, 1], got {operator_share}")
    rng = random.Random(seed)
    made = errors = 0
    for number, row in iter_jsonl_objects(path):
        if made >= n:
            return
        if number <= start:
            continue
        if isinstance(row, str):
            yield number, row
            continue
        question, answer = row.get("question"), row.get("answer")
        parts = split_gsm8k(answer) if isinstance(answer, str) else None
        if not isinstance(question, str) or parts is None:
            yield number, "needs 'question' and a GSM8K 'answer' ending in '#### N'"
            continue
        lines, final = parts
        meta = {"answer": final, "source_line": number}
        if rng.random() < correct_fraction:
            made += 1
            yield LabeledSolution(f"{path.stem}:{number}", question, tuple(visible_steps(lines, final)), -1,
                                  kind="correct", meta=meta)
            continue
        kind = error_kind(errors, operator_share)
        planted = plant_error(lines, final, kind, rng)
        if planted is None:
            continue  # no annotation that this kind can change and carry to the answer
        new_lines, new_final, label = planted
        errors += 1
        made += 1
        yield LabeledSolution(f"{path.stem}:{number}", question, tuple(visible_steps(new_lines, new_final)), label,
                              kind=kind, meta=meta | {"planted_answer": new_final})
