"""The token ledger: every backend call, with its strategy, phase, tokens, latency and model.

Which ledger and phase a call belongs to travels in context variables, so backends and
verifiers stay ignorant of strategies and concurrent solves never mix their accounts.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

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


@dataclass(frozen=True)
class Budget:
    """Hard limits for one solve; `None` means unlimited."""

    max_tokens_total: int | None = None
    max_calls: int | None = None
    timeout_s: float | None = None


class Ledger:
    """Records calls for one solve (or one process) and enforces its budget."""

    def __init__(self, strategy: str = "", budget: Budget | None = None,
                 on_record: Callable[[CallRecord], None] | None = None) -> None:
        self.strategy = strategy
        self.budget = budget or Budget()
        self.records: list[CallRecord] = []
        self._on_record = on_record
        self._lock = threading.Lock()

    def record(self, rec: CallRecord) -> None:
        with self._lock:
            self.records.append(rec)
        if self._on_record is not None:
            self._on_record(rec)

    def check_budget(self) -> None:
        """Raise `BudgetExceeded` before a call that the budget no longer allows."""
        b = self.budget
        if b.max_calls is not None and len(self.records) >= b.max_calls:
            raise BudgetExceeded(f"max_calls={b.max_calls} reached")
        if b.max_tokens_total is not None and self.total().total_tokens >= b.max_tokens_total:
            raise BudgetExceeded(f"max_tokens_total={b.max_tokens_total} reached")

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
