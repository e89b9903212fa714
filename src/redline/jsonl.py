"""Reading JSONL line by line, so that a bad line is reported by number and the rest still load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator


def iter_jsonl_objects(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line number, object or the reason the line is unreadable) for each non-blank line."""
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                yield number, f"invalid JSON ({e.msg})"
                continue
            yield number, row if isinstance(row, dict) else "not a JSON object"
