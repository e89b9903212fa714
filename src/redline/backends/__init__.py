"""Producing tokens. Everything above this package sees only `Backend.generate`."""

from __future__ import annotations

from typing import Any

from redline.backends.base import (Backend, Completion, GenerationRequest, LedgeredBackend, Message,
                                   TokenLogprob)
from redline.errors import BackendError

BACKEND_HELP = {
    "local": "this machine: GGUF files on llama.cpp, HF folders on transformers ($REDLINE_ENGINE picks); "
             "default model: the embedded SmolLM2-135M-Instruct (offline)",
    "openai": "any OpenAI-compatible server (vLLM, SGLang, llama.cpp, Ollama, hosted APIs); several --base-url for replicas",
}


def create_backend(kind: str = "local", model: str | None = None, **options: Any) -> LedgeredBackend:
    """Build a backend by name and wrap it so every call reaches the token ledger.

    `scripted` is deliberately absent: tests construct `ScriptedBackend` directly.
    """
    if kind == "local":
        from redline.backends.local import DEFAULT_MODEL, LocalBackend

        return LedgeredBackend(LocalBackend(model or DEFAULT_MODEL, **options))
    if kind == "openai":
        from redline.backends.openai_compat import OpenAIBackend

        return LedgeredBackend(OpenAIBackend(model=model, **options))
    raise BackendError(f"unknown backend {kind!r}; valid: {', '.join(BACKEND_HELP)}")


__all__ = ["Backend", "BACKEND_HELP", "Completion", "GenerationRequest", "LedgeredBackend", "Message",
           "TokenLogprob", "create_backend"]
