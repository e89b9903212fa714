"""Splitting a solution into steps."""

from __future__ import annotations

import re

_STEP_MARKER = re.compile(r"^\s*(?:\*\*)?\s*step\s*\d+\s*[:.)]", re.IGNORECASE | re.MULTILINE)
_NUMBERED = re.compile(r"^\s*\d+[.)]\s+", re.MULTILINE)
_BLANK = re.compile(r"\n\s*\n")


def _split_at(text: str, pattern: re.Pattern[str]) -> list[str]:
    starts = [m.start() for m in pattern.finditer(text)]
    head = text[: starts[0]].strip() if starts else ""
    parts = [text[a:b].strip() for a, b in zip(starts, starts[1:] + [len(text)])]
    if head:  # preamble before the first marker joins the first step
        parts[0] = f"{head}\n{parts[0]}"
    return [p for p in parts if p]


def segment_steps(text: str) -> list[str]:
    """Steps by 'Step k:' markers, else numbered lines, else blank-line paragraphs, else lines.

    A trailing 'The answer is ...' line stays inside the last step: it is the conclusion of
    that step, not a reasoning step of its own.
    """
    text = text.strip()
    if not text:
        return []
    if len(_STEP_MARKER.findall(text)) >= 1:
        return _split_at(text, _STEP_MARKER)
    if len(_NUMBERED.findall(text)) >= 2:
        return _split_at(text, _NUMBERED)
    paragraphs = [p.strip() for p in _BLANK.split(text) if p.strip()]
    if len(paragraphs) >= 2:
        return paragraphs
    return [line.strip() for line in text.splitlines() if line.strip()]


def strip_step_labels(text: str) -> str:
    """Text without 'Step k:' markers and list numbers, whose digits are never answers."""
    return _NUMBERED.sub("", _STEP_MARKER.sub("", text))


def join_steps(steps: list[str]) -> str:
    """Inverse of segmentation for our own step format: one step per paragraph."""
    return "\n\n".join(s.strip() for s in steps)
