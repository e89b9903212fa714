"""`redline eval --learn-online` writes graded results to memory; without it, eval leaves memory alone."""

from __future__ import annotations

import pytest

from redline.bench.runner import run_eval
from redline.memory.store import MemoryStore
from tests.conftest import scripted_runtime
from tests.memory_fixtures import TRAIN, learning_script


@pytest.mark.parametrize("learn", [False, True])
async def test_eval_writes_memory_only_with_learn_online(tmp_path, learn):
    memory = tmp_path / "memory.db"
    MemoryStore.open(memory, create=True).close()
    runtime = scripted_runtime(learning_script, memory_path=memory, learn_online=learn)
    tallies = await run_eval(tmp_path / "run", TRAIN[:2], "cot", runtime, concurrency=1)
    assert tallies["cot"].done == 2
    store = MemoryStore.open(memory)
    try:
        counts = store.counts()
        assert (counts["problems"] > 0) is learn
        assert (counts["attempts"] == 2) is learn
    finally:
        store.close()
