"""Options and helpers shared by CLI commands; the commands themselves stay thin."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated, Any, Coroutine, Optional, Sequence, TypeVar

import typer
from rich.console import Console

from redline.backends import BACKEND_HELP, create_backend
from redline.backends.endpoints import parse_base_urls
from redline.errors import RedlineError
from redline.runtime import Runtime

T = TypeVar("T")
console = Console(stderr=True, soft_wrap=True)  # one-line errors stay one line when piped
out = Console()

BackendOpt = Annotated[str, typer.Option("--backend", "-b", help=f"Where tokens come from: {', '.join(BACKEND_HELP)}.")]
ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="Model: for local, 'smollm2-135m' (embedded, default), a .gguf file, an HF model directory or a PEFT adapter folder (GGUF runs on llama.cpp, HF folders on transformers; REDLINE_ENGINE=transformers runs GGUF on transformers too); for openai, the served model name (default: $REDLINE_MODEL or the server's first model).")]
BaseUrlOpt = Annotated[Optional[list[str]], typer.Option("--base-url", help="OpenAI-compatible server URL; repeat it (or separate with commas) for replicas of one model: requests go to the least busy, fail over, and a dead one is probed back in (default: $OPENAI_BASE_URL, comma-separated). The key comes from $OPENAI_API_KEY.")]
MaxTokensOpt = Annotated[int, typer.Option("--max-tokens", min=1, help="Most new tokens per generation call.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Base seed; sampled calls derive their seeds from it, so runs repeat.")]
MicroBatchOpt = Annotated[int, typer.Option("--micro-batch", min=1, help="Examples per forward pass: their gradients add up to the batch's, so the step is the same and memory follows this; lower it when training runs out of memory (a resumed run may change it).")]
MemoryOpt = Annotated[Optional[Path], typer.Option("--memory", help="Memory store (SQLite). Default: ~/.redline/memory.db.")]
StrategyOpt = Annotated[str, typer.Option("--strategy", "-s", help="Strategy spec, e.g. 'cot', 'sc:n=8', 'stepco:threshold=0.6', 'stepco+boost'. See `redline strategies`.")]


def make_runtime(backend: str, model: str | None, base_url: str | Sequence[str] | None = None,
                 max_tokens: int = 384, seed: int = 0, memory: Path | None = None,
                 **backend_options: Any) -> Runtime:
    """Build the backend and the Runtime every command works on; `base_url` is one URL or several."""
    options = dict(backend_options)
    if backend == "openai":
        options["base_url"] = parse_base_urls(base_url)  # none: the backend reads $OPENAI_BASE_URL
    elif base_url:
        raise RedlineError("--base-url only applies to --backend openai")
    return Runtime(backend=create_backend(backend, model, **options), max_tokens=max_tokens, seed=seed,
                   memory_path=memory)


def load_backend(runtime: Runtime) -> None:
    """Load a local model under a spinner before solving, so ledger latencies are generation only."""
    load = getattr(runtime.backend, "load", None)
    if load is not None:
        with console.status(f"loading model {runtime.backend.model} ..."):
            load()


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def read_question(question: str) -> str:
    """The question argument, or stdin when it is '-'; empty is an error."""
    text = sys.stdin.read() if question == "-" else question
    if not text.strip():
        raise RedlineError("empty question: pass the question text, or '-' to read it from stdin")
    return text.strip()
