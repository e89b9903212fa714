"""The shared fitting loop on the tiny random Llama of test_train: each precision this machine
supports trains to the same losses (three steps); neither padding nor a prefix shared by a batch
changes a row's loss or gradient, so length grouping changes nothing but speed; the schedule is
transformers' own; and a checkpoint written mid-run (in bf16 where the CPU has it) resumes to the
very weights of an uninterrupted run."""

from __future__ import annotations

import os
import random
import signal
from dataclasses import replace

import pytest

from redline.train.adapters import load_base, lora_model
from redline.train.data import read_training_data
from redline.train.loop import Plan, length_batches
from redline.hardware import bf16_supported, cpu_flags
from redline.train.precision import pick_precision
from redline.train.sft import answer_logprobs, encode_example, train_sft
from tests.test_train import FAST, files, tiny_base  # noqa: F401  (fixtures)

torch = pytest.importorskip("torch")
PRECISIONS = ["float32", *(["bf16"] if bf16_supported("cpu") else [])]


def _rows(base: str, data):
    loaded = load_base(base)
    return loaded, [encode_example(loaded.tokenizer, e, 384) for e in data.examples]


def test_cpu_flags_decide_bf16(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 avx2\n\nprocessor\t: 1\nflags\t: fpu\n")
    assert cpu_flags(info) == {"fpu", "sse2", "avx512f", "avx512_bf16", "avx2"}
    assert cpu_flags(tmp_path / "missing") == set()
    expected = "bf16" if {"avx512_bf16", "amx_bf16"} & cpu_flags() else "float32"
    assert pick_precision("cpu").name == expected
    assert pick_precision("cpu", "float32").name == "float32"


def test_each_supported_precision_trains_to_the_same_losses(tiny_base, files, tmp_path):
    data = read_training_data(files["train"])
    losses = {}
    for precision in PRECISIONS:
        settings = replace(FAST, lr=1e-2, batch_size=4, max_steps=3, precision=precision)  # one batch of all rows
        result = train_sft(data, str(tiny_base), tmp_path / precision, settings, "x", lambda line: None)
        assert result.figures.precision == precision and result.figures.steps == 3
        losses[precision] = result.figures.losses
    for precision, curve in losses.items():
        assert curve == pytest.approx(losses["float32"], rel=0.02), precision
    # the first step warms up at lr 0 (transformers' schedule); the next two learn the same batch
    assert losses["float32"][2] < losses["float32"][1] - 0.01


def test_padding_and_the_shared_prefix_never_change_a_rows_loss_or_gradient(tiny_base, files):
    from redline.train.loop import WIDTH_MULTIPLE, hidden_states, shared_prefix

    loaded, rows = _rows(str(tiny_base), read_training_data(files["train"]))
    assert len({len(r) for r in rows}) == len(rows)  # mixed lengths: the batch below is padded
    assert shared_prefix([r.ids for r in rows]) >= WIDTH_MULTIPLE  # the system prompt: computed once for the batch
    model = lora_model(loaded, 4, 0)
    model.eval()
    pad = loaded.tokenizer.pad_token_id
    with torch.no_grad():  # widths are whole multiples (few shapes, bounded kernel caches), never cut a row
        for batch in ([rows[0]], rows):
            width = hidden_states(model, [r.ids for r in batch], pad, "cpu").shape[1]
            assert width % WIDTH_MULTIPLE == 0 and max(map(len, batch)) <= width < max(map(len, batch)) + WIDTH_MULTIPLE
    params = [p for p in model.parameters() if p.requires_grad]

    def loss_and_grads(batches):
        model.zero_grad()
        logps = [answer_logprobs(model, b, pad, "cpu")[0] for b in batches]
        total = -sum(lp.sum() for lp in logps) / sum(lp.numel() for lp in logps)
        total.backward()
        return float(total), [p.grad.clone() for p in params], [float(lp.sum()) for lp in logps]

    alone_loss, alone_grads, alone = loss_and_grads([[r] for r in rows])
    batch_loss, batch_grads, _ = loss_and_grads([rows])
    with torch.no_grad():
        logp, which = answer_logprobs(model, rows, pad, "cpu")
    assert [float(logp[which == i].sum()) for i in range(len(rows))] == pytest.approx(alone, rel=1e-5)
    assert batch_loss == pytest.approx(alone_loss, rel=1e-5)
    for a, b in zip(batch_grads, alone_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_length_grouping_gives_the_same_loss(tiny_base, files):
    loaded, rows = _rows(str(tiny_base), read_training_data(files["train"]))
    rows = rows * 8  # 32 rows of 4 lengths
    model = lora_model(loaded, 4, 0)
    model.eval()
    pad = loaded.tokenizer.pad_token_id
    totals = {}
    for group in (False, True):
        batches = length_batches(rows, 4, random.Random(0), len, group)
        assert sorted(map(len, (r for b in batches for r in b))) == sorted(map(len, rows))  # every row once
        with torch.no_grad():
            totals[group] = sum(float(answer_logprobs(model, b, pad, "cpu")[0].sum()) for b in batches)
        padding = sum(max(map(len, b)) * len(b) - sum(map(len, b)) for b in batches)
        if group:
            assert padding == 0  # 4 copies of each length: grouped batches need no padding at all
    assert totals[True] == pytest.approx(totals[False], rel=1e-5)


def test_micro_batches_take_the_whole_batchs_step(tiny_base, files, tmp_path):
    """Rows of mixed answer lengths: one pass per row makes the very step of one pass of all four,
    and the run's identity leaves the micro-batch out, so a run can resume with another one."""
    from safetensors.torch import load_file

    from redline.train.adapters import run_record

    data = read_training_data(files["train"])
    _, rows = _rows(str(tiny_base), data)
    assert len({r.answer_tokens for r in rows}) > 1  # a plain mean of the micro-batches' means would differ
    runs = {}
    for micro in (4, 1):
        settings = replace(FAST, lr=1e-2, batch_size=4, micro_batch=micro, max_steps=3, precision="float32")
        result = train_sft(data, str(tiny_base), tmp_path / str(micro), settings, "x", lambda line: None)
        runs[micro] = result.figures.losses, load_file(str(tmp_path / str(micro) / "adapter_model.safetensors"))
    assert runs[1][0] == pytest.approx(runs[4][0], rel=1e-5)
    for name, weight in runs[4][1].items():
        torch.testing.assert_close(runs[1][1][name].float(), weight.float(), rtol=1e-2, atol=1e-4)
    assert run_record("sft", "sha", "base", replace(FAST, micro_batch=1)) == run_record("sft", "sha", "base", FAST)


def test_schedule_is_transformers_own():
    from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

    for decay, make in (("cosine", get_cosine_schedule_with_warmup), ("linear", get_linear_schedule_with_warmup)):
        plan = Plan(epochs=1, lr=1e-3, batch_size=1, warmup=0.1, decay=decay)
        optimiser = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
        schedule = make(optimiser, 3, 30)
        for step in range(30):
            assert plan.lr_at(step, 30) == pytest.approx(schedule.get_last_lr()[0], abs=1e-12), (decay, step)
            optimiser.step()
            schedule.step()


def test_a_checkpoint_resumes_to_the_uninterrupted_weights(tiny_base, files, tmp_path):
    from safetensors.torch import load_file

    data = read_training_data(files["train"])
    settings = replace(FAST, lr=1e-2, max_steps=3, save_steps=1, batch_size=1)
    train_sft(data, str(tiny_base), tmp_path / "straight", settings, "x", lambda line: None)

    from redline.train.loop import Interrupted

    def interrupt_after_step_2(line: str) -> None:
        if line.startswith("step 2/"):
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C: the loop saves at the end of this step

    out = tmp_path / "resumed"
    with pytest.raises(Interrupted, match="after step 2/3"):
        train_sft(data, str(tiny_base), out, settings, "x", interrupt_after_step_2)
    assert [p.name for p in (out / "checkpoints").glob("checkpoint-*")] == ["checkpoint-2"]
    lines: list[str] = []
    result = train_sft(data, str(tiny_base), out, settings, "x", lines.append)
    assert lines[0].startswith("resuming from") and "(step 2/3)" in lines[0] and result.figures.steps == 1
    assert result.figures.resumed_at == 2 and "resumed from a checkpoint at step 2" in (out / "README.md").read_text()
    assert result.figures.precision == pick_precision("cpu").name
    straight = load_file(str(tmp_path / "straight" / "adapter_model.safetensors"))
    resumed = load_file(str(out / "adapter_model.safetensors"))
    assert straight.keys() == resumed.keys()
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=0, atol=0)
