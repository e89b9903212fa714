"""Dataset loading: presets, field mapping, bad rows with line numbers, splits, limits, errors."""

from __future__ import annotations

import json
import warnings

import pytest

from redline.bench.datasets import BadRowWarning, DatasetError, easy_problems, load_problems, read_dataset


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_gsm8k_preset_splits_solution_and_answer(tmp_path):
    path = write_jsonl(tmp_path / "gsm.jsonl", [
        {"question": "Natalia sold 48 clips, then half as many. Total?",
         "answer": "She sold 48/2 = <<48/2=24>>24 more.\n48+24 = <<48+24=72>>72\n#### 72"},
        {"question": "Big number?", "answer": "So it is 1,200.\n#### 1,200"},
    ])
    data = read_dataset(path)
    assert data.preset == "gsm8k" and data.skipped == []
    first, second = data.problems
    assert first.answer == "72" and first.id == "gsm:1"
    assert first.solution == "She sold 48/2 = 24 more.\n48+24 = 72"  # calculator annotations removed
    assert second.answer == "1200" and second.id == "gsm:2"


def test_easy_problems_are_those_with_few_worked_lines(tmp_path):
    path = write_jsonl(tmp_path / "gsm.jsonl", [
        {"question": "One step?", "answer": "3+4 = <<3+4=7>>7\n#### 7"},
        {"question": "Three steps?", "answer": "1+1=2\n2+2=4\n4+4=8\n#### 8"},
        {"question": "Two steps?", "answer": "2*3=6\n6+1=7\n#### 7"},
        {"question": "No work?", "answer": "#### 5"},
    ])
    problems = load_problems(path)
    assert [p.question for p in easy_problems(problems, 2)] == ["One step?", "Two steps?"]
    assert [p.question for p in easy_problems(problems, 3)] == ["One step?", "Three steps?", "Two steps?"]


def test_qwen_layouts_body_question_and_input_target(tmp_path):
    svamp = write_jsonl(tmp_path / "svamp.jsonl", [
        {"ID": "chal-1", "Body": "Jack had 8 pens", "Question": "How many does he have now?", "Answer": 27.0},
    ])
    (p,) = load_problems(svamp, format="qwen")
    assert p.question == "Jack had 8 pens. How many does he have now?" and p.answer == "27" and p.id == "chal-1"
    asdiv = write_jsonl(tmp_path / "asdiv.jsonl", [{"body": "Sam has 4 apples.", "question": "And now?",
                                                   "answer": "9 (apples)"}])
    (p,) = load_problems(asdiv)  # auto-detected
    assert p.question == "Sam has 4 apples. And now?" and p.answer == "9"
    mawps = write_jsonl(tmp_path / "mawps.jsonl", [{"input": "2 plus 3?", "target": 5}])
    (p,) = load_problems(mawps)
    assert (p.question, p.answer) == ("2 plus 3?", "5")


def test_math500_uses_answer_or_boxed_solution(tmp_path):
    path = write_jsonl(tmp_path / "math.jsonl", [
        {"problem": "Compute 1/2 + 1/4.", "answer": "\\frac{3}{4}", "solution": "Sum is $\\boxed{\\frac34}$.",
         "unique_id": "test/algebra/1.json", "level": 2},
        {"problem": "What is 2^3?", "solution": "It is $\\boxed{8}$."},
    ])
    a, b = load_problems(path)
    assert a.answer == "\\frac{3}{4}" and a.id == "test/algebra/1.json" and a.meta == {"level": 2}
    assert a.solution.startswith("Sum is")
    assert b.answer == "8" and b.id == "math:2"


def test_field_mapping_on_csv(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("q,gold,extra\nWhat is 2+2?,4,x\n\"Comma, inside?\",5,y\nshort row\n")
    with pytest.warns(BadRowWarning, match=r"mine\.csv:4: fewer cells than header columns; skipped"):
        problems = load_problems(path, question_field="q", answer_field="gold")
    assert [(p.question, p.answer, p.id) for p in problems] == [
        ("What is 2+2?", "4", "mine:2"), ("Comma, inside?", "5", "mine:3")]


def test_bad_lines_are_reported_with_line_numbers_and_skipped(tmp_path):
    path = write_jsonl(tmp_path / "mixed.jsonl", [
        {"question": "ok one", "answer": "1"},
        "{not json",
        "",
        {"question": "", "answer": "2"},
        "[1, 2]",
        {"question": "ok two", "answer": 3},
        {"question": "no answer"},
    ])
    data = read_dataset(path)
    assert [p.question for p in data.problems] == ["ok one", "ok two"]
    assert [p.id for p in data.problems] == ["mixed:1", "mixed:6"]
    assert [(s.where, s.reason) for s in data.skipped] == [
        ("mixed.jsonl:2", "invalid JSON (Expecting property name enclosed in double quotes)"),
        ("mixed.jsonl:4", "missing or empty field 'question'"),
        ("mixed.jsonl:5", "not a JSON object"),
        ("mixed.jsonl:7", "missing or empty field 'answer'"),
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_problems(path)
    assert [str(w.message) for w in caught][0] == "mixed.jsonl:2: invalid JSON (Expecting property name enclosed " \
                                                 "in double quotes); skipped"


def test_gsm8k_row_without_hashes_is_bad(tmp_path):
    path = write_jsonl(tmp_path / "g.jsonl", [{"question": "a", "answer": "x\n#### 3"},
                                              {"question": "b", "answer": "no final line"}])
    data = read_dataset(path, format="gsm8k")
    assert len(data.problems) == 1 and data.skipped[0].where == "g.jsonl:2" and "####" in data.skipped[0].reason


@pytest.mark.parametrize("content, suffix, message", [
    ("", ".jsonl", "no usable rows"),
    ("{broken\n", ".jsonl", "no usable rows (format auto); first problem: e.jsonl:1: invalid JSON"),
    ('{"other": 1}\n', ".jsonl", "missing or empty field 'question'"),
    ("[1, 2", ".json", "invalid JSON at line 1"),
    ("question,answer\n", ".csv", "no usable rows"),
    ("a\tb", ".txt", "cannot tell the file type"),
])
def test_files_without_usable_rows_are_errors(tmp_path, content, suffix, message):
    path = tmp_path / f"e{suffix}"
    path.write_text(content)
    with pytest.raises(DatasetError) as err:
        load_problems(path)
    assert message in str(err.value)


def test_json_splits_and_split_field(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"train": [{"question": "t", "answer": "1"}],
                                "test": [{"question": "a", "answer": "2"}, {"question": "b", "answer": "3"}]}))
    assert [p.question for p in load_problems(path, split="test")] == ["a", "b"]
    with pytest.raises(DatasetError, match="pick one with --split: train, test"):
        load_problems(path)
    with pytest.raises(DatasetError, match="no split 'dev'; splits: train, test"):
        load_problems(path, split="dev")
    rows = write_jsonl(tmp_path / "r.jsonl", [{"question": "x", "answer": "1", "split": "train"},
                                              {"question": "y", "answer": "2", "split": "test"}])
    assert [p.question for p in load_problems(rows, split="test")] == ["y"]
    plain = write_jsonl(tmp_path / "p.jsonl", [{"question": "x", "answer": "1"}])
    with pytest.raises(DatasetError, match="rows have no 'split' field"):
        load_problems(plain, split="test")


def test_limit_and_shuffle_are_deterministic_and_ids_stable(tmp_path):
    path = write_jsonl(tmp_path / "n.jsonl", [{"question": f"q{i}", "answer": str(i)} for i in range(20)])
    assert [p.id for p in load_problems(path, limit=3)] == ["n:1", "n:2", "n:3"]
    a = load_problems(path, shuffle=True, seed=1, limit=5)
    b = load_problems(path, shuffle=True, seed=1, limit=5)
    c = load_problems(path, shuffle=True, seed=2, limit=5)
    assert [p.id for p in a] == [p.id for p in b] != [p.id for p in c]
    assert all(p.id == f"n:{int(p.answer) + 1}" for p in a)  # the id follows the row, not the order


def test_missing_file_and_unreachable_hub_are_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(DatasetError, match="no such file: .*nope.jsonl"):
        load_problems(tmp_path / "nope.jsonl")
    with pytest.raises(DatasetError, match="unknown format 'xml'; valid: auto, gsm8k"):
        load_problems(tmp_path / "nope.jsonl", format="xml")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DatasetError, match=r"cannot load 'openai/gsm8k:main' \(split 'test'\) from the Hugging Face "
                                           r"hub: .*download the data and pass a file path"):
        load_problems("hf:openai/gsm8k:main")
