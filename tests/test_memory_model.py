"""A small learning run end to end with the real embedded model, through the CLI."""

from __future__ import annotations

import json

import datasets
import pytest
from typer.testing import CliRunner

from redline.cli import app
from redline.memory.store import MemoryStore

pytestmark = pytest.mark.model

ROWS = [
    {"question": "Tom has 3 apples and buys 4 more. How many apples does he have?",
     "answer": "He has 3+4 = <<3+4=7>>7 apples.\n#### 7"},
    "{not json",
    {"question": "A pen costs $2. How much do 5 pens cost?", "answer": "5 pens cost 5*2 = <<5*2=10>>10 dollars.\n#### 10"},
]


def test_learn_then_resume_then_export_with_the_embedded_model(local_backend, tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in ROWS) + "\n")
    memory = tmp_path / "memory.db"
    runner = CliRunner()
    args = ["learn", "--data", str(data), "--format", "gsm8k", "--memory", str(memory), "--max-tokens", "48",
            "--holdout", "0"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "train.jsonl:2" in first.output  # the bad line is reported by number and skipped
    store = MemoryStore.open(memory, create=False)
    counts = store.counts()
    assert counts["problems"] == 2 and counts["attempts"] == 2 and counts["attempts_graded"] == 2
    # gold worked solutions are banked one step per line, calculator annotations removed
    gold = [r[0] for r in store.db.execute("SELECT text FROM steps WHERE source = 'gold' ORDER BY id")]
    assert gold[0] == "He has 3+4 = 7 apples." and "<<" not in " ".join(gold)
    wrong = counts["attempts_graded"] - counts["attempts_correct"]
    assert counts["mistakes"] >= wrong  # every wrong answer left a mistake (a principle if the model wrote one)

    second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output
    assert "2 already learned" in second.output
    assert store.counts()["attempts"] == 2

    out = tmp_path / "sft.jsonl"
    exported = runner.invoke(app, ["export", "--format", "sft", "-o", str(out), "--memory", str(memory)])
    assert exported.exit_code == 0, exported.output
    rows = datasets.load_dataset("json", data_files=str(out), split="train", cache_dir=str(tmp_path / "hf"))
    assert len(rows) >= 2 and rows[0]["messages"][1]["content"] == ROWS[0]["question"]

    stats = runner.invoke(app, ["memory", "stats", "--json", "--memory", str(memory)])
    assert stats.exit_code == 0 and json.loads(stats.stdout)["problems"] == 2
