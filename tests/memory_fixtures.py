"""Shared data for the memory tests: GSM8K-style problems and a scripted model for learning runs."""

from __future__ import annotations

from redline.backends.base import GenerationRequest
from redline.memory.learning import LearnSettings
from redline.types import Problem

LEARN_ONLY = LearnSettings(holdout=0)  # learn from every problem, hold none back for measurement

TRAIN = [
    Problem("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
            "How many clips did Natalia sell altogether in April and May?", "72", "t1",
            "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April and May."),
    Problem("Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
            "How much did she earn?", "10", "t2",
            "Weng earns 12/60 = $0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = $10."),
    Problem("James writes a 3-page letter to 2 different friends twice a week. How many pages does he write "
            "a year?", "624", "t3",
            "He writes each friend 3*2=6 pages a week.\nSo he writes 6*2=12 pages every week.\n"
            "That means he writes 12*52=624 pages a year."),
]

PRINCIPLE = "When a problem has several parts, compute each part before combining them."
PRINCIPLE_REPLY = PRINCIPLE.removeprefix("When")  # the model continues after the 'Principle: When' lead


def learning_script(request: GenerationRequest, index: int) -> str:
    """A deterministic 'model': right on Natalia, wrong elsewhere; writes principles when asked."""
    text = " ".join(str(m["content"]) for m in request.messages or [] if m["role"] == "user")
    if "avoided this mistake" in text:
        return PRINCIPLE_REPLY
    if "Condense" in text:
        return "Compute intermediate quantities first.\n- Check the units of the answer."
    steps = RIGHT if "Natalia" in text else WRONG
    if not request.prefix:  # whole solution in one call
        return "\n".join(f"Step {i + 1}: {s}" for i, s in enumerate(steps))
    done = request.prefix.count("Step ") - 1  # step-by-step: the prefix ends with the next 'Step k:' label
    return " " + steps[min(done, len(steps) - 1)]


RIGHT = ["48/2 = 24 clips in May.", "48+24 = 72. The answer is 72."]
WRONG = ["5 + 5 = 10.", "10 * 2 = 20. The answer is 20."]
