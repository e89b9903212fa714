"""Nearest-neighbour search over L2-normalised vectors.

The store talks to a `VectorIndex`, so a sqlite-vec or pgvector index can replace the numpy
one without touching retrieval code. At the scale of one user's memory (up to ~10^5 steps)
an exact dot-product scan is a few milliseconds, so no approximate index is needed.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np


class VectorIndex(Protocol):
    def add(self, ids: Sequence[int], vectors: np.ndarray) -> None: ...

    def search(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Up to `k` (id, cosine similarity) pairs, most similar first."""
        ...

    def __len__(self) -> int: ...


class NumpyIndex:
    """Exact search: one matrix product over every stored vector (amortised growth on add)."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._ids = np.zeros(0, dtype=np.int64)
        self._vectors = np.zeros((0, dim), dtype=np.float32)
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, ids: Sequence[int], vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
        need = self._size + len(vectors)
        if need > len(self._vectors):
            capacity = max(need, 2 * len(self._vectors), 64)
            self._vectors = np.resize(self._vectors, (capacity, self.dim))
            self._ids = np.resize(self._ids, capacity)
        self._vectors[self._size:need] = vectors
        self._ids[self._size:need] = np.asarray(ids, dtype=np.int64)
        self._size = need

    def search(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        if self._size == 0 or k < 1:
            return []
        sims = self._vectors[: self._size] @ np.asarray(query, dtype=np.float32).reshape(self.dim)
        k = min(k, self._size)
        top = np.argpartition(-sims, k - 1)[:k]
        top = top[np.argsort(-sims[top])]
        return [(int(self._ids[i]), float(sims[i])) for i in top]
