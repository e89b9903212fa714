"""The training progress line (loss, tokens/s, ETA) and a Ctrl-C that saves and stops.

The first Ctrl-C asks the loop to write a checkpoint at the end of the current step and stop,
so rerunning the same command resumes there; a second Ctrl-C interrupts at once.
"""

from __future__ import annotations

import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@dataclass
class Figures:
    """What a run measured, for the model card and the command's last line."""

    steps: int = 0
    rows: int = 0  # rows (examples) the optimiser saw this session, with repeats over epochs
    tokens: int = 0  # non-padding input tokens this session
    seconds: float = 0.0
    loss: float | None = None
    losses: list[float] = field(default_factory=list)
    precision: str = "float32"
    resumed_at: int = 0  # the optimiser step this session resumed from (0: a fresh start)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


class Progress:
    """Counts steps and tokens of this session and says one line per optimiser step."""

    def __init__(self, say: Callable[[str], None], precision: str) -> None:
        self.say = say
        self.figures = Figures(precision=precision)
        self._t0 = time.perf_counter()

    def step(self, step: int, total: int, loss: float, rows: int, tokens: int) -> None:
        f = self.figures
        f.steps += 1
        f.rows += rows
        f.tokens += tokens
        f.seconds = time.perf_counter() - self._t0
        f.loss = loss
        f.losses.append(loss)
        eta = (total - step) * f.seconds / f.steps
        self.say(f"step {step}/{total}  loss {loss:.3f}  {f.tokens_per_s:.0f} tok/s  "
                 f"elapsed {_clock(f.seconds)}  ETA {_clock(eta)}")


class StopOnInterrupt:
    """Turns the first SIGINT into 'save a checkpoint and stop' at the next step end."""

    def __init__(self) -> None:
        self.requested = False

    @contextmanager
    def installed(self) -> Iterator["StopOnInterrupt"]:
        def handler(signum: int, frame: Any) -> None:
            if self.requested:
                raise KeyboardInterrupt
            self.requested = True

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)
