"""redline: make any LLM reason more accurately per token."""

from redline.types import Candidate, Problem, Result, Solution, Step, Usage

__all__ = ["Candidate", "Problem", "Result", "Solution", "Step", "Usage"]
__version__ = "0.1.0"
