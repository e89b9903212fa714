"""What specs are built against: the backend, generation defaults, memory location.

A Runtime is built once (per CLI command, server or eval run) and shared by every solve;
components it builds (verifiers, embedders, stores) are cached on it.

`declared` maps names the operator gave at start-up (`redline serve --verifier NAME=SPEC`) to
their specs. A runtime with `clients=True` builds specs that came from HTTP clients: each verifier
spec is checked by `redline.trust` before anything is built, and a declared name is built from the
operator's spec.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, TypeVar

from redline.backends.base import Backend
from redline.errors import SpecError
from redline.registry import PROVIDERS, STRATEGIES, VERIFIERS
from redline.spec import NAME, parse_component
from redline.trust import check_client_spec

T = TypeVar("T")


@dataclass
class Runtime:
    backend: Backend
    max_tokens: int = 384
    seed: int = 0
    memory_path: Path | None = None
    learn_online: bool = False
    verifiers: dict[str, Any] = field(default_factory=dict)  # spec text -> instance (tests inject here)
    declared: dict[str, str] = field(default_factory=dict)   # operator's verifier name -> spec
    clients: bool = False                                     # specs come from HTTP clients: check them
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def verifier(self, spec: str) -> Any:
        """Build (once) the verifier named by `spec`, e.g. 'arith', 'ensemble:arith+judge' or a declared name."""
        spec = spec.strip()
        if spec in self.declared:
            if spec not in self.verifiers:  # the operator's spec: its own members need no client check
                operator = replace(self, clients=False)
                self.verifiers[spec] = VERIFIERS.build(parse_component(self.declared[spec]), operator)
            return self.verifiers[spec]
        if self.clients:
            check_client_spec(spec, self.declared)
        if spec not in self.verifiers:
            self.verifiers[spec] = VERIFIERS.build(parse_component(spec), self)
        return self.verifiers[spec]

    def declare_verifier(self, name: str, spec: str) -> None:
        """Let clients use the verifier `spec` (which may read files) by `name`; checked, not yet built."""
        if not NAME.match(name) or name in VERIFIERS or name in STRATEGIES or name in PROVIDERS:
            raise SpecError(f"cannot declare verifier {name!r}: a name is a letter then letters, digits, '_', '-' "
                            f"or '.', and not a built-in name ({', '.join(VERIFIERS.names())})")
        if name in self.declared:
            raise SpecError(f"verifier {name!r} declared twice")
        VERIFIERS.validate(parse_component(spec))
        self.declared[name] = spec.strip()

    def cached(self, key: str, make: Callable[[], T]) -> T:
        """Share an expensive object (embedder, store) across the components of this runtime."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]
