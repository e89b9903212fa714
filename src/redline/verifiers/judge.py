"""`judge`: a generative critic on any backend, in the style of StepWiser and ProcessBench critics.

Two ways to read the critic:
- `logprobs` (preferred): one short call per step asks "Is Step k correct? Answer Yes or No."
  given the problem and the earlier steps; the step's score is P(Yes) / (P(Yes) + P(No)) read
  from the verdict token's top logprobs. The score of step k depends only on the prefix up to
  k, so scores are cached per prefix (beam search and StepCo re-score the same prefixes).
- `text`: one call per solution asks for "Step k: correct|incorrect" lines, which are parsed.
`auto` uses logprobs and falls back to text for a backend that returns none.
A malformed critic output yields the neutral score and a warning, never an exception.

Calibration (`calibrate=reference`, logprobs mode): a small model's P(Yes) is biased, and the
bias depends on where the step sits (the 135M judge says No to nearly every step 1). So each
step is also compared with a content-free reference step ('N/A') at the same position, after
the same earlier steps, and scored sigmoid(logit P(Yes | step) - logit P(Yes | reference)):
0.5 means "as credible as saying nothing". This is contextual calibration (Zhao et al., 2021,
"Calibrate Before Use"). Unlike a fitted threshold it changes the ranking, not just the cut.
It costs one more call per distinct prefix (cached like the step verdicts).
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from typing import Literal, Sequence

from pydantic import Field

from redline.backends.base import Completion, GenerationRequest
from redline.ledger import gather_calls, phase
from redline.registry import VERIFIERS, Params
from redline.runtime import Runtime
from redline.text import render

log = logging.getLogger(__name__)

YES = frozenset({"yes", "correct", "right", "true"})
NO = frozenset({"no", "incorrect", "wrong", "false"})
TEXT_CORRECT, TEXT_INCORRECT = 0.9, 0.1
_STEP_MARKER = re.compile(r"^\s*(?:\*\*)?\s*step\s*\d+\s*[:.)]\s*(?:\*\*)?\s*", re.IGNORECASE)
_VERDICT = re.compile(r"step\s*(\d+)\s*(?:is|:|-|–|—)?\s*\**\s*(correct|incorrect|wrong|right)\b", re.IGNORECASE)
_FIRST_WRONG = re.compile(r"first\s+incorrect\s+step\s*(?:is|:)?\s*\**\s*(\d+|none)", re.IGNORECASE)
_CACHE_LIMIT = 20000
REFERENCE_STEP = "N/A"
_EPS = 1e-4


class JudgeMalformed(UserWarning):
    """The critic's output could not be read; the affected steps got the neutral score."""


class JudgeParams(Params):
    mode: Literal["auto", "logprobs", "text"] = Field("auto", description="read verdict logprobs or parse text")
    neutral: float = Field(0.5, ge=0, le=1, description="score when the critic's verdict cannot be read")
    max_tokens: int = Field(160, ge=8, le=4096, description="most tokens of a text-mode critique")
    max_step_chars: int = Field(1500, ge=50, description="longer steps are shortened in the prompt (head ... tail)")
    calibrate: Literal["none", "reference"] = Field("none", description="reference = score each step against a "
                                                    "content-free step at the same position (one more call per prefix)")


def plain_step(text: str, limit: int) -> str:
    """A step without its own 'Step k:' marker (the prompt numbers steps), cut to `limit` characters."""
    text = _STEP_MARKER.sub("", text.strip(), count=1) or "(empty step)"
    if len(text) > limit:
        half = limit // 2
        text = f"{text[:half]} ... {text[-half:]}"
    return text


def verdict_probability(completion: Completion) -> float | None:
    """P(correct) from the first generated position whose top tokens include a verdict word."""
    for position in completion.logprobs or ():
        candidates = dict(position.top) or {position.token: position.logprob}
        yes = sum(math.exp(lp) for tok, lp in candidates.items() if tok.strip().lower() in YES)
        no = sum(math.exp(lp) for tok, lp in candidates.items() if tok.strip().lower() in NO)
        if yes or no:
            floor = math.exp(min(candidates.values()))  # an absent verdict has at most the smallest top mass
            return (yes or floor) / ((yes or floor) + (no or floor))
    return None


def parse_verdicts(text: str, n_steps: int, neutral: float) -> list[float] | None:
    """Scores from 'Step k: correct|incorrect' lines or a 'First incorrect step: k' line; None if neither."""
    scores: list[float | None] = [None] * n_steps
    for number, word in _VERDICT.findall(text):
        k = int(number) - 1
        if 0 <= k < n_steps and scores[k] is None:
            scores[k] = TEXT_CORRECT if word.lower() in YES else TEXT_INCORRECT
    first = _FIRST_WRONG.search(text)
    if first:
        k = n_steps if first.group(1).lower() == "none" else int(first.group(1)) - 1
        for i in range(min(k, n_steps)):
            scores[i] = scores[i] if scores[i] is not None else TEXT_CORRECT
        if 0 <= k < n_steps:
            scores[k] = TEXT_INCORRECT
    if all(s is None for s in scores):
        return None
    return [neutral if s is None else s for s in scores]


def calibrated(p: float, reference: float) -> float:
    """sigmoid(logit p - logit reference): P(Yes) relative to the content-free step's."""
    p, reference = (min(1 - _EPS, max(_EPS, x)) for x in (p, reference))
    return 1 / (1 + (1 - p) / p * reference / (1 - reference))


def _malformed(what: str) -> None:
    warnings.warn(JudgeMalformed(what), stacklevel=3)
    log.warning("%s", what)


class JudgeVerifier:
    name = "judge"

    def __init__(self, runtime: Runtime, params: JudgeParams | None = None) -> None:
        self.runtime = runtime
        self.params = params or JudgeParams()
        self.mode = self.params.mode
        self.neutral = self.params.neutral  # unreadable verdicts; the sanity rules cap all-neutral solutions
        self._cache: dict[tuple[str, tuple[str, ...]], float] = {}
        self._reference: dict[tuple[str, tuple[str, ...]], float | None] = {}

    def _system(self) -> dict[str, str]:
        return {"role": "system", "content": render("judge_system")}

    async def _ask(self, question: str, previous: Sequence[str], step: str) -> Completion:
        """One 'Is Step k correct?' call (phase 'verify'), answered with verdict logprobs."""
        limit = self.params.max_step_chars
        user = render("judge_step", question=question, previous=[plain_step(s, limit) for s in previous],
                      number=len(previous) + 1, step=plain_step(step, limit))
        request = GenerationRequest(messages=[self._system(), {"role": "user", "content": user}],
                                    max_tokens=3, temperature=0.0, logprobs=5, seed=self.runtime.seed)
        with phase("verify"):
            return (await self.runtime.backend.generate(request))[0]

    async def _reference_score(self, question: str, previous: Sequence[str]) -> float | None:
        """P(Yes) for the content-free step after `previous` (cached per prefix; None if unreadable)."""
        key = (question, tuple(previous))
        if key not in self._reference:
            self._reference[key] = verdict_probability(await self._ask(question, previous, REFERENCE_STEP))
        return self._reference[key]

    async def _step_score(self, question: str, steps: Sequence[str], k: int) -> float | None:
        key = (question, tuple(steps[: k + 1]))
        if key in self._cache:
            return self._cache[key]
        completion = await self._ask(question, steps[:k], steps[k])
        if completion.logprobs is None:
            return None
        p = verdict_probability(completion)
        if p is None:
            _malformed(f"judge gave no Yes/No verdict for step {k + 1} (said {completion.text!r}); neutral score")
            return self.params.neutral
        if self.params.calibrate == "reference":
            reference = await self._reference_score(question, steps[:k])
            if reference is None:
                _malformed(f"judge gave no Yes/No verdict for the reference step {k + 1}; uncalibrated score")
            else:
                p = calibrated(p, reference)
        if len(self._reference) >= _CACHE_LIMIT:
            self._reference.clear()
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = p
        return p

    async def _score_logprobs(self, question: str, steps: Sequence[str]) -> list[float] | None:
        scores = await gather_calls(*(self._step_score(question, steps, k) for k in range(len(steps))))
        if any(s is None for s in scores):
            return None
        return [float(s) for s in scores]  # type: ignore[arg-type]

    async def _score_text(self, question: str, steps: Sequence[str]) -> list[float]:
        limit = self.params.max_step_chars
        user = render("judge_critique", question=question, steps=[plain_step(s, limit) for s in steps])
        request = GenerationRequest(messages=[self._system(), {"role": "user", "content": user}],
                                    max_tokens=self.params.max_tokens, temperature=0.0, seed=self.runtime.seed)
        with phase("verify"):
            text = (await self.runtime.backend.generate(request))[0].text
        scores = parse_verdicts(text, len(steps), self.params.neutral)
        if scores is None:
            _malformed(f"judge critique has no readable verdicts ({text[:80]!r}); neutral scores")
            return [self.params.neutral] * len(steps)
        return scores

    async def score(self, question: str, steps: Sequence[str]) -> list[float]:
        if not steps:
            return []
        if self.mode in ("auto", "logprobs"):
            scores = await self._score_logprobs(question, steps)
            if scores is not None:
                return scores
            if self.mode == "logprobs":
                _malformed(f"backend {self.runtime.backend.name!r} returned no logprobs; neutral scores")
                return [self.params.neutral] * len(steps)
            self.mode = "text"  # this backend gives no logprobs: stop asking for them
        return await self._score_text(question, steps)


@VERIFIERS.register("judge", JudgeParams, "the backend model critiques each step (verdict logprobs or text)")
def build_judge(params: JudgeParams, runtime: Runtime) -> JudgeVerifier:
    return JudgeVerifier(runtime, params)
