"""The self-contained report.html: summary tables, plots as data URIs, and a problem browser.

Everything is inline (CSS, JS, images, data) so the file opens offline and can be mailed around.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from redline.bench.formats import SUMMARY_COLUMNS, TOKENS_NOTE, budget_rows, sampling_rows, summary_rows
from redline.bench.report_data import ReportData
from redline.bench.store import ResultStore


def _problem_entry(problem: dict[str, Any], store: ResultStore) -> dict[str, Any]:
    results = {}
    for strategy, (correct, graded, result) in store.full_results(problem["id"]).items():
        candidates = [
            {"answer": c["solution"]["answer"], "score": c["score"], "votes": c["votes"], "origin": c["origin"],
             "correct": g["correct"]}
            for c, g in zip(result.get("candidates", []), graded)
        ]
        results[strategy] = {
            "answer": result["answer"], "correct": correct, "stopped": result["stopped"],
            "wall_s": result["wall_s"], "usage": result["usage"], "usage_total": result["usage_total"],
            "steps": (result.get("solution") or {}).get("steps", []), "candidates": candidates,
            "trace": result["trace"],
        }
    return {**problem, "results": results}


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def write_html(data: ReportData, store: ResultStore, plots: list[Path], path: Path, max_problems: int = 200) -> Path:
    """Render report.html; the browser holds the first `max_problems` problems (the tables cover all)."""
    problems = [_problem_entry(p, store) for p in store.problems(limit=max_problems)]
    env = Environment(loader=PackageLoader("redline.bench", "templates"), autoescape=select_autoescape(["j2", "html"]))
    html = env.get_template("report.html.j2").render(
        data=data,
        columns=SUMMARY_COLUMNS,
        tokens_note=TOKENS_NOTE,
        summary=summary_rows(data),
        sampling=sampling_rows(data),
        budget=budget_rows(data),
        plots=[(p.stem.replace("_", " "), _data_uri(p)) for p in plots],
        shown=len(problems),
        strategies=[s.strategy for s in data.summaries],
        # '</' escaped so no string in the data can close the script element
        problems_json=json.dumps(problems, default=str).replace("</", "<\\/"),
    )
    path.write_text(html, encoding="utf-8")
    return path
