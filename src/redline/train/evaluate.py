"""Grading a model on a held-apart set, fast enough to run between training rounds on a CPU.

The local backend answers one prompt per call; here many solve prompts share one left-padded
`generate` call, which is several times cheaper on a CPU for the same greedy text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from redline.compute import run_sync
from redline.text import answers_equal, extract_answer, solve_messages
from redline.types import Problem


@dataclass(frozen=True)
class Graded:
    """Per-problem outcomes of one model: each problem's sampled texts and whether each is right."""

    texts: list[list[str]]
    correct: list[list[bool]]

    @property
    def first_correct(self) -> list[bool]:
        return [c[0] for c in self.correct]

    @property
    def accuracy(self) -> float:
        return sum(self.first_correct) / len(self.correct) if self.correct else 0.0


def complete(model: str, questions: Sequence[str], max_tokens: int, n: int = 1, temperature: float = 0.0,
             batch: int = 16, seed: int = 0) -> list[list[str]]:
    """n completions of the solve prompt per question (greedy when temperature is 0), in batches."""
    from redline.backends.local import load_model

    loaded = load_model(model)
    return run_sync(_complete, loaded, list(questions), max_tokens, n, temperature, batch, seed)


def _complete(loaded: Any, questions: list[str], max_tokens: int, n: int, temperature: float, batch: int,
              seed: int) -> list[list[str]]:
    import torch

    tok = loaded.tokenizer
    sample = temperature > 0
    per_call = max(1, batch // n) if sample else batch
    out: list[list[str]] = []
    for start in range(0, len(questions), per_call):
        chunk = questions[start:start + per_call]
        prompts = [tok.apply_chat_template(solve_messages(q), tokenize=False, add_generation_prompt=True) for q in chunk]
        inputs = tok(prompts, return_tensors="pt", padding=True, padding_side="left",  # generation continues
                     add_special_tokens=False).to(loaded.device)                     # each row's right end
        kwargs: dict[str, Any] = dict(max_new_tokens=max_tokens, do_sample=sample, pad_token_id=tok.pad_token_id)
        if sample:
            torch.manual_seed(seed + start)
            kwargs.update(temperature=temperature, top_p=1.0, top_k=0, num_return_sequences=n)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        with torch.inference_mode():
            sequences = loaded.model.generate(**inputs, **kwargs)[:, inputs["input_ids"].shape[1]:].tolist()
        texts = [_decode(tok, seq, loaded.stop_ids) for seq in sequences]
        k = n if sample else 1
        out += [texts[i * k:(i + 1) * k] for i in range(len(chunk))]
    return out


def _decode(tok: Any, seq: list[int], stop_ids: frozenset[int]) -> str:
    end = next((i for i, t in enumerate(seq) if t in stop_ids or t == tok.pad_token_id), len(seq))
    return tok.decode(seq[:end], skip_special_tokens=True).strip()


def grade(model: str, problems: Sequence[Problem], max_tokens: int = 192, n: int = 1, temperature: float = 0.0,
          batch: int = 16, seed: int = 0) -> Graded:
    """Each problem's answers against its gold answer."""
    texts = complete(model, [p.question for p in problems], max_tokens, n, temperature, batch, seed)
    correct = [[answers_equal(extract_answer(t), p.answer) for t in ts] for ts, p in zip(texts, problems)]
    return Graded(texts, correct)
