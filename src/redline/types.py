"""The plain data that flows through the loop: small immutable dataclasses, nothing heavy."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping

PHASES = ("solve", "verify", "revise", "retrieve")


@dataclass(frozen=True)
class Problem:
    """A question, with a gold answer and worked solution when the data has them."""

    question: str
    answer: str | None = None
    id: str | None = None
    solution: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    """One reasoning step; `score` is a verifier's P(correct) once scored."""

    text: str
    score: float | None = None


@dataclass(frozen=True)
class Solution:
    """A step-by-step solution and the final answer extracted from it. `finish_reason` is the
    backend's for the call that wrote it ("length": cut off by the token limit)."""

    text: str
    steps: tuple[Step, ...]
    answer: str | None
    finish_reason: str | None = None

    @classmethod
    def from_text(cls, text: str, finish_reason: str | None = None) -> "Solution":
        from redline.text import extract_answer, segment_steps

        return cls(text=text, steps=tuple(Step(s) for s in segment_steps(text)), answer=extract_answer(text),
                   finish_reason=finish_reason)

    @property
    def step_texts(self) -> list[str]:
        return [s.text for s in self.steps]

    @property
    def scores(self) -> list[float] | None:
        if any(s.score is None for s in self.steps):
            return None
        return [float(s.score) for s in self.steps]  # type: ignore[arg-type]

    def with_scores(self, scores: list[float]) -> "Solution":
        if len(scores) != len(self.steps):
            raise ValueError(f"{len(scores)} scores for {len(self.steps)} steps")
        return replace(self, steps=tuple(Step(s.text, float(v)) for s, v in zip(self.steps, scores)))


@dataclass(frozen=True)
class Candidate:
    """A solution a strategy considered, with its outcome score and any votes it got. `sanity`
    says why the sanity rules zeroed it (empty when they did not)."""

    solution: Solution
    score: float | None = None
    votes: float = 0.0
    origin: str = "sample"
    sanity: tuple[str, ...] = ()


@dataclass(frozen=True)
class Usage:
    """Token and call counts; adds up with `+`. `cached_prompt_tokens` is the part of
    `prompt_tokens` a prefix cache served (OpenAI's `prompt_tokens_details.cached_tokens`)."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    cached_prompt_tokens: int = 0

    @property
    def uncached_prompt_tokens(self) -> int:
        return self.prompt_tokens - self.cached_prompt_tokens

    @property
    def total_tokens(self) -> int:
        """Billed tokens: what an OpenAI-compatible API reports and charges."""
        return self.prompt_tokens + self.completion_tokens

    @property
    def computed_tokens(self) -> int:
        """Tokens the engine computed: uncached prompt plus completion (the physical cost)."""
        return self.uncached_prompt_tokens + self.completion_tokens

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(
            self.calls + other.calls,
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.latency_s + other.latency_s,
            self.cached_prompt_tokens + other.cached_prompt_tokens,
        )


def total_usage(by_phase: Mapping[str, Usage]) -> Usage:
    """Sum usage over phases."""
    out = Usage()
    for u in by_phase.values():
        out = out + u
    return out


@dataclass(frozen=True)
class Result:
    """What a strategy returns: the answer, how it got there, and what it cost."""

    problem: Problem
    strategy: str
    answer: str | None
    solution: Solution | None
    candidates: tuple[Candidate, ...] = ()
    trace: Mapping[str, Any] = field(default_factory=dict)
    usage: Mapping[str, Usage] = field(default_factory=dict)
    wall_s: float = 0.0
    stopped: str | None = None  # why a budget cut the run short, if it did

    @property
    def total(self) -> Usage:
        return total_usage(self.usage)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (CLI --json, eval store, server trace)."""
        d = asdict(self)
        d["usage"] = {k: _usage_dict(v) for k, v in self.usage.items()}
        d["usage_total"] = _usage_dict(self.total)
        return d


def _usage_dict(u: Usage) -> dict[str, Any]:
    """A Usage with both token measures spelled out: billed (`total_tokens`) and `computed_tokens`."""
    return asdict(u) | {"total_tokens": u.total_tokens, "computed_tokens": u.computed_tokens}
