"""The SQLite store: migrations, refusal of corrupt or foreign files, transactions, two writers, the index."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from redline.memory.index import NumpyIndex
from redline.memory.store import MIGRATIONS, MemoryStore, MemoryStoreError


def _vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(384).astype(np.float32)
    return v / np.linalg.norm(v)


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_new_store_applies_every_migration_once_in_wal_mode(tmp_path):
    path = tmp_path / "sub" / "memory.db"
    store = MemoryStore.open(path)
    assert store.migrations() == sorted(name for name, _ in MIGRATIONS)
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()
    again = MemoryStore.open(path)  # reopening applies nothing new and keeps the data
    assert again.migrations() == sorted(name for name, _ in MIGRATIONS)
    assert again.db.execute("SELECT COUNT(*) FROM _redline_migrations").fetchone()[0] == len(MIGRATIONS)


def test_random_bytes_file_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "memory.db"
    path.write_bytes(os.urandom(4096))
    before = _digest(path)
    with pytest.raises(MemoryStoreError, match="not a SQLite database"):
        MemoryStore.open(path)
    assert _digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["memory.db"]


def test_sqlite_file_of_another_program_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, amount REAL)")
    db.execute("INSERT INTO invoices VALUES (1, 9.5)")
    db.commit()
    db.close()
    before = _digest(path)
    with pytest.raises(MemoryStoreError, match="invoices"):
        MemoryStore.open(path)
    assert _digest(path) == before
    assert sqlite3.connect(path).execute("SELECT amount FROM invoices").fetchone() == (9.5,)


def test_store_from_a_newer_redline_is_refused(tmp_path):
    path = tmp_path / "m.db"
    store = MemoryStore.open(path)
    with store.transaction() as db:
        db.execute("INSERT INTO _redline_migrations VALUES ('m999_future', 0)")
    store.close()
    with pytest.raises(MemoryStoreError, match="newer redline"):
        MemoryStore.open(path)


def test_cli_reports_a_corrupt_store_in_one_line_with_exit_2(tmp_path):
    path = tmp_path / "memory.db"
    path.write_bytes(b"definitely not sqlite" * 50)
    proc = subprocess.run([sys.executable, "-c", "from redline.cli import main; main()", "memory", "stats",
                           "--memory", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "not a SQLite database" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert path.read_bytes() == b"definitely not sqlite" * 50


def test_missing_store_is_an_error_when_reading(tmp_path):
    with pytest.raises(MemoryStoreError, match="redline learn"):
        MemoryStore.open(tmp_path / "nope.db", create=False)
    assert not (tmp_path / "nope.db").exists()


def test_failed_transaction_leaves_nothing_behind(tmp_path):
    store = MemoryStore.open(tmp_path / "m.db")
    with pytest.raises(RuntimeError):
        with store.transaction():
            pid = store.add_problem("k1", "q?", "1", None, True, "t", _vec(0))
            store.add_attempt(pid, "cot", "1", ["Step 1: 1"], None, True, 10)
            raise RuntimeError("crash mid-problem")
    assert store.counts()["problems"] == 0 and store.counts()["attempts"] == 0
    assert not store.has_problem("k1")


_WRITER = textwrap.dedent("""
    import sys, numpy as np
    from redline.memory.store import MemoryStore
    store = MemoryStore.open(sys.argv[1])
    name = sys.argv[2]
    vec = np.ones(384, dtype=np.float32) / np.sqrt(384)
    for i in range(int(sys.argv[3])):
        with store.transaction():
            pid = store.add_problem(f"{name}-{i}", f"question {name} {i}", "1", None, True, "t", vec)
            aid = store.add_attempt(pid, "cot", "1", ["Step 1: 1"], None, i % 2 == 0, 5)
            store.add_steps(pid, ["Step 1: 1", "Step 2: 2"], "model", [True, True], np.stack([vec, vec]))
""")


def test_two_processes_writing_the_same_store_do_not_corrupt_it(tmp_path):
    path = tmp_path / "shared.db"
    MemoryStore.open(path).close()
    n = 150
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), name, str(n)],
                              stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    store = MemoryStore.open(path)
    assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    counts = store.counts()
    assert counts["problems"] == 2 * n and counts["attempts"] == 2 * n and counts["steps"] == 4 * n
    keys = {r[0] for r in store.db.execute("SELECT key FROM problems")}
    assert keys == {f"{name}-{i}" for name in "ab" for i in range(n)}


def test_numpy_index_matches_brute_force_and_grows_past_capacity():
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((300, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = NumpyIndex(384)
    for start in range(0, 300, 70):  # several adds cross the initial capacity
        index.add(list(range(start + 1000, start + 1000 + len(vectors[start:start + 70]))), vectors[start:start + 70])
    assert len(index) == 300
    query = vectors[123]
    hits = index.search(query, 5)
    expected = np.argsort(-(vectors @ query))[:5] + 1000
    assert [h[0] for h in hits] == expected.tolist()
    assert hits[0] == (1123, pytest.approx(1.0, abs=1e-5))
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
    assert NumpyIndex(384).search(query, 3) == []


def test_similar_steps_sees_rows_added_after_the_first_search(tmp_path):
    store = MemoryStore.open(tmp_path / "m.db")
    with store.transaction():
        pid = store.add_problem("k", "question one", "1", None, True, "t", _vec(0))
        store.add_steps(pid, ["a", "b"], "gold", [True, False], np.stack([_vec(1), _vec(2)]))
    assert [s.text for s in store.similar_steps(_vec(2), 5)] == ["a"]  # unverified 'b' is never retrieved
    with store.transaction():
        store.add_steps(pid, ["c"], "model", [True], np.stack([_vec(3)]))
    hits = store.similar_steps(_vec(3), 1)
    assert hits[0].text == "c" and hits[0].question == "question one" and hits[0].similarity == pytest.approx(1.0)
