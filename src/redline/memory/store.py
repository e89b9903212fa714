"""The memory store: one SQLite file of problems, attempts, mistakes, principles and steps.

Why SQLite: embedded, transactional, and safe for several processes with WAL and a busy
timeout. Every write goes through `transaction()` (BEGIN IMMEDIATE), so a crash loses at
most the transaction in flight and two writers queue instead of corrupting the file.
The schema evolves by numbered migrations applied in order and recorded in
`_redline_migrations`; a file that is not a redline store is refused, never touched.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from redline.embeddings import EMBEDDING_DIM
from redline.errors import RedlineError
from redline.memory.index import NumpyIndex, VectorIndex

DEFAULT_MEMORY_PATH = Path("~/.redline/memory.db")
SQLITE_HEADER = b"SQLite format 3\x00"
MIGRATIONS_TABLE = "_redline_migrations"
BUSY_TIMEOUT_S = 60.0
RUNTIME_KEY = "memory.store"  # where a Runtime caches its open store (runtime.cached)


class MemoryStoreError(RedlineError):
    """A memory file that cannot be used: corrupt, foreign, or from a newer redline."""


# ---- migrations (append only; never edit one that shipped) ------------------------------------

Migration = Callable[[sqlite3.Connection], None]
MIGRATIONS: list[tuple[str, Migration]] = []


def migration(fn: Migration) -> Migration:
    MIGRATIONS.append((fn.__name__, fn))
    return fn


def _run(db: sqlite3.Connection, statements: str) -> None:
    # executescript() would COMMIT the surrounding transaction, so run statements one by one.
    for statement in statements.split(";"):
        if statement.strip():
            db.execute(statement)


@migration
def m001_initial(db: sqlite3.Connection) -> None:
    _run(db, """
    CREATE TABLE problems (
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        source_id TEXT,
        question TEXT NOT NULL,
        gold_answer TEXT,
        gold_solution TEXT,
        gradable INTEGER NOT NULL,
        task TEXT NOT NULL,
        embedding BLOB NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE attempts (
        id INTEGER PRIMARY KEY,
        problem_id INTEGER NOT NULL REFERENCES problems(id),
        strategy TEXT NOT NULL,
        answer TEXT,
        steps TEXT NOT NULL,
        scores TEXT,
        correct INTEGER,
        tokens INTEGER NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX attempts_problem ON attempts(problem_id);
    CREATE TABLE mistakes (
        id INTEGER PRIMARY KEY,
        problem_id INTEGER NOT NULL REFERENCES problems(id),
        attempt_id INTEGER NOT NULL REFERENCES attempts(id),
        wrong_steps TEXT NOT NULL,
        wrong_answer TEXT,
        first_error INTEGER,
        corrected_steps TEXT,
        corrected_source TEXT,
        correct_answer TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX mistakes_problem ON mistakes(problem_id);
    CREATE TABLE principles (
        id INTEGER PRIMARY KEY,
        text TEXT NOT NULL,
        level TEXT NOT NULL CHECK (level IN ('low', 'high')),
        task TEXT NOT NULL,
        source_mistakes TEXT NOT NULL,
        merged INTEGER NOT NULL DEFAULT 0,
        since_attempt INTEGER NOT NULL,
        retired TEXT,
        embedding BLOB NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE principle_uses (
        principle_id INTEGER NOT NULL REFERENCES principles(id),
        attempt_id INTEGER NOT NULL REFERENCES attempts(id),
        PRIMARY KEY (principle_id, attempt_id)
    );
    CREATE TABLE steps (
        id INTEGER PRIMARY KEY,
        problem_id INTEGER NOT NULL REFERENCES problems(id),
        position INTEGER NOT NULL,
        text TEXT NOT NULL,
        source TEXT NOT NULL CHECK (source IN ('gold', 'model')),
        verified INTEGER NOT NULL,
        embedding BLOB NOT NULL
    );
    CREATE INDEX steps_problem ON steps(problem_id)
    """)


@migration
def m002_measured_effects(db: sqlite3.Connection) -> None:
    """Held-out measurement of providers and items, retired steps and mistakes, StepCo revisions."""
    _run(db, """
    ALTER TABLE steps ADD COLUMN retired TEXT;
    ALTER TABLE mistakes ADD COLUMN retired TEXT;
    CREATE TABLE holdout (
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        question TEXT NOT NULL,
        gold_answer TEXT NOT NULL,
        task TEXT NOT NULL
    );
    CREATE TABLE holdout_solves (
        holdout_id INTEGER NOT NULL REFERENCES holdout(id),
        strategy TEXT NOT NULL,
        provider TEXT NOT NULL,
        correct INTEGER NOT NULL,
        tokens INTEGER NOT NULL,
        similarity REAL,
        items TEXT NOT NULL,
        memory_size INTEGER NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (holdout_id, strategy, provider)
    );
    CREATE TABLE provider_effects (
        provider TEXT NOT NULL,
        strategy TEXT NOT NULL,
        n INTEGER NOT NULL,
        bare_correct INTEGER NOT NULL,
        with_correct INTEGER NOT NULL,
        delta REAL NOT NULL,
        ci_low REAL NOT NULL,
        ci_high REAL NOT NULL,
        bare_tokens REAL NOT NULL,
        with_tokens REAL NOT NULL,
        floor REAL NOT NULL,
        floor_delta REAL NOT NULL,
        measured_at REAL NOT NULL,
        PRIMARY KEY (provider, strategy)
    );
    CREATE TABLE revisions (
        id INTEGER PRIMARY KEY,
        problem_id INTEGER NOT NULL REFERENCES problems(id),
        attempt_id INTEGER NOT NULL REFERENCES attempts(id),
        position INTEGER NOT NULL,
        prefix TEXT NOT NULL,
        flagged TEXT NOT NULL,
        flagged_score REAL,
        revision TEXT NOT NULL,
        before_answer TEXT,
        after_answer TEXT,
        before_correct INTEGER NOT NULL,
        after_correct INTEGER NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX revisions_problem ON revisions(problem_id)
    """)


# ---- rows handed to callers ---------------------------------------------------------------------

@dataclass(frozen=True)
class BankedStep:
    id: int
    text: str
    question: str
    position: int
    similarity: float


@dataclass(frozen=True)
class MistakeRow:
    id: int
    question: str
    wrong_steps: list[str]
    wrong_answer: str | None
    first_error: int | None
    corrected_steps: list[str] | None
    correct_answer: str
    similarity: float = 0.0


@dataclass(frozen=True)
class PrincipleRow:
    id: int
    text: str
    level: str
    task: str
    source_mistakes: list[int]
    used: int
    used_correct: int
    unused: int
    unused_correct: int
    retired: str | None

    @property
    def accuracy_used(self) -> float | None:
        return self.used_correct / self.used if self.used else None

    @property
    def accuracy_unused(self) -> float | None:
        return self.unused_correct / self.unused if self.unused else None


@dataclass(frozen=True)
class HoldoutSolve:
    """One solve of a held-out problem: bare (provider '') or with one provider."""
    holdout_id: int
    provider: str
    correct: bool
    tokens: int
    similarity: float | None  # the provider's best retrieval similarity on this problem
    items: list[int]  # ids of the memory items it put into the solve


@dataclass(frozen=True)
class ProviderEffect:
    """A provider's paired effect on a strategy, measured on the held-out slice of a learn run."""
    provider: str
    strategy: str
    n: int
    bare_correct: int
    with_correct: int
    delta: float  # accuracy with minus accuracy without, in [-1, 1]
    ci_low: float
    ci_high: float
    bare_tokens: float  # per problem
    with_tokens: float
    floor: float  # fitted similarity floor; above 1 means "never fires"
    floor_delta: float  # in-sample delta with the fitted floor (optimistic: fitted on the same slice)
    measured_at: float = 0.0

    @property
    def harmful(self) -> bool:
        return self.delta < 0


ITEM_TABLES = {"principles": "principles", "steps": "steps", "mistakes": "mistakes"}


def to_blob(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype=np.float32).reshape(EMBEDDING_DIM).tobytes()


def from_blobs(blobs: Sequence[bytes]) -> np.ndarray:
    if not blobs:
        return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), EMBEDDING_DIM)


# ---- the store ------------------------------------------------------------------------------

def resolve_path(path: Path | str | None) -> Path:
    return Path(path if path is not None else DEFAULT_MEMORY_PATH).expanduser()


def _check_file(path: Path) -> None:
    """Refuse anything that is not an (empty or) SQLite file before SQLite may write to it."""
    if path.is_dir():
        raise MemoryStoreError(f"memory store {path} is a directory; pass a file path with --memory")
    if path.exists() and path.stat().st_size > 0:
        with path.open("rb") as f:
            if f.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
                raise MemoryStoreError(f"{path} is not a SQLite database (corrupt or another kind of file); "
                                       "it was left untouched: pass another file with --memory")


class MemoryStore:
    """Open with `MemoryStore.open(path)`; safe to share across threads of one process."""

    def __init__(self, path: Path, db: sqlite3.Connection) -> None:
        self.path = path
        self.db = db
        self.lock = threading.RLock()
        self._indexes: dict[str, tuple[VectorIndex, int]] = {}

    @classmethod
    def open(cls, path: Path | str | None = None, create: bool = True) -> "MemoryStore":
        """Open (and migrate) the store; a corrupt or foreign file is a MemoryStoreError."""
        path = resolve_path(path)
        _check_file(path)
        if not path.exists():
            if not create:
                raise MemoryStoreError(f"no memory store at {path}; build one with `redline learn --memory {path}`")
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise MemoryStoreError(f"cannot open memory store {path}: {e}") from None
        try:
            _refuse_foreign(db, path)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA foreign_keys=ON")
            store = cls(path, db)
            store._migrate()
        except sqlite3.DatabaseError as e:
            db.close()
            raise MemoryStoreError(f"{path} is not a usable SQLite database ({e}); it was left untouched") from None
        except MemoryStoreError:
            db.close()
            raise
        return store

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """An IMMEDIATE transaction: takes the write lock up front, so concurrent writers wait
        (up to the busy timeout) rather than fail halfway; rolls back on any error."""
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def _migrate(self) -> None:
        with self.transaction() as db:
            db.execute(f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (name TEXT PRIMARY KEY, applied_at REAL)")
            applied = {r[0] for r in db.execute(f"SELECT name FROM {MIGRATIONS_TABLE}")}
            known = {name for name, _ in MIGRATIONS}
            if applied - known:
                raise MemoryStoreError(f"{self.path} was written by a newer redline (migrations "
                                       f"{', '.join(sorted(applied - known))}); upgrade redline to use it")
            for name, fn in MIGRATIONS:
                if name not in applied:
                    fn(db)
                    db.execute(f"INSERT INTO {MIGRATIONS_TABLE} VALUES (?, ?)", (name, time.time()))

    def migrations(self) -> list[str]:
        return [r[0] for r in self.db.execute(f"SELECT name FROM {MIGRATIONS_TABLE} ORDER BY name")]

    # ---- writes (call inside `transaction()`) -------------------------------------------------

    def add_problem(self, key: str, question: str, gold_answer: str | None, gold_solution: str | None,
                    gradable: bool, task: str, embedding: np.ndarray, source_id: str | None = None) -> int:
        cur = self.db.execute(
            "INSERT INTO problems (key, source_id, question, gold_answer, gold_solution, gradable, task, embedding,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (key, source_id, question, gold_answer, gold_solution, int(gradable), task, to_blob(embedding), time.time()))
        return int(cur.lastrowid)  # type: ignore[arg-type]

    def add_attempt(self, problem_id: int, strategy: str, answer: str | None, steps: Sequence[str],
                    scores: Sequence[float] | None, correct: bool | None, tokens: int) -> int:
        cur = self.db.execute(
            "INSERT INTO attempts (problem_id, strategy, answer, steps, scores, correct, tokens, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (problem_id, strategy, answer, json.dumps(list(steps)), json.dumps(list(scores)) if scores else None,
             None if correct is None else int(correct), tokens, time.time()))
        return int(cur.lastrowid)  # type: ignore[arg-type]

    def add_mistake(self, problem_id: int, attempt_id: int, wrong_steps: Sequence[str], wrong_answer: str | None,
                    first_error: int | None, corrected_steps: Sequence[str] | None, corrected_source: str | None,
                    correct_answer: str) -> int:
        cur = self.db.execute(
            "INSERT INTO mistakes (problem_id, attempt_id, wrong_steps, wrong_answer, first_error, corrected_steps,"
            " corrected_source, correct_answer, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (problem_id, attempt_id, json.dumps(list(wrong_steps)), wrong_answer, first_error,
             json.dumps(list(corrected_steps)) if corrected_steps else None, corrected_source, correct_answer,
             time.time()))
        return int(cur.lastrowid)  # type: ignore[arg-type]

    def add_steps(self, problem_id: int, steps: Sequence[str], source: str, verified: Sequence[bool],
                  embeddings: np.ndarray) -> None:
        self.db.executemany(
            "INSERT INTO steps (problem_id, position, text, source, verified, embedding) VALUES (?, ?, ?, ?, ?, ?)",
            [(problem_id, i, text, source, int(ok), to_blob(vec))
             for i, (text, ok, vec) in enumerate(zip(steps, verified, embeddings))])

    def add_principle(self, text: str, level: str, task: str, source_mistakes: Sequence[int],
                      embedding: np.ndarray) -> int:
        since = self.db.execute("SELECT COALESCE(MAX(id), 0) FROM attempts").fetchone()[0]
        cur = self.db.execute(
            "INSERT INTO principles (text, level, task, source_mistakes, since_attempt, embedding, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (text, level, task, json.dumps(sorted(set(source_mistakes))), since, to_blob(embedding), time.time()))
        return int(cur.lastrowid)  # type: ignore[arg-type]

    def merge_into_principle(self, principle_id: int, source_mistakes: Sequence[int]) -> None:
        """A near-duplicate was found: credit its sources to the existing principle."""
        row = self.db.execute("SELECT source_mistakes FROM principles WHERE id = ?", (principle_id,)).fetchone()
        merged = sorted(set(json.loads(row[0])) | set(source_mistakes))
        self.db.execute("UPDATE principles SET source_mistakes = ?, merged = merged + 1 WHERE id = ?",
                        (json.dumps(merged), principle_id))

    def add_revision(self, problem_id: int, attempt_id: int, position: int, prefix: Sequence[str], flagged: str,
                     flagged_score: float | None, revision: str, before_answer: str | None,
                     after_answer: str | None, before_correct: bool, after_correct: bool) -> int:
        cur = self.db.execute(
            "INSERT INTO revisions (problem_id, attempt_id, position, prefix, flagged, flagged_score, revision,"
            " before_answer, after_answer, before_correct, after_correct, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (problem_id, attempt_id, position, json.dumps(list(prefix)), flagged, flagged_score, revision,
             before_answer, after_answer, int(before_correct), int(after_correct), time.time()))
        return int(cur.lastrowid)  # type: ignore[arg-type]

    def retire_item(self, kind: str, item_id: int, reason: str) -> bool:
        """Retire a principle, banked step or mistake: retrieval skips it from now on. False if it already was."""
        changed = self.db.execute(f"UPDATE {ITEM_TABLES[kind]} SET retired = ? WHERE id = ? AND retired IS NULL",
                                  (reason, item_id)).rowcount > 0
        self._indexes.clear()  # rebuilt without the retired rows on the next search
        return changed

    def add_holdout(self, key: str, question: str, gold_answer: str, task: str) -> int:
        """Hold a problem back from learning (idempotent); its id."""
        self.db.execute("INSERT OR IGNORE INTO holdout (key, question, gold_answer, task) VALUES (?, ?, ?, ?)",
                        (key, question, gold_answer, task))
        return int(self.db.execute("SELECT id FROM holdout WHERE key = ?", (key,)).fetchone()[0])

    def add_holdout_solve(self, holdout_id: int, strategy: str, provider: str, correct: bool, tokens: int,
                          similarity: float | None, items: Sequence[int]) -> None:
        """Record a held-out solve, stamped with the memory's size (a later, larger memory makes it stale)."""
        self.db.execute("INSERT OR REPLACE INTO holdout_solves VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (holdout_id, strategy, provider, int(correct), tokens, similarity,
                         json.dumps(sorted(set(items))), self.memory_size(), time.time()))

    def set_provider_effect(self, e: ProviderEffect) -> None:
        self.db.execute("INSERT OR REPLACE INTO provider_effects VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (e.provider, e.strategy, e.n, e.bare_correct, e.with_correct, e.delta, e.ci_low,
                         e.ci_high, e.bare_tokens, e.with_tokens, e.floor, e.floor_delta, e.measured_at or time.time()))

    def add_principle_uses(self, attempt_id: int, principle_ids: Sequence[int]) -> None:
        self.db.executemany("INSERT OR IGNORE INTO principle_uses VALUES (?, ?)",
                            [(pid, attempt_id) for pid in set(principle_ids)])

    # ---- reads ----------------------------------------------------------------------------

    def has_problem(self, key: str) -> bool:
        with self.lock:
            return self.db.execute("SELECT 1 FROM problems WHERE key = ?", (key,)).fetchone() is not None

    def counts(self) -> dict[str, int]:
        with self.lock:
            out = {t: self.db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                   for t in ("problems", "attempts", "mistakes", "principles", "steps", "revisions", "holdout")}
            for table in ("principles", "steps", "mistakes"):
                out[f"{table}_retired"] = self.db.execute(
                    f"SELECT COUNT(*) FROM {table} WHERE retired IS NOT NULL").fetchone()[0]
            out["principles_active"] = out["principles"] - out["principles_retired"]
            out["steps_verified"] = self.db.execute(
                "SELECT COUNT(*) FROM steps WHERE verified = 1 AND retired IS NULL").fetchone()[0]
            out["attempts_graded"], out["attempts_correct"] = self.db.execute(
                "SELECT COUNT(correct), COALESCE(SUM(correct), 0) FROM attempts").fetchone()
            return out

    def is_holdout(self, key: str) -> bool:
        with self.lock:
            return self.db.execute("SELECT 1 FROM holdout WHERE key = ?", (key,)).fetchone() is not None

    def memory_size(self) -> int:
        """Problems learned so far: what a with-provider held-out solve was measured against."""
        with self.lock:
            return int(self.db.execute("SELECT COUNT(*) FROM problems").fetchone()[0])

    def holdout_done(self, holdout_id: int, strategy: str) -> set[str]:
        """Providers ('' = bare) already measured on this held-out problem with `strategy` and this memory."""
        return {s.provider for s in self.holdout_solves(strategy) if s.holdout_id == holdout_id}

    def holdout_solves(self, strategy: str) -> list[HoldoutSolve]:
        """The held-out solves of `strategy`: every bare one, and the with-provider ones measured against
        the memory as it is now (the memory grew since the others)."""
        with self.lock:
            rows = self.db.execute(
                "SELECT holdout_id, provider, correct, tokens, similarity, items FROM holdout_solves"
                " WHERE strategy = ? AND (provider = '' OR memory_size = ?) ORDER BY holdout_id, provider",
                (strategy, self.memory_size())).fetchall()
        return [HoldoutSolve(r[0], r[1], bool(r[2]), r[3], r[4], json.loads(r[5])) for r in rows]

    def item_text(self, kind: str, item_id: int) -> tuple[str, str | None]:
        """(text, retirement reason) of a principle, banked step or mistake (its wrong answer and question)."""
        sql = {"principles": "SELECT text, retired FROM principles WHERE id = ?",
               "steps": "SELECT text, retired FROM steps WHERE id = ?",
               "mistakes": "SELECT 'wrong answer ' || COALESCE(m.wrong_answer, 'none') || ' to: ' || q.question,"
                           " m.retired FROM mistakes m JOIN problems q ON q.id = m.problem_id WHERE m.id = ?"}[kind]
        with self.lock:
            row = self.db.execute(sql, (item_id,)).fetchone()
        return (row[0], row[1]) if row else ("(deleted)", None)

    def provider_effects(self) -> list[ProviderEffect]:
        with self.lock:
            rows = self.db.execute("SELECT * FROM provider_effects ORDER BY strategy, provider").fetchall()
        return [ProviderEffect(*r) for r in rows]

    def provider_effect(self, provider: str, strategy: str) -> ProviderEffect | None:
        """The provider's measurement with `strategy`, else its widest one with another strategy:
        a provider that hurt `cot` is not taken as harmless to a `stepco` that `learn` never measured."""
        with self.lock:
            r = self.db.execute("SELECT * FROM provider_effects WHERE provider = ? ORDER BY strategy = ? DESC, n DESC, "
                                "strategy LIMIT 1", (provider, strategy)).fetchone()
        return ProviderEffect(*r) if r else None

    def principles(self, task: str | None = None, active_only: bool = True,
                   level: str | None = None) -> list[tuple[PrincipleRow, np.ndarray]]:
        """Principles with their track record: accuracy of graded attempts that used them, and of
        graded attempts made since they existed that did not."""
        sql = """
            SELECT p.id, p.text, p.level, p.task, p.source_mistakes, p.retired, p.embedding,
              (SELECT COUNT(a.correct) FROM principle_uses u JOIN attempts a ON a.id = u.attempt_id
                 WHERE u.principle_id = p.id),
              (SELECT COALESCE(SUM(a.correct), 0) FROM principle_uses u JOIN attempts a ON a.id = u.attempt_id
                 WHERE u.principle_id = p.id),
              (SELECT COUNT(a.correct) FROM attempts a JOIN problems q ON q.id = a.problem_id
                 WHERE a.id > p.since_attempt AND q.task = p.task AND NOT EXISTS
                 (SELECT 1 FROM principle_uses u WHERE u.principle_id = p.id AND u.attempt_id = a.id)),
              (SELECT COALESCE(SUM(a.correct), 0) FROM attempts a JOIN problems q ON q.id = a.problem_id
                 WHERE a.id > p.since_attempt AND q.task = p.task AND NOT EXISTS
                 (SELECT 1 FROM principle_uses u WHERE u.principle_id = p.id AND u.attempt_id = a.id))
            FROM principles p WHERE 1 = 1"""
        args: list[Any] = []
        if active_only:
            sql += " AND p.retired IS NULL"
        if task is not None:
            sql += " AND p.task = ?"
            args.append(task)
        if level is not None:
            sql += " AND p.level = ?"
            args.append(level)
        with self.lock:
            rows = self.db.execute(sql + " ORDER BY p.id", args).fetchall()
        out = []
        for r in rows:
            row = PrincipleRow(r[0], r[1], r[2], r[3], json.loads(r[4]), r[7], r[8], r[9], r[10], r[5])
            out.append((row, from_blobs([r[6]])[0]))
        return out

    def mistake_rows(self, ids: Sequence[int]) -> list[MistakeRow]:
        if not ids:
            return []
        with self.lock:
            rows = self.db.execute(
                f"SELECT m.id, q.question, m.wrong_steps, m.wrong_answer, m.first_error, m.corrected_steps,"
                f" m.correct_answer FROM mistakes m JOIN problems q ON q.id = m.problem_id"
                f" WHERE m.id IN ({','.join('?' * len(ids))})", list(ids)).fetchall()
        by_id = {r[0]: _mistake(r) for r in rows}
        return [by_id[i] for i in ids if i in by_id]

    def iter_rows(self, sql: str, args: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
        """Stream rows for exports, so a large store is never held in memory at once."""
        with self.lock:
            rows = self.db.execute(sql, args).fetchall()
        yield from rows

    # ---- nearest neighbours ---------------------------------------------------------------

    def _index(self, name: str, sql: str) -> VectorIndex:
        """An index kept in step with its table: rows added since the last call are appended.
        `sql` selects (id, embedding) rows with `id > ?`; rows are never deleted from these tables."""
        index, last_id = self._indexes.get(name, (NumpyIndex(EMBEDDING_DIM), 0))
        with self.lock:
            rows = self.db.execute(sql, (last_id,)).fetchall()
        if rows:
            index.add([r[0] for r in rows], from_blobs([r[1] for r in rows]))
            last_id = rows[-1][0]
        self._indexes[name] = (index, last_id)
        return index

    def similar_steps(self, query: np.ndarray, k: int) -> list[BankedStep]:
        """The `k` verified banked steps closest to `query`, with their problems."""
        index = self._index("steps", "SELECT id, embedding FROM steps WHERE verified = 1 AND retired IS NULL"
                                     " AND id > ? ORDER BY id")
        hits = index.search(query, k)
        if not hits:
            return []
        with self.lock:
            rows = {r[0]: r for r in self.db.execute(
                f"SELECT s.id, s.text, q.question, s.position FROM steps s JOIN problems q ON q.id = s.problem_id"
                f" WHERE s.id IN ({','.join('?' * len(hits))})", [h[0] for h in hits])}
        return [BankedStep(i, rows[i][1], rows[i][2], rows[i][3], sim) for i, sim in hits]

    def nearest_bank_problem(self, query: np.ndarray) -> float | None:
        """Similarity of the closest problem that has active verified steps in the bank (None: empty bank)."""
        index = self._index("bank_problems",
                            "SELECT q.id, q.embedding FROM problems q WHERE q.id > ? AND EXISTS (SELECT 1 FROM steps s"
                            " WHERE s.problem_id = q.id AND s.verified = 1 AND s.retired IS NULL) ORDER BY q.id")
        hits = index.search(query, 1)
        return hits[0][1] if hits else None

    def similar_mistakes(self, query: np.ndarray, k: int) -> list[MistakeRow]:
        """Mistakes on the `k` problems closest to `query` that have both a wrong and a corrected solution."""
        index = self._index("mistake_problems",
                            "SELECT q.id, q.embedding FROM problems q WHERE q.id > ? AND EXISTS (SELECT 1 FROM"
                            " mistakes m WHERE m.problem_id = q.id AND m.corrected_steps IS NOT NULL"
                            " AND m.retired IS NULL) ORDER BY q.id")
        hits = index.search(query, k)
        out = []
        with self.lock:
            for problem_id, sim in hits:
                r = self.db.execute(
                    "SELECT m.id, q.question, m.wrong_steps, m.wrong_answer, m.first_error, m.corrected_steps,"
                    " m.correct_answer FROM mistakes m JOIN problems q ON q.id = m.problem_id"
                    " WHERE m.problem_id = ? AND m.corrected_steps IS NOT NULL AND m.retired IS NULL"
                    " ORDER BY m.id LIMIT 1",
                    (problem_id,)).fetchone()
                out.append(_mistake(r, sim))
        return out


def _mistake(r: tuple[Any, ...], similarity: float = 0.0) -> MistakeRow:
    return MistakeRow(r[0], r[1], json.loads(r[2]), r[3], r[4], json.loads(r[5]) if r[5] else None, r[6], similarity)


def _refuse_foreign(db: sqlite3.Connection, path: Path) -> None:
    """A SQLite file that holds tables but no redline migrations table belongs to something else."""
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if tables and MIGRATIONS_TABLE not in tables:
        shown = ", ".join(sorted(tables)[:5])
        raise MemoryStoreError(f"{path} is a SQLite database of something else (tables: {shown}); it was left "
                               "untouched: pass another file with --memory")
