"""Problems from files (JSONL, JSON, CSV) or the Hugging Face hub, through one field mapping.

Presets know the common math layouts; a row that cannot be read is skipped and reported
with its line number, so one bad line never sinks a run and never goes unnoticed.
"""

from __future__ import annotations

import csv
import json
import random
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from redline.errors import RedlineError
from redline.jsonl import iter_jsonl_objects
from redline.types import Problem

PRESETS = ("gsm8k", "qwen", "math500", "generic")
FILE_FORMATS = ("jsonl", "json", "csv")
FORMATS = ("auto", *PRESETS, *FILE_FORMATS)
ID_FIELDS = ("id", "ID", "unique_id", "idx", "index")
LAYOUT_FIELDS = ("question", "answer", "solution", "problem", "input", "target", "body")  # not copied to meta
_CALCULATOR = re.compile(r"<<[^<>]*>>")
_UNIT_PAREN = re.compile(r"\s*\([^()]*\)\s*$")
_HF_NAME = re.compile(r"^[\w.\-]+/[\w.\-]+(?::[\w.\-]+)?$")


class DatasetError(RedlineError):
    """A dataset that cannot be read or has no usable rows."""


class BadRowWarning(UserWarning):
    """A row that was skipped; the message names the file and line."""


@dataclass(frozen=True)
class SkippedRow:
    where: str  # "train.jsonl:12"
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}; skipped"


@dataclass
class LoadedData:
    problems: list[Problem]
    skipped: list[SkippedRow] = field(default_factory=list)
    preset: str = "generic"


class _BadRow(ValueError):
    pass


# ---- row -> Problem, per preset -------------------------------------------------------------

def _text(value: Any) -> str | None:
    """A field value as text: numbers lose a pointless '.0', blanks become None."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def _get(row: Mapping[str, Any], name: str) -> Any:
    """Field by name, falling back to a case-insensitive match (Body / body)."""
    if name in row:
        return row[name]
    lowered = {k.lower(): v for k, v in row.items() if isinstance(k, str)}
    return lowered.get(name.lower())


def _has(row: Mapping[str, Any], *names: str) -> bool:
    return all(_get(row, n) is not None for n in names)


def _require(row: Mapping[str, Any], name: str) -> str:
    value = _text(_get(row, name))
    if value is None:
        raise _BadRow(f"missing or empty field {name!r}")
    return value


def _gsm8k(row: Mapping[str, Any], question_field: str, answer_field: str) -> tuple[str, str, str | None]:
    question = _require(row, question_field)
    raw = _require(row, answer_field)
    if "####" not in raw:
        raise _BadRow(f"field {answer_field!r} has no '#### <answer>' line")
    worked, _, final = raw.rpartition("####")
    solution = _CALCULATOR.sub("", worked).strip() or None
    answer = final.strip().replace(",", "")
    if not answer:
        raise _BadRow("empty answer after '####'")
    return question, answer, solution


def _qwen(row: Mapping[str, Any], question_field: str, answer_field: str) -> tuple[str, str, str | None]:
    """Qwen2.5-Math eval layout: `input`/`target` (MAWPS, MultiArith) or `Body`+`Question`/`Answer`
    (SVAMP, ASDiv; ASDiv answers carry a unit in parentheses, '9 (apples)')."""
    if _has(row, "body", "question"):
        body, q = _require(row, "body"), _require(row, "question")
        question = f"{body.rstrip()} {q}" if body.rstrip().endswith((".", "?", "!")) else f"{body.rstrip()}. {q}"
        answer = _require(row, "answer")
    else:
        question = _require(row, "input")
        answer = _text(_get(row, "target")) or _require(row, "answer")
    return question, _UNIT_PAREN.sub("", answer) or answer, None


def _math500(row: Mapping[str, Any], question_field: str, answer_field: str) -> tuple[str, str, str | None]:
    from redline.text import extract_answer

    question = _require(row, "problem")
    solution = _text(_get(row, "solution"))
    answer = _text(_get(row, "answer")) or (extract_answer(solution) if solution else None)
    if answer is None:
        raise _BadRow("no 'answer' field and no \\boxed{} answer in 'solution'")
    return question, answer, solution


def _generic(row: Mapping[str, Any], question_field: str, answer_field: str) -> tuple[str, str, str | None]:
    return _require(row, question_field), _require(row, answer_field), _text(_get(row, "solution"))


_MAPPERS: dict[str, Callable[[Mapping[str, Any], str, str], tuple[str, str, str | None]]] = {
    "gsm8k": _gsm8k, "qwen": _qwen, "math500": _math500, "generic": _generic,
}


def detect_preset(row: Mapping[str, Any]) -> str:
    """Guess the layout from one row's fields."""
    if _has(row, "problem"):
        return "math500"
    if _has(row, "input") or _has(row, "body", "question"):
        return "qwen"
    if _has(row, "question", "answer") and "####" in str(_get(row, "answer")):
        return "gsm8k"
    return "generic"


# ---- reading rows ---------------------------------------------------------------------------

Row = tuple[str, "Mapping[str, Any] | str"]  # (position label, row or the reason it is unreadable)


def _jsonl_rows(path: Path) -> Iterator[Row]:
    for number, row in iter_jsonl_objects(path):
        yield f"{path.name}:{number}", row


def _json_rows(path: Path, split: str | None) -> Iterator[Row]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: invalid JSON at line {e.lineno} ({e.msg}); use JSONL to skip bad lines") from None
    if isinstance(data, dict):
        lists = {k: v for k, v in data.items() if isinstance(v, list)}
        if split is not None:
            if split not in lists:
                raise DatasetError(f"{path}: no split {split!r}; splits: {', '.join(lists) or '(none)'}")
            data = lists[split]
        elif len(lists) == 1:
            data = next(iter(lists.values()))
        else:
            raise DatasetError(f"{path}: a JSON object holding several lists; pick one with --split: {', '.join(lists)}")
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected a JSON list of objects")
    for number, row in enumerate(data, 1):
        yield f"{path.name}:item {number}", row if isinstance(row, dict) else "not a JSON object"


def _csv_rows(path: Path) -> Iterator[Row]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        for row in reader:
            where = f"{path.name}:{reader.line_num}"
            if None in row:
                yield where, "more cells than header columns"
            elif any(v is None for v in row.values()):
                yield where, "fewer cells than header columns"
            else:
                yield where, row


def _file_type(path: Path, fmt: str) -> str:
    if fmt in FILE_FORMATS:
        return fmt
    suffix = path.suffix.lower().lstrip(".")
    if suffix in ("jsonl", "ndjson"):
        return "jsonl"
    if suffix in ("json", "csv"):
        return suffix
    raise DatasetError(f"{path}: cannot tell the file type from {path.suffix!r}; "
                       f"name it .jsonl, .json or .csv, or pass --format {'/'.join(FILE_FORMATS)}")


def _hf_rows(name: str, split: str | None) -> Iterator[Row]:
    """Rows of a hub dataset 'owner/name[:config]'; a clear error when the hub cannot be reached."""
    try:
        import datasets
    except ImportError:
        raise DatasetError(f"{name!r} is not a file, and loading from the Hugging Face hub needs the "
                           "`datasets` package (pip install datasets)") from None
    repo, _, config = name.partition(":")
    split = split or "test"
    try:
        data = datasets.load_dataset(repo, config or None, split=split)
    except Exception as e:  # the hub client raises many types for offline, missing repo or split
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DatasetError(f"cannot load {name!r} (split {split!r}) from the Hugging Face hub: {first_line}. "
                           "Without hub access, download the data and pass a file path") from None
    for number, row in enumerate(data, 1):
        yield f"{repo}:{split}:{number}", row


# ---- the public loader ----------------------------------------------------------------------

def _problem(where: str, row: Mapping[str, Any], preset: str, question_field: str, answer_field: str,
             stem: str) -> Problem:
    question, answer, solution = _MAPPERS[preset](row, question_field, answer_field)
    row_id = next((_text(row[k]) for k in ID_FIELDS if k in row and _text(row[k]) is not None), None)
    used = {question_field.lower(), answer_field.lower(), *LAYOUT_FIELDS, *(f.lower() for f in ID_FIELDS)}
    meta = {k: v for k, v in row.items() if str(k).lower() not in used and isinstance(v, (str, int, float, bool)) and len(str(v)) < 200}
    position = where.rsplit(":", 1)[-1].replace("item ", "")
    return Problem(question=question, answer=answer, id=row_id or f"{stem}:{position}", solution=solution, meta=meta)


def _rows_of(source: str, fmt: str, split: str | None) -> tuple[Iterator[Row], str, bool]:
    """(rows, id stem, whether `split` was already applied)."""
    path = Path(source).expanduser()
    if path.is_file():
        kind = _file_type(path, fmt)
        rows = {"jsonl": lambda: _jsonl_rows(path), "json": lambda: _json_rows(path, split),
                "csv": lambda: _csv_rows(path)}[kind]()
        return rows, path.stem, kind == "json"
    if path.exists():
        raise DatasetError(f"{source}: not a file")
    if source.startswith("hf:") or (_HF_NAME.match(source) and path.suffix.lower() not in (".jsonl", ".json", ".csv")):
        name = source.removeprefix("hf:")
        return _hf_rows(name, split), name.split(":")[0], True
    raise DatasetError(f"no such file: {source} (for a Hugging Face dataset write 'hf:owner/name[:config]')")


def read_dataset(source: str | Path, format: str = "auto", question_field: str | None = None,
                 answer_field: str | None = None, limit: int | None = None, shuffle: bool = False,
                 seed: int = 0, split: str | None = None) -> LoadedData:
    """Read problems and the rows skipped on the way. `format` is a preset, a file type, or 'auto'."""
    if format not in FORMATS:
        raise DatasetError(f"unknown format {format!r}; valid: {', '.join(FORMATS)}")
    if limit is not None and limit < 1:
        raise DatasetError(f"--limit must be >= 1, got {limit}")
    source = str(source)
    rows, stem, split_done = _rows_of(source, format, split)
    preset = "generic" if question_field or answer_field else (format if format in PRESETS else None)
    q_field, a_field = question_field or "question", answer_field or "answer"
    problems: list[Problem] = []
    skipped: list[SkippedRow] = []
    for where, row in rows:
        if isinstance(row, str):
            skipped.append(SkippedRow(where, row))
            continue
        if split is not None and not split_done:
            if "split" not in row:
                raise DatasetError(f"{source}: --split {split!r} given, but rows have no 'split' field")
            if str(row["split"]) != split:
                continue
        preset = preset or detect_preset(row)
        try:
            problems.append(_problem(where, row, preset, q_field, a_field, stem))
        except _BadRow as e:
            skipped.append(SkippedRow(where, str(e)))
    if not problems:
        detail = f"; first problem: {skipped[0]}" if skipped else ""
        raise DatasetError(f"{source}: no usable rows (format {preset or format}){detail}")
    if shuffle:
        random.Random(seed).shuffle(problems)
    if limit is not None:
        problems = problems[:limit]
    return LoadedData(problems, skipped, preset or "generic")


def load_problems(path: str | Path, format: str = "auto", question_field: str | None = None,
                  answer_field: str | None = None, limit: int | None = None, shuffle: bool = False,
                  seed: int = 0, split: str | None = None) -> list[Problem]:
    """Problems from a file or 'hf:owner/name[:config]'; each skipped row is a `BadRowWarning`."""
    data = read_dataset(path, format, question_field, answer_field, limit, shuffle, seed, split)
    for row in data.skipped:
        warnings.warn(BadRowWarning(str(row)), stacklevel=2)
    return data.problems


def easy_problems(problems: list[Problem], max_steps: int) -> list[Problem]:
    """Problems whose worked solution has 1 to `max_steps` lines: GSM8K writes one calculation a
    line, so these are its one- and two-step problems, where a small model's accuracy can move."""
    return [p for p in problems if 1 <= len((p.solution or "").splitlines()) <= max_steps]
