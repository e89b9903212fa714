"""The figures of one report, as plain data: what every writer (tables, HTML, plots) reads.

It sits below `report` (which collects it and calls the writers) and below each writer, so no
writer has to import the module that imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redline.bench.metrics import PairedComparison, StrategySummary, TokenDelta


@dataclass
class ReportData:
    run: str
    settings: dict[str, Any]
    summaries: list[StrategySummary]
    baseline: str
    comparisons: dict[str, PairedComparison]  # accuracy, paired against the baseline
    curves: dict[str, list[tuple[float, float, float, float]]]  # family -> (budget, billed, computed, accuracy)
    errors: list[tuple[str, str, str]]
    problems: int
    token_deltas: dict[str, dict[str, TokenDelta]]  # strategy -> measure (billed, computed) -> paired Δ

    def summary(self, strategy: str) -> StrategySummary:
        return next(s for s in self.summaries if s.strategy == strategy)
