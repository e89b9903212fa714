"""The one spec grammar, shared by the CLI, the server and eval.

    spec       := component ('+' component)*          e.g. stepco+boost, principles:k=3+cot
    component  := name [':' item (',' item)*]         e.g. bon:n=8,agg=min, learned:prm.safetensors
    item       := key '=' value | positional value
    spec list  := spec (',' spec)*                    e.g. cot,sc:n=8,bon:n=8

Values may hold nested specs (`verifier=ensemble:arith+judge`); wrap them in parentheses
when they would be ambiguous (`verifier=(ensemble:arith+judge,mode=min)`). A '+' starts a
new component only when the name after it is a strategy or context provider.

Specs also arrive from HTTP clients, so the text is checked before it is split: at most
MAX_SPEC_CHARS characters, parentheses nested at most MAX_DEPTH deep (checked while scanning,
so no input reaches the recursion limit), no control characters other than tab and line breaks,
and no lone surrogates (text that is not UTF-8). Every violation is a SpecError.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Mapping

from redline.errors import SpecError

MAX_SPEC_CHARS = 4096
MAX_DEPTH = 16
NAME = re.compile(r"^[A-Za-z][\w\-.]*$")
_KEY_VALUE = re.compile(r"^([A-Za-z_]\w*)=(.*)$", re.DOTALL)
_FORBIDDEN_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")  # tab, LF, CR: spaces


@dataclass(frozen=True)
class Component:
    name: str
    args: tuple[str, ...] = ()
    params: Mapping[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        items = [_quote(a) for a in self.args] + [f"{k}={_quote(v)}" for k, v in self.params.items()]
        return self.name + (":" + ",".join(items) if items else "")


def _quote(value: str) -> str:
    """Parenthesise a value that holds grammar characters, so that parsing gives it back unchanged."""
    return f"({value})" if any(c in value for c in ",+:()") else value


def check_text(text: str) -> str:
    """`text` if it may be parsed as a spec, else a SpecError saying why (length, characters)."""
    if not isinstance(text, str):
        raise SpecError(f"a spec must be text, got {type(text).__name__}")
    if len(text) > MAX_SPEC_CHARS:
        raise SpecError(f"spec too long: {len(text)} characters, at most {MAX_SPEC_CHARS}")
    bad = _FORBIDDEN_CHARS.search(text)
    if bad:
        kind = "non-UTF-8 text" if "\ud800" <= bad.group() <= "\udfff" else "a control character"
        raise SpecError(f"spec holds {kind} (U+{ord(bad.group()):04X}) at position {bad.start()}")
    return text


def split_top(text: str, sep: str) -> list[str]:
    """Split on `sep` outside parentheses; parentheses deeper than MAX_DEPTH are an error."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
            if depth > MAX_DEPTH:
                raise SpecError(f"spec nested deeper than {MAX_DEPTH} parentheses")
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise SpecError(f"unbalanced ')' in {_shown(text)}")
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth:
        raise SpecError(f"unbalanced '(' in {_shown(text)}")
    parts.append("".join(cur))
    return parts


def _shown(text: str, limit: int = 200) -> str:
    """The spec as quoted in an error message, cut short when long."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def unwrap(value: str) -> str:
    """'(x)' -> 'x' when the first '(' closes at the very end; one layer only."""
    value = value.strip()
    if not (value.startswith("(") and value.endswith(")")):
        return value
    depth = 0
    for i, ch in enumerate(value):
        depth += (ch == "(") - (ch == ")")
        if depth == 0:
            return value[1:-1].strip() if i == len(value) - 1 else value
    return value


def parse_component(text: str) -> Component:
    """`name[:items]` into a Component; values are kept as strings for the registry to type."""
    text = check_text(text).strip()
    if not text:
        raise SpecError("empty spec")
    name, _, rest = text.partition(":")
    name = name.strip()
    if not NAME.match(name):
        raise SpecError(f"bad name {_shown(name)} in spec {_shown(text)}")
    args: list[str] = []
    params: dict[str, str] = {}
    if rest.strip():
        for item in split_top(rest, ","):
            item = item.strip()
            if not item:
                raise SpecError(f"empty item in spec {_shown(text)}")
            m = _KEY_VALUE.match(item)
            if m:
                if m.group(1) in params:
                    raise SpecError(f"parameter {m.group(1)!r} given twice in {_shown(text)}")
                params[m.group(1)] = unwrap(m.group(2))
            elif params:
                raise SpecError(f"positional value {_shown(item)} after key=value in {_shown(text)}")
            else:
                args.append(unwrap(item))
    return Component(name, tuple(args), params)


def _head(segment: str) -> str:
    return segment.strip().split(":", 1)[0].strip()


def parse_pipeline(text: str, starts_component: Callable[[str], bool]) -> list[Component]:
    """Split a '+'-joined spec into components; '+' inside values is kept (see module doc)."""
    segments = split_top(check_text(text).strip(), "+")
    merged: list[str] = []
    for seg in segments:
        if merged and not starts_component(_head(seg)):
            merged[-1] += "+" + seg
        else:
            merged.append(seg)
    return [parse_component(s) for s in merged]


def split_spec_list(text: str) -> list[str]:
    """Split 'cot,sc:n=8,bon:n=8,agg=min' into specs: a `key=value` item continues the spec before it."""
    specs: list[str] = []
    for item in split_top(check_text(text), ","):
        if specs and _KEY_VALUE.match(item.strip()) and ":" in specs[-1]:
            specs[-1] += "," + item
        elif item.strip():
            specs.append(item.strip())
    if not specs:
        raise SpecError("no strategy given")
    return specs
