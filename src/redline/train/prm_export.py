"""A Math-Shepherd PRM rewritten as the token-classification model vLLM's pooling runner serves.

`redline train prm` makes a causal LM that scores a step by P('+') / (P('+') + P('-')) of the
next-token logits at the step's tag. That number is a two-way softmax over two rows of the output
head, so the same model is exactly a token classifier whose `score` head holds those two rows
(label 0 = '-' = wrong, label 1 = '+' = right) and no bias: the shape vLLM's adapter
(`as_seq_cls_model`) builds for `*ForTokenClassification` and loads with `--runner pooling`.
Nothing is retrained and nothing is approximated: p_positive at a tag is the step's score.

The folder holds config.json (`LlamaForTokenClassification` for a Llama base, 2 labels,
`token_classification_bias: false`, and the step tag under `redline_step_tag`), the weights as
safetensors, the tokenizer, and a README.md model card with the commands that serve and use it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redline.errors import RedlineError
from redline.verifiers.calibration import CALIBRATION_FILE
from redline.verifiers.hf_prm import TAG_CONFIG_KEY, HfPrmParams, label_ids, load_prm

LABELS = {0: "wrong", 1: "right"}  # vLLM's rows are [p_negative, p_positive]


@dataclass(frozen=True)
class ExportReport:
    out: Path
    architecture: str
    tag: str
    tag_id: int
    dtype: str
    parameters: int
    bytes: int
    center: float | None  # the fitted cut copied with the model (verifiers.calibration)


def classifier_config(causal_config: Any, architecture: str, tag: str) -> Any:
    """The token classifier's config from the causal LM's. A quantisation the source was loaded with
    (the embedded GGUF base) is dropped: the weights are written dense, and vLLM refuses to load a
    folder whose config names `gguf` ("Unknown quantization method")."""
    config = causal_config.__class__.from_dict(causal_config.to_dict())
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.architectures = [architecture]
    config.num_labels = 2
    config.id2label, config.label2id = dict(LABELS), {v: k for k, v in LABELS.items()}
    config.token_classification_bias = False
    config.tie_word_embeddings = False  # the classifier has no output embeddings to tie
    setattr(config, TAG_CONFIG_KEY, tag)
    return config


def export_for_vllm(prm: str, out: Path, dtype: str = "bfloat16") -> ExportReport:
    """Write the PRM at `prm` (a `redline train prm` adapter folder or a Math-Shepherd causal LM
    directory) to `out` as a token-classification model in `dtype` (bfloat16 or float32)."""
    import torch
    from transformers import AutoModelForTokenClassification

    if dtype not in ("bfloat16", "float32"):
        raise RedlineError(f"export dtype must be bfloat16 or float32, got {dtype!r}")
    loaded = load_prm(HfPrmParams(path=prm, format="math-shepherd", device="cpu", dtype="float32"))
    causal, tokenizer = loaded.model, loaded.tokenizer
    good, bad = label_ids(tokenizer)
    head = causal.get_output_embeddings()
    if getattr(head, "bias", None) is not None:
        raise RedlineError("the PRM's output head has a bias; vLLM's token-classification head has none")
    architecture = type(causal).__name__.removesuffix("ForCausalLM") + "ForTokenClassification"
    config = classifier_config(causal.config, architecture, loaded.tag)
    try:
        model = AutoModelForTokenClassification.from_config(config)
    except ValueError as e:
        raise RedlineError(f"transformers has no token-classification model for {architecture}: "
                           f"{str(e).splitlines()[0]}") from None
    model.base_model.load_state_dict(causal.base_model.state_dict())
    with torch.no_grad():
        model.score.weight.copy_(head.weight[[bad, good]])
    model = model.to(getattr(torch, dtype)).eval()
    if out.exists():
        shutil.rmtree(out)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    if loaded.center is not None:  # the fitted cut travels with the model
        shutil.copy(Path(prm) / CALIBRATION_FILE, out / CALIBRATION_FILE)
    tag_id = tokenizer.convert_tokens_to_ids(loaded.tag)
    size = sum(p.stat().st_size for p in out.glob("*.safetensors"))
    report = ExportReport(out, architecture, loaded.tag, tag_id, dtype, sum(p.numel() for p in model.parameters()),
                          size, loaded.center)
    write_card(report, Path(prm))
    return report


def write_card(report: ExportReport, source: Path) -> Path:
    """README.md: what the folder is, how vLLM serves it, how redline uses it, and the source's own card."""
    step_pooler = json.dumps({"tok_pooling_type": "STEP", "step_tag_id": report.tag_id})
    out = report.out
    lines = [
        "# A process reward model for vLLM's pooling runner, exported by redline", "",
        f"`{report.architecture}` with 2 labels ({LABELS[0]} = 0, {LABELS[1]} = 1) and a bias-free `score` head, "
        f"{report.parameters / 1e6:.0f}M parameters in {report.dtype} ({report.bytes / 1e6:.0f} MB of safetensors), "
        f"rewritten from the Math-Shepherd PRM `{source}` without retraining: the probability of label 1 at a "
        "step tag is exactly that PRM's step score, P('+') / (P('+') + P('-')).", "",
        "## Input",
        f"`question step1 {report.tag}\\nstep2 {report.tag}`: each step followed by a space and the step tag "
        f"`{report.tag}` (token id {report.tag_id}, one vocabulary token); the tag text is removed from the steps "
        "and the question first. A step is read at its tag.", "",
        "## Serve it with vLLM",
        f"- every token's row (ALL pooling): `vllm serve {out} --runner pooling`",
        f"- only the tags' rows (STEP pooling): `vllm serve {out} --runner pooling --pooler-config '{step_pooler}'`",
        f"- `POST /pooling` with `\"task\": \"token_classify\"` answers one [p_{LABELS[0]}, p_{LABELS[1]}] row per "
        "token (or per tag).", "",
        "## Use it from redline",
        f"- through vLLM: `--verifier \"remote-prm:{out},base_url=http://127.0.0.1:8000,format=token-classify"
        f"{'' if report.center is None else f',center={report.center:g}'}\"` "
        "(the model name is the path vLLM was given, or its `--served-model-name`)",
        f"- in process: `--verifier hf-prm:{out}`",
    ]
    card = source / "README.md"
    if source.is_dir() and card.is_file():
        lines += ["", "## The source PRM's card", "", card.read_text(encoding="utf-8").strip()]
    path = out / "README.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
