"""Which strategy and backend model a request asks for, and what question it poses.

`model` is "<strategy spec>/<backend model>", split at the first '/' outside parentheses
(`bon:n=8/Qwen/Qwen2.5-7B-Instruct` -> `bon:n=8` on `Qwen/Qwen2.5-7B-Instruct`). A model
without '/' is a strategy on the server's backend model, or, when it names the served model,
pass-through (so plain clients and chained servers work unchanged). With `extra_body={"redline":
{"strategy": ..., "params": ...}}` the strategy comes from there and `model` is the backend
model. The strategy `none` passes the request through to the backend unchanged.

Specs from clients are checked by `redline.trust` before anything is built: they name verifiers
the operator declared, never files, hub ids or code. Model names that are local paths are served
but never shown to clients (`public_models`).
"""

from __future__ import annotations

from dataclasses import dataclass

from redline.errors import SpecError
from redline.loop import is_component_name
from redline.registry import STRATEGIES
from redline.runtime import Runtime
from redline.server.errors import APIError
from redline.server.schemas import ChatMessage, RedlineOptions
from redline.spec import Component, parse_pipeline, split_top
from redline.text import render
from redline.trust import check_client_spec

PASSTHROUGH = "none"


@dataclass(frozen=True)
class Route:
    spec: str | None  # None: pass-through
    label: str        # strategy names without parameters, for metrics and logs

    @property
    def passthrough(self) -> bool:
        return self.spec is None


def split_model(model: str) -> tuple[str, str]:
    """'<strategy spec>/<backend model>' at the first '/' outside parentheses; no '/': no model."""
    head, *rest = split_top(model, "/")
    return head, "/".join(rest)


def served_models(runtime: Runtime) -> list[str]:
    """Backend model names a request may use: the model itself and the backend's name as an alias."""
    return list(dict.fromkeys([runtime.backend.model, runtime.backend.name]))


def public_models(runtime: Runtime) -> list[str]:
    """The served model names a client may be told: local paths are left out (the backend's name stays)."""
    return [m for m in served_models(runtime) if not m.startswith(("/", "~", ".")) and "\\" not in m]


def strategy_names() -> list[str]:
    return [PASSTHROUGH, *STRATEGIES.names()]


def resolve_route(model: str, options: RedlineOptions | None, runtime: Runtime) -> Route:
    """The strategy spec and label for a request, or a 400 naming what is valid."""
    if options is not None and options.strategy:
        spec, backend_model = _with_params(options.strategy, options.params), model
    else:
        if options is not None and options.params:
            raise APIError(400, "redline.params needs redline.strategy", "redline.params")
        spec, backend_model = split_model(model)
    if backend_model and backend_model not in served_models(runtime):
        raise APIError(400, f"model {backend_model[:200]!r} is not served here; use '<strategy>/<model>' with "
                            f"model one of: {', '.join(public_models(runtime))}", "model", "model_not_found")
    if spec.strip() == PASSTHROUGH or (not backend_model and spec in served_models(runtime)):
        return Route(None, PASSTHROUGH)
    components = parse_pipeline(spec, is_component_name)
    unknown = [c.name for c in components if not is_component_name(c.name)]
    if unknown:
        example = f"cot/{public_models(runtime)[-1]}"
        raise SpecError(f"unknown strategy {unknown[0]!r} in model {model[:200]!r}; valid: "
                        f"{', '.join(strategy_names())} (as '<strategy>/<model>', e.g. {example!r})")
    check_client_spec(spec, runtime.declared)
    return Route(spec, "+".join(c.name for c in components))


def _with_params(spec: str, params: dict[str, object]) -> str:
    """Merge `redline.params` into the strategy component of `spec`."""
    if not params:
        return spec
    components = parse_pipeline(spec, is_component_name)
    merged = []
    for c in components:
        if c.name in STRATEGIES:
            clash = sorted(set(c.params) & set(params))
            if clash:
                raise SpecError(f"parameter {clash[0]!r} given both in the strategy and in redline.params")
            c = Component(c.name, c.args, {**c.params, **{k: _spec_value(v) for k, v in params.items()}})
        merged.append(str(c))
    return "+".join(merged)


def _spec_value(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def chat_question(messages: list[ChatMessage]) -> str:
    """The question a strategy solves: the last user message. Earlier user and assistant turns
    are given to it as context (system prompts are not: the strategy writes its own)."""
    last = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
    if last is None or not messages[last].text.strip():
        raise APIError(400, "messages: a strategy needs a user message with text (the question)", "messages")
    question = messages[last].text.strip()
    history = [{"role": m.role, "content": m.text.strip()} for m in messages[:last]
               if m.role in ("user", "assistant") and m.text.strip()]
    return render("chat_question", history=history, question=question) if history else question
