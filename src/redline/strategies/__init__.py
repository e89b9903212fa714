"""Spending inference compute. Each strategy module registers itself in `registry.STRATEGIES`."""

from redline.strategies import adaptive, beam, bon, cot, mcts, refine, sc, stepco  # noqa: F401  (registers)
from redline.strategies.base import ContextProvider, SolveContext, Strategy

__all__ = ["ContextProvider", "SolveContext", "Strategy"]
