"""A JSON-serialisable tree of what a strategy generated, scored and revised, and why."""

from __future__ import annotations

from typing import Any


class Trace:
    """A node: a kind, plain-data fields, and child nodes. `to_dict()` gives pure JSON data."""

    def __init__(self, kind: str, **data: Any) -> None:
        self.kind = kind
        self.data = data
        self.children: list[Trace] = []

    def child(self, kind: str, **data: Any) -> "Trace":
        node = Trace(kind, **data)
        self.children.append(node)
        return node

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, **self.data}
        if self.children:
            out["children"] = [c.to_dict() for c in self.children]
        return out
