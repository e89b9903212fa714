"""Key/value states of recent prompts, so a call that resends a known prefix computes only the rest.

StepCo resends the question and the kept steps with every revision; beam and MCTS resend the
shared path with every expansion. The local backend keeps the attention keys and values of
recent prompts (one row each) and, for a new prompt, starts from the longest stored prefix of
its tokens. A state is either per-layer (keys, values) tensors (the transformers engine), cut to
the reused length on lookup, or a llama.cpp sequence state (bytes), which the engine trims itself
after restoring it. Least recently used entries are dropped first once their bytes pass the bound; an
entry that a newer one extends is dropped at once, since the newer one serves it too.

Entries belong to a scope (`SCOPE`, empty by default) and serve only lookups in the same scope:
`redline eval` sets the strategy key around each solve, so a strategy never starts from prefixes
that another strategy computed on the same problem, and their tokens and wall times stay comparable.
"""

from __future__ import annotations

from collections import OrderedDict
from contextvars import ContextVar
from typing import Any, Sequence

Layers = list[tuple[Any, Any]]  # per layer: (keys, values), each [1, heads, tokens, head_dim]
State = Layers | bytes
SCOPE: ContextVar[str] = ContextVar("redline_prefix_cache_scope", default="")


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens `a` and `b` share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _nbytes(state: State) -> int:
    if isinstance(state, bytes):
        return len(state)
    return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in state)


class PrefixCache:
    """A least-recently-used store of per-prompt KV states, bounded by `max_bytes`."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, tuple[int, ...]], tuple[State, int]] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def _longest(self, ids: Sequence[int], scope: str) -> tuple[int, tuple[str, tuple[int, ...]] | None]:
        best, best_key = 0, None
        for key in tuple(self._entries):  # a snapshot: `cached_length` may run beside a store
            n = min(common_prefix(key[1], ids), len(ids) - 1) if key[0] == scope else 0
            if n > best:
                best, best_key = n, key
        return best, best_key

    def cached_length(self, ids: Sequence[int], scope: str = "") -> int:
        """How many tokens of `ids` a lookup in `scope` would reuse now; changes nothing (safe from any
        thread), for budgets that price a call before making it."""
        return self._longest(ids, scope)[0]

    def lookup(self, ids: Sequence[int], scope: str = "") -> tuple[int, State | None]:
        """(tokens reused, their KV state) for the longest prefix of `ids` stored in `scope`, leaving
        at least the last token of `ids` to compute; (0, None) on a miss."""
        best, best_key = self._longest(ids, scope)
        if best_key is None:
            return 0, None
        self._entries.move_to_end(best_key)
        state = self._entries[best_key][0]
        if isinstance(state, bytes):
            return best, state
        return best, [(k[:, :, :best], v[:, :, :best]) for k, v in state]

    def store(self, ids: Sequence[int], state: State, scope: str = "") -> None:
        """Keep the KV state of `ids` in `scope` (tensors are kept as given: callers must not write
        to them)."""
        key = tuple(ids)
        same_scope = [old for old_scope, old in self._entries if old_scope == scope]
        if not key or any(len(old) >= len(key) and old[: len(key)] == key for old in same_scope):
            return  # an entry already holds this prefix
        size = _nbytes(state)
        if size > self.max_bytes:
            return
        for old in [old for old in same_scope if key[: len(old)] == old]:
            self._drop((scope, old))
        self._entries[(scope, key)] = (state, size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: tuple[str, tuple[int, ...]]) -> None:
        _, size = self._entries.pop(key)
        self.bytes -= size
