"""`redline train` end to end on a tiny random Llama the test builds (character tokenizer, offline):
two SFT steps, two DPO steps, one RFT round; the adapter loads in the local backend and changes
its greedy output; bad input is one line and exit 2."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from redline.backends import GenerationRequest
from redline.backends.local import LocalBackend
from redline.bench.datasets import read_dataset
from redline.text import solve_messages
from redline.train.adapters import TrainSettings
from redline.train.data import read_training_data

CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
TRAIN = [
    {"question": "Tom has 3 apples and buys 4 more. How many apples does he have?",
     "answer": "He has 3+4 = <<3+4=7>>7 apples.\n#### 7"},
    {"question": "A pen costs 2 dollars. How much do 5 pens cost?",
     "answer": "5 pens cost 5*2 = <<5*2=10>>10 dollars.\n#### 10"},
    {"question": "Ann had 9 eggs and ate 2. How many are left?",
     "answer": "9-2 = <<9-2=7>>7 eggs are left.\n#### 7"},
    {"question": "Sam reads 6 pages a day for 2 days. How many pages?",
     "answer": "6*2 = <<6*2=12>>12 pages.\n#### 12"},
]
DEV = [{"body": "Lena has 8 cups.", "question": "She breaks 3. How many are left?", "answer": "5 (cups)"},
       {"body": "A box holds 4 pens.", "question": "How many pens are in 2 boxes?", "answer": "8 (pens)"}]
FAST = TrainSettings(lr=1e-1, rank=4, batch_size=2, max_steps=2, max_length=384, save_steps=50)


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    """A 2-layer random Llama with a character tokenizer and a ChatML template, saved as an HF folder."""
    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    chars = [chr(i) for i in range(32, 127)] + ["\n"]
    vocab = {"<unk>": 0, "<|im_start|>": 1, "<|im_end|>": 2, **{c: i + 3 for i, c in enumerate(chars)}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<|im_start|>",
                                        eos_token="<|im_end|>", pad_token="<|im_end|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=True,
                         initializer_range=0.2)
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("data")
    return {
        "train": _write_jsonl(d / "train.jsonl", TRAIN),
        "dev": _write_jsonl(d / "dev.jsonl", DEV),
        "pairs": _write_jsonl(d / "pairs.jsonl", [
            {"prompt": "Tom has 3 apples and buys 4 more. How many?\n\nStep 1: He starts with 3 apples.",
             "chosen": "Step 2: 3 + 4 = 7 apples.", "rejected": "Step 2: 3 + 4 = 8 apples."},
            {"prompt": "A pen costs 2 dollars. How much do 5 pens cost?\n\n",
             "chosen": "Step 1: 5 * 2 = 10 dollars.", "rejected": "Step 1: 5 + 2 = 7 dollars."}]),
    }


def _greedy(model: str) -> str:
    backend = LocalBackend(model)
    request = GenerationRequest(messages=solve_messages(TRAIN[0]["question"]), max_tokens=12, temperature=0.0)
    return asyncio.run(backend.generate(request))[0].text


def test_gold_solutions_become_step_lines(files):
    data = read_training_data(files["train"])
    assert data.examples[0].completion == "Step 1: He has 3+4 = 7 apples.\nThe answer is 7."
    assert data.examples[0].prompt == solve_messages(TRAIN[0]["question"])
    assert len(data.sha256) == 64


def test_sft_adapter_loads_merged_and_changes_greedy_output(tiny_base, files, tmp_path):
    from safetensors import safe_open

    from redline.train.sft import train_sft

    out = tmp_path / "sft"
    result = train_sft(read_training_data(files["train"]), str(tiny_base), out, FAST, "redline train sft x")
    assert result.figures.steps == 2 and result.figures.tokens > 0
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_base)
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.bfloat16"}
    card = (out / "README.md").read_text()
    assert read_training_data(files["train"]).sha256 in card and "redline train sft x" in card
    assert not (out / "checkpoints").exists()
    assert _greedy(str(out)) != _greedy(str(tiny_base))


def test_dpo_two_steps(tiny_base, files, tmp_path):
    from redline.train.dpo import read_pairs, train_dpo

    pairs = read_pairs(files["pairs"])
    assert pairs[0].prefix == "Step 1: He starts with 3 apples." and pairs[1].prefix == ""
    result = train_dpo(files["pairs"], pairs, str(tiny_base), tmp_path / "dpo", FAST, "redline train dpo x")
    assert result.figures.steps == 2
    assert (tmp_path / "dpo" / "adapter_model.safetensors").is_file()


def test_rft_round_is_graded_and_reported(tiny_base, files, tmp_path):
    from redline.runtime import Runtime
    from redline.train.rft import RftSettings, run_rft

    lines: list[str] = []
    gold = read_training_data(files["train"]).examples
    dev = read_dataset(files["dev"]).problems
    verifier = Runtime(backend=LocalBackend(str(tiny_base))).verifier("arith")
    report = run_rft(gold, dev, str(tiny_base), tmp_path / "rft", RftSettings(rounds=1, k=2, max_tokens=8),
                     FAST, verifier, "redline train rft x", lines.append)
    (round1,) = report.rounds
    assert round1.sampled == 2 * len(gold) and round1.train_examples == len(gold) + round1.kept_new
    rounds = json.loads((tmp_path / "rft" / "rounds.json").read_text())
    assert rounds["rounds"][0]["dev_accuracy"] == round1.dev_accuracy
    # a random model solves nothing: the round cannot beat the base and must say so
    assert not round1.improved and any("did NOT improve" in line for line in lines)


def test_equations_dedupe_wording():
    from redline.train.rft import equations

    assert equations("Step 1: 3 + 4 = 7 apples.\nStep 2: 7 * 2 = 14.") == equations("Step 1: 3+4=7\nStep 2: 7*2 = 14 $")


def _cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """The real entry point in-process: exit code and stderr."""
    from redline.cli import main

    monkeypatch.setattr(sys, "argv", ["redline", "train", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return int(exit_info.value.code), capsys.readouterr().err.strip()


@pytest.mark.parametrize("case", ["missing base", "empty data", "overlap with dev", "bad lines", "bad precision"])
def test_bad_input_is_one_line_and_exit_2(case, tiny_base, files, tmp_path, monkeypatch, capsys):
    data, extra, expect = files["train"], [], ""
    if case == "missing base":
        extra, expect = ["--base", str(tmp_path / "nope")], "unknown local model"
    elif case == "empty data":
        data, expect = _write_jsonl(tmp_path / "empty.jsonl", []), "empty"
    elif case == "overlap with dev":
        dev = _write_jsonl(tmp_path / "dev.jsonl", [TRAIN[1]])
        extra, expect = ["--dev", str(dev)], "in the dev set"
    elif case == "bad precision":
        extra, expect = ["--precision", "fp8"], "--precision: unknown 'fp8'; use one of auto, bf16, float32"
    else:
        data = _write_jsonl(tmp_path / "bad.jsonl", [TRAIN[0], "{not json", TRAIN[1], {"question": "no answer"}])
        expect = "bad.jsonl: 2 bad data line(s): line 2: invalid JSON"
    code, err = _cli(monkeypatch, capsys, "sft", str(data), "--base", str(tiny_base), "--out", str(tmp_path / "o"),
                     *extra)
    assert code == 2 and len(err.splitlines()) == 1 and expect in err, err
    if case == "bad lines":
        assert "line 4" in err


def test_bad_pair_lines_are_one_error_naming_their_line_numbers(tmp_path):
    from redline.errors import RedlineError
    from redline.train.dpo import read_pairs

    good = {"prompt": "Q?\n\n", "chosen": "Step 1: 2 + 2 = 4.", "rejected": "Step 1: 2 + 2 = 5."}
    path = _write_jsonl(tmp_path / "pairs.jsonl", [good, "{not json", good, {"prompt": "Q?", "chosen": "x", "rejected": "x"}])
    with pytest.raises(RedlineError, match=r"2 bad data line\(s\): line 2: .*; line 4: 'chosen' and 'rejected' are the same"):
        read_pairs(path)
    assert len(read_pairs(_write_jsonl(tmp_path / "ok.jsonl", [good, good]))) == 2
