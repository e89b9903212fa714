"""`redline serve`: the OpenAI-compatible server over every strategy."""

from __future__ import annotations

import logging
import os
from typing import Annotated, List, Optional, Sequence

import typer

from redline.cli.common import (BackendOpt, BaseUrlOpt, MaxTokensOpt, MemoryOpt, ModelOpt, SeedOpt, console,
                                make_runtime)
from redline.errors import RedlineError
from redline.runtime import Runtime
from redline.server.settings import KEEP_ALIVE_S


def serve(
    backend: BackendOpt = "local",
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 8000,
    api_key: Annotated[Optional[List[str]], typer.Option(
        "--api-key", help="Accepted client key (repeatable; also $REDLINE_API_KEYS, comma-separated). "
                          "None: no authentication.")] = None,
    max_body_bytes: Annotated[int, typer.Option(min=1, help="Largest request body (413 above).")] = 1_000_000,
    max_n: Annotated[int, typer.Option(min=1, help="Largest n (400 above).")] = 8,
    max_tokens_limit: Annotated[int, typer.Option(min=1, help="Largest max_tokens a request may ask for.")] = 4096,
    max_request_tokens: Annotated[int, typer.Option(
        min=0, help="Token budget of one strategy request over all its internal calls; 0: unlimited.")] = 100_000,
    max_concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight; 429 beyond.")] = 64,
    timeout_s: Annotated[float, typer.Option(min=0.1, help="Per-request timeout (504).")] = 300.0,
    keep_alive_s: Annotated[float, typer.Option(
        min=1, help="Seconds an idle client connection stays open; keep it above your clients' own "
                    "idle expiry (httpx, openai SDK: 5 s; Go: 90 s).")] = KEEP_ALIVE_S,
    verifier: Annotated[Optional[List[str]], typer.Option(
        "--verifier", help="NAME=SPEC (repeatable): a verifier clients may use by NAME, e.g. "
                           "prm=hf-prm:/models/qwen-prm,trust_remote_code=true or mine=learned:prm.safetensors. "
                           "Clients never name files, hub ids or code themselves; these load at start-up.")] = None,
    max_tokens: MaxTokensOpt = 384,
    seed: SeedOpt = 0,
    memory: MemoryOpt = None,
) -> None:
    """Serve strategies behind the OpenAI API: model '<strategy>/<model>', e.g. 'stepco/local'."""
    import uvicorn

    from redline.server import ServerSettings, create_app
    from redline.server.http import uvicorn_config

    keys = tuple(api_key or ()) + tuple(k for k in os.environ.get("REDLINE_API_KEYS", "").split(",") if k)
    settings = ServerSettings(api_keys=keys, max_body_bytes=max_body_bytes, max_n=max_n,
                              max_tokens_limit=max_tokens_limit, max_request_tokens=max_request_tokens or None,
                              max_concurrency=max_concurrency, timeout_s=timeout_s)
    runtime = make_runtime(backend, model, base_url, max_tokens, seed, memory)
    declare_verifiers(runtime, verifier or [])
    _log_requests_to_stderr()
    console.print(f"serving {runtime.backend.name}:{runtime.backend.model} on http://{host}:{port}/v1 "
                  f"({'with' if keys else 'without'} API keys); model '<strategy>/{runtime.backend.model}'"
                  + (f"; verifiers for clients: {', '.join(runtime.declared)}" if runtime.declared else ""))
    uvicorn.Server(uvicorn_config(create_app(runtime, settings), host=host, port=port,
                                  keep_alive_s=keep_alive_s)).run()


def declare_verifiers(runtime: Runtime, declarations: Sequence[str]) -> None:
    """`NAME=SPEC` items: check each, then load it now, so a bad file fails here and not in a request."""
    for item in declarations:
        name, sep, spec = item.partition("=")
        if not sep or not spec.strip():
            raise RedlineError(f"--verifier takes NAME=SPEC (e.g. mine=learned:prm.safetensors), got {item!r}")
        runtime.declare_verifier(name.strip(), spec)
    for name in runtime.declared:
        with console.status(f"loading verifier {name} ({runtime.declared[name]}) ..."):
            runtime.verifier(name)


def _log_requests_to_stderr() -> None:
    """One JSON line per request (logger redline.server.access) and server errors, on stderr."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("redline.server")
    log.addHandler(handler)
    log.setLevel(logging.INFO)


def register(app: typer.Typer) -> None:
    app.command()(serve)
