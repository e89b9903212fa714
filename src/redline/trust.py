"""Which specs an HTTP client may send.

The operator's shell may name anything; a client of `redline serve` may not name a file, a
folder, a hub id, a URL or code. So a client spec may use, at any nesting depth, only components
that are not operator-only (see `registry.Entry.operator_only`), the verifier names the operator
declared at start-up (`redline serve --verifier NAME=SPEC`, used bare), no parameter named in
`registry.OPERATOR_FIELDS` (`trust_remote_code` among them), and no value that looks like a path
or hub id. The check reads the text only: it runs before anything is built or opened.
"""

from __future__ import annotations

import re
from typing import Collection

from redline.errors import SpecError
from redline.registry import OPERATOR_FIELDS, PROVIDERS, STRATEGIES, VERIFIERS, Entry
from redline.spec import MAX_DEPTH, check_text, parse_component, split_top, unwrap

_PATH_LIKE = re.compile(r"[/\\]|^~|\.\.")


def allowed_verifiers(declared: Collection[str]) -> list[str]:
    """What a client may put in `verifier=`: built-in verifiers that open nothing, then the declared names."""
    return [e.name for e in VERIFIERS.entries() if not e.operator_only] + sorted(declared)


def check_client_spec(spec: str, declared: Collection[str]) -> None:
    """Raise SpecError, saying what is allowed, when a client's `spec` names anything operator-only."""
    _check(check_text(spec), declared, 0)


def _entry(name: str) -> Entry[object] | None:
    for registry in (STRATEGIES, PROVIDERS, VERIFIERS):
        if name in registry:
            return registry.get(name)
    return None


def _check(text: str, declared: Collection[str], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise SpecError(f"spec nested deeper than {MAX_DEPTH} levels")
    for piece in split_top(text, "+"):
        piece = unwrap(piece)
        name = piece.split(":", 1)[0].strip()
        entry = _entry(name)
        if name in declared:
            if piece != name:
                raise SpecError(f"verifier {name!r} is declared by the operator: use it bare, without parameters")
        elif entry is None:
            if _PATH_LIKE.search(piece):
                raise SpecError(f"clients may not name files, folders, URLs or hub ids (got {piece[:80]!r}); "
                                f"{_allowed(declared)}")
        elif entry.operator_only:
            raise SpecError(f"{name!r} opens files or runs code, so only the server's operator may use it; "
                            f"{_allowed(declared)}")
        else:
            component = parse_component(piece)
            for key in component.params:
                if key in OPERATOR_FIELDS:
                    raise SpecError(f"parameter {key!r} is for the server's operator only; {_allowed(declared)}")
            for value in (*component.args, *component.params.values()):
                _check(value, declared, depth + 1)


def _allowed(declared: Collection[str]) -> str:
    return (f"verifiers clients may use: {', '.join(allowed_verifiers(declared))} (the operator declares more with "
            "`redline serve --verifier NAME=SPEC`)")
