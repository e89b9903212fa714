"""Spending inference compute. Each strategy module registers itself in `registry.STRATEGIES`."""

from redline.strategies import cot  # noqa: F401  (registers)
from redline.strategies.base import ContextProvider, SolveContext, Strategy

__all__ = ["ContextProvider", "SolveContext", "Strategy"]
