"""The figures of one report, as plain data: what every writer (tables, HTML, plots) reads.

It sits below `report` (which collects it and calls the writers) and below each writer, so no
writer has to import the module that imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redline.bench.metrics import PairedComparison, StrategySummary


@dataclass
class ReportData:
    run: str
    settings: dict[str, Any]
    summaries: list[StrategySummary]
    baseline: str
    comparisons: dict[str, PairedComparison]
    curves: dict[str, list[tuple[float, float, float]]]
    errors: list[tuple[str, str, str]]
    problems: int

    def summary(self, strategy: str) -> StrategySummary:
        return next(s for s in self.summaries if s.strategy == strategy)
