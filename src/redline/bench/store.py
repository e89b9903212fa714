"""The SQLite results store of one eval run (`runs/NAME/results.db`).

One row per problem x strategy, committed as soon as it finishes (WAL journal), so a
killed run loses only in-flight work; the unique key makes a rerun skip what is done.

The schema grows by numbered migrations (`MIGRATIONS`, tracked in `PRAGMA user_version`), applied
when a store is opened, so run directories written by older versions stay readable.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from redline.bench.grading import Grade
from redline.errors import RedlineError
from redline.text import parse_gold
from redline.types import Problem, Result

DB_NAME = "results.db"
# Settings that change what a result means; a rerun into the same run must keep them.
RESULT_SETTINGS = ("backend", "model", "max_tokens", "seed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS problems (
    problem_id TEXT PRIMARY KEY, position INTEGER NOT NULL, question TEXT NOT NULL,
    gold TEXT, solution TEXT, gradable INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS results (
    run TEXT NOT NULL, problem_id TEXT NOT NULL, strategy TEXT NOT NULL,
    answer TEXT, correct INTEGER, gradable INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, calls INTEGER NOT NULL,
    latency_s REAL NOT NULL, stopped TEXT, model TEXT NOT NULL,
    usage TEXT NOT NULL, candidates TEXT NOT NULL, result TEXT NOT NULL,  -- result: Result.to_dict(), trace included
    finished_at REAL NOT NULL,
    UNIQUE (run, problem_id, strategy));
CREATE TABLE IF NOT EXISTS errors (
    run TEXT NOT NULL, problem_id TEXT NOT NULL, strategy TEXT NOT NULL, error TEXT NOT NULL, at REAL NOT NULL);
"""


def _cached_prompt_tokens(db: sqlite3.Connection) -> None:
    """1: prompt tokens served from a prefix cache, a column of their own; older rows take the
    count from their per-phase usage (0 where it was not recorded)."""
    db.execute("ALTER TABLE results ADD COLUMN cached_prompt_tokens INTEGER NOT NULL DEFAULT 0")
    rows = db.execute("SELECT rowid, usage FROM results").fetchall()
    db.executemany("UPDATE results SET cached_prompt_tokens = ? WHERE rowid = ?",
                   [(sum(int(u.get("cached_prompt_tokens") or 0) for u in json.loads(usage).values()), rowid)
                    for rowid, usage in rows])


MIGRATIONS = (_cached_prompt_tokens,)  # the store's version is how many of these it has had


@dataclass(frozen=True)
class ResultRow:
    """A stored result without its trace: what metrics and tables need."""

    problem_id: str
    strategy: str
    answer: str | None
    correct: bool | None
    gradable: bool
    prompt_tokens: int
    completion_tokens: int
    calls: int
    latency_s: float
    stopped: str | None
    model: str
    candidates: list[dict[str, Any]]
    cached_prompt_tokens: int = 0  # of prompt_tokens, served from a prefix cache

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def uncached_prompt_tokens(self) -> int:
        return self.prompt_tokens - self.cached_prompt_tokens

    @property
    def computed_tokens(self) -> int:
        """Uncached prompt plus completion, as `Usage.computed_tokens`."""
        return self.uncached_prompt_tokens + self.completion_tokens


_ROW_COLUMNS = ("problem_id, strategy, answer, correct, gradable, prompt_tokens, completion_tokens, calls, "
                "latency_s, stopped, model, candidates, cached_prompt_tokens")
_WRITE_COLUMNS = ("run, problem_id, strategy, answer, correct, gradable, prompt_tokens, completion_tokens, calls, "
                  "latency_s, stopped, model, usage, candidates, result, finished_at, cached_prompt_tokens")


def _row(values: Sequence[Any]) -> ResultRow:
    (pid, strategy, answer, correct, gradable, pt, ct, calls, latency, stopped, model, candidates, cached) = values
    return ResultRow(pid, strategy, answer, None if correct is None else bool(correct), bool(gradable), pt, ct,
                     calls, latency, stopped, model, json.loads(candidates), cached)


class ResultStore:
    """Opens (creating if needed) the store in a run directory."""

    def __init__(self, run_dir: Path, create: bool = True) -> None:
        self.run_dir = Path(run_dir)
        path = self.run_dir / DB_NAME
        if not path.exists() and not create:
            raise RedlineError(f"{self.run_dir}: no eval run here (missing {DB_NAME}); run `redline eval --out {self.run_dir}`")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        self._migrate()
        self.run = self.meta().get("run") or self.run_dir.resolve().name

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
            with self.db:
                migration(self.db)
                self.db.execute(f"PRAGMA user_version = {number}")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- run settings ----
    def meta(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self.db.execute("SELECT key, value FROM meta")}

    def set_meta(self, **values: Any) -> None:
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                [(k, json.dumps(v)) for k, v in values.items()])

    def start_run(self, settings: dict[str, Any]) -> None:
        """Record the run's settings, or check that a resumed run keeps the ones that matter."""
        old = self.meta()
        changed = [k for k in RESULT_SETTINGS if k in old and k in settings and old[k] != settings[k]]
        if changed:
            diffs = ", ".join(f"{k}: {old[k]!r} -> {settings[k]!r}" for k in changed)
            raise RedlineError(f"{self.run_dir} was run with other settings ({diffs}); use a new --out to compare")
        strategies = list(dict.fromkeys([*old.get("strategies", []), *settings.get("strategies", [])]))
        self.set_meta(**{**settings, "run": self.run, "strategies": strategies})

    # ---- problems ----
    def add_problems(self, problems: Sequence[Problem]) -> None:
        """Register the run's problems (idempotent; positions follow the dataset order)."""
        start = self.db.execute("SELECT COALESCE(MAX(position) + 1, 0) FROM problems").fetchone()[0]
        rows = ((p.id, start + i, p.question, p.answer, p.solution, int(parse_gold(p.answer)))
                for i, p in enumerate(problems))
        with self.db:
            self.db.executemany("INSERT OR IGNORE INTO problems VALUES (?, ?, ?, ?, ?, ?)", rows)

    def problems(self, limit: int | None = None) -> Iterator[dict[str, Any]]:
        sql = "SELECT problem_id, question, gold, solution, gradable FROM problems ORDER BY position"
        cur = self.db.execute(sql + (" LIMIT ?" if limit else ""), (limit,) if limit else ())
        for pid, question, gold, solution, gradable in cur:
            yield {"id": pid, "question": question, "gold": gold, "solution": solution, "gradable": bool(gradable)}

    # ---- results ----
    def done(self) -> set[tuple[str, str]]:
        return set(self.db.execute("SELECT problem_id, strategy FROM results WHERE run = ?", (self.run,)))

    def write(self, strategy: str, result: Result, grade: Grade, model: str) -> None:
        """Store one finished result, committed at once."""
        total = result.total
        data = result.to_dict()
        usage = data["usage"]
        with self.db:
            self.db.execute(
                f"INSERT OR REPLACE INTO results ({_WRITE_COLUMNS}) VALUES ({', '.join('?' * 17)})",
                (self.run, result.problem.id, strategy, result.answer,
                 None if grade.correct is None else int(grade.correct), int(grade.gradable),
                 total.prompt_tokens, total.completion_tokens, total.calls, result.wall_s, result.stopped, model,
                 json.dumps(usage), json.dumps([c.to_dict() for c in grade.candidates]),
                 json.dumps(data, default=str), time.time(), total.cached_prompt_tokens))

    def copy_result(self, problem_id: str, source: str, target: str) -> None:
        """Store `source`'s result for a problem under `target` too: a strategy that ran as another."""
        columns = [c.strip() for c in _WRITE_COLUMNS.split(",")]
        picked = ", ".join("?" if c == "strategy" else c for c in columns)
        with self.db:
            self.db.execute(f"INSERT OR REPLACE INTO results ({_WRITE_COLUMNS}) SELECT {picked} FROM results "
                            "WHERE run = ? AND problem_id = ? AND strategy = ?", (target, self.run, problem_id, source))

    def record_error(self, problem_id: str, strategy: str, error: str) -> None:
        with self.db:
            self.db.execute("INSERT INTO errors VALUES (?, ?, ?, ?, ?)",
                            (self.run, problem_id, strategy, error, time.time()))

    def errors(self) -> list[tuple[str, str, str]]:
        """Failures not since fixed by a rerun: (problem_id, strategy, error)."""
        return list(self.db.execute(
            "SELECT e.problem_id, e.strategy, e.error FROM errors e WHERE e.run = ? AND NOT EXISTS "
            "(SELECT 1 FROM results r WHERE r.run = e.run AND r.problem_id = e.problem_id AND r.strategy = e.strategy)",
            (self.run,)))

    def strategies(self) -> list[str]:
        """Strategies in the order they were asked for, then any others with results."""
        listed = self.meta().get("strategies", [])
        found = [s for (s,) in self.db.execute("SELECT DISTINCT strategy FROM results WHERE run = ?", (self.run,))]
        return [s for s in listed if s in found] + sorted(set(found) - set(listed))

    def rows(self, strategy: str | None = None) -> Iterator[ResultRow]:
        """Light rows (no traces), in problem order."""
        sql = (f"SELECT {', '.join('r.' + c.strip() for c in _ROW_COLUMNS.split(','))} FROM results r "
               "JOIN problems p USING (problem_id) WHERE r.run = ?")
        args: tuple[Any, ...] = (self.run,)
        if strategy is not None:
            sql += " AND r.strategy = ?"
            args += (strategy,)
        for values in self.db.execute(sql + " ORDER BY p.position, r.strategy", args):
            yield _row(values)

    def full_results(self, problem_id: str) -> dict[str, tuple[bool | None, list[dict[str, Any]], dict[str, Any]]]:
        """One problem's stored results by strategy: (correct, graded candidates, Result.to_dict() with trace)."""
        cur = self.db.execute("SELECT strategy, correct, candidates, result FROM results WHERE run = ? AND problem_id = ?",
                              (self.run, problem_id))
        return {strategy: (None if correct is None else bool(correct), json.loads(candidates), json.loads(result))
                for strategy, correct, candidates, result in cur}

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM results WHERE run = ?", (self.run,)).fetchone()[0]
