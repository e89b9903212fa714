"""Text handling with no model calls: steps, answers, equivalence, prompt templates."""

from redline.text.answers import answers_equal, as_number, extract_answer, parse_gold
from redline.text.prompts import STEP_PREFIX, render, solve_messages
from redline.text.steps import join_steps, segment_steps

__all__ = ["STEP_PREFIX", "answers_equal", "as_number", "extract_answer", "join_steps", "parse_gold", "render",
           "segment_steps", "solve_messages"]
