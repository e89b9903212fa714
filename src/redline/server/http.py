"""How redline's ASGI apps go on the wire: one uvicorn configuration for `redline serve` and the
in-thread servers of tests, benches and notebooks."""

from __future__ import annotations

from typing import Any

import uvicorn

from redline.server.settings import KEEP_ALIVE_S


def uvicorn_config(app: Any, *, host: str = "127.0.0.1", port: int = 0, keep_alive_s: float = KEEP_ALIVE_S,
                   **overrides: Any) -> uvicorn.Config:
    """The uvicorn settings redline serves with: quiet logs (redline logs each request itself) and
    a keep-alive longer than the clients'."""
    return uvicorn.Config(app, host=host, port=port, access_log=False, log_level="warning",
                          timeout_keep_alive=keep_alive_s, **overrides)
