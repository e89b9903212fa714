"""`arith`: checks the arithmetic claims a step makes, exactly, without executing anything.

A claim is an equality between arithmetic expressions found in the text (`48/2 = 24`,
`$5 × 3 = $15`, `20% of 50 = 10`, chains `a = b = c`) or a GSM8K calculator annotation
(`<<48/2=24>>`). Text is tokenised and parsed by a small recursive-descent parser over
`fractions.Fraction`; nothing is ever passed to `eval`. A side that is a written decimal
(`10/3 = 3.33`) is allowed the rounding its digits imply.

Claims whose left side is not clearly an expression are skipped rather than guessed at:
`3 apples * 2 = 6` (the run before '=' starts with an operator) or `half of 40 = 20`
(a lone number after a word). False alarms cost more than missed claims, because a
verifier's low score makes a strategy throw a correct step away.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Sequence

from pydantic import Field

from redline.registry import VERIFIERS, Params
from redline.runtime import Runtime
from redline.verifiers.base import run_in_pool

_ANNOTATION = re.compile(r"<<([^<>=]*)=([^<>]*)>>")
# (pattern, replacement, characters of which one must occur for the pattern to apply: a cheap skip)
_NORMALISE = [
    (re.compile(r"\\\(|\\\)|\\\[|\\\]|\\!|\\,|\*\*"), "", "\\*"),        # LaTeX delimiters, markdown bold
    (re.compile(r"\\?\$"), "", "$"),                                                # currency
    (re.compile(r"\\frac\{([^{}]*)\}\{([^{}]*)\}"), r"((\1)/(\2))", "\\"),
    (re.compile(r"\\times|\\cdot|[×·∙✕]"), "*", "\\×·∙✕"),
    (re.compile(r"\\div|÷"), "/", "\\÷"),
    (re.compile(r"[−–—]"), " - ", "−–—"),                                          # minus signs and dashes
    (re.compile(r"\b(\d+) and (\d+)/(\d+)\b"), r"(\1 + \2/\3)", "/"),                 # 1 and 1/3
    (re.compile(r"(?<=\d)\s*\("), " * (", "("),                                     # 50(2)
    (re.compile(r"(?<=/)\s+(\d+/\d+)\b"), r" (\1)", "/"),                             # 25 / 1/3 divides by a third
    (re.compile(r"\b\d{1,2}:\d{2}\b"), " clock ", ":"),                            # 11:00 is a time
    (re.compile(r"==|\\approx|≈|~="), lambda m: "=" if m.group(0) == "==" else "≈", "=\\≈"),
    (re.compile(r"(?<=\d),(?=\d{3}(?!\d))"), "", ","),                              # 1,200 -> 1200
    # units inside a calculation: '4 houses * 3 gnomes = 12' (not '2 hours = 120 minutes', a conversion)
    (re.compile(r"(?<=\d)\s+(?:[A-Za-z]+\s+)?[A-Za-z]+(?=\s*(?:[-+*/×]|[xX]\s*\d))"), " ", None),
    (re.compile(r"([-+*/×]\s*\d+(?:\.\d+)?)\s+(?:[A-Za-z]+\s+)?[A-Za-z]+(?=\s*=)"), r"\1", None),
    (re.compile(r"(?<=[\d)%])\s*[xX]\s*(?=[\d(])"), " * ", "xX"),                    # 0.2 x 50
    (re.compile(r"\b\d+(?:\.\d+)?[A-Za-z]\b"), " var ", None),                       # 5A, 1.2Y: algebra
    (re.compile(r"%\s*of\b"), "% *", "%"),                                          # 20% of 50
]
_TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d+)?|\.\d+)(\s*%)?|([-+*/^()])|(=|≈)|([A-Za-z_]+(?:[ \t]+[A-Za-z_]+)*|\S))")
_UNRELIABLE_BEFORE = frozenset({"times", "half", "twice", "double", "triple", "thrice", "minus", "plus", "divided",
                                "multiplied", "quarter", "third", "x", "clock"})
_PLAIN_PUNCT = frozenset(":,;.?!\"'")
_MAX_DIGITS = 40
_MAX_DEPTH = 40
_APPROX_REL = Fraction(1, 100)

# token kinds
NUM, OP, EQ, WORD, PUNCT = range(5)


class Token:
    """One lexical unit; a WORD token spans a run of words ('total gnomes')."""

    __slots__ = ("kind", "text", "value", "decimals", "percent")

    def __init__(self, kind: int, text: str, value: Fraction | None = None, decimals: int = 0,
                 percent: bool = False) -> None:
        self.kind, self.text, self.value, self.decimals, self.percent = kind, text, value, decimals, percent

    @property
    def first_word(self) -> str:
        return self.text.split(None, 1)[0] if self.text else ""

    @property
    def last_word(self) -> str:
        return self.text.rsplit(None, 1)[-1] if self.text else ""


@dataclass(frozen=True)
class ArithCheck:
    """What `check_step` found: how many claims it could check, and how many were false."""

    checked: int
    false: int

    @property
    def verdict(self) -> str:
        return "false" if self.false else "true" if self.checked else "none"


class _Unparseable(Exception):
    pass


@lru_cache(maxsize=8192)
def _literal(num: str) -> Fraction:
    return Fraction(num)


def tokenize(text: str) -> list[Token]:
    tokens = []
    for m in _TOKEN.finditer(text):
        num, pct, op, eq, other = m.groups()
        if num is not None:
            if len(num) > _MAX_DIGITS:
                tokens.append(Token(WORD, num))
                continue
            decimals = len(num) - num.index(".") - 1 if "." in num else 0
            value = _literal(num)
            if pct:
                tokens.append(Token(NUM, num + "%", value / 100, decimals + 2, True))
            else:
                tokens.append(Token(NUM, num, value, decimals))
        elif op is not None:
            tokens.append(Token(OP, op))
        elif eq is not None:
            tokens.append(Token(EQ, eq))
        elif other is not None:
            tokens.append(Token(WORD if other[0].isalpha() or other[0] == "_" else PUNCT, other.lower()))
    return tokens


class _Parser:
    """expr := term (('+'|'-') term)* ; term := unary (('*'|'/') unary)* ; unary := '-' unary | power ;
    power := atom ('^' unary)? ; atom := NUM | '(' expr ')'."""

    def __init__(self, tokens: Sequence[Token]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.depth = 0

    def parse(self) -> Fraction:
        value = self.expr()
        if self.pos != len(self.tokens):
            raise _Unparseable
        return value

    def _peek(self) -> str | None:
        return self.tokens[self.pos].text if self.pos < len(self.tokens) and self.tokens[self.pos].kind == OP else None

    def expr(self) -> Fraction:
        value = self.term()
        while self._peek() in ("+", "-"):
            op = self.tokens[self.pos].text
            self.pos += 1
            rhs = self.term()
            value = value + rhs if op == "+" else value - rhs
        return value

    def term(self) -> Fraction:
        value = self.unary()
        while self._peek() in ("*", "/"):
            op = self.tokens[self.pos].text
            self.pos += 1
            rhs = self.unary()
            if op == "*":
                value = value * rhs
            elif rhs == 0:
                raise _Unparseable
            else:
                value = value / rhs
        return value

    def unary(self) -> Fraction:
        if self._peek() == "-":
            self.pos += 1
            return -self.unary()
        return self.power()

    def power(self) -> Fraction:
        base = self.atom()
        if self._peek() == "^":
            self.pos += 1
            exponent = self.unary()
            if exponent.denominator != 1 or abs(exponent) > 64 or (base == 0 and exponent < 0):
                raise _Unparseable
            return base ** int(exponent)
        return base

    def atom(self) -> Fraction:
        if self.pos >= len(self.tokens):
            raise _Unparseable
        tok = self.tokens[self.pos]
        self.pos += 1
        if tok.kind == NUM:
            return tok.value  # type: ignore[return-value]
        if tok.text == "(":
            self.depth += 1
            if self.depth > _MAX_DEPTH:
                raise _Unparseable
            value = self.expr()
            if self._peek() != ")":
                raise _Unparseable
            self.pos += 1
            self.depth -= 1
            return value
        raise _Unparseable


def evaluate(text: str) -> Fraction | None:
    """Exact value of an arithmetic expression ('100-50-30-15', '0.2*50', '20% * 50'), or None."""
    tokens = tokenize(normalise(text))
    if not tokens or any(t.kind in (WORD, PUNCT, EQ) for t in tokens):
        return None
    try:
        return _Parser(tokens).parse()
    except (_Unparseable, RecursionError, OverflowError):
        return None


def normalise(text: str) -> str:
    for pattern, repl, trigger in _NORMALISE:
        if trigger is None or any(c in text for c in trigger):
            text = pattern.sub(repl, text)
    return text


def _side_values(run: Sequence[Token]) -> tuple[Fraction, ...] | None:
    """Possible values of one side: a bare percentage may mean its fraction or its number."""
    try:
        value = _Parser(run).parse()
    except (_Unparseable, RecursionError, OverflowError):
        return None
    if len(run) == 1 and run[0].percent:
        return value, value * 100
    return (value,)


def _tolerance(run: Sequence[Token]) -> Fraction:
    """A side written as one rounded decimal ('3.33') may be off by half its last digit."""
    if len(run) == 1 and run[0].decimals:
        tok = run[0]
        decimals = tok.decimals - 2 if tok.percent else tok.decimals
        return Fraction(1, 2 * 10 ** max(decimals, 0)) / (100 if tok.percent else 1)
    return Fraction(0)


def claim_holds(left: Sequence[Token], right: Sequence[Token], approx: bool = False) -> bool | None:
    """Whether `left = right` holds; None when either side does not parse."""
    lv, rv = _side_values(left), _side_values(right)
    if lv is None or rv is None:
        return None
    tol = max(_tolerance(left), _tolerance(right))
    for a in lv:
        for b in rv:
            slack = max(tol, abs(b) * _APPROX_REL) if approx else tol
            if a == b or abs(a - b) <= slack:
                return True
    return False


def _runs(tokens: Sequence[Token]) -> list[tuple[int, list[Token]]]:
    """Split tokens into (index of the token before the run, run of NUM/OP tokens) and EQ markers."""
    out: list[tuple[int, list[Token]]] = []
    cur: list[Token] = []
    start = -1
    for i, tok in enumerate(tokens):
        if tok.kind in (NUM, OP):
            if not cur:
                start = i - 1
            cur.append(tok)
        else:
            if cur:
                out.append((start, cur))
                cur = []
            out.append((i, []))  # an empty run marks a non-expression token at index i
    if cur:
        out.append((start, cur))
    return out


def _reliable_left(run: Sequence[Token], before: Token | None) -> bool:
    """A chain's first side must start cleanly: not mid-expression ('apples * 2'), not 'half of 40'."""
    if run[0].kind == OP and run[0].text != "(" and not (run[0].text == "-" and (before is None or before.kind != WORD)):
        return False
    if before is not None and before.kind == WORD:
        if before.last_word in _UNRELIABLE_BEFORE or len(run) == 1:
            return False
    return before is None or before.kind != PUNCT or before.text in _PLAIN_PUNCT


def _is_variable(tok: Token) -> bool:
    """'(3/2)x' or '5A': the side multiplies an unknown, so it is algebra, not a checkable claim."""
    return tok.kind == WORD and (len(tok.first_word) == 1 or tok.first_word == "var")


def _running_total(left: Sequence[Token], right: Sequence[Token]) -> bool:
    """'12 - 5 = 7 - 2 = 5' is a running calculation: the right side continues from the value."""
    if len(right) < 3 or right[0].kind != NUM or right[1].kind != OP or right[1].text in ("(", ")"):
        return False
    lv = _side_values(left)
    return lv is not None and lv[0] == right[0].value


def _text_claims(text: str) -> list[bool]:
    """Outcomes of every equality claim written in the text (annotations already removed)."""
    tokens = tokenize(normalise(text))
    results: list[bool] = []
    pieces = _runs(tokens)
    i = 0
    while i < len(pieces):
        before_idx, run = pieces[i]
        nxt = pieces[i + 1] if i + 1 < len(pieces) else None
        # a chain starts with a run directly followed by '='
        if not run or nxt is None or nxt[1] or tokens[nxt[0]].kind != EQ:
            i += 1
            continue
        before = tokens[before_idx] if before_idx >= 0 else None
        left = run
        reliable = _reliable_left(run, before)
        j = i + 1
        while j < len(pieces) and not pieces[j][1] and tokens[pieces[j][0]].kind == EQ:
            approx = tokens[pieces[j][0]].text == "≈"
            if j + 1 >= len(pieces) or not pieces[j + 1][1]:
                break
            after_idx, right = pieces[j + 1][0] + len(pieces[j + 1][1]) + 1, pieces[j + 1][1]
            if after_idx < len(tokens) and _is_variable(tokens[after_idx]):
                break
            if reliable and right:
                outcome = claim_holds(left, right, approx)
                if outcome is False and _running_total(left, right):
                    outcome = True
                if outcome is not None:
                    results.append(outcome)
            left, reliable = right, True
            j += 2
        i = j
    return results


def check_step(text: str) -> ArithCheck:
    """Check every arithmetic claim in one step."""
    if "=" not in text and "≈" not in text and "\\approx" not in text:
        return ArithCheck(0, 0)
    outcomes: list[bool] = []
    for expr, result in _ANNOTATION.findall(text):
        lhs, rhs = tokenize(normalise(expr)), tokenize(normalise(result))
        if lhs and rhs and not any(t.kind in (WORD, PUNCT, EQ) for t in lhs + rhs):
            outcome = claim_holds(lhs, rhs)
            if outcome is not None:
                outcomes.append(outcome)
    outcomes += _text_claims(_ANNOTATION.sub("", text))
    return ArithCheck(len(outcomes), sum(1 for o in outcomes if not o))


class ArithParams(Params):
    neutral: float = Field(0.6, ge=0, le=1, description="score of a step with no checkable claim")
    passed: float = Field(0.95, ge=0, le=1, description="score of a step whose claims all hold")
    failed: float = Field(0.02, ge=0, le=1, description="score of a step with a false claim")


class ArithVerifier:
    """Deterministic, CPU-only; batches of steps run in the worker pool."""

    name = "arith"

    def __init__(self, params: ArithParams | None = None) -> None:
        self.params = params or ArithParams()
        self.neutral = self.params.neutral  # "no claim checked": the sanity rules cap all-neutral solutions

    def score_sync(self, steps: Sequence[str]) -> list[float]:
        p = self.params
        scores = {"false": p.failed, "true": p.passed, "none": p.neutral}
        return [scores[check_step(s).verdict] for s in steps]

    async def score(self, question: str, steps: Sequence[str]) -> list[float]:
        return await run_in_pool(self.score_sync, list(steps))


@VERIFIERS.register("arith", ArithParams, "exact check of the arithmetic claims in each step (no model)")
def build_arith(params: ArithParams, runtime: Runtime) -> ArithVerifier:
    return ArithVerifier(params)
