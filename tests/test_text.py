"""Steps, answers and equivalence: the text layer that never calls a model."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

import pytest

from redline.text import answers_equal, as_number, extract_answer, join_steps, parse_gold, segment_steps
from redline.types import Solution


@pytest.mark.parametrize("text, steps", [
    ("Step 1: 2 + 3 = 5\nStep 2: 5 * 2 = 10\nThe answer is 10.",
     ["Step 1: 2 + 3 = 5", "Step 2: 5 * 2 = 10\nThe answer is 10."]),
    ("We add first.\nstep 1) add\n**Step 2:** double", ["We add first.\nstep 1) add", "**Step 2:** double"]),
    ("1. add 2 and 3\n2) multiply by 2\nThe answer is 10", ["1. add 2 and 3", "2) multiply by 2\nThe answer is 10"]),
    ("We add.\nStill adding.\n\nThen multiply.\n\nSo 10.", ["We add.\nStill adding.", "Then multiply.", "So 10."]),
    ("add 2 and 3\nmultiply by 2\n\n", ["add 2 and 3", "multiply by 2"]),
    ("1. only one numbered line", ["1. only one numbered line"]),
    ("", []),
    ("  \n ", []),
])
def test_segment_steps(text, steps):
    assert segment_steps(text) == steps


def test_join_steps_round_trips_our_format():
    steps = ["Step 1: 2 + 3 = 5", "Step 2: 5 * 2 = 10\nThe answer is 10."]
    assert segment_steps(join_steps(steps)) == steps


@pytest.mark.parametrize("text, answer", [
    ("so \\boxed{\\frac{1}{2}} is it", "\\frac{1}{2}"),
    ("\\boxed{\\frac{\\sqrt{2}}{2}} and later \\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
    ("\\boxed{3} then The answer is 4", "3"),
    ("Step 1: 5 apples.\nThe answer is 1,200 dollars.", "1,200"),
    ("The answer is $18.", "18"),
    ("the answer is -3", "-3"),
    ("The answer is 5 + 3 = 8.", "8"),
    ("Answer: 42", "42"),
    ("The answer is 7. Then I rambled about 9.", "7"),
    ("work\n#### 72", "72"),
    ("She has 3 then 5.5 and finally -7 left", "-7"),
    ("no numbers here", None),
    ("", None),
])
def test_extract_answer(text, answer):
    assert extract_answer(text) == answer


def test_solution_without_an_answer_has_none():
    solution = Solution.from_text("Step 1: think hard.\nStep 2: still thinking.")
    assert solution.answer is None and len(solution.steps) == 2


@pytest.mark.parametrize("a, b", [
    ("1/2", "0.5"), ("\\frac{1}{2}", "0.5"), ("\\dfrac{3}{4}", "0.75"), ("-\\frac{1}{2}", "-0.5"),
    ("1,200", "1200"), ("18 dollars", "18"), ("$15", "15"), ("\\$15", "15.00"), ("-3", "-3.0"),
    ("50%", "50"), ("x+1", "1+x"), ("\\sqrt{4}", "2"), ("\\boxed{10}", "10"),
])
def test_equal(a, b):
    assert answers_equal(a, b) and answers_equal(b, a)


@pytest.mark.parametrize("a, b", [("3", "4"), ("-3", "3"), ("1/2", "0.6"), ("x+1", "x+2"), (None, "3"),
                                  ("3", None), ("12 apples", "13")])
def test_not_equal(a, b):
    assert not answers_equal(a, b)


def test_as_number_and_parse_gold():
    assert as_number("-1/2") == Fraction(-1, 2)
    assert as_number("10 cm") == 10 and as_number("1,234.5") == Fraction(2469, 2)
    assert as_number("abc") is None and as_number(None) is None
    assert parse_gold("72") and parse_gold("x+1")
    assert not parse_gold("") and not parse_gold(None)
    assert parse_gold("\\frac{1}{2}") and parse_gold("A") and parse_gold("\\pi") and parse_gold("$15")
    for prose in ("a dog", "N/A", "none", "???", "\\text{}"):
        assert not parse_gold(prose), prose


def test_equivalence_from_worker_threads():
    """math-verify's SIGALRM timeouts only work on the main thread; redline must not crash off it."""
    pairs = [("\\frac{1}{3}", "2/6"), ("x^2 + 2x", "2x + x^2"), ("\\sqrt{9}", "3"), ("x+1", "x+2")] * 4
    expected = [True, True, True, False] * 4
    answers_equal.cache_clear()  # make every worker take the math-verify path, not the cache
    threads: set[int] = set()

    def check(pair: tuple[str, str]) -> bool:
        threads.add(threading.get_ident())
        return answers_equal(*pair)

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(check, pairs)) == expected
    assert threading.main_thread().ident not in threads
