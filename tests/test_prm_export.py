"""`redline train prm-export` / `train prm --export vllm`: a Math-Shepherd PRM rewritten as the
token-classification model vLLM's pooling runner serves, on tiny random Llamas built here. The
export must give the very step scores of the PRM it came from: read with transformers'
AutoModelForTokenClassification, with `hf-prm`, and with `remote-prm` through the pooling stand-in."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from typer.testing import CliRunner  # noqa: E402

from redline.cli import app  # noqa: E402
from redline.errors import BackendError, RedlineError  # noqa: E402
from redline.server.background import serve_in_thread  # noqa: E402
from redline.train.prm_export import classifier_config, export_for_vllm  # noqa: E402
from redline.verifiers.calibration import recenter  # noqa: E402
from redline.verifiers.hf_prm import build_input  # noqa: E402
from redline.verifiers.remote_prm import RemotePrmParams, RemotePrmVerifier  # noqa: E402
from tests.conftest import scripted_runtime  # noqa: E402
from tests.pooling_app import PoolingControl, create_pooling_app  # noqa: E402
from tests.test_train_prm import tiny_base, write_data  # noqa: E402,F401  (fixture)
from tests.test_verifier_hf_prm import WORDS, tiny_tokenizer  # noqa: E402

REDLINE = str(Path(sys.executable).parent / "redline")
TAG = "<file_sep>"  # SmolLM2's vocabulary splits ки in two; its step tag is this one token
QUESTION = "what is 2 * 3 ?"
STEPS = ["step 1 : 2 * 3 = 6", "step 2 : 6 + 6 = 12", "the answer is 12 ."]
CANDIDATES = [STEPS, STEPS[:2] + ["the answer is 6 ."], ["2 * 3 = 5", "the answer is 5 ."]]


@pytest.fixture(scope="module")
def shepherd_dir(tmp_path_factory):
    """A Math-Shepherd causal LM whose tokenizer lacks ки but holds <file_sep> whole, with tied
    embeddings (as SmolLM2)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("shepherd")
    tok = tiny_tokenizer([TAG], words=[w for w in WORDS if w != "ки"])
    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def exported(shepherd_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "vllm"
    return export_for_vllm(str(shepherd_dir), out, "float32")


async def hf_scores(path, *solutions):
    """hf-prm's float32 scores; a causal LM without ки in its vocabulary is named math-shepherd."""
    fmt = "" if (path / "adapter_config.json").is_file() or "redline_step_tag" in (path / "config.json").read_text() \
        else ",format=math-shepherd"
    verifier = scripted_runtime(["unused"]).verifier(f"hf-prm:{path},dtype=float32{fmt}")
    return list(await asyncio.gather(*(verifier.score(QUESTION, s) for s in solutions)))


def token_classify_reference(path, steps):
    """What a vLLM user computes: softmax rows of AutoModelForTokenClassification, read at the tag."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForTokenClassification.from_pretrained(path)
    config = json.loads((path / "config.json").read_text())
    text, _ = build_input("token-classify", tok, QUESTION, steps, config["redline_step_tag"])
    ids = tok(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        probs = model(ids).logits[0].softmax(-1)[:, 1]
    return probs[ids[0] == tok.convert_tokens_to_ids(config["redline_step_tag"])].tolist()


async def test_export_is_a_bias_free_two_label_token_classifier_with_the_same_scores(shepherd_dir, exported):
    from safetensors import safe_open

    out = exported.out
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForTokenClassification"]
    assert config["id2label"] == {"0": "wrong", "1": "right"}  # two labels: [p_negative, p_positive]
    assert config["token_classification_bias"] is False and config["redline_step_tag"] == TAG
    assert exported.tag == TAG and exported.tag_id == json.loads((out / "tokenizer.json").read_text()) \
        ["added_tokens"][-1]["id"]
    with safe_open(str(out / "model.safetensors"), "pt") as weights:
        keys = set(weights.keys())
    assert "score.weight" in keys and "score.bias" not in keys and not any(k.startswith("lm_head") for k in keys)
    source = (await hf_scores(shepherd_dir, STEPS))[0]
    reference = token_classify_reference(out, STEPS)
    assert len(reference) == len(STEPS) and len(set(round(s, 4) for s in source)) > 1
    assert reference == pytest.approx(source, abs=1e-5)
    direct = scripted_runtime(["unused"]).verifier(f"hf-prm:{out},dtype=float32")
    assert direct.loaded.format == "token-classify"
    assert await direct.score(QUESTION, STEPS) == pytest.approx(source, abs=1e-5)
    card = (out / "README.md").read_text()
    assert f"vllm serve {out} --runner pooling" in card and f'"step_tag_id": {exported.tag_id}' in card
    assert "format=token-classify" in card


@pytest.mark.parametrize("step_pooling", [False, True], ids=["ALL-pooling", "STEP-pooling"])
async def test_remote_prm_reads_the_served_export_as_hf_prm_scores_it(shepherd_dir, exported, step_pooling):
    control = PoolingControl()
    control.reset(step_tag_id=exported.tag_id if step_pooling else None)
    expected = await hf_scores(shepherd_dir, *CANDIDATES)
    with serve_in_thread(create_pooling_app(control, "redline-prm", exported.out)) as url:
        verifier = RemotePrmVerifier(RemotePrmParams(model="redline-prm", base_url=url, format="token-classify"))
        scores = await asyncio.gather(*(verifier.score(QUESTION, s) for s in CANDIDATES))
        assert len(control.inputs) == 1 and len(control.inputs[0]) == len(CANDIDATES)  # one /pooling request
        assert control.tasks == ["token_classify"] and all(isinstance(i, list) for i in control.inputs[0])
        for got, want in zip(scores, expected):
            assert got == pytest.approx(want, abs=1e-5)
        shifted = RemotePrmVerifier(RemotePrmParams(model="redline-prm", base_url=url, format="token-classify",
                                                    center=0.3))
        assert await shifted.score(QUESTION, CANDIDATES[0]) == pytest.approx(
            [recenter(x, 0.3) for x in expected[0]], abs=1e-5)
        await shifted.aclose()
        control.reset("drop_row", control.step_tag_id)
        with pytest.raises(BackendError, match="malformed reply .* step rows for 3 steps"):
            await verifier.score(QUESTION, STEPS)
        await verifier.aclose()


async def test_cli_export_in_bf16_keeps_scores_within_0_02(shepherd_dir, tmp_path):
    out = tmp_path / "bf16"
    run = CliRunner().invoke(app, ["train", "prm-export", str(shepherd_dir), str(out)])
    assert run.exit_code == 0, run.output
    assert "LlamaForTokenClassification" in run.output and f"vllm serve {out} --runner pooling" in run.output
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    (source,), (exported_scores,) = await hf_scores(shepherd_dir, STEPS), await hf_scores(out, STEPS)
    assert exported_scores == pytest.approx(source, abs=0.02)


async def test_train_prm_with_export_writes_both(tiny_base, tmp_path):  # noqa: F811
    trl, _ = write_data(tmp_path)
    out, served = tmp_path / "prm", tmp_path / "served"
    run = CliRunner().invoke(app, ["train", "prm", str(trl), "--base", str(tiny_base), "-o", str(out),
                                   "--max-steps", "1", "--val-fraction", "0", "--export", "vllm", str(served)])
    assert run.exit_code == 0, run.output
    assert (out / "adapter_config.json").is_file() and (served / "model.safetensors").is_file()
    card = (served / "README.md").read_text()
    assert "The source PRM's card" in card and "made by `redline train prm`" in card
    steps = ["2 * 3 = 6", "the answer is 5 ."]
    adapter = await scripted_runtime(["unused"]).verifier(f"hf-prm:{out},dtype=float32").score(QUESTION, steps)
    assert await scripted_runtime(["unused"]).verifier(f"hf-prm:{served},dtype=float32").score(QUESTION, steps) \
        == pytest.approx(adapter, abs=0.02)
    bad = CliRunner().invoke(app, ["train", "prm", str(trl), "--base", str(tiny_base), "--export", "sglang", "x"])
    assert isinstance(bad.exception, RedlineError) and "unknown export target 'sglang'" in str(bad.exception)
    assert not (tmp_path / "x").exists()  # refused before training


def test_a_quantised_source_exports_a_dense_config():
    """Seen on vLLM: a PRM over the embedded GGUF base carried `quant_method: gguf` into the export,
    and vLLM refused it ("Unknown quantization method: gguf")."""
    from transformers import LlamaConfig

    source = LlamaConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4)
    source.quantization_config = {"quant_method": "gguf", "gguf_file": "m.gguf", "dequantize": False}
    config = classifier_config(source, "LlamaForTokenClassification", TAG)
    assert "quantization_config" not in config.to_dict() and config.num_labels == 2
    assert config.redline_step_tag == TAG and config.token_classification_bias is False
    assert "quantization_config" in source.to_dict()  # the loaded model's own config is left alone


def test_the_pooling_stand_in_refuses_a_gguf_config_as_vllm_does(exported, tmp_path):
    import shutil

    folder = tmp_path / "quantised"
    shutil.copytree(exported.out, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "quantization_config": {"quant_method": "gguf"}}))
    with pytest.raises(ValueError, match="Unknown quantization method: gguf"):
        create_pooling_app(PoolingControl(), "redline-prm", folder)


def test_missing_or_corrupt_weights_are_one_line_errors(exported, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(exported.out, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # cut short
    with pytest.raises(RedlineError, match=r"hf-prm: cannot load .* as token-classify: ") as info:
        scripted_runtime(["unused"]).verifier(f"hf-prm:{broken}")
    assert "\n" not in str(info.value)
    data = tmp_path / "labelled.jsonl"
    data.write_text(json.dumps({"question": QUESTION, "steps": STEPS, "label": -1}) + "\n")
    command = [REDLINE, "verifier", "eval", "--verifier", f"hf-prm:{broken}", "--data", str(data)]
    corrupt = subprocess.run(command, capture_output=True, text=True, timeout=120)
    weights.unlink()
    missing = subprocess.run(command, capture_output=True, text=True, timeout=120)
    for result in (corrupt, missing):
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.returncode == 2 and len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
        assert f"hf-prm: cannot load '{broken}'" in errors[0]
