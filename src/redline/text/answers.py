"""Final-answer extraction and answer equivalence.

Equivalence tries a fast exact-number path first, then HF math-verify. math-verify's
timeouts use SIGALRM, which only works on the main thread; off it we disable them and
bound the input size instead, so worker threads are safe.
"""

from __future__ import annotations

import re
import threading
from fractions import Fraction
from functools import lru_cache

from redline.text.steps import strip_step_labels

_NUMBER = r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+"
_ANSWER_IS = re.compile(r"answer\s*(?:is|:)\s*[:\s]*\$?\s*(.+)", re.IGNORECASE)
_HASHES = re.compile(r"####\s*(.+)")
_LAST_NUMBER = re.compile(_NUMBER)
_MAX_VERIFY_CHARS = 400


def _boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}), with nested braces balanced."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1: j].strip()
    return None


def _clean(answer: str) -> str:
    answer = answer.strip().rstrip(".").strip()
    answer = re.sub(r"^\$+|\$+$", "", answer).strip()
    return answer


def _first_line_answer(raw: str) -> str:
    """From 'The answer is 18 dollars.' keep the (first) number when there is one, else the phrase."""
    raw = raw.strip().splitlines()[0] if raw.strip() else ""
    boxed = _boxed(raw)
    if boxed is not None:
        return boxed
    raw = raw.rsplit("=", 1)[-1]  # 'The answer is 5 + 3 = 8' -> 8, the result, not an operand
    m = _LAST_NUMBER.search(raw.replace("\\$", ""))
    if m:
        return m.group(0)
    return _clean(raw)


def extract_answer(text: str) -> str | None:
    """`\\boxed{}`, then 'The answer is', then '####', then the last number; None if nothing."""
    if not text:
        return None
    boxed = _boxed(text)
    if boxed:
        return boxed
    matches = list(_ANSWER_IS.finditer(text))
    if matches:
        ans = _first_line_answer(matches[-1].group(1))
        if ans:
            return ans
    m = _HASHES.search(text)
    if m:
        ans = _first_line_answer(m.group(1))
        if ans:
            return ans
    numbers = _LAST_NUMBER.findall(strip_step_labels(text))
    return numbers[-1] if numbers else None


_LATEX_FRAC = re.compile(r"^\\[dt]?frac\{(-?\d+)\}\{(\d+)\}$")
_UNIT_TAIL = re.compile(r"^(-?[\d,]*\.?\d+(?:/\d+)?)\s*(?:%|[a-zA-Z\s.]+)?$")


def as_number(answer: str | None) -> Fraction | None:
    """Exact value of a plain numeric answer ('1,200', '-3.5', '1/2', '\\frac{1}{2}', '$15', '18 dollars')."""
    if answer is None:
        return None
    s = answer.strip().replace("\\$", "").replace("$", "").replace("\\!", "").replace("{,}", "")
    s = s.replace("\\%", "%").strip()
    s = re.sub(r"^\\text\{(.*)\}$", r"\1", s)
    if s.startswith("-\\"):
        inner = as_number(s[1:])
        return -inner if inner is not None else None
    m = _LATEX_FRAC.match(s)
    if m:
        return Fraction(int(m.group(1)), int(m.group(2)))
    m = _UNIT_TAIL.match(s)
    if not m:
        return None
    token = m.group(1).replace(",", "")
    try:
        return Fraction(token)
    except (ValueError, ZeroDivisionError):
        return None


def _math_verify(gold: str, pred: str) -> bool:
    from math_verify import parse, verify

    on_main = threading.current_thread() is threading.main_thread()
    timeout = 5 if on_main else None
    try:
        g = parse(_wrap(gold), parsing_timeout=timeout)
        p = parse(_wrap(pred), parsing_timeout=timeout)
        if not g or not p:
            return False
        return bool(verify(g, p, timeout_seconds=timeout))
    except Exception:  # math-verify raises on exotic input; unparseable means not equal
        return False


def _wrap(s: str) -> str:
    s = s.strip()
    return s if s.startswith("$") or "\\boxed" in s else f"${s}$"


@lru_cache(maxsize=65536)
def answers_equal(a: str | None, b: str | None) -> bool:
    """True when two answers are mathematically equal ('0.5' == '1/2' == '\\frac{1}{2}')."""
    if a is None or b is None:
        return False
    if a.strip() == b.strip():
        return True
    na, nb = as_number(a), as_number(b)
    if na is not None and nb is not None:
        return na == nb or abs(float(na) - float(nb)) <= 1e-6 * max(1.0, abs(float(nb)))
    if len(a) > _MAX_VERIFY_CHARS or len(b) > _MAX_VERIFY_CHARS:
        return False
    return _math_verify(a, b)


def parse_gold(answer: str | None) -> bool:
    """Whether a gold answer is usable for grading: numeric, or a math expression math-verify parses.

    Prose ('a dog', 'N/A', 'none') is not: math-verify would read it as a product of symbols.
    """
    if answer is None or not answer.strip():
        return False
    if as_number(answer) is not None:
        return True
    if _PROSE.fullmatch(answer.strip()):
        return False
    from math_verify import parse

    try:
        on_main = threading.current_thread() is threading.main_thread()
        parsed = parse(_wrap(answer), parsing_timeout=5 if on_main else None)
    except Exception:
        return False
    return any(not isinstance(p, str) for p in parsed)


_PROSE = re.compile(r"[A-Za-z]{2,}(?:[\s/.'-]+[A-Za-z]+)*|[A-Za-z](?:[\s/.'-]+[A-Za-z]+)+|[^\w\\]+")
