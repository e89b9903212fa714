"""Named, typed, validated components: strategies, verifiers and context providers.

Each entry has a pydantic model of its parameters, so a spec's string values are coerced
and checked in one place, and `redline strategies` can list every parameter with its
default. Third-party packages add entries by exposing a module under the `redline`
entry-point group that registers with the same decorators.

An entry whose parameters name files, folders, hub ids, URLs or code is *operator-only*: HTTP
clients may not use it by spec (see `redline.trust`), only through a name the operator declared
at start-up. Registering with `operator_only=True` says so; without it, a parameter named in
OPERATOR_FIELDS makes the entry operator-only, so a new verifier is covered even when its
author did not think of the server.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any, Callable, Generic, Literal, TypeVar, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from redline.errors import SpecError
from redline.spec import Component

T = TypeVar("T")


MAX_INT = 2**53
OPERATOR_FIELDS = frozenset({"path", "paths", "file", "dir", "directory", "model_dir", "model_path", "checkpoint",
                             "adapter", "url", "base_url", "endpoint", "trust_remote_code", "code", "module"})


class Params(BaseModel):
    """Base for parameter models: unknown keys are errors, not silently ignored; floats must be
    finite and integers within +-2**53 (a spec is client input on the server)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="after")
    def _bounded_ints(self) -> "Params":
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
                raise ValueError(f"{name}={value:.3g} is too large (at most {MAX_INT})")
        return self


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    factory: Callable[..., T]
    params: type[Params]
    summary: str
    positional: tuple[str, ...] = ()
    operator_only: bool = False  # reads files or runs code: HTTP clients use it only by a declared name


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, params: type[Params] = Params, summary: str = "",
                 positional: tuple[str, ...] = (),
                 operator_only: bool | None = None) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: `@STRATEGIES.register("cot", CotParams, "one greedy chain")` on a factory.
        `operator_only=None` decides from the parameter names (see OPERATOR_FIELDS)."""
        if operator_only is None:
            operator_only = bool(OPERATOR_FIELDS & set(params.model_fields))

        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            self._entries[name] = Entry(name, factory, params, summary or (factory.__doc__ or "").strip(), positional,
                                        operator_only)
            return factory
        return deco

    def __contains__(self, name: str) -> bool:
        load_plugins()
        return name in self._entries

    def names(self) -> list[str]:
        load_plugins()
        return sorted(self._entries)

    def entries(self) -> list[Entry[T]]:
        return [self._entries[n] for n in self.names()]

    def get(self, name: str) -> Entry[T]:
        load_plugins()
        if name not in self._entries:
            close = difflib.get_close_matches(name, self._entries, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SpecError(f"unknown {self.kind} {name!r}{hint}; valid: {', '.join(self.names())}")
        return self._entries[name]

    def validate(self, component: Component) -> Params:
        """Typed parameters for a parsed component, or a SpecError listing the valid ones."""
        entry = self.get(component.name)
        values: dict[str, Any] = dict(component.params)
        if len(component.args) > len(entry.positional):
            raise SpecError(f"{self.kind} {component.name!r} takes no positional value "
                            f"{component.args[len(entry.positional):]!r}; {describe_params(entry)}")
        for key, arg in zip(entry.positional, component.args):
            if key in values:
                raise SpecError(f"{key!r} given twice in {component}")
            values[key] = arg
        try:
            return entry.params(**values)
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'spec'}: {err['msg']}" for err in e.errors())
            raise SpecError(f"bad {self.kind} spec {str(component)!r}: {problems}. {describe_params(entry)}") from None

    def build(self, component: Component, *args: Any) -> T:
        return self.get(component.name).factory(self.validate(component), *args)


def describe_params(entry: Entry[Any]) -> str:
    fields = entry.params.model_fields
    if not fields:
        return f"{entry.name!r} takes no parameters"
    parts = [f"{k} ({_type_name(f.annotation)}, {'required' if f.is_required() else f'default {f.default!r}'})"
             for k, f in fields.items()]
    return f"valid parameters of {entry.name!r}: " + ", ".join(parts)


def _type_name(annotation: Any) -> str:
    if get_origin(annotation) is Literal:  # show the choices: 'prefix|rewrite'
        return "|".join(map(str, get_args(annotation)))
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


_BUILTIN_MODULES = ("redline.strategies", "redline.verifiers", "redline.memory.providers")
_loaded = False


def load_plugins() -> None:
    """Import built-in components and any installed `redline` entry-point plugins, once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in _BUILTIN_MODULES:
        import_module(module)
    for ep in entry_points(group="redline"):
        ep.load()


STRATEGIES: Registry[Any] = Registry("strategy")
VERIFIERS: Registry[Any] = Registry("verifier")
PROVIDERS: Registry[Any] = Registry("context provider")
