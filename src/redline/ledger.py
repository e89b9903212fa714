"""The token ledger: every backend call, with its strategy, phase, tokens, latency and model.

Which ledger and phase a call belongs to travels in context variables, so backends and
verifiers stay ignorant of strategies and concurrent solves never mix their accounts.

Budgets hold under concurrent calls: before a call starts, `Ledger.reserve` books its worst
case (the prompt's uncached tokens plus `max_tokens` x `n`) under the ledger's lock, so calls
started together (`asyncio.gather`) cannot all pass one check; `settle` replaces the booking
with what the call spent. A call whose worst case does not fit gets a smaller `max_tokens` when
what is left is still useful, else `BudgetExceeded`. `max_calls` counts started calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterator, Literal

from redline.errors import BudgetExceeded
from redline.types import PHASES, Usage


@dataclass(frozen=True)
class CallRecord:
    strategy: str
    phase: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    n: int = 1
    at: float = field(default_factory=time.time)
    cached_prompt_tokens: int = 0  # of prompt_tokens, served from a prefix cache
    endpoint: str = ""  # the server that answered, when the backend has several

    @property
    def usage(self) -> Usage:
        return Usage(1, self.prompt_tokens, self.completion_tokens, self.latency_s, self.cached_prompt_tokens)


MIN_USEFUL_TOKENS = 32
"""A call shrunk to fit the budget keeps at least this many new tokens per sample (or all it asked
for, when it asked for fewer); below that it is not made."""

TokenCount = Literal["computed", "billed"]


@dataclass(frozen=True)
class Budget:
    """Hard limits for one solve; `None` means unlimited. `count` says which tokens
    `max_tokens_total` counts: `computed` (uncached prompt plus completion, what the engine
    works for) or `billed` (prompt plus completion, what an API charges)."""

    max_tokens_total: int | None = None
    max_calls: int | None = None
    timeout_s: float | None = None
    count: TokenCount = "computed"

    def tokens(self, usage: Usage) -> int:
        """The tokens of `usage` that count against `max_tokens_total`."""
        return usage.total_tokens if self.count == "billed" else usage.computed_tokens


@dataclass(frozen=True)
class Hold:
    """A started call's booking: the tokens held for it and the `max_tokens` it may use
    (lower than asked when the budget shrank it; None when neither set one)."""

    tokens: int
    max_tokens: int | None


class Ledger:
    """Records calls for one solve (or one process) and enforces its budget."""

    def __init__(self, strategy: str = "", budget: Budget | None = None,
                 on_record: Callable[[CallRecord], None] | None = None) -> None:
        self.strategy = strategy
        self.budget = budget or Budget()
        self.records: list[CallRecord] = []
        self._on_record = on_record
        self._lock = threading.Lock()
        self._started = 0  # calls admitted, finished or not
        self._spent = 0    # counted tokens of the recorded calls
        self._held = 0     # tokens booked for calls still running

    def reserve(self, prompt_tokens: int, cached_tokens: int, max_tokens: int | None, n: int = 1) -> Hold:
        """Admit one call of `n` samples and book its worst case, or raise `BudgetExceeded`.

        `prompt_tokens` is billed once per call, `cached_tokens` of it known to be served from a
        cache (they do not count under `count=computed`). When `max_tokens` x `n` does not fit
        what is left, the call may use what is left if that is at least `MIN_USEFUL_TOKENS` per
        sample (or its whole `max_tokens`, if smaller); `max_tokens=None` (no limit asked) always
        gets what is left.
        """
        b = self.budget
        prompt = prompt_tokens - (cached_tokens if b.count == "computed" else 0)
        with self._lock:
            if b.max_calls is not None and self._started >= b.max_calls:
                raise BudgetExceeded(f"max_calls={b.max_calls} reached")
            if b.max_tokens_total is not None:
                room = b.max_tokens_total - self._spent - self._held - prompt
                if max_tokens is None or max_tokens * n > room:
                    useful = MIN_USEFUL_TOKENS if max_tokens is None else min(max_tokens, MIN_USEFUL_TOKENS)
                    if room // n < max(useful, 1):
                        raise BudgetExceeded(f"max_tokens_total={b.max_tokens_total} reached: "
                                             f"{max(room + prompt, 0)} tokens left, a {prompt}-token prompt "
                                             f"needs {prompt + useful * n}")
                    max_tokens = room // n
            hold = Hold(prompt + (max_tokens or 0) * n, max_tokens)
            self._started += 1
            self._held += hold.tokens
        return hold

    def settle(self, hold: Hold, rec: CallRecord) -> None:
        """Replace a call's booking with what it spent, and record it."""
        with self._lock:
            self._held -= hold.tokens
            self.records.append(rec)
            self._spent += self.budget.tokens(rec.usage)
        if self._on_record is not None:
            self._on_record(rec)

    def release(self, hold: Hold) -> None:
        """Free the booking of a call that failed or was cancelled; it still counts as started."""
        with self._lock:
            self._held -= hold.tokens

    @property
    def started(self) -> int:
        """Calls admitted so far, finished, failed or still running (what `max_calls` counts)."""
        return self._started

    def by_phase(self) -> dict[str, Usage]:
        out: dict[str, Usage] = {}
        for r in self.records:
            out[r.phase] = out.get(r.phase, Usage()) + r.usage
        return {p: out[p] for p in sorted(out, key=lambda p: (PHASES.index(p) if p in PHASES else 99, p))}

    def by_endpoint(self) -> dict[str, Usage]:
        """Usage per serving endpoint (calls of backends that do not say are under '')."""
        out: dict[str, Usage] = {}
        for r in self.records:
            out[r.endpoint] = out.get(r.endpoint, Usage()) + r.usage
        return out

    def total(self) -> Usage:
        out = Usage()
        for r in self.records:
            out = out + r.usage
        return out


async def gather_calls(*calls: Awaitable[Any]) -> list[Any]:
    """`asyncio.gather` that lets every call end before the first error is raised: when the
    budget refuses one of several concurrent calls, the ones already admitted finish and are
    recorded instead of running on, unrecorded, after the solve has returned."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results


# The process-wide ledger catches calls made outside any solve, so no call is dropped.
PROCESS_LEDGER = Ledger(strategy="(none)")
_current_ledger: contextvars.ContextVar[Ledger] = contextvars.ContextVar("redline_ledger", default=PROCESS_LEDGER)
_current_phase: contextvars.ContextVar[str] = contextvars.ContextVar("redline_phase", default="solve")


def current_ledger() -> Ledger:
    return _current_ledger.get()


def current_phase() -> str:
    return _current_phase.get()


@contextlib.contextmanager
def use_ledger(ledger: Ledger) -> Iterator[Ledger]:
    """Route every backend call in this context (and tasks it spawns) to `ledger`."""
    token = _current_ledger.set(ledger)
    try:
        yield ledger
    finally:
        _current_ledger.reset(token)


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Label backend calls in this context with a phase: solve, verify, revise or retrieve."""
    token = _current_phase.set(name)
    try:
        yield
    finally:
        _current_phase.reset(token)
