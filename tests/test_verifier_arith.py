"""The arith verifier: exact checks of written arithmetic, and no execution of input."""

from __future__ import annotations

import pytest

from redline.errors import SpecError
from redline.runtime import Runtime
from redline.verifiers.arith import check_step, evaluate
from tests.conftest import scripted_runtime

TRUE_CLAIMS = [
    "48/2 = 24",
    "16 - 3 - 4 = 9",
    "$5 × 3 = $15",
    "20% of 50 = 10",
    "1,200 + 300 = 1,500",
    "3 * 4.5 = 13.5",
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.",
    "So the total is 2 + 3 = 5 = 10/2",
    "10/3 = 3.33 hours each",
    "Working 50 minutes, she earned 0.2 x 50 = $10.",
    "Step 2: **12 - 5 = 7 - 2 = 5** apples are left.",
    "There are 4 houses * 3 gnomes = 12 gnomes.",
    "\\frac{1}{2} \\times 8 = 4",
    "25% = 0.25",
    "(3 + 4) * 2 = 14 and 2^3 = 8",
]
FALSE_CLAIMS = [
    "48/2 = 23",
    "16 - 3 - 4 = 8",
    "$5 × 3 = $16",
    "20% of 50 = 12",
    "1,200 + 300 = 1,600",
    "3 * 4.5 = 13",
    "Natalia sold <<48/2=25>>25 clips in May.",
    "So the total is 2 + 3 = 5 = 6",
    "10/3 = 3.2 hours each",
    "20 total gnomes – 12 gnomes = 9 gnomes",
    "3 apples * 2 = 7 apples",
]
NO_CLAIMS = [
    "",
    "She has 5 apples and gives some away.",
    "half of 40 = 21",                 # 'half of' is not written arithmetic: skipped, not flagged
    "the apples * 2 = 7",                # the left side starts mid-expression: skipped
    "2 hours = 120 minutes",             # a unit conversion, not an equality of numbers
    "From 8:00 to 11:00 = 3 hours",     # clock times are not numbers
    "26 = 5 + 3x",                       # algebra with an unknown
    "__import__('os').system('echo pwned') = 0",
]


@pytest.mark.parametrize("text", TRUE_CLAIMS)
def test_true_claims_are_checked_and_hold(text):
    result = check_step(text)
    assert result.checked >= 1 and result.false == 0, result


@pytest.mark.parametrize("text", FALSE_CLAIMS)
def test_false_claims_are_caught(text):
    assert check_step(text).false >= 1


@pytest.mark.parametrize("text", NO_CLAIMS)
def test_steps_without_checkable_claims_are_neutral(text):
    assert check_step(text).verdict == "none"


def test_evaluate_is_exact_and_refuses_non_arithmetic():
    assert evaluate("0.1 + 0.2") == evaluate("3/10")  # exact rationals, no float error
    assert evaluate("100-50-30-15") == 5
    assert evaluate("2^100000") is None  # huge powers are refused, not computed
    assert evaluate("1/0") is None
    assert evaluate("(" * 500 + "1" + ")" * 500) is None
    assert evaluate("__import__('os')") is None


async def test_registered_verifier_scores_with_configured_levels():
    runtime = scripted_runtime(["unused"])
    verifier = runtime.verifier("arith:neutral=0.3,passed=0.9,failed=0.1")
    scores = await verifier.score("q", ["48/2 = 24", "48/2 = 25", "no numbers here", "", "9 " * 50_000 + "= 9"])
    assert scores[:4] == [0.9, 0.1, 0.3, 0.3]
    assert len(scores) == 5 and 0 <= scores[4] <= 1


def test_bad_params_are_spec_errors():
    runtime = Runtime(backend=scripted_runtime(["x"]).backend)
    with pytest.raises(SpecError, match="neutral"):
        runtime.verifier("arith:neutral=2")
    with pytest.raises(SpecError, match="valid parameters"):
        runtime.verifier("arith:colour=red")
