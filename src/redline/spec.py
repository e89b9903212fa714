"""The one spec grammar, shared by the CLI, the server and eval.

    spec       := component ('+' component)*          e.g. stepco+boost, principles:k=3+cot
    component  := name [':' item (',' item)*]         e.g. bon:n=8,agg=min, learned:prm.joblib
    item       := key '=' value | positional value
    spec list  := spec (',' spec)*                    e.g. cot,sc:n=8,bon:n=8

Values may hold nested specs (`verifier=ensemble:arith+judge`); wrap them in parentheses
when they would be ambiguous (`verifier=(ensemble:arith+judge,mode=min)`). A '+' starts a
new component only when the name after it is a strategy or context provider.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Mapping

from redline.errors import SpecError

_NAME = re.compile(r"^[A-Za-z][\w\-.]*$")
_KEY_VALUE = re.compile(r"^([A-Za-z_]\w*)=(.*)$", re.DOTALL)


@dataclass(frozen=True)
class Component:
    name: str
    args: tuple[str, ...] = ()
    params: Mapping[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        items = [_quote(a) for a in self.args] + [f"{k}={_quote(v)}" for k, v in self.params.items()]
        return self.name + (":" + ",".join(items) if items else "")


def _quote(value: str) -> str:
    return f"({value})" if any(c in value for c in ",+:") and not value.startswith("(") else value


def split_top(text: str, sep: str) -> list[str]:
    """Split on `sep` outside parentheses."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise SpecError(f"unbalanced ')' in {text!r}")
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth:
        raise SpecError(f"unbalanced '(' in {text!r}")
    parts.append("".join(cur))
    return parts


def _unwrap(value: str) -> str:
    value = value.strip()
    if value.startswith("(") and value.endswith(")") and len(split_top(value[1:-1], ")")) == 1:
        return value[1:-1].strip()
    return value


def parse_component(text: str) -> Component:
    """`name[:items]` into a Component; values are kept as strings for the registry to type."""
    text = text.strip()
    if not text:
        raise SpecError("empty spec")
    name, _, rest = text.partition(":")
    name = name.strip()
    if not _NAME.match(name):
        raise SpecError(f"bad name {name!r} in spec {text!r}")
    args: list[str] = []
    params: dict[str, str] = {}
    if rest.strip():
        for item in split_top(rest, ","):
            item = item.strip()
            if not item:
                raise SpecError(f"empty item in spec {text!r}")
            m = _KEY_VALUE.match(item)
            if m:
                if m.group(1) in params:
                    raise SpecError(f"parameter {m.group(1)!r} given twice in {text!r}")
                params[m.group(1)] = _unwrap(m.group(2))
            elif params:
                raise SpecError(f"positional value {item!r} after key=value in {text!r}")
            else:
                args.append(_unwrap(item))
    return Component(name, tuple(args), params)


def _head(segment: str) -> str:
    return segment.strip().split(":", 1)[0].strip()


def parse_pipeline(text: str, starts_component: Callable[[str], bool]) -> list[Component]:
    """Split a '+'-joined spec into components; '+' inside values is kept (see module doc)."""
    segments = split_top(text.strip(), "+")
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
    for item in split_top(text, ","):
        if specs and _KEY_VALUE.match(item.strip()) and ":" in specs[-1]:
            specs[-1] += "," + item
        elif item.strip():
            specs.append(item.strip())
    if not specs:
        raise SpecError("no strategy given")
    return specs
