"""What specs are built against: the backend, generation defaults, memory location.

A Runtime is built once (per CLI command, server or eval run) and shared by every solve;
components it builds (verifiers, embedders, stores) are cached on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

from redline.backends.base import Backend
from redline.registry import VERIFIERS
from redline.spec import parse_component

T = TypeVar("T")


@dataclass
class Runtime:
    backend: Backend
    max_tokens: int = 384
    seed: int = 0
    memory_path: Path | None = None
    learn_online: bool = False
    verifiers: dict[str, Any] = field(default_factory=dict)  # spec text -> instance (tests inject here)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def verifier(self, spec: str) -> Any:
        """Build (once) the verifier named by `spec`, e.g. 'arith' or 'ensemble:arith+judge'."""
        spec = spec.strip()
        if spec not in self.verifiers:
            self.verifiers[spec] = VERIFIERS.build(parse_component(spec), self)
        return self.verifiers[spec]

    def cached(self, key: str, make: Callable[[], T]) -> T:
        """Share an expensive object (embedder, store) across the components of this runtime."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]
