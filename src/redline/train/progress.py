"""Trainer callbacks: a progress line with ETA and tokens/s, and a Ctrl-C that saves and stops.

The first Ctrl-C asks the trainer to write a checkpoint at the end of the current step and stop,
so rerunning the same command resumes there; a second Ctrl-C interrupts at once.
"""

from __future__ import annotations

import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from transformers import TrainerCallback


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@dataclass
class Figures:
    """What a run measured, for the model card and the command's last line."""

    steps: int = 0
    tokens: int = 0  # non-padding input tokens this session
    seconds: float = 0.0
    loss: float | None = None
    losses: list[float] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


class ProgressCallback(TrainerCallback):
    """One line per logged step: step/total, loss, tokens/s and the ETA, through `say`."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.figures = Figures()
        self._t0 = 0.0
        self._step0 = 0
        self._tokens0 = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._t0 = time.perf_counter()
        self._step0 = state.global_step
        self._tokens0 = state.num_input_tokens_seen

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        logs = logs or {}
        f = self.figures
        f.seconds = time.perf_counter() - self._t0
        f.steps = state.global_step - self._step0
        f.tokens = state.num_input_tokens_seen - self._tokens0
        if "loss" in logs:
            f.loss = float(logs["loss"])
            f.losses.append(f.loss)
        if not f.steps or "loss" not in logs:  # the end-of-training summary repeats the last step: no line
            return
        eta = (state.max_steps - state.global_step) * f.seconds / f.steps
        self.say(f"step {state.global_step}/{state.max_steps}  loss {f.loss:.3f}  {f.tokens_per_s:.0f} tok/s  "
                 f"elapsed {_clock(f.seconds)}  ETA {_clock(eta)}")


class StopOnInterrupt(TrainerCallback):
    """Turns the first SIGINT into 'save a checkpoint and stop' at the next step end."""

    def __init__(self) -> None:
        self.requested = False

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.requested:
            control.should_save = True
            control.should_training_stop = True

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
