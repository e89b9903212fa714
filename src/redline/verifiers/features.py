"""What the `learned` verifier sees of a step: hashed text features and a few dense signals.

Text: the step's words and bigrams, each (word, operator) pair in the step, and each
(question word, step operator) pair: whether `*` or `/` is right depends on words such as
"half" or "each", in the step or in the question. Hashing keeps the vocabulary open and needs
no fitting. Dense: the `arith` verdict (claims true / false / none), the share of the step's
operands already seen in the question, an earlier step or a common constant (a made-up number
is a common slip), relative position, last step, and length.

Feature version 1 used MiniLM sentence embeddings instead of hashed text. On the planted-error
benchmark (bench/verifier_eval.py: trained on 480 solutions, measured on 300 others) version 2
scores F1 66.8% against 44.9%, and it scores about 2,000 steps/s on one core against 43
(bench/verifier_speed.py).
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Sequence

import numpy as np

from redline.verifiers.arith import check_step
from redline.verifiers.judge import plain_step

if TYPE_CHECKING:  # scipy comes with scikit-learn (extra 'retrieval'); imported when features are made
    import scipy.sparse as sp

FEATURE_VERSION = 2
HASHED_FEATURES = 2**18
DENSE_FEATURES = 7
_MAX_CHARS = 2000  # a step longer than this is cut in its middle
_TOKEN = re.compile(r"[a-z]+|[-+*/×÷=%]")
_OPERATORS = frozenset("+-*/×÷%x")
_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")
# numbers a step may use without seeing them: "half" is 2, "a dozen" 12, "per hour" 60 ...
_COMMON = frozenset([str(i) for i in range(11)] + ["12", "24", "52", "60", "100", "365", "1000"])


def _as_is(tokens: list[str]) -> list[str]:
    return tokens


def _vectorizer():
    from sklearn.feature_extraction.text import HashingVectorizer

    return HashingVectorizer(analyzer=_as_is, n_features=HASHED_FEATURES, alternate_sign=False, norm="l2")


def text_tokens(question_words: set[str], step: str) -> list[str]:
    """The hashed tokens of one step (see the module doc)."""
    tokens = _TOKEN.findall(plain_step(step, _MAX_CHARS).lower())
    operators = sorted({t for t in tokens if t in _OPERATORS})
    words = [t for t in tokens if t.isalpha() and t != "x"]
    return (words + [f"{a}_{b}" for a, b in zip(tokens, tokens[1:])]
            + [f"{w}|{o}" for w in sorted(set(words)) for o in operators]
            + [f"q:{w}|{o}" for w in sorted(question_words) for o in operators])


def _numbers(text: str) -> list[str]:
    return [n.replace(",", "") for n in _NUMBER.findall(text)]


def dense_features(question: str, steps: Sequence[str]) -> np.ndarray:
    """Shape (len(steps), DENSE_FEATURES): arith verdict (3), grounded operands, position, last, length."""
    seen = set(_numbers(question)) | _COMMON
    rows = []
    for i, step in enumerate(steps):
        verdict = check_step(step[:20_000]).verdict
        text = plain_step(step, 20_000)  # without 'Step k:', whose k is no operand
        operands = _numbers(text.split("=")[0]) if "=" in text else _numbers(text)
        grounded = sum(n in seen for n in operands) / len(operands) if operands else 1.0
        seen.update(_numbers(text))
        rows.append([verdict == "true", verdict == "false", verdict == "none", grounded,
                     i / max(len(steps) - 1, 1), i == len(steps) - 1, math.log1p(len(step)) / 8])
    return np.asarray(rows, dtype=np.float32).reshape(len(steps), DENSE_FEATURES)


def step_features(question: str, steps: Sequence[str]) -> "sp.csr_matrix":
    """One sparse row per step, HASHED_FEATURES + DENSE_FEATURES columns."""
    import scipy.sparse as sp

    question_words = {t for t in _TOKEN.findall(question[:_MAX_CHARS].lower()) if t.isalpha()}
    hashed = _vectorizer().transform([text_tokens(question_words, s) for s in steps])
    return sp.hstack([hashed, sp.csr_matrix(dense_features(question, steps))], format="csr")


def stack(rows: Sequence["sp.csr_matrix"]) -> "sp.csr_matrix":
    """Rows of many solutions as one matrix (an empty one when there are none)."""
    import scipy.sparse as sp

    if not rows:
        return sp.csr_matrix((0, HASHED_FEATURES + DENSE_FEATURES), dtype=np.float64)
    return sp.vstack(rows, format="csr")
