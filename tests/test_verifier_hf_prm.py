"""hf-prm with tiny randomly initialised models of both published shapes, built here (no download)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from redline.errors import RedlineError  # noqa: E402
from redline.verifiers.hf_prm import MATH_SHEPHERD_TAG, QWEN_SEPARATOR, build_input  # noqa: E402
from tests.conftest import scripted_runtime  # noqa: E402

WORDS = ["[UNK]", "[PAD]", "<s>", MATH_SHEPHERD_TAG, "+", "-", "=", "*", ".", ":", "step", "the", "answer", "is",
         "2", "3", "4", "5", "6", "12", "what", "?", "system", "user", "assistant", "please", "reason", "by",
         "and", "put", "your", "final", "within", "boxed", "{", "}", "\\", ",", "<", ">", "|", "/"]
QUESTION = "what is 2 * 3 ?"
STEPS = ["step 1 : 2 * 3 = 6", "step 2 : 6 + 6 = 12", "the answer is 12 ."]


def tiny_tokenizer(extra_special=(), words=WORDS):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(words)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]", bos_token="<s>")
    if extra_special:
        tok.add_special_tokens({"additional_special_tokens": list(extra_special)})
    return tok


@pytest.fixture(scope="module")
def math_shepherd_dir(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("math-shepherd")
    tok = tiny_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def qwen_prm_dir(tmp_path_factory):
    from transformers import Qwen2Config, Qwen2ForTokenClassification

    path = tmp_path_factory.mktemp("qwen-prm")
    tok = tiny_tokenizer([QWEN_SEPARATOR, "<|im_start|>", "<|im_end|>"])
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                         "{% endfor %}")
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, num_labels=2,
                         architectures=["Qwen2ForTokenClassification"])
    Qwen2ForTokenClassification(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def reference_math_shepherd(path, question, steps):
    """The Math-Shepherd reference recipe: P('+') against P('-') at every tag token."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    text = f"{question} " + "\n".join(f"{s} {MATH_SHEPHERD_TAG}" for s in steps)
    ids = tok(text, return_tensors="pt")["input_ids"]
    good, bad = tok.encode("+ -", add_special_tokens=False)
    with torch.no_grad():
        logits = model(ids).logits[0][:, [good, bad]]
    probs = logits.softmax(-1)[:, 0]
    return probs[ids[0] == tok.convert_tokens_to_ids(MATH_SHEPHERD_TAG)].tolist()


def reference_qwen(path, question, steps):
    """The Qwen2.5-Math-PRM reference recipe: softmax of the 2-class head at every <extra_0>."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForTokenClassification.from_pretrained(path)
    text, _ = build_input("qwen-prm", tok, question, steps)
    ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(ids).logits[0]
    return logits.softmax(-1)[:, 1][ids[0] == tok.convert_tokens_to_ids(QWEN_SEPARATOR)].tolist()


@pytest.mark.parametrize("fixture, reference", [("math_shepherd_dir", reference_math_shepherd),
                                                ("qwen_prm_dir", reference_qwen)])
async def test_one_score_per_step_in_order_matching_the_reference(request, fixture, reference):
    path = request.getfixturevalue(fixture)
    verifier = scripted_runtime(["unused"]).verifier(f"hf-prm:{path},dtype=float32")  # format auto-detected
    assert verifier.loaded.format == ("math-shepherd" if fixture == "math_shepherd_dir" else "qwen-prm")
    assert verifier.loaded.device == ("cuda" if torch.cuda.is_available() else "cpu")
    scores = await verifier.score(QUESTION, STEPS)
    expected = reference(path, QUESTION, STEPS)
    assert len(scores) == len(STEPS) == len(expected)
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert scores == pytest.approx(expected, abs=1e-5)
    assert len(set(round(s, 6) for s in scores)) > 1  # random weights still tell the steps apart
    # a reordered solution is scored in its own order
    reordered = await verifier.score(QUESTION, STEPS[::-1])
    assert reordered == pytest.approx(reference(path, QUESTION, STEPS[::-1]), abs=1e-5)


@pytest.mark.parametrize("fixture, tag", [("math_shepherd_dir", MATH_SHEPHERD_TAG), ("qwen_prm_dir", QWEN_SEPARATOR)])
async def test_tag_text_inside_steps_is_sanitised(request, fixture, tag):
    path = request.getfixturevalue(fixture)
    verifier = scripted_runtime(["unused"]).verifier(f"hf-prm:{path},dtype=float32")
    tricky = [f"step 1 : 2 * 3 = 6 {tag} {tag}", f"{tag} 6 + 6 = 12", "the answer is 12 ."]
    clean = ["step 1 : 2 * 3 = 6", "6 + 6 = 12", "the answer is 12 ."]
    scores = await verifier.score(f"{QUESTION} {tag}", tricky)
    assert len(scores) == 3
    assert scores == pytest.approx(await verifier.score(QUESTION, clean), abs=1e-5)


async def test_empty_and_very_long_steps_get_scores(math_shepherd_dir):
    verifier = scripted_runtime(["unused"]).verifier(f"hf-prm:{math_shepherd_dir},max_length=64")
    with pytest.warns(UserWarning, match="max_length=64"):
        scores = await verifier.score(QUESTION, ["", "2 " * 500, "the answer is 12 ."])
    assert len(scores) == 3 and all(0.0 <= s <= 1.0 for s in scores)
    assert scores[2] == 0.5  # cut off by max_length: neutral
    assert await verifier.score(QUESTION, []) == []


def test_missing_model_and_unknown_format_are_clear_errors(tmp_path):
    runtime = scripted_runtime(["unused"])
    with pytest.raises(RedlineError, match="no model at"):
        runtime.verifier(f"hf-prm:{tmp_path / 'nope'}")
    with pytest.raises(RedlineError, match="has neither config.json nor adapter_config.json"):
        runtime.verifier(f"hf-prm:{tmp_path}")
    plain = tmp_path / "plain"
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer(words=[w for w in WORDS if w != MATH_SHEPHERD_TAG])
    LlamaForCausalLM(LlamaConfig(vocab_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2)).save_pretrained(plain)
    tok.save_pretrained(plain)
    with pytest.raises(RedlineError, match="cannot tell the model's format"):
        runtime.verifier(f"hf-prm:{plain}")


def test_a_tag_split_over_two_tokens_is_read_at_its_last_token():
    from redline.verifiers.hf_prm import token_positions

    text, chars = build_input("math-shepherd", None, "q", ["a", "b"])
    assert text == f"q a {MATH_SHEPHERD_TAG}\nb {MATH_SHEPHERD_TAG}"
    # SmolLM2's byte-level BPE: 'q', 'Ġa', 'Ġк', 'и', 'Ċ', 'b', 'Ġк', 'и'
    offsets = [(0, 1), (1, 3), (3, 5), (5, 6), (6, 7), (7, 8), (8, 10), (10, 11)]
    assert token_positions(offsets, chars) == [3, 7]
    assert token_positions([(0, 2), (0, 2)], [1]) == [1]  # one character in two byte tokens: the last


def test_the_step_tag_is_one_vocabulary_token():
    from redline.verifiers.hf_prm import step_tag

    assert step_tag(tiny_tokenizer()) == MATH_SHEPHERD_TAG
    no_ki = [w for w in WORDS if w != MATH_SHEPHERD_TAG]
    assert step_tag(tiny_tokenizer(["<file_sep>"], words=no_ki)) == "<file_sep>"  # as SmolLM2, which splits ки
    with pytest.raises(RedlineError, match="holds none of .* as one token"):
        step_tag(tiny_tokenizer(words=no_ki))  # ки would be read as the unknown token: not held


@pytest.mark.parametrize("candidates, shared", [
    ([STEPS, STEPS[:1], STEPS[::-1]], 0),  # only the short question in common: nothing shared
    ([STEPS, STEPS[:2] + ["the answer is 6 ."], STEPS[:1]], 14),  # question + step 1 + its tag, once
], ids=["nothing-shared", "shared-prefix"])
async def test_candidates_scored_together_compute_their_shared_prefix_once(math_shepherd_dir, candidates, shared):
    import asyncio

    from redline.verifiers.hf_prm import encode_input

    verifier = scripted_runtime(["unused"]).verifier(f"hf-prm:{math_shepherd_dir},dtype=float32")
    lengths = [len(encode_input("math-shepherd", verifier.loaded.tokenizer, QUESTION, s, 4096)[0]) for s in candidates]
    calls = []
    hook = verifier.loaded.model.base_model.register_forward_hook(lambda m, args, kwargs, out: calls.append(
        tuple(kwargs["input_ids"].shape)), with_kwargs=True)
    try:
        alone = [await verifier.score(QUESTION, s) for s in candidates]
        calls.clear()
        together = await asyncio.gather(*(verifier.score(QUESTION, s) for s in candidates))
    finally:
        hook.remove()
    if verifier.loaded.device == "cpu":  # each row alone after the shared prefix: no padding
        assert calls == ([(1, shared)] if shared else []) + [(1, n - shared) for n in lengths]
    else:  # one padded batch after the shared prefix
        assert calls == ([(1, shared)] if shared else []) + [(3, max(lengths) - shared)]
    for a, t in zip(alone, together):
        assert t == pytest.approx(a, abs=1e-5)  # the shared prefix changes nothing


async def test_auto_dtype_is_bf16_where_the_cpu_has_it_and_stays_close(math_shepherd_dir):
    from redline.hardware import bf16_supported

    runtime = scripted_runtime(["unused"])
    auto = runtime.verifier(f"hf-prm:{math_shepherd_dir}")
    if not torch.cuda.is_available():
        assert auto.loaded.model.dtype == (torch.bfloat16 if bf16_supported("cpu") else torch.float32)
    bf16 = await runtime.verifier(f"hf-prm:{math_shepherd_dir},dtype=bfloat16").score(QUESTION, STEPS)
    fp32 = await runtime.verifier(f"hf-prm:{math_shepherd_dir},dtype=float32").score(QUESTION, STEPS)
    assert bf16 == pytest.approx(fp32, abs=0.02) and bf16 != fp32
